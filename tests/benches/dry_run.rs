//! Benchmark of the dry run, in one run:
//!
//! 1. spot: `KEEL_BENCH_ORDERS` (default 20 000) recorded orders (resting
//!    and crossing) dry-run against an identical build — every command runs
//!    on both scratch copies (live and candidate) — in replayed commands/s;
//! 2. dag: the recorded fixture `tests/fixtures/dag.jsonl` (1 500 inserts)
//!    replayed into a host, then dry-run the same way;
//! 3. the live spot plugin's order rate while a dry run of it runs, against
//!    the same stream without one (2 cores: the dry run takes one).
//!
//! `cargo bench -p keel-tests --bench dry_run`.

use std::time::Instant;

use keel_host::dry_run::DryRunFrom;
use keel_plugin_spot::api::{Command, OrderKind, Place, Side};
use keel_tests::bench::{env, fund_spot_market, pipelined};
use keel_tests::{TestHost, component, plugins};

const USERS: u64 = 200;

fn to_bytes(c: &Command) -> Vec<u8> {
    serde_json::to_vec(c).unwrap()
}

fn spot_host() -> TestHost {
    let t = TestHost::new();
    t.deploy_file(plugins::SPOT);
    fund_spot_market(t.host(), USERS);
    t
}

/// Orders around a mid of 1 000 000: about half cross the book.
fn orders(from: u64, n: usize) -> Vec<Vec<u8>> {
    (from..from + n as u64)
        .map(|i| {
            let side = if i % 2 == 0 { Side::Buy } else { Side::Sell };
            let offset = (i.wrapping_mul(7919) % 200) as i64 - 100;
            to_bytes(&Command::Place(Place {
                user: 1 + i % USERS,
                market: 1,
                side,
                kind: OrderKind::Limit,
                price: Some((1_000_000 + offset) as u64),
                qty: 1 + i % 9,
            }))
        })
        .collect()
}

fn dry_run(label: &str, t: &TestHost, wasm: &str, n: u64) {
    let started = Instant::now();
    let report = t
        .host()
        .dry_run(&component(wasm), DryRunFrom::Last(n), &mut |_, _| {})
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert!(report.identical(), "{report:?}");
    println!(
        "{label} dry run: {} commands replayed on both copies in {:.2} s = {:.0} commands/s ({} identical)",
        report.replayed,
        secs,
        report.replayed as f64 / secs,
        report.identical
    );
}

fn main() {
    let n = env("KEEL_BENCH_ORDERS", 20_000);
    let t = spot_host();
    pipelined(t.host(), "spot", &orders(0, n), 4096);
    dry_run("spot", &t, plugins::SPOT, n as u64);

    let dag = TestHost::new();
    dag.replay_fixture(
        &component(plugins::DAG),
        include_str!("../fixtures/dag.jsonl"),
    )
    .unwrap()
    .assert_same();
    let last = dag.status("dag").last_sequence;
    dry_run("dag", &dag, plugins::DAG, last - 1);

    // The live plugin's rate alone for two seconds, then for as long as a
    // dry run of its last `n` commands runs beside it (chunks of 2000).
    let mut next = 1_000_000;
    let mut stream = |t: &TestHost, until: &dyn Fn(f64) -> bool| {
        let started = Instant::now();
        let mut sent = 0;
        while !until(started.elapsed().as_secs_f64()) {
            pipelined(t.host(), "spot", &orders(next, 2000), 4096);
            next += 2000;
            sent += 2000;
        }
        sent as f64 / started.elapsed().as_secs_f64()
    };
    let alone = stream(&t, &|secs| secs >= 2.0);
    let t = std::sync::Arc::new(t);
    let background = {
        let t = t.clone();
        std::thread::spawn(move || {
            t.host()
                .dry_run(
                    &component(plugins::SPOT),
                    DryRunFrom::Last(n as u64),
                    &mut |_, _| {},
                )
                .unwrap()
        })
    };
    let with = stream(&t, &|_| background.is_finished());
    background.join().unwrap();
    println!(
        "spot live orders/s: alone {alone:.0}, during a dry run {with:.0} ({:.0} %)",
        100.0 * with / alone
    );
}
