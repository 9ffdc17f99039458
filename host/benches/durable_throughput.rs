//! Durable throughput with group commit: the bench plugin's `put3`
//! command (three rows) through the host with immediate durability (one
//! fsync of the write-ahead log per batch, checkpoints by the default
//! policy), next to a native loop that commits every command to
//! redb on its own (three rows, one durable transaction per command: the
//! per-operation design Keel replaces), measured in the same run.
//!
//! Then the same command at 32 in flight (KEEL_BENCH_LOW_COMMANDS, default
//! 20 000), from a checkpointed state, for the acknowledgement latency a
//! lightly loaded client sees (its own checkpoints included),
//! and the host's resident memory at the end.
//!
//! Then state larger than memory: the same fill (random keys) on a host
//! whose resident budget (`[checkpoint] resident_bytes_max`) is half of
//! what the first run's state counts for, and updates of random existing
//! ids (KEEL_BENCH_UPDATE_COMMANDS, default 100 000) on both hosts: on the
//! small one most of them read an evicted row through from redb.
//!
//! The first phase also prints its rate by tenth of the run, so that a run
//! of millions of commands (KEEL_BENCH_COMMANDS) shows whether the rate
//! holds as the state grows.
//!
//! `cargo bench -p keel-host --bench durable_throughput`
//! (commands: KEEL_BENCH_COMMANDS, in flight: KEEL_BENCH_IN_FLIGHT;
//! KEEL_BENCH_RANDOM_KEYS=1 spreads the ids over the key space instead of
//! appending, so that state growth is measured on random keys;
//! KEEL_BENCH_READ_CACHE_MIB sets `[checkpoint] read_cache_bytes` for the
//! first phase, KEEL_BENCH_SNAPSHOTS=off turns its scheduled snapshots
//! off).

#[path = "stats.rs"]
mod stats;

use std::collections::VecDeque;
use std::time::Instant;

use keel_host::testkit::TestHost;
use redb::TableDefinition;
use stats::{Latencies, env_usize, per_second};

const A: TableDefinition<u64, u64> = TableDefinition::new("a");
const B: TableDefinition<u64, u64> = TableDefinition::new("b");
const C: TableDefinition<u64, &[u8]> = TableDefinition::new("c");

/// put3 bodies for ids `from..to` (spread over the key space if `random`).
fn bodies(from: usize, to: usize, random: bool) -> Vec<Vec<u8>> {
    (from..to)
        .map(|i| {
            let id = if random {
                (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 12
            } else {
                i as u64
            };
            format!("{{\"put3\":{{\"id\":{id}}}}}").into_bytes()
        })
        .collect()
}

/// put3 bodies re-writing `count` ids drawn (deterministically) from the
/// `filled` ids `bodies(0, filled, true)` wrote.
fn updates(count: usize, filled: usize) -> Vec<Vec<u8>> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    (0..count)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = x % filled as u64;
            let id = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 12;
            format!("{{\"put3\":{{\"id\":{id}}}}}").into_bytes()
        })
        .collect()
}

/// Submits `bodies` with at most `in_flight` waiting; returns the wall time
/// and each command's submit→ack latency.
fn pipelined(
    host: &keel_host::Host,
    bodies: &[Vec<u8>],
    in_flight: usize,
) -> (std::time::Duration, Vec<u64>) {
    let (elapsed, latencies, _) = pipelined_by_tenths(host, bodies, in_flight);
    (elapsed, latencies)
}

