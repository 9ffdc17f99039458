//! The measuring loop shared by the plugin benchmarks: keep up to
//! `in_flight` commands queued through [`keel_host::Host::submit_pipelined`]
//! while a collector thread waits for each durable acknowledgement in order
//! (commits are in order) and timestamps it.

use std::sync::mpsc;
use std::time::Instant;

type Ack = Box<dyn FnOnce() -> bool + Send>;

/// Submits `commands` to `plugin` with at most `in_flight` waiting; returns
/// (wall seconds, per-command submit→ack latency in µs, commands refused).
/// A refused command must still have been journaled (it has a sequence).
pub fn pipelined(
    host: &keel_host::Host,
    plugin: &str,
    commands: &[Vec<u8>],
    in_flight: usize,
) -> (f64, Vec<f64>, usize) {
    let (tx, rx) = mpsc::sync_channel::<(Instant, Ack)>(in_flight);
    let collector = std::thread::spawn(move || {
        let mut latencies_us = Vec::new();
        let mut refused = 0;
        for (t0, ack) in rx {
            if !ack() {
                refused += 1;
            }
            latencies_us.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        (latencies_us, refused)
    });
    let start = Instant::now();
    for cmd in commands {
        let t0 = Instant::now();
        let receipt = host.submit_pipelined(plugin, cmd).expect("submitted");
        let ack: Ack = Box::new(
            move || match receipt.blocking_recv().expect("acknowledged") {
                Ok(_) => true,
                Err(e) => {
                    assert!(e.sequence().is_some(), "not journaled: {e}");
                    false
                }
            },
        );
        tx.send((t0, ack)).expect("collector alive");
    }
    drop(tx);
    let (latencies_us, refused) = collector.join().expect("collector thread");
    (start.elapsed().as_secs_f64(), latencies_us, refused)
}

/// A benchmark size from the environment variable `name`, or `default`.
pub fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
