//! Benchmark of the dag plugin: certificate inserts for an n = 4 and an
//! n = 50 committee, each measured through the host and natively in the
//! same run, plus recovery time.
//!
//! Paths, for each committee:
//! - host: the component in a `TestHost` — durable (fsync per group commit),
//!   pipelined (`KEEL_BENCH_IN_FLIGHT`, default 4096, certificates in
//!   flight): certificates/s, p50/p99 submit→acknowledgement latency per
//!   command;
//! - native: the same plugin crate over the SDK's in-memory store (Harness,
//!   JSON in and out, no persistence); the ratio host / native.
//!
//! Each in two command shapes: `insert` (one certificate per command) and
//! `insert_many` (one round — n certificates — per command, or
//! `KEEL_BENCH_CERTS_PER_COMMAND`), which amortises the host's fixed cost
//! per command (journal entry, call, commit bookkeeping) and reads parents
//! shared by a round once.
//!
//! Every certificate carries a quorum of parents (floor(2n/3) + 1: 3 of 4,
//! 34 of 50, rotating which authors of the round below are left out), a
//! 64-byte signature and its digest, which the plugin recomputes and checks.
//!
//! Then the restart of a host whose DAG holds `KEEL_BENCH_RESTART_CERTS`
//! certificates (default 100 000, n = 4): time from a crash (once the
//! crashed host is gone, as a killed process is at once; and from a
//! clean shutdown) until the plugin answers a query again, and the time of
//! a full consistency check of that DAG.
//!
//! `cargo bench -p keel-tests --bench dag`; size with `KEEL_BENCH_CERTS`
//! (default 100 000 for n = 4; n = 50 runs a quarter of it);
//! `KEEL_BENCH_COMMITTEES=4,50`; `KEEL_BENCH_DURABILITY=relaxed` is a
//! diagnostic (no fsync) that isolates the cost of the fsyncs.

use std::time::Instant;

