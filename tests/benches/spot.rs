//! Benchmark of the spot plugin: one realistic order stream measured three
//! ways in the same run.
//!
//! 1. through the host as a component — durable (fsync per group commit),
//!    pipelined (`KEEL_BENCH_IN_FLIGHT`, default 4096, commands in flight):
//!    orders/s, p50/p99 submit→acknowledgement latency;
//! 2. the same plugin crate natively over the SDK's in-memory store
//!    (Harness, JSON in and out, no persistence);
//! 3. the per-write design Keel replaces: the same native engine, plus one
//!    durable redb write transaction per order writing that order's state.
//!
//! `cargo bench -p keel-tests --bench spot`; size with `KEEL_BENCH_ORDERS`
//! (default 100 000; `KEEL_SPOT_COMPONENT` deploys another build of the
//! component; `KEEL_BENCH_INSTANCES=fresh|reuse` runs it under that
//! instance policy instead of the default `batch`); (3) runs on the first `KEEL_BENCH_BASELINE_ORDERS`
//! orders (default 3 000) since it is ~100× slower; its rate is per order.
//!
//! Then the host's cost per command of three shapes (a refused cancel, a
//! deposit, a resting order), each beside the same commands run natively
//! (the plugin's own work), so the host's share of each can be read off;
//! `KEEL_BENCH_SHAPE=refused|deposit|resting` runs only that shape, with
//! `KEEL_BENCH_ORDERS` commands (for profiling it).
//!
//! Stream (fixed seed): 4 markets, 1000 pre-funded users; ~60 % resting
//! limit orders 1–30 ticks behind a drifting mid, ~25 % crossing orders
//! (limit through the spread, IOC, market, FOK), ~15 % cancels of live orders.

use std::collections::BTreeMap;
use std::time::Instant;

use keel_guest::testing::Harness;
use keel_plugin_spot::Spot;
use keel_plugin_spot::api::{
    Answer, Cancel, Command, CreateMarket, OrderKind, Place, Query, Response, Side, Status,
    Transfer,
};
use keel_tests::bench::{Rng, env, pipelined, submit_all, timed};
use keel_tests::{TestHost, plugins};
use serde_json::{Value, json};

const USERS: u64 = 1000;
const MARKETS: u32 = 4;
const TICK: u64 = 5;
const LOT: u64 = 10;
const MID_TICKS: u64 = 10_000;

fn setup() -> Vec<Command> {
    let mut out = Vec::new();
    for m in 1..=MARKETS {
        out.push(Command::CreateMarket(CreateMarket {
            market: m,
            base: format!("B{m}"),
            quote: "USD".into(),
            tick_size: TICK,
            lot_size: LOT,
            min_size: LOT,
        }));
    }
    for user in 1..=USERS {
        out.push(Command::Deposit(Transfer {
            user,
            asset: "USD".into(),
            amount: 1 << 50,
        }));
        for m in 1..=MARKETS {
            out.push(Command::Deposit(Transfer {
                user,
                asset: format!("B{m}"),
                amount: 1 << 40,
            }));
        }
    }
    out
}

/// Pads a harness's sequence to `base` so order ids match the host's.
fn harness_at(base: u64) -> Harness<Spot> {
    let mut h = Harness::<Spot>::new();
    while h.sequence() < base {
        let _ = h.handle_json("null");
    }
    h
}

