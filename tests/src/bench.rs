//! What the plugin benchmarks share: the pipelined host loop (keep up to
//! `in_flight` commands queued through [`keel_host::Host::submit_pipelined`]
//! while a collector thread waits for each durable acknowledgement in order
//! — commits are in order — and timestamps it), the timed native loop, the
//! set-up submission and the deterministic command-stream generator.

use std::sync::mpsc;
use std::time::Instant;

/// Waits for one acknowledgement: the response, or `None` if refused.
type Ack = Box<dyn FnOnce() -> Option<Vec<u8>> + Send>;

/// Submits `commands` to `plugin` with at most `in_flight` waiting; returns
/// (wall seconds, per-command submit→ack latency in µs, commands refused).
/// A refused command must still have been journaled (it has a sequence).
pub fn pipelined(
    host: &keel_host::Host,
    plugin: &str,
    commands: &[Vec<u8>],
    in_flight: usize,
) -> (f64, Vec<f64>, usize) {
    pipelined_checked(host, plugin, commands, in_flight, |_| {})
}

/// [`pipelined`], with `check` run on every accepted command's response
/// (on the collector thread, outside the timed submit→ack span).
pub fn pipelined_checked(
    host: &keel_host::Host,
    plugin: &str,
    commands: &[Vec<u8>],
    in_flight: usize,
    check: fn(&[u8]),
) -> (f64, Vec<f64>, usize) {
    let (tx, rx) = mpsc::sync_channel::<(Instant, Ack)>(in_flight);
    let collector = std::thread::spawn(move || {
        let mut latencies_us = Vec::new();
        let mut refused = 0;
        for (t0, ack) in rx {
            let response = ack();
            latencies_us.push(t0.elapsed().as_secs_f64() * 1e6);
            match response {
                Some(response) => check(&response),
                None => refused += 1,
            }
        }
        (latencies_us, refused)
    });
    let start = Instant::now();
    for cmd in commands {
        let t0 = Instant::now();
        let receipt = host.submit_pipelined(plugin, cmd).expect("submitted");
        let ack: Ack = Box::new(
            move || match receipt.blocking_recv().expect("acknowledged") {
                Ok(receipt) => Some(receipt.response),
                Err(e) => {
                    assert!(e.sequence().is_some(), "not journaled: {e}");
                    None
                }
            },
        );
        tx.send((t0, ack)).expect("collector alive");
    }
    drop(tx);
    let (latencies_us, refused) = collector.join().expect("collector thread");
    (start.elapsed().as_secs_f64(), latencies_us, refused)
}

/// With `KEEL_RECORD_FIXTURES=<dir>`, writes `<dir>/<plugin>.jsonl`:
/// `KEEL_FIXTURE_COMMANDS` (default 2000) journal entries of `plugin` in
/// `host` from sequence `from` (the state before it embedded), as a test
/// fixture — how `tests/fixtures/` was made from the benchmark workloads
/// (an existing file is kept).
pub fn record_fixture(host: &keel_host::Host, plugin: &str, from: u64) {
    let Ok(dir) = std::env::var("KEEL_RECORD_FIXTURES") else {
        return;
    };
    let last = host.plugin(plugin).expect("plugin").last_sequence;
    let to = last.min(from + env("KEEL_FIXTURE_COMMANDS", 2000) as u64 - 1);
    let path = std::path::Path::new(&dir).join(format!("{plugin}.jsonl"));
    if path.exists() {
        // The first (fullest) run of a benchmark records; later runs of
        // other shapes leave it.
        return;
    }
    let mut file = std::fs::File::create(&path).expect("creating the fixture");
    let summary = host
        .write_fixture(plugin, from, to, &mut file)
        .expect("writing the fixture");
    eprintln!(
        "fixture: {} commands to {}",
        summary.commands,
        path.display()
    );
}

/// A benchmark size from the environment variable `name`, or `default`.
pub fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Submits `commands` to `plugin` at once and waits until every one is
/// committed (the set-up before a measured stream); panics on a refusal.
pub fn submit_all(host: &keel_host::Host, plugin: &str, commands: &[Vec<u8>]) {
    let pending: Vec<_> = commands
        .iter()
        .map(|c| host.submit_pipelined(plugin, c).expect("submitted"))
        .collect();
    for rx in pending {
        rx.blocking_recv()
            .expect("acknowledged")
            .expect("set-up command accepted");
    }
}

/// Times `handle` on each command in turn (the native paths); `handle`
/// says whether the command was accepted. Returns (wall seconds,
/// per-command latency in µs, commands refused).
pub fn timed(commands: &[Vec<u8>], mut handle: impl FnMut(&str) -> bool) -> (f64, Vec<f64>, usize) {
    let texts: Vec<&str> = commands
        .iter()
        .map(|c| std::str::from_utf8(c).expect("commands are JSON text"))
        .collect();
    let mut latencies_us = Vec::with_capacity(texts.len());
    let mut refused = 0;
    let start = Instant::now();
    for text in texts {
        let t0 = Instant::now();
        if !handle(text) {
            refused += 1;
        }
        latencies_us.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    (start.elapsed().as_secs_f64(), latencies_us, refused)
}

/// A xorshift64 generator: the same command stream on every run.
#[derive(Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Creates spot market 1 (`B`/`USD`, tick, lot and minimum size 1) and
/// deposits 2^50 of each asset for users `1..=users`: the set-up of the
/// benches that trade on one spot market.
pub fn fund_spot_market(host: &keel_host::Host, users: u64) {
    let mut setup = vec![
        br#"{"create_market":{"market":1,"base":"B","quote":"USD","tick_size":1,"lot_size":1,"min_size":1}}"#
            .to_vec(),
    ];
    for user in 1..=users {
        for asset in ["B", "USD"] {
            setup.push(
                format!(
                    r#"{{"deposit":{{"user":{user},"asset":"{asset}","amount":{}}}}}"#,
                    1u64 << 50
                )
                .into_bytes(),
            );
        }
    }
    submit_all(host, "spot", &setup);
}