/// [`pipelined`], also returning the commands/s of each tenth of the run
/// (acknowledgements in order), to show whether the rate holds as the
/// state grows.
fn pipelined_by_tenths(
    host: &keel_host::Host,
    bodies: &[Vec<u8>],
    in_flight: usize,
) -> (std::time::Duration, Vec<u64>, Vec<f64>) {
    let mut latencies = Vec::with_capacity(bodies.len());
    let mut pending = VecDeque::with_capacity(in_flight);
    let tenth = (bodies.len() / 10).max(1);
    let mut tenths = Vec::new();
    let start = Instant::now();
    let mut last_tenth = start;
    let mut acked = |sent: Instant, latencies: &mut Vec<u64>| {
        latencies.push(sent.elapsed().as_nanos() as u64);
        if latencies.len() % tenth == 0 {
            tenths.push(tenth as f64 / last_tenth.elapsed().as_secs_f64());
            last_tenth = Instant::now();
        }
    };
    for body in bodies {
        pending.push_back((
            Instant::now(),
            host.submit_pipelined("bench", body).unwrap(),
        ));
        if pending.len() >= in_flight {
            let (sent, rx) = pending.pop_front().unwrap();
            rx.blocking_recv().unwrap().unwrap();
            acked(sent, &mut latencies);
        }
    }
    for (sent, rx) in pending {
        rx.blocking_recv().unwrap().unwrap();
        acked(sent, &mut latencies);
    }
    (start.elapsed(), latencies, tenths)
}