/// Generates the measured stream by running it through the plugin natively
/// (unmeasured), so that cancels target orders that are still live.
fn workload(base: u64, n: usize) -> (Vec<Vec<u8>>, Vec<&'static str>) {
    let mut h = harness_with_setup(base);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut mids = vec![MID_TICKS; MARKETS as usize];
    let mut live: Vec<(u64, u64)> = Vec::new();
    let mut kinds = Vec::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let roll = rng.below(100);
        let m = rng.below(u64::from(MARKETS)) as usize;
        if rng.below(20) == 0 {
            mids[m] = if rng.below(2) == 0 {
                mids[m] + 1
            } else {
                mids[m] - 1
            };
        }
        let mid = mids[m];
        let user = 1 + rng.below(USERS);
        let side = if rng.below(2) == 0 {
            Side::Buy
        } else {
            Side::Sell
        };
        let (kind, cmd) = if roll < 60 {
            let away = 1 + rng.below(30);
            let ticks = match side {
                Side::Buy => mid - away,
                Side::Sell => mid + away,
            };
            let place = Place {
                user,
                market: m as u32 + 1,
                side,
                kind: OrderKind::Limit,
                price: Some(ticks * TICK),
                qty: LOT * (1 + rng.below(20)),
            };
            ("resting limit", Command::Place(place))
        } else if roll < 85 {
            let through = 1 + rng.below(5);
            let ticks = match side {
                Side::Buy => mid + through,
                Side::Sell => mid - through,
            };
            let k = rng.below(20);
            let (label, kind) = match k {
                0..=13 => ("crossing limit", OrderKind::Limit),
                14..=16 => ("crossing ioc", OrderKind::Ioc),
                17..=18 => ("market", OrderKind::Market),
                _ => ("fok", OrderKind::Fok),
            };
            let place = Place {
                user,
                market: m as u32 + 1,
                side,
                kind,
                price: (kind != OrderKind::Market).then_some(ticks * TICK),
                qty: LOT * (1 + rng.below(40)),
            };
            (label, Command::Place(place))
        } else {
            // Cancel a live order, chosen at random.
            let mut chosen = None;
            while !live.is_empty() {
                let i = rng.below(live.len() as u64) as usize;
                let (id, owner) = live[i];
                let open = matches!(
                    h.query(Query::Order { id }),
                    Ok(Answer::Order(o)) if matches!(o.status, Status::Open | Status::PartiallyFilled)
                );
                live.swap_remove(i);
                if open {
                    chosen = Some((id, owner));
                    break;
                }
            }
            match chosen {
                Some((order, owner)) => ("cancel", Command::Cancel(Cancel { user: owner, order })),
                None => continue,
            }
        };
        let bytes = serde_json::to_vec(&cmd).unwrap();
        if let Ok(Response::Placed(p)) = h.handle(cmd) {
            if p.resting > 0 {
                live.push((p.order, user));
            }
        }
        kinds.push(kind);
        out.push(bytes);
    }
    (out, kinds)
}

/// CPU seconds used by this process so far (all threads), from /proc.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
    });
    ticks / 100.0 // USER_HZ
}

struct Run {
    /// CPU by thread during the run (host runs only).
    threads: String,
    orders: usize,
    seconds: f64,
    cpu_seconds: f64,
    latencies_us: Vec<f64>,
    refused: usize,
}

impl Run {
    fn rate(&self) -> f64 {
        self.orders as f64 / self.seconds
    }
    fn pct(&mut self, p: f64) -> f64 {
        self.latencies_us.sort_by(f64::total_cmp);
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i]
    }
}

/// A summary of the observable state, to prove the paths agree.
fn fingerprint(query: impl Fn(Value) -> Value) -> Vec<Value> {
    let mut out = Vec::new();
    for m in 1..=MARKETS {
        // The whole book, page by page.
        let mut after = Value::Null;
        loop {
            let page = query(json!({"book": {"market": m, "after": after, "limit": 10_000}}));
            after = page["next"].clone();
            out.push(page);
            if after.is_null() {
                break;
            }
        }
    }
    for user in (1..=USERS).step_by(37) {
        out.push(query(json!({"balances": {"user": user}})));
    }
    let audit = query(json!("audit"));
    assert_eq!(audit["problems"], json!([]), "audit: {audit}");
    out.push(audit);
    out
}

/// A Harness at `base` with the markets and deposits in place.
fn harness_with_setup(base: u64) -> Harness<Spot> {
    let mut h = harness_at(base);
    for cmd in setup() {
        h.handle(cmd).unwrap();
    }
    h
}

/// (2) natively: the Harness, JSON in and out.
fn native(base: u64, commands: &[Vec<u8>]) -> (Run, Vec<Value>) {
    let mut h = harness_with_setup(base);
    let cpu = cpu_seconds();
    let (seconds, latencies_us, refused) = timed(commands, |text| h.handle_json(text).is_ok());
    let cpu_seconds = cpu_seconds() - cpu;
    let fp = fingerprint(|q| h.query_json(&q.to_string()).unwrap());
    (
        Run {
            threads: String::new(),
            orders: commands.len(),
            seconds,
            cpu_seconds,
            latencies_us,
            refused,
        },
        fp,
    )
}

/// Wallets and orders checked per audit page in the bench.
const AUDIT_PAGE: u32 = 2000;

/// Pages through `audit_page` on the host; (pages, seconds). Panics on a
/// problem found.
fn audit_in_pages(t: &TestHost) -> (usize, f64) {
    let start = Instant::now();
    let mut pages = 0;
    let mut after = Value::Null;
    loop {
        let request = if after.is_null() {
            json!({"audit_page": {}})
        } else {
            json!({"audit_page": {"after": after, "limit": AUDIT_PAGE}})
        };
        let page = t.query("spot", request).unwrap();
        pages += 1;
        assert_eq!(page["problems"], json!([]), "audit page: {page}");
        after = page["next"].clone();
        if after.is_null() {
            return (pages, start.elapsed().as_secs_f64());
        }
    }
}