use keel_guest::testing::Harness;
use keel_plugin_dag::api::{CheckReport, Metadata};
use keel_plugin_dag::{
    Bytes, Command, Dag, Digest, DigestList, NewCertificate, Query, Response, certificate_digest,
    quorum_for,
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

/// `count` certificates growing full rounds of an `n` committee.
fn certificates(n: usize, count: usize) -> Vec<NewCertificate> {
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
            out.push(NewCertificate {
                round,
                author: author.clone(),
                parents: DigestList(parents),
                batches: DigestList::default(),
                signature: Bytes(digest.0.iter().chain(&digest.0).copied().collect()),
                digest: Some(digest),
            });
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

/// The certificates as JSON commands, `per_command` certificates each
/// (`insert` when 1, `insert_many` otherwise).
fn commands(certs: &[NewCertificate], per_command: usize) -> Vec<Vec<u8>> {
    certs
        .chunks(per_command)
        .map(|chunk| {
            let command = if per_command == 1 {
                Command::Insert(chunk[0].clone())
            } else {
                Command::InsertMany {
                    certificates: chunk.to_vec(),
                }
            };
            serde_json::to_vec(&command).unwrap()
        })
        .collect()
}

/// Panics unless every certificate of the answer was inserted.
fn all_inserted(answer: &[u8]) {
    match serde_json::from_slice(answer).expect("a dag answer") {
        Response::Inserted(_) => {}
        Response::InsertedMany(report) => {
            assert!(
                report.refused.is_empty() && report.equivocations.is_empty(),
                "refused: {report:?}"
            );
        }
        other => panic!("unexpected answer {other:?}"),
    }
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

fn native(n: usize, certs: usize, commands: &[Vec<u8>]) -> (Run, Metadata) {
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
        let answer = h.handle_json(text).expect("a valid insert");
        latencies_us.push(t0.elapsed().as_secs_f64() * 1e6);
        all_inserted(&serde_json::to_vec(&answer).unwrap());
    }
    let seconds = start.elapsed().as_secs_f64();
    let meta = serde_json::from_value(h.query_json(r#""metadata""#).unwrap()).unwrap();
    (
        Run {
            certs,
            seconds,
            latencies_us,
        },
        meta,
    )
}

fn host(t: &TestHost, certs: usize, commands: &[Vec<u8>], in_flight: usize) -> Run {
    let (seconds, latencies_us, refused) =
        keel_tests::bench::pipelined_checked(t.host(), "dag", commands, in_flight, all_inserted);
    assert_eq!(refused, 0, "every insert is valid");
    keel_tests::bench::record_fixture(t.host(), "dag", 1);
    Run {
        certs,
        seconds,
        latencies_us,
    }
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

use keel_tests::bench::env;

fn main() {
    let certs = env("KEEL_BENCH_CERTS", 100_000);
    assert!(certs > 0, "KEEL_BENCH_CERTS must be at least 1");
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
        "dag benchmark: {} cores, {in_flight} certificates in flight, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if relaxed() {
            "RELAXED durability (no fsync: diagnostic only)"
        } else {
            "durable (fsync per group commit)"
        }
    );
    println!();
    println!(
        "{:<10} {:<44} {:>8} {:>10} {:>11} {:>11} {:>7}",
        "committee", "path", "certs", "certs/s", "p50 µs/cmd", "p99 µs/cmd", "host/native"
    );
    let mut kept: Option<TestHost> = None;
    for n in committees {
        let count = if n <= 4 { certs } else { (certs / 4).max(1000) };
        let certs = certificates(n, count);
        let per_command = env("KEEL_BENCH_CERTS_PER_COMMAND", n).max(1);
        let label = format!("n={n} q={}", quorum_for(n as u64));
        for (shape, per) in [
            ("insert".to_owned(), 1),
            (format!("insert_many ({per_command}/cmd)"), per_command),
        ] {
            let commands = commands(&certs, per);
            let (mut nat, native_meta) = native(n, count, &commands);
            let t = deployed(n);
            // The same number of certificates in flight for both shapes.
            let mut durable = host(&t, count, &commands, (in_flight / per).max(16));
            assert_eq!(metadata(&t), native_meta, "host and native states differ");
            let ratio = 100.0 * durable.rate() / nat.rate();
            for (path, run) in [
                (format!("host {shape}"), &mut durable),
                (format!("native {shape}"), &mut nat),
            ] {
                let (p50, p99) = (run.pct(0.5), run.pct(0.99));
                let ratio = if path.starts_with("host") {
                    format!("{ratio:.0}%")
                } else {
                    String::new()
                };
                println!(
                    "{label:<10} {path:<44} {:>8} {:>10.0} {:>11.1} {:>11.1} {ratio:>7}",
                    run.certs,
                    run.rate(),
                    p50,
                    p99
                );
            }
            if n == 4 && per > 1 && count >= restart_certs {
                kept = Some(t);
            }
        }
    }

    // Recovery: a host whose DAG holds `restart_certs` certificates.
    let mut t = match kept {
        Some(t) => t,
        None => {
            let t = deployed(4);
            let certs = certificates(4, restart_certs);
            host(&t, restart_certs, &commands(&certs, 4), in_flight);
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
        // From the moment the old host is gone (a killed process does not
        // wait for anything; the in-process crash waits for its threads).
        if crash {
            t.crash();
        } else {
            t.stop();
        }
        let start = Instant::now();
        t.start();
        let reopened = start.elapsed().as_secs_f64();
        let recovered = t.host().status().recovered_batches;
        let after = metadata(&t);
        let serving = start.elapsed().as_secs_f64();
        assert_eq!(after, before, "the DAG changed across the restart");
        println!(
            "  {:<36} {:>8.1} ms to reopen, {:>8.1} ms until the plugin answers",
            if crash {
                "crash (no clean shutdown) → serving"
            } else {
                "clean shutdown → serving"
            },
            reopened * 1e3,
            serving * 1e3
        );
        if crash {
            println!("    (group commits brought back from the write-ahead log: {recovered})");
        }
    }
    let (seconds, pages) = full_check(&t);
    println!(
        "  full consistency check: {:.2} s in {pages} pages ({:.0} certificates/s)",
        seconds,
        before.certificates as f64 / seconds
    );
}