fn main() {
    let commands = env_usize("KEEL_BENCH_COMMANDS", 300_000);
    let in_flight = env_usize("KEEL_BENCH_IN_FLIGHT", 4096);
    let low_commands = env_usize("KEEL_BENCH_LOW_COMMANDS", 20_000);
    let baseline_commands = env_usize("KEEL_BENCH_BASELINE_COMMANDS", 3_000);
    let random = env_usize("KEEL_BENCH_RANDOM_KEYS", 0) == 1;
    let update_commands = env_usize("KEEL_BENCH_UPDATE_COMMANDS", 100_000);

    // Keel: pipelined clients, group commit, immediate durability.
    let read_cache_mib = env_usize("KEEL_BENCH_READ_CACHE_MIB", 0);
    let snapshots_off = std::env::var("KEEL_BENCH_SNAPSHOTS").is_ok_and(|v| v == "off");
    let t = TestHost::with_config(|c| {
        if read_cache_mib > 0 {
            c.checkpoint.read_cache_bytes = (read_cache_mib as u64) << 20;
        }
        if snapshots_off {
            c.snapshots = keel_host::snapshot::SnapshotPolicy::OFF;
        }
    });
    t.deploy(&std::fs::read(keel_plugins::BENCH).unwrap(), None)
        .unwrap();
    let host = t.host();
    let threads_before = keel_host::testkit::thread_cpu_seconds();
    let (keel_elapsed, latencies, tenths) =
        pipelined_by_tenths(host, &bodies(0, commands, random), in_flight);
    let threads = keel_host::testkit::thread_cpu_report(
        &threads_before,
        &keel_host::testkit::thread_cpu_seconds(),
    );
    let keel_rate = per_second(commands, keel_elapsed);
    let keel = Latencies::new(latencies);
    let checkpoints = host.db().checkpoints();
    // The 32-in-flight phase starts from a checkpointed state, not in the
    // middle of folding the first phase's backlog into redb: it measures
    // a light load's own checkpoints.
    host.db().checkpoint().unwrap();
    let (low_elapsed, low_latencies) =
        pipelined(host, &bodies(commands, commands + low_commands, random), 32);
    let low_rate = per_second(low_commands, low_elapsed);
    let low = Latencies::new(low_latencies);
    let rss = keel_host::testkit::process_rss_mib();
    let bench_id = host.plugin("bench").unwrap().id;
    let state_bytes = host.db().view(bench_id).unwrap().resident_bytes();
    drop(t);

    // State twice its resident budget: a fill of random keys, then
    // updates of random existing ids, each on a host that keeps every row
    // and on one whose budget holds half of them.
    let big = bodies(0, commands, true);
    let small_budget = state_bytes / 2;
    let mut twice = Vec::new();
    for budget in [None, Some(small_budget)] {
        let t = TestHost::with_config(|c| {
            if let Some(b) = budget {
                c.checkpoint.resident_bytes_max = b;
            }
        });
        t.deploy(&std::fs::read(keel_plugins::BENCH).unwrap(), None)
            .unwrap();
        let (fill, _) = pipelined(t.host(), &big, in_flight);
        let (update, lat) = pipelined(t.host(), &updates(update_commands, commands), 32);
        t.host().db().checkpoint().unwrap();
        let view = t
            .host()
            .db()
            .view(t.host().plugin("bench").unwrap().id)
            .unwrap();
        twice.push((
            budget,
            per_second(commands, fill),
            per_second(update_commands, update),
            Latencies::new(lat),
            t.host().db().evicted_rows(),
            view.resident_bytes(),
        ));
    }

    // Baseline: one durable redb transaction per command, same three rows.
    let dir = tempfile::tempdir().unwrap();
    let db = redb::Database::create(dir.path().join("baseline.redb")).unwrap();
    let mut base_lat = Vec::with_capacity(baseline_commands);
    let start = Instant::now();
    for i in 0..baseline_commands as u64 {
        let t0 = Instant::now();
        let txn = db.begin_write().unwrap();
        {
            txn.open_table(A).unwrap().insert(i, i).unwrap();
            txn.open_table(B)
                .unwrap()
                .insert(i.wrapping_mul(0x9E37_79B9_7F4A_7C15), i)
                .unwrap();
            txn.open_table(C)
                .unwrap()
                .insert(i, [7u8; 32].as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
        base_lat.push(t0.elapsed().as_nanos() as u64);
    }
    let base_rate = per_second(baseline_commands, start.elapsed());
    let base = Latencies::new(base_lat);

    println!(
        "durable put3 (3 rows/command), {commands} commands, {in_flight} in flight (machine: {} cores)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "{:<48} {:>12} {:>10} {:>10}",
        "", "commands/s", "p50 µs", "p99 µs"
    );
    println!(
        "{:<48} {:>12.0} {:>10.1} {:>10.1}",
        "keel: component, group commit, log fsync/batch",
        keel_rate,
        keel.p50_us(),
        keel.p99_us()
    );
    println!(
        "{:<48} {:>12.0} {:>10.1} {:>10.1}",
        "keel: same, 32 in flight",
        low_rate,
        low.p50_us(),
        low.p99_us()
    );
    println!(
        "{:<48} {:>12.0} {:>10.1} {:>10.1}",
        "native: one durable redb commit per command",
        base_rate,
        base.p50_us(),
        base.p99_us()
    );
    println!(
        "keel: {checkpoints} checkpoints (durable redb commits) during the run, {:.1} s",
        keel_elapsed.as_secs_f64()
    );
    println!(
        "keel: commands/s by tenth of the run (state growing): {}",
        tenths
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("keel: CPU by thread during the run: {threads}");
    println!(
        "ratio keel / per-command commit: {:.1}x (goal >= 100x)",
        keel_rate / base_rate
    );
    println!(
        "keel: {} keys resident, process RSS {rss:.0} MiB at the end",
        3 * (commands + low_commands)
    );
    println!(
        "state larger than its resident budget: {} rows (random keys), {:.0} MiB counted resident when all fit",
        3 * commands,
        state_bytes as f64 / (1 << 20) as f64
    );
    println!(
        "{:<48} {:>12} {:>12} {:>10} {:>10} {:>12} {:>12}",
        "",
        "fill cmd/s",
        "update cmd/s",
        "upd p50 µs",
        "upd p99 µs",
        "evicted rows",
        "resident MiB"
    );
    for (budget, fill, update, lat, evicted, resident) in &twice {
        let name = match budget {
            None => "keel: every row resident".to_owned(),
            Some(b) => format!(
                "keel: budget {:.0} MiB (state = 2x budget)",
                *b as f64 / (1 << 20) as f64
            ),
        };
        println!(
            "{name:<48} {fill:>12.0} {update:>12.0} {:>10.1} {:>10.1} {evicted:>12} {:>12.1}",
            lat.p50_us(),
            lat.p99_us(),
            *resident as f64 / (1 << 20) as f64
        );
    }
}