/// (1) through the host: durable group commit, pipelined.
fn host(t: &TestHost, commands: &[Vec<u8>], in_flight: usize) -> Run {
    let setup: Vec<Vec<u8>> = setup()
        .iter()
        .map(|c| serde_json::to_vec(c).unwrap())
        .collect();
    submit_all(t.host(), "spot", &setup);
    let cpu = cpu_seconds();
    let threads = keel_host::testkit::thread_cpu_seconds();
    let (seconds, latencies_us, refused) = pipelined(t.host(), "spot", commands, in_flight);
    let threads =
        keel_host::testkit::thread_cpu_report(&threads, &keel_host::testkit::thread_cpu_seconds());
    keel_tests::bench::record_fixture(t.host(), "spot", setup.len() as u64 + 2);
    Run {
        threads,
        orders: commands.len(),
        seconds,
        cpu_seconds: cpu_seconds() - cpu,
        latencies_us,
        refused,
    }
}

/// (3) the per-write design: the native engine, then one durable redb
/// write transaction per order writing the order's state.
fn redb_per_order(base: u64, commands: &[Vec<u8>]) -> Run {
    const ORDERS: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("orders");
    let dir = tempfile::tempdir().unwrap();
    let db = redb::Database::create(dir.path().join("baseline.redb")).unwrap();
    let mut h = harness_with_setup(base);
    let cpu = cpu_seconds();
    let (seconds, latencies_us, refused) = timed(commands, |text| {
        let outcome = h.handle_json(text);
        let state = match &outcome {
            Ok(v) => serde_json::to_vec(v).unwrap(),
            Err(e) => e.code.clone().into_bytes(),
        };
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(ORDERS).unwrap();
            table.insert(h.sequence(), state.as_slice()).unwrap();
        }
        txn.commit().unwrap();
        outcome.is_ok()
    });
    Run {
        threads: String::new(),
        orders: commands.len(),
        seconds,
        cpu_seconds: cpu_seconds() - cpu,
        latencies_us,
        refused,
    }
}

