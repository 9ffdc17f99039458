//! Benchmark of the perp plugin: the same command stream through the host
//! (durable, group commit, pipelined) and natively in memory (Harness), in
//! the same run, plus a per-write durable redb baseline (the engine this
//! replaces wrote each position to its store one at a time).
//!
//! `cargo bench -p keel-tests --bench perp`; size with `KEEL_BENCH_COMMANDS`
//! (default 50 000), in-flight window with `KEEL_BENCH_IN_FLIGHT` (4096). A
//! second host run keeps only `KEEL_BENCH_LOW_IN_FLIGHT` (32) commands in
//! flight: with 4096 queued, ack latency is mostly queueing (Little's law),
//! so the low-window run shows the latency of a lightly loaded host.
//!
//! Mix (per command, from a fixed seed): ~70 % position changes against a
//! model of open positions (open, increase, reduce, close — about 30/25/25/20
//! when a position exists), ~25 % mark updates (±0.5 % steps), ~3 % deposits,
//! ~1 % withdrawals, ~0.5 % funding rounds; 200 users × 4 markets.

use std::collections::BTreeMap;
use std::time::Instant;

use keel_guest::testing::{Dump, Harness};
use keel_plugin_perp::Perp;
use keel_tests::bench::{Rng, env, pipelined, submit_all, timed};
use keel_tests::{TestHost, plugins};
use serde_json::{Value, json};

const USERS: usize = 200;
const MARKETS: [(&str, i64); 4] = [("BTC", 50_000), ("ETH", 3_000), ("SOL", 150), ("DOGE", 10)];

fn setup() -> Vec<Value> {
    let mut out: Vec<Value> = MARKETS
        .iter()
        .map(|(m, p)| {
            json!({"create_market": {"market": m, "mark_price": p, "initial_margin_bps": 1000, "maintenance_margin_bps": 500}})
        })
        .collect();
    for u in 0..USERS {
        out.push(json!({"deposit": {"user": format!("u{u}"), "amount": 10_000_000_000i64}}));
    }
    out
}

/// The measured command stream, and how many of each kind it holds.
fn workload(n: usize) -> (Vec<Vec<u8>>, BTreeMap<&'static str, usize>) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut sizes: BTreeMap<(usize, usize), i64> = BTreeMap::new();
    let mut marks: Vec<i64> = MARKETS.iter().map(|m| m.1).collect();
    let mut kinds = BTreeMap::new();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let roll = rng.below(1000);
        let (kind, cmd) = if roll < 250 {
            let m = rng.below(MARKETS.len() as u64) as usize;
            let step = (marks[m] / 200).max(1);
            marks[m] = (marks[m] + (rng.below(3) as i64 - 1) * step).max(1);
            (
                "set_mark",
                json!({"set_mark": {"market": MARKETS[m].0, "price": marks[m]}}),
            )
        } else if roll < 280 {
            let u = rng.below(USERS as u64);
            (
                "deposit",
                json!({"deposit": {"user": format!("u{u}"), "amount": 1 + rng.below(100_000)}}),
            )
        } else if roll < 290 {
            let u = rng.below(USERS as u64);
            (
                "withdraw",
                json!({"withdraw": {"user": format!("u{u}"), "amount": 1 + rng.below(50_000)}}),
            )
        } else if roll < 295 {
            let m = rng.below(MARKETS.len() as u64) as usize;
            let rate = rng.below(201) as i64 - 100;
            (
                "apply_funding",
                json!({"apply_funding": {"market": MARKETS[m].0, "rate_ppm": rate}}),
            )
        } else {
            let u = rng.below(USERS as u64) as usize;
            let m = rng.below(MARKETS.len() as u64) as usize;
            let (user, market) = (format!("u{u}"), MARKETS[m].0);
            let size = sizes.get(&(u, m)).copied().unwrap_or(0);
            let amount = 1 + rng.below(20) as i64;
            if size == 0 {
                let side = if rng.below(2) == 0 { 1 } else { -1 };
                sizes.insert((u, m), side * amount);
                (
                    "open",
                    json!({"open": {"user": user, "market": market, "size": side * amount}}),
                )
            } else {
                let r = rng.below(100);
                if r < 30 {
                    sizes.insert((u, m), size + size.signum() * amount);
                    (
                        "increase",
                        json!({"increase": {"user": user, "market": market, "amount": amount}}),
                    )
                } else if r < 55 && size.abs() > 1 {
                    let a = 1 + (amount - 1) % (size.abs() - 1);
                    sizes.insert((u, m), size - size.signum() * a);
                    (
                        "reduce",
                        json!({"reduce": {"user": user, "market": market, "amount": a}}),
                    )
                } else if r < 80 {
                    sizes.insert((u, m), 0);
                    ("close", json!({"close": {"user": user, "market": market}}))
                } else {
                    // A signed trade, sometimes a flip.
                    let delta = -size.signum() * (1 + rng.below(2 * size.unsigned_abs()) as i64);
                    sizes.insert((u, m), size + delta);
                    (
                        "trade",
                        json!({"trade": {"user": user, "market": market, "size": delta}}),
                    )
                }
            }
        };
        *kinds.entry(kind).or_insert(0) += 1;
        out.push(cmd.to_string().into_bytes());
    }
    (out, kinds)
}

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

