//! Benchmark of the auction plugin: the same command stream through the host
//! (durable, group commit, pipelined) and natively in memory (Harness), in
//! the same run, plus a per-auction durable redb baseline (the engine this
//! replaces kept its state in memory and saved it to an embedded store after
//! each auction).
//!
//! `cargo bench -p keel-tests --bench auction`; size with `KEEL_BENCH_COMMANDS`
//! (default 20 000), in-flight window with `KEEL_BENCH_IN_FLIGHT` (4096). With
//! thousands in flight the acknowledgement latency is mostly queueing (the
//! window divided by the rate), so the stream runs a second time through a
//! fresh host with a small window, `KEEL_BENCH_LOW_IN_FLIGHT` (64), to show
//! the latency of a moderately loaded host.
//!
//! Mix (from a fixed seed, `keel_plugin_auction::workload`): a market of 50
//! providers (capacity 100..1000 units, 1..4 precisions, 1..3 of 8 lanes) and
//! 20 routes, then a stream that keeps ~200 jobs open: ~52 % `run_auction`
//! (4 precisions, 1..16 units, max price 30..200 per unit, priority 0..9;
//! ~92 % match), ~42 % `complete_job` and ~5 % `cancel_job` of open jobs,
//! ~1 % price updates, ~0.5 % refused duplicate jobs. Every auction scans all
//! 50 providers and 20 routes inside the component.

use std::collections::BTreeMap;
use std::time::Instant;

use keel_guest::testing::{Dump, Harness};
use keel_plugin_auction::workload::{self, Shape};
use keel_plugin_auction::{Auction, Command, Config};
use keel_tests::bench::{env, pipelined, submit_all, timed};
use keel_tests::{TestHost, plugins};
use serde_json::json;

type Tables = BTreeMap<(String, Vec<u8>), Vec<u8>>;

/// Waits for one command's acknowledgement; false when it was refused.

struct Run {
    seconds: f64,
    latencies_us: Vec<f64>,
    refused: usize,
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

fn kind(cmd: &Command) -> &'static str {
    match cmd {
        Command::RegisterProvider { .. } => "register_provider",
        Command::UpdateProvider { .. } => "update_provider",
        Command::DeactivateProvider { .. } => "deactivate_provider",
        Command::ActivateProvider { .. } => "activate_provider",
        Command::AddRoute { .. } => "add_route",
        Command::UpdateRoute { .. } => "update_route",
        Command::RunAuction { .. } => "run_auction",
        Command::CompleteJob { .. } => "complete_job",
        Command::CancelJob { .. } => "cancel_job",
    }
}

/// Mean native µs per command of each kind (same run as the native row).
type PerKind = BTreeMap<&'static str, (f64, usize)>;