/// The host's cost per command of a few simple shapes, `m` commands each,
/// beside the same commands run natively; `only` runs one shape alone.
fn shapes(
    component: &str,
    base: u64,
    commands: &[Vec<u8>],
    labels: &[&str],
    m: usize,
    in_flight: usize,
    only: Option<&str>,
) {
    let resting: Vec<Vec<u8>> = commands
        .iter()
        .zip(labels)
        .filter(|(_, l)| **l == "resting limit")
        .map(|(c, _)| c.clone())
        .take(m)
        .collect();
    let refused: Vec<Vec<u8>> = vec![br#"{"cancel":{"user":1,"order":999999999}}"#.to_vec(); m];
    let deposits: Vec<Vec<u8>> = (0..m)
        .map(|i| {
            format!(
                r#"{{"deposit":{{"user":{},"asset":"USD","amount":1}}}}"#,
                1 + i as u64 % USERS
            )
            .into_bytes()
        })
        .collect();
    println!();
    println!(
        "host cost by command shape (same host settings, {m} commands each; native: the same commands through the Harness, the plugin's own work):"
    );
    for (name, label, cmds) in [
        (
            "refused",
            "refused command (parse, 1 read, journal only)",
            &refused,
        ),
        ("deposit", "deposit (2 rows written)", &deposits),
        (
            "resting",
            "resting limit order (3 rows written, 1 scan)",
            &resting,
        ),
    ] {
        if only.is_some_and(|only| only != name) {
            continue;
        }
        let t = TestHost::new();
        t.deploy_file(component);
        let run = host(&t, cmds, in_flight);
        let (own, _) = native(base, cmds);
        println!(
            "  {label:<52} {:>8.0}/s  {:>7.2} µs wall  {:>7.2} µs CPU  native {:>5.2} µs",
            run.rate(),
            1e6 / run.rate(),
            1e6 * run.cpu_seconds / run.orders as f64,
            own.seconds / own.orders as f64 * 1e6
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; arguments are ignored.
    let n = env("KEEL_BENCH_ORDERS", 100_000);
    let in_flight = env("KEEL_BENCH_IN_FLIGHT", 4096);
    let baseline_n = env("KEEL_BENCH_BASELINE_ORDERS", 3_000).min(n);

    // The end-of-run `audit` and book dumps walk the whole state: give
    // queries room (commands never come close to the default limit).
    // KEEL_BENCH_INSTANCES=fresh|reuse runs the plugin under that instance
    // policy instead of the default (`batch`): what instances cost.
    let instances = std::env::var("KEEL_BENCH_INSTANCES").unwrap_or_else(|_| "batch".into());
    let t = TestHost::with_config(|c| {
        c.limits.fuel_per_call = 20_000_000_000;
        match instances.as_str() {
            "fresh" => c.runtime.fresh_instances = vec!["spot".into()],
            "reuse" => c.runtime.reuse_instances = vec!["spot".into()],
            "batch" => {}
            other => panic!("KEEL_BENCH_INSTANCES={other:?}: batch, fresh or reuse"),
        }
    });
    // KEEL_SPOT_COMPONENT: another build of the component (e.g. for profiling).
    let component =
        std::env::var("KEEL_SPOT_COMPONENT").unwrap_or_else(|_| plugins::SPOT.to_owned());
    t.deploy_file(&component);
    let base = t.status("spot").last_sequence;
    let generated = Instant::now();
    let (commands, labels) = workload(base, n);
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for label in &labels {
        *kinds.entry(label).or_insert(0) += 1;
    }
    println!(
        "spot benchmark: {n} orders, {MARKETS} markets, {USERS} users, {} cores, {in_flight} in flight, instances: {:?} (stream generated in {:.1} s)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        t.host().plugin("spot").unwrap().instances,
        generated.elapsed().as_secs_f64()
    );
    println!("mix: {kinds:?}");
    // KEEL_BENCH_SHAPE=refused|deposit|resting: only that shape, n
    // commands of it (for profiling one shape).
    if let Ok(shape) = std::env::var("KEEL_BENCH_SHAPE") {
        assert!(
            ["refused", "deposit", "resting"].contains(&shape.as_str()),
            "KEEL_BENCH_SHAPE={shape:?}: refused, deposit or resting"
        );
        drop(t);
        shapes(
            &component,
            base,
            &commands,
            &labels,
            n,
            in_flight,
            Some(&shape),
        );
        return;
    }

    let (mut nat, native_fp) = native(base, &commands);
    let mut durable = host(&t, &commands, in_flight);
    let host_fp = fingerprint(|q| t.query("spot", q).unwrap());
    assert!(host_fp == native_fp, "host and native states differ");
    assert_eq!(nat.refused, durable.refused);
    let resting = &host_fp[host_fp.len() - 1]["resting_orders"];
    let rss = keel_host::testkit::process_rss_mib();
    let audit_pages = audit_in_pages(&t);
    let view = t
        .host()
        .db()
        .view(t.host().plugin("spot").unwrap().id)
        .unwrap();
    let (state_rows, state_mib) = (
        view.row_count(),
        view.resident_bytes() as f64 / (1 << 20) as f64,
    );
    drop(view);
    drop(t);
    let mut per_write = redb_per_order(base, &commands[..baseline_n]);

    println!();
    println!(
        "{:<54} {:>9} {:>10} {:>9} {:>9} {:>10}",
        "path", "orders/s", "p50 µs", "p99 µs", "µs/order", "CPU µs/ord"
    );
    let rows: [(&str, &mut Run); 3] = [
        (
            "(1) host component, durable group commit, pipelined",
            &mut durable,
        ),
        (
            "(2) same crate native, SDK Harness (in memory, JSON)",
            &mut nat,
        ),
        (
            "(3) native + one durable redb txn per order",
            &mut per_write,
        ),
    ];
    let mut rates = Vec::new();
    for (name, run) in rows {
        let (p50, p99) = (run.pct(0.50), run.pct(0.99));
        println!(
            "{name:<54} {:>9.0} {p50:>10.1} {p99:>9.1} {:>9.2} {:>10.2}",
            run.rate(),
            1e6 / run.rate(),
            1e6 * run.cpu_seconds / run.orders as f64
        );
        rates.push(run.rate());
    }
    println!();
    println!(
        "(1)/(2) throughput: {:.1} % (goal ≥ 25 %)",
        100.0 * rates[0] / rates[1]
    );
    println!(
        "(1)/(3) throughput: {:.1}× (goal ≥ 20×)",
        rates[0] / rates[2]
    );
    println!(
        "(1) amortized: {:.2} µs per order (goal ≤ 10 µs)",
        1e6 / rates[0]
    );
    println!(
        "refused (same in both paths): {} of {n}; {resting} orders resting at the end; host and native books, balances and audit identical",
        nat.refused
    );
    // What bounds (1): the host's cost per command of a few simple shapes.
    shapes(
        &component,
        base,
        &commands,
        &labels,
        (n / 5).max(1000),
        in_flight,
        None,
    );
    println!();
    println!(
        "CPU µs/ord: process CPU time (all threads) per order, less sensitive than wall time to other load on the machine"
    );
    if baseline_n < n {
        println!("(3) measured on the first {baseline_n} orders of the stream");
    }
    println!("CPU by thread during (1): {}", durable.threads);
    println!(
        "audit of the end state in pages of {AUDIT_PAGE}: {} pages in {:.0} ms",
        audit_pages.0,
        audit_pages.1 * 1e3
    );
    println!(
        "memory after (1): process RSS {rss:.0} MiB (the native run's state included); spot state {state_rows} rows, {state_mib:.1} MiB counted resident"
    );
}
