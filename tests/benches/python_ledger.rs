//! Benchmark of a plugin written in Python (`plugins/python-ledger`, built
//! by `plugins/python-ledger/build.sh` with componentize-py): what deploying
//! it costs (compiling the 18 MB component with a cold cache, loading the
//! compiled artifact with a warm one, restarting after a crash) and what one
//! command costs — `noop` (JSON parse, dispatch, JSON out: the fixed price
//! of running Python) and `lottery` (Python's `random` and `time`, two
//! table reads and two writes) — next to the Rust `bench` plugin's no-op in
//! the same run.
//!
//! `cargo bench -p keel-tests --bench python_ledger`; size with
//! `KEEL_BENCH_COMMANDS` (default 2 000), pipelined window with
//! `KEEL_BENCH_IN_FLIGHT` (256). Sequential rows send one command at a
//! time and wait for its durable acknowledgement (one fsync each);
//! pipelined rows keep the window full so that group commit amortises the
//! fsync and the row shows the guest's own cost. Skips with a message when
//! the component has not been built.

use std::time::Instant;

use keel_tests::bench::{env, pipelined};
use keel_tests::{TestHost, plugins};

const PLUGIN: &str = "python-ledger";

struct Run {
    seconds: f64,
    latencies_us: Vec<f64>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.latencies_us.len() as f64 / self.seconds
    }
    fn pct(&mut self, p: f64) -> f64 {
        self.latencies_us.sort_by(f64::total_cmp);
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i]
    }
}

/// One command at a time, each waiting for its acknowledgement.
fn sequential(t: &TestHost, plugin: &str, commands: &[Vec<u8>]) -> Run {
    let mut latencies_us = Vec::with_capacity(commands.len());
    let start = Instant::now();
    for cmd in commands {
        let t0 = Instant::now();
        t.call_raw(plugin, cmd).expect("command accepted");
        latencies_us.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    Run {
        seconds: start.elapsed().as_secs_f64(),
        latencies_us,
    }
}

fn piped(t: &TestHost, plugin: &str, commands: &[Vec<u8>], in_flight: usize) -> Run {
    let (seconds, latencies_us, refused) = pipelined(t.host(), plugin, commands, in_flight);
    assert_eq!(refused, 0, "no command of the benchmark is refused");
    Run {
        seconds,
        latencies_us,
    }
}

fn main() {
    let path = keel_tests::foreign::component_path("python-ledger");
    let Ok(bytes) = std::fs::read(&path) else {
        eprintln!(
            "SKIPPED: {} is absent; run plugins/python-ledger/build.sh",
            path.display()
        );
        return;
    };
    let n = env("KEEL_BENCH_COMMANDS", 2_000);
    let in_flight = env("KEEL_BENCH_IN_FLIGHT", 256);

    // Deploy with a cold cache (compile), then with the warm one (load).
    let cache = tempfile::tempdir().unwrap();
    let with_cache = |c: &mut keel_host::HostConfig| c.cache_dir = Some(cache.path().to_owned());
    let cold_host = TestHost::with_config(with_cache);
    let t0 = Instant::now();
    cold_host.deploy(&bytes, None).expect("deploying");
    let cold = t0.elapsed().as_secs_f64();
    drop(cold_host);
    let mut t = TestHost::with_config(with_cache);
    let t0 = Instant::now();
    t.deploy(&bytes, None).expect("deploying");
    let warm = t0.elapsed().as_secs_f64();
    t.call(PLUGIN, serde_json::json!({"open": {"account": "alice"}}))
        .unwrap();
    let t0 = Instant::now();
    t.crash_and_restart();
    let first = t
        .call(PLUGIN, serde_json::json!({"noop": {}}))
        .expect("serving after restart");
    let restart = t0.elapsed().as_secs_f64();
    assert_eq!(first, serde_json::json!({}));

    let noop = vec![br#"{"noop":{}}"#.to_vec(); n];
    let lottery = vec![br#"{"lottery":{"account":"alice"}}"#.to_vec(); n];
    let mut rows: Vec<(String, Run)> = vec![
        (
            "python noop, sequential".into(),
            sequential(&t, PLUGIN, &noop),
        ),
        (
            format!("python noop, pipelined ({in_flight} in flight)"),
            piped(&t, PLUGIN, &noop, in_flight),
        ),
        (
            format!("python lottery, pipelined ({in_flight} in flight)"),
            piped(&t, PLUGIN, &lottery, in_flight),
        ),
    ];
    let verdicts = t.verify_replay();
    assert!(verdicts.iter().all(|v| v.ok()), "{verdicts:?}");

    let rust = TestHost::new();
    rust.deploy_file(plugins::BENCH);
    let rust_noop = vec![br#""noop""#.to_vec(); n];
    rows.push((
        "rust noop, sequential".into(),
        sequential(&rust, "bench", &rust_noop),
    ));
    rows.push((
        format!("rust noop, pipelined ({in_flight} in flight)"),
        piped(&rust, "bench", &rust_noop, in_flight),
    ));

    println!();
    println!(
        "component {} ({:.1} MB)",
        path.display(),
        bytes.len() as f64 / 1e6
    );
    println!("deploy, cold cache (compile):      {cold:>8.2} s");
    println!("deploy, warm cache (load):         {warm:>8.2} s");
    println!("crash, restart, first command:     {restart:>8.2} s");
    println!();
    println!(
        "{:<48} {:>12} {:>10} {:>10} {:>12}",
        "path", "commands/s", "p50 µs", "p99 µs", "µs/command"
    );
    for (name, run) in &mut rows {
        let (p50, p99) = (run.pct(0.50), run.pct(0.99));
        let per = run.seconds * 1e6 / run.latencies_us.len() as f64;
        println!(
            "{name:<48} {:>12.0} {p50:>10.1} {p99:>10.1} {per:>12.1}",
            run.rate()
        );
    }
    println!("replay of the python ledger's journal: identical responses and state hash");
}
