//! Benchmark of the dag plugin: certificate inserts measured two ways in the
//! same run, for an n = 4 and an n = 50 committee, plus recovery time.
//!
//! 1. through the host as a component — durable (fsync per group commit),
//!    pipelined (`KEEL_BENCH_IN_FLIGHT`, default 4096, commands in flight):
//!    certificates/s, p50/p99 submit→acknowledgement latency;
//! 2. the same plugin crate natively over the SDK's in-memory store
//!    (Harness, JSON in and out, no persistence), and the ratio (1)/(2).
//!
//! Every certificate carries a quorum of parents (floor(2n/3) + 1: 3 of 4,
//! 34 of 50, rotating which authors of the round below are left out), a
//! 64-byte signature and its digest, which the plugin recomputes.
//!
//! Then the restart of a host whose DAG holds `KEEL_BENCH_RESTART_CERTS`
//! certificates (default 100 000, n = 4): time from a crash (and from a
//! clean shutdown) until the plugin answers a query again, and the time of
//! a full consistency check of that DAG.
//!
//! `cargo bench -p keel-tests --bench dag`; size with `KEEL_BENCH_CERTS`
//! (default 100 000 for n = 4; n = 50 runs a quarter of it).

use std::sync::mpsc;
use std::time::Instant;

use keel_guest::testing::Harness;
use keel_plugin_dag::api::{CheckReport, Metadata};
use keel_plugin_dag::{
    Bytes, Command, Dag, Digest, DigestList, NewCertificate, Query, certificate_digest, quorum_for,
};
use keel_tests::{TestHost, plugins};
use serde_json::{Value, json};

fn names(n: usize) -> Vec<String> {
    // Zero-padded so that name order is index order.
    (0..n).map(|i| format!("validator-{i:03}")).collect()
}

fn config(n: usize) -> Value {
    json!({"authors": names(n), "prune_depth": 50})
}

/// `count` insert commands (JSON) growing full rounds of an `n` committee.
fn workload(n: usize, count: usize) -> Vec<Vec<u8>> {
    let names = names(n);
    let quorum = quorum_for(n as u64) as usize;
    let mut out = Vec::with_capacity(count);
    let mut below: Vec<Digest> = Vec::new();
    let mut round = 0u64;
    while out.len() < count {
        let mut this = Vec::with_capacity(n);
        for (a, author) in names.iter().enumerate() {
            let parents: Vec<Digest> = if round == 0 {
                vec![]
            } else {
                (0..quorum)
                    .map(|i| below[(a + i + round as usize) % n])
                    .collect()
            };
            let digest = certificate_digest(round, author, &parents, &[]);
            let cert = NewCertificate {
                round,
                author: author.clone(),
                parents: DigestList(parents),
                batches: DigestList::default(),
                signature: Bytes(digest.0.iter().chain(&digest.0).copied().collect()),
                digest: Some(digest),
            };
            out.push(serde_json::to_vec(&Command::Insert(cert)).unwrap());
            this.push(digest);
            if out.len() == count {
                break;
            }
        }
        below = this;
        round += 1;
    }
    out
}

struct Run {
    certs: usize,
    seconds: f64,
    latencies_us: Vec<f64>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.certs as f64 / self.seconds
    }
    fn pct(&mut self, p: f64) -> f64 {
        self.latencies_us.sort_by(f64::total_cmp);
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i]
    }
}

