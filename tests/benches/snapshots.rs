//! Benchmark of snapshots and the journal's lifecycle, in one run:
//!
//! 1. a spot book with `KEEL_BENCH_ORDERS` (default 100 000) resting
//!    orders, and a bench plugin with `KEEL_BENCH_KEYS` (default 1 000 000)
//!    keys: snapshot time and file size, restore time (to that snapshot),
//!    export and import time;
//! 2. put3 throughput and acknowledgement latency (p50/p99/max, 4096 in
//!    flight) with a snapshot every second against snapshots off;
//! 3. disk use over a run of `KEEL_BENCH_SECONDS` (default 20) seconds of
//!    put3 with a snapshot every second, 3 kept, archiving on and 8
//!    archive segments kept: database file and whole data directory, each
//!    second (goal: a plateau);
//! 4. `keel recover --mode hybrid` time after a SIGKILL-like stop as a
//!    function of how much journal follows the newest snapshot.
//!
//! `cargo bench -p keel-tests --bench snapshots`. Output lines are stable
//! (`name: value unit`) so runs can be compared.

use std::path::Path;
use std::time::{Duration, Instant};

use keel_host::restore::RestoreTarget;
use keel_host::snapshot::SnapshotPolicy;
use keel_plugin_spot::api::{Command, OrderKind, Place, Side};
use keel_tests::bench::{env, fund_spot_market, pipelined};
use keel_tests::{TestHost, component, plugins};
use serde_json::json;

fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn no_snapshots() -> TestHost {
    TestHost::with_config(|c| c.snapshots = SnapshotPolicy::OFF)
}

/// Snapshot, restore, export and import of `plugin` as it stands.
fn state_costs(label: &str, t: &TestHost, plugin: &str, wasm: &str) {
    let started = Instant::now();
    let snap = t.host().snapshot(plugin).unwrap();
    println!("{label} snapshot: {:.1} ms", ms(started.elapsed()));
    println!(
        "{label} snapshot size: {} bytes ({} rows, {:.1} bytes/row)",
        snap.bytes,
        snap.rows,
        snap.bytes as f64 / snap.rows.max(1) as f64
    );
    let started = Instant::now();
    let report = t
        .host()
        .restore(plugin, RestoreTarget::Snapshot(snap.sequence))
        .unwrap();
    println!(
        "{label} restore (includes the undo snapshot): {:.1} ms (reported {} ms)",
        ms(started.elapsed()),
        report.millis
    );
    let mut file = Vec::new();
    let started = Instant::now();
    let summary = t.host().export(plugin, &mut file, &mut |_, _| {}).unwrap();
    println!(
        "{label} export: {:.1} ms, {} bytes, {} of {} rows decoded",
        ms(started.elapsed()),
        file.len(),
        summary.decoded_rows,
        summary.rows
    );
    let to = no_snapshots();
    to.host().store_module(&component(wasm)).unwrap();
    let started = Instant::now();
    to.host().import(&file[..], false, &mut |_, _| {}).unwrap();
    println!("{label} import: {:.1} ms", ms(started.elapsed()));
    assert_eq!(to.state_hash(plugin), t.state_hash(plugin));
}

fn spot_book(orders: usize) {
    let t = no_snapshots();
    t.deploy_file(plugins::SPOT);
    let users = 1000u64;
    fund_spot_market(t.host(), users);
    let to_bytes = |c: &Command| serde_json::to_vec(c).unwrap();
    // Buys below 1 000 000, sells above: nothing crosses, everything rests.
    let book: Vec<Vec<u8>> = (0..orders as u64)
        .map(|i| {
            let side = if i % 2 == 0 { Side::Buy } else { Side::Sell };
            let away = 1 + (i / 2) % 50_000;
            let price = match side {
                Side::Buy => 1_000_000 - away,
                Side::Sell => 1_000_000 + away,
            };
            to_bytes(&Command::Place(Place {
                user: 1 + i % users,
                market: 1,
                side,
                kind: OrderKind::Limit,
                price: Some(price),
                qty: 1 + i % 7,
            }))
        })
        .collect();
    pipelined(t.host(), "spot", &book, 4096);
    state_costs(
        &format!("spot {orders} resting orders"),
        &t,
        "spot",
        plugins::SPOT,
    );
}

