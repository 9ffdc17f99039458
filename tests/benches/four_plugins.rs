//! Four busy plugins at once against each alone: spot, auction, perp and
//! dag in one host, each fed by its own client thread (pipelined, durable
//! group commit), against the same client feeding the same plugin in a
//! host of its own. Group commit and checkpoints are shared by the
//! plugins (one log, one redb writer); execution is not (each plugin's
//! batch runs on its own state, so no plugin waits for another's).
//!
//! The traffic is each plugin's recorded fixture (`tests/fixtures/`,
//! real commands from its benchmark workload, 1,500 each): the plugin is
//! deployed with the fixture's starting state and its commands are sent
//! KEEL_BENCH_ROUNDS times (default 20) with new sequences. Later rounds
//! refuse more (cancels of orders already gone, certificates already
//! stored), the same in both runs, so the rows compare.
//!
//! `cargo bench -p keel-tests --bench four_plugins`
//! (in flight per client: KEEL_BENCH_IN_FLIGHT, default 1024).
//!
//! Output rows are stable: `plugin  run  commands  commands/s  p50 µs  p99 µs  refused`.

use keel_tests::bench::{env, pipelined};
use keel_tests::{TestHost, component, plugins};

const FIXTURES: [(&str, &str, &str); 4] = [
    (
        "spot",
        plugins::SPOT,
        include_str!("../fixtures/spot.jsonl"),
    ),
    (
        "auction",
        plugins::AUCTION,
        include_str!("../fixtures/auction.jsonl"),
    ),
    (
        "perp",
        plugins::PERP,
        include_str!("../fixtures/perp.jsonl"),
    ),
    ("dag", plugins::DAG, include_str!("../fixtures/dag.jsonl")),
];

/// Deploys `fixture`'s plugin into `t` with the fixture's starting state
/// (its header alone replayed) and returns its commands, `rounds` times.
fn deploy_with_traffic(t: &TestHost, wasm: &str, fixture: &str, rounds: usize) -> Vec<Vec<u8>> {
    let mut lines = fixture.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().expect("a header");
    t.replay_fixture(&component(wasm), header)
        .expect("the fixture's starting state deploys");
    let commands: Vec<Vec<u8>> = lines
        .map(|l| {
            let line: serde_json::Value = serde_json::from_str(l).expect("a fixture line");
            serde_json::to_vec(&line["command"]).expect("a command")
        })
        .collect();
    commands
        .iter()
        .cycle()
        .take(commands.len() * rounds)
        .cloned()
        .collect()
}

struct Row {
    commands: usize,
    seconds: f64,
    latencies: Vec<f64>,
    refused: usize,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn print(plugin: &str, run: &str, row: &mut Row) {
    row.latencies.sort_by(f64::total_cmp);
    println!(
        "{plugin:<10} {run:<10} {:>9} {:>12.0} {:>10.0} {:>10.0} {:>8}",
        row.commands,
        row.commands as f64 / row.seconds,
        pct(&row.latencies, 0.5),
        pct(&row.latencies, 0.99),
        row.refused
    );
}

fn main() {
    let rounds = env("KEEL_BENCH_ROUNDS", 20);
    let in_flight = env("KEEL_BENCH_IN_FLIGHT", 1024);
    println!(
        "four plugins busy at once vs each alone: {} cores, {in_flight} in flight per client, durable",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<10} {:<10} {:>9} {:>12} {:>10} {:>10} {:>8}",
        "plugin", "run", "commands", "commands/s", "p50 µs", "p99 µs", "refused"
    );

    let mut alone_total = 0.0;
    for (plugin, wasm, fixture) in FIXTURES {
        let t = TestHost::new();
        let commands = deploy_with_traffic(&t, wasm, fixture, rounds);
        let (seconds, latencies, refused) = pipelined(t.host(), plugin, &commands, in_flight);
        let mut row = Row {
            commands: commands.len(),
            seconds,
            latencies,
            refused,
        };
        alone_total += row.seconds;
        print(plugin, "alone", &mut row);
    }

    let t = TestHost::new();
    let traffic: Vec<(&str, Vec<Vec<u8>>)> = FIXTURES
        .iter()
        .map(|(plugin, wasm, fixture)| (*plugin, deploy_with_traffic(&t, wasm, fixture, rounds)))
        .collect();
    let start = std::time::Instant::now();
    let rows: Vec<(&str, Row)> = std::thread::scope(|s| {
        let handles: Vec<_> = traffic
            .iter()
            .map(|(plugin, commands)| {
                let host = t.host();
                s.spawn(move || {
                    let (seconds, latencies, refused) =
                        pipelined(host, plugin, commands, in_flight);
                    (
                        *plugin,
                        Row {
                            commands: commands.len(),
                            seconds,
                            latencies,
                            refused,
                        },
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a client"))
            .collect()
    });
    let together = start.elapsed().as_secs_f64();
    let mut all = 0;
    for (plugin, mut row) in rows {
        all += row.commands;
        print(plugin, "together", &mut row);
    }
    println!(
        "all four together: {all} commands in {together:.2} s = {:.0} commands/s; one after another alone: {alone_total:.2} s = {:.0} commands/s",
        all as f64 / together,
        all as f64 / alone_total
    );
}