fn native(
    market: &[Vec<u8>],
    commands: &[Vec<u8>],
    kinds: &[&'static str],
) -> (Run, Dump, serde_json::Value, PerKind) {
    let mut h = Harness::<Auction>::with_config(Config::default()).unwrap();
    for cmd in market {
        h.handle_json(std::str::from_utf8(cmd).unwrap()).unwrap();
    }
    let (seconds, latencies_us, refused) = timed(commands, |text| h.handle_json(text).is_ok());
    let stats = h.query_json(r#""stats""#).unwrap();
    let mut per_kind = PerKind::new();
    for (kind, us) in kinds.iter().zip(&latencies_us) {
        let e = per_kind.entry(kind).or_default();
        e.0 += us;
        e.1 += 1;
    }
    (
        Run {
            seconds,
            latencies_us,
            refused,
        },
        h.dump(),
        stats,
        per_kind,
    )
}

fn host(market: &[Vec<u8>], commands: &[Vec<u8>], in_flight: usize) -> (Run, TestHost) {
    let t = TestHost::new();
    t.deploy_file(plugins::AUCTION);
    submit_all(t.host(), "auction", market);
    let (seconds, latencies_us, refused) = pipelined(t.host(), "auction", commands, in_flight);
    keel_tests::bench::record_fixture(t.host(), "auction", 1);
    (
        Run {
            seconds,
            latencies_us,
            refused,
        },
        t,
    )
}

/// The replaced engine's pattern: after each auction, one durable redb
/// commit saving what the auction changed (the provider's utilization, the
/// job and the statistics — three rows; it saved more than that).
fn redb_per_auction(auctions: usize) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let db = redb::Database::create(dir.path().join("baseline.redb")).unwrap();
    const PROVIDERS: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("providers");
    const JOBS: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("jobs");
    const STATS: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("stats");
    let (provider, job, stats) = ([7u8; 80], [9u8; 96], [3u8; 160]);
    let mut latencies_us = Vec::with_capacity(auctions);
    let start = Instant::now();
    for i in 0..auctions {
        let t0 = Instant::now();
        let tx = db.begin_write().unwrap();
        {
            let key = format!("prov-{:03}", i % 50);
            tx.open_table(PROVIDERS)
                .unwrap()
                .insert(key.as_bytes(), provider.as_slice())
                .unwrap();
            let key = format!("job-{i:08}");
            tx.open_table(JOBS)
                .unwrap()
                .insert(key.as_bytes(), job.as_slice())
                .unwrap();
            tx.open_table(STATS)
                .unwrap()
                .insert(b"0".as_slice(), stats.as_slice())
                .unwrap();
        }
        tx.commit().unwrap();
        latencies_us.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    Run {
        seconds: start.elapsed().as_secs_f64(),
        latencies_us,
        refused: 0,
    }
}

fn flatten(dump: Dump) -> Tables {
    dump.into_iter()
        .flat_map(|(table, rows)| rows.into_iter().map(move |(k, v)| ((table.clone(), k), v)))
        .collect()
}

/// Every table but `jobs`, whose rows hold host-assigned sequence numbers and timestamps.
fn without_jobs(tables: Tables) -> Tables {
    tables
        .into_iter()
        .filter(|((table, _), _)| table != "jobs")
        .collect()
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let n = env("KEEL_BENCH_COMMANDS", 20_000);
    let in_flight = env("KEEL_BENCH_IN_FLIGHT", 4096);
    let low_in_flight = env("KEEL_BENCH_LOW_IN_FLIGHT", 64);
    let shape = Shape::default();
    let all = workload::stream(0xA0C7, shape, Config::default(), n);
    let market_len = shape.providers + shape.routes;
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    let kind_of: Vec<&'static str> = all[market_len..].iter().map(kind).collect();
    for k in &kind_of {
        *kinds.entry(k).or_default() += 1;
    }
    let bytes: Vec<Vec<u8>> = all.iter().map(|c| serde_json::to_vec(c).unwrap()).collect();
    let (market, commands) = bytes.split_at(market_len);
    println!(
        "auction benchmark: {n} commands after a market of {} providers and {} routes over {} lanes, {} cores, {in_flight} in flight",
        shape.providers,
        shape.routes,
        shape.lanes,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("mix: {kinds:?}");

    let (mut nat, dump, native_stats, per_kind) = native(market, commands, &kind_of);
    let (mut durable, t) = host(market, commands, in_flight);
    let host_stats = t.query("auction", json!("stats")).unwrap();
    assert_eq!(
        host_stats, native_stats,
        "host and native statistics differ"
    );
    assert!(
        without_jobs(t.tables("auction")) == without_jobs(flatten(dump)),
        "host and native states differ"
    );
    assert_eq!(nat.refused, durable.refused);
    drop(t);
    let (mut moderate, t) = host(market, commands, low_in_flight);
    assert_eq!(t.query("auction", json!("stats")).unwrap(), native_stats);
    assert_eq!(moderate.refused, nat.refused);
    drop(t);
    let mut baseline = redb_per_auction(
        kinds
            .get("run_auction")
            .copied()
            .unwrap_or(0)
            .clamp(1, 2_000),
    );

    println!();
    println!(
        "{:<48} {:>12} {:>10} {:>10}",
        "path", "commands/s", "p50 µs", "p99 µs"
    );
    let moderate_name = format!("host, durable, {low_in_flight} in flight");
    let rows: [(&str, &mut Run); 4] = [
        ("host, durable (fsync per group commit)", &mut durable),
        (&moderate_name, &mut moderate),
        ("native in-memory (Harness, JSON in/out)", &mut nat),
        ("baseline: redb durable commit per auction", &mut baseline),
    ];
    let mut rates = Vec::new();
    for (name, run) in rows {
        let (p50, p99) = (run.pct(0.50), run.pct(0.99));
        println!("{name:<48} {:>12.0} {p50:>10.1} {p99:>10.1}", run.rate());
        rates.push(run.rate());
    }
    println!();
    println!(
        "native / host throughput ratio: {:.1}×",
        rates[2] / rates[0]
    );
    println!(
        "host / per-auction redb baseline: {:.1}×",
        rates[0] / rates[3]
    );
    let per_kind: Vec<String> = per_kind
        .iter()
        .map(|(k, (total, n))| format!("{k} {:.1} µs", total / *n as f64))
        .collect();
    println!("native mean per command: {}", per_kind.join(", "));
    println!(
        "auctions {} (matched {}, no match {}), completed {}, cancelled {}, volume {} units / {} ticks",
        host_stats["auctions"],
        host_stats["matches"],
        host_stats["no_matches"],
        host_stats["completed"],
        host_stats["cancelled"],
        host_stats["volume_units"],
        host_stats["volume_value"],
    );
    println!(
        "refused commands (same in both paths): {} of {n}; final states identical (statistics and every table but job timestamps)",
        nat.refused
    );
}