fn native(n: usize, commands: &[Vec<u8>]) -> (Run, Metadata) {
    let config = serde_json::from_value(config(n)).unwrap();
    let mut h = Harness::<Dag>::with_config(config).unwrap();
    let texts: Vec<&str> = commands
        .iter()
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let mut latencies_us = Vec::with_capacity(texts.len());
    let start = Instant::now();
    for text in texts {
        let t0 = Instant::now();
        h.handle_json(text).expect("a valid insert");
        latencies_us.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    let seconds = start.elapsed().as_secs_f64();
    let meta = serde_json::from_value(h.query_json(r#""metadata""#).unwrap()).unwrap();
    (
        Run {
            certs: commands.len(),
            seconds,
            latencies_us,
        },
        meta,
    )
}

type Ack = Box<dyn FnOnce() + Send>;

fn host(t: &TestHost, commands: &[Vec<u8>], in_flight: usize) -> Run {
    let h = t.host();
    let (tx, rx) = mpsc::sync_channel::<(Instant, Ack)>(in_flight);
    let collector = std::thread::spawn(move || {
        let mut latencies_us = Vec::new();
        for (t0, ack) in rx {
            ack();
            latencies_us.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        latencies_us
    });
    let start = Instant::now();
    for cmd in commands {
        let t0 = Instant::now();
        let receipt = h.submit_pipelined("dag", cmd).unwrap();
        let ack: Ack = Box::new(move || {
            receipt
                .blocking_recv()
                .expect("acknowledged")
                .expect("a valid insert");
        });
        tx.send((t0, ack)).unwrap();
    }
    drop(tx);
    let latencies_us = collector.join().unwrap();
    Run {
        certs: commands.len(),
        seconds: start.elapsed().as_secs_f64(),
        latencies_us,
    }
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `KEEL_BENCH_DURABILITY=relaxed` (diagnostic only: no fsync) isolates the
/// cost of the fsyncs from the rest.
fn relaxed() -> bool {
    std::env::var("KEEL_BENCH_DURABILITY").is_ok_and(|v| v == "relaxed")
}

fn deployed(n: usize) -> TestHost {
    let t = TestHost::with_config(|c| {
        if relaxed() {
            c.durability = keel_host::Durability::Relaxed;
        }
    });
    t.deploy(&keel_tests::component(plugins::DAG), Some(config(n)))
        .expect("deploying dag");
    t
}

fn metadata(t: &TestHost) -> Metadata {
    serde_json::from_value(t.query("dag", json!("metadata")).unwrap()).unwrap()
}

/// Runs the whole consistency check; returns (seconds, pages).
fn full_check(t: &TestHost) -> (f64, usize) {
    let start = Instant::now();
    let mut resume = None;
    let mut pages = 0;
    loop {
        let q = serde_json::to_value(Query::Check {
            resume,
            max_certificates: None,
        })
        .unwrap();
        let report: CheckReport = serde_json::from_value(t.query("dag", q).unwrap()).unwrap();
        pages += 1;
        assert!(report.ok, "consistency check failed: {report:?}");
        match report.resume {
            Some(r) => resume = Some(r),
            None => {
                assert!(report.complete);
                return (start.elapsed().as_secs_f64(), pages);
            }
        }
    }
}

fn main() {
    let certs = env("KEEL_BENCH_CERTS", 100_000);
    let in_flight = env("KEEL_BENCH_IN_FLIGHT", 4096);
    let restart_certs = env("KEEL_BENCH_RESTART_CERTS", 100_000);
    let committees: Vec<usize> = std::env::var("KEEL_BENCH_COMMITTEES")
        .unwrap_or_else(|_| "4,50".into())
        .split(',')
        .map(|n| {
            n.trim()
                .parse()
                .expect("KEEL_BENCH_COMMITTEES: sizes such as 4,50")
        })
        .collect();
    println!(
        "dag benchmark: {} cores, {in_flight} in flight, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if relaxed() {
            "RELAXED durability (no fsync: diagnostic only)"
        } else {
            "durable (fsync per group commit)"
        }
    );
    println!();
    println!(
        "{:<8} {:<52} {:>9} {:>10} {:>9} {:>9}",
        "n", "path", "certs", "certs/s", "p50 µs", "p99 µs"
    );
    let mut kept: Option<TestHost> = None;
    for n in committees {
        let count = if n <= 4 { certs } else { (certs / 4).max(1000) };
        let commands = workload(n, count);
        let (mut nat, native_meta) = native(n, &commands);
        let t = deployed(n);
        let mut durable = host(&t, &commands, in_flight);
        assert_eq!(metadata(&t), native_meta, "host and native states differ");
        let label = format!("{n} (q={})", quorum_for(n as u64));
        for (path, run) in [
            (
                "(1) host component, durable group commit, pipelined",
                &mut durable,
            ),
            (
                "(2) same crate native, SDK Harness (in memory, JSON)",
                &mut nat,
            ),
        ] {
            let (p50, p99) = (run.pct(0.5), run.pct(0.99));
            println!(
                "{label:<8} {path:<52} {:>9} {:>10.0} {:>9.1} {:>9.1}",
                run.certs,
                run.rate(),
                p50,
                p99
            );
        }
        println!(
            "{label:<8} {:<52} {:>9} {:>9.0}%",
            "ratio (1)/(2)",
            "",
            100.0 * durable.rate() / nat.rate()
        );
        if n == 4 && count >= restart_certs {
            kept = Some(t);
        }
    }

    // Recovery: a host whose DAG holds `restart_certs` certificates.
    let mut t = match kept {
        Some(t) => t,
        None => {
            let t = deployed(4);
            host(&t, &workload(4, restart_certs), in_flight);
            t
        }
    };
    let before = metadata(&t);
    println!();
    println!(
        "recovery, DAG of {} certificates (n = 4):",
        before.certificates
    );
    for crash in [true, false] {
        let start = Instant::now();
        if crash {
            t.crash_and_restart();
        } else {
            t.restart();
        }
        let reopened = start.elapsed().as_secs_f64();
        let after = metadata(&t);
        let serving = start.elapsed().as_secs_f64();
        assert_eq!(after, before, "the DAG changed across the restart");
        println!(
            "  {:<40} {:>8.1} ms to reopen, {:>8.1} ms until the plugin answers",
            if crash {
                "crash (no clean shutdown) → serving"
            } else {
                "clean shutdown → serving"
            },
            reopened * 1e3,
            serving * 1e3
        );
    }
    let (seconds, pages) = full_check(&t);
    println!(
        "  full consistency check: {:.2} s in {pages} pages ({:.0} certificates/s)",
        seconds,
        before.certificates as f64 / seconds
    );
}