fn put3(from: usize, to: usize) -> Vec<Vec<u8>> {
    (from..to)
        .map(|id| json!({"put3": {"id": id}}).to_string().into_bytes())
        .collect()
}

fn bench_keys(keys: usize) {
    let t = no_snapshots();
    t.deploy_file(plugins::BENCH);
    // put3 writes 3 rows per command.
    pipelined(t.host(), "bench", &put3(0, keys / 3), 4096);
    state_costs(&format!("bench {keys} keys"), &t, "bench", plugins::BENCH);
}

fn throughput_with_and_without_snapshots(commands: usize) {
    for (label, every_ms) in [("off", 0u64), ("every 1 s", 1000)] {
        let t = TestHost::with_config(|c| {
            c.snapshots = SnapshotPolicy::OFF;
            c.snapshots.interval_ms = every_ms;
            c.snapshots.keep_newest = 3;
        });
        t.deploy_file(plugins::BENCH);
        let (secs, mut lat, _) = pipelined(t.host(), "bench", &put3(0, commands), 4096);
        lat.sort_by(f64::total_cmp);
        println!(
            "put3 snapshots {label}: {:.0} commands/s, ack p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, snapshots {}",
            commands as f64 / secs,
            percentile(&lat, 0.5) / 1e3,
            percentile(&lat, 0.99) / 1e3,
            lat.last().copied().unwrap_or(0.0) / 1e3,
            t.host().snapshot_store().list("bench").unwrap().len()
        );
    }
}

fn disk_plateau(seconds: u64) {
    let t = TestHost::with_config(|c| {
        c.snapshots.interval_ms = 1000;
        c.snapshots.every_commands = 0;
        c.snapshots.keep_newest = 3;
        c.archive.keep_segments_max = 8;
    });
    t.deploy_file(plugins::BENCH);
    let data = t.data_dir().to_path_buf();
    let started = Instant::now();
    let mut id = 0;
    let mut second = 0;
    println!(
        "disk over time (put3 over 100 000 ids, snapshot every 1 s, 3 kept, 8 archive segments kept):"
    );
    while started.elapsed() < Duration::from_secs(seconds) {
        // Updates of 100 000 ids (300 000 rows): the state stops growing,
        // the journal does not.
        let batch: Vec<Vec<u8>> = (0..20_000)
            .map(|i| {
                json!({"put3": {"id": (id + i) % 100_000}})
                    .to_string()
                    .into_bytes()
            })
            .collect();
        id += 20_000;
        pipelined(t.host(), "bench", &batch, 4096);
        let now = started.elapsed().as_secs();
        if now > second {
            second = now;
            println!(
                "  t={second:>3} s commands={id:>9} keel.redb={:>6.1} MiB data_dir={:>6.1} MiB archive={:>6.1} MiB",
                std::fs::metadata(data.join("keel.redb")).map_or(0, |m| m.len()) as f64 / 1048576.0,
                dir_bytes(&data) as f64 / 1048576.0,
                dir_bytes(&data.join("archive")) as f64 / 1048576.0,
            );
        }
    }
}

fn recovery_time(journal_after: &[usize]) {
    for &after in journal_after {
        let mut t = no_snapshots();
        t.deploy_file(plugins::BENCH);
        pipelined(t.host(), "bench", &put3(0, 50_000), 4096);
        t.host().snapshot("bench").unwrap();
        pipelined(t.host(), "bench", &put3(50_000, 50_000 + after), 4096);
        t.stop();
        let started = Instant::now();
        let report = keel_host::recover::recover(
            t.data_dir(),
            &std::env::temp_dir().join("keel-test-component-cache"),
            keel_host::recover::RecoverMode::Hybrid,
            &mut |_, _, _| {},
        )
        .unwrap();
        assert!(report.ok, "{report:?}");
        println!(
            "recover hybrid, {after:>6} journal entries after the newest snapshot: {:.0} ms",
            ms(started.elapsed())
        );
    }
}

fn main() {
    let orders = env("KEEL_BENCH_ORDERS", 100_000);
    let keys = env("KEEL_BENCH_KEYS", 1_000_000);
    let commands = env("KEEL_BENCH_COMMANDS", 200_000);
    let seconds = env("KEEL_BENCH_SECONDS", 20) as u64;
    spot_book(orders);
    bench_keys(keys);
    throughput_with_and_without_snapshots(commands);
    disk_plateau(seconds);
    recovery_time(&[0, 10_000, 50_000]);
}