fn native(commands: &[Vec<u8>]) -> (Run, Dump) {
    let mut h = Harness::<Perp>::new();
    for cmd in setup() {
        h.handle_json(&cmd.to_string()).unwrap();
    }
    let (seconds, latencies_us, refused) = timed(commands, |text| h.handle_json(text).is_ok());
    (
        Run {
            seconds,
            latencies_us,
            refused,
        },
        h.dump(),
    )
}

fn host(commands: &[Vec<u8>], in_flight: usize) -> (Run, TestHost) {
    let t = TestHost::new();
    t.deploy_file(plugins::PERP);
    let setup: Vec<Vec<u8>> = setup().iter().map(|c| c.to_string().into_bytes()).collect();
    submit_all(t.host(), "perp", &setup);
    let (seconds, latencies_us, refused) = pipelined(t.host(), "perp", commands, in_flight);
    keel_tests::bench::record_fixture(t.host(), "perp", 1);
    (
        Run {
            seconds,
            latencies_us,
            refused,
        },
        t,
    )
}

/// One durable redb commit per position write: the old engine's pattern.
fn redb_per_write(writes: usize) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let db = redb::Database::create(dir.path().join("baseline.redb")).unwrap();
    const TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("positions");
    let value = [7u8; 48];
    let mut latencies_us = Vec::with_capacity(writes);
    let start = Instant::now();
    for i in 0..writes {
        let t0 = Instant::now();
        let tx = db.begin_write().unwrap();
        {
            let mut table = tx.open_table(TABLE).unwrap();
            let key = format!("u{}/BTC", i % USERS);
            table.insert(key.as_bytes(), value.as_slice()).unwrap();
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

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let n = env("KEEL_BENCH_COMMANDS", 50_000);
    let in_flight = env("KEEL_BENCH_IN_FLIGHT", 4096);
    let low_in_flight = env("KEEL_BENCH_LOW_IN_FLIGHT", 32);
    let (commands, kinds) = workload(n);
    println!(
        "perp benchmark: {n} commands, {USERS} users × {} markets, {} cores, {in_flight} in flight",
        MARKETS.len(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("mix: {kinds:?}");

    let (mut nat, dump) = native(&commands);
    let (mut durable, t) = host(&commands, in_flight);
    let flattened: BTreeMap<(String, Vec<u8>), Vec<u8>> = dump
        .into_iter()
        .flat_map(|(table, rows)| rows.into_iter().map(move |(k, v)| ((table.clone(), k), v)))
        .collect();
    assert!(
        t.tables("perp") == flattened,
        "host and native states differ"
    );
    assert_eq!(nat.refused, durable.refused);
    let totals = t.query("perp", json!("totals")).unwrap();
    assert_eq!(totals["conserved"], true, "{totals}");
    drop(t);
    let (mut light, _) = host(&commands[..n.min(10_000)], low_in_flight);
    let mut baseline = redb_per_write(n.min(2_000));

    println!();
    println!(
        "{:<48} {:>12} {:>10} {:>10}",
        "path", "commands/s", "p50 µs", "p99 µs"
    );
    let heavy_name = format!("host durable, group commit, {in_flight} in flight");
    let light_name = format!("host durable, group commit, {low_in_flight} in flight");
    let rows: [(&str, &mut Run); 4] = [
        (&heavy_name, &mut durable),
        (&light_name, &mut light),
        ("native in-memory (Harness, JSON in/out)", &mut nat),
        ("baseline: redb durable commit per write", &mut baseline),
    ];
    let mut rates = Vec::new();
    for (name, run) in rows {
        let (p50, p99) = (run.pct(0.50), run.pct(0.99));
        println!("{name:<48} {:>12.0} {p50:>10.1} {p99:>10.1}", run.rate());
        rates.push(run.rate());
    }
    println!();
    println!(
        "native / host throughput ratio: {:.1}× (host at {:.0} % of native)",
        rates[2] / rates[0],
        100.0 * rates[0] / rates[2]
    );
    println!(
        "host / per-write redb baseline: {:.1}×",
        rates[0] / rates[3]
    );
    println!(
        "refused commands (same in both paths): {} of {n}; final states identical; money conserved",
        nat.refused
    );
}
