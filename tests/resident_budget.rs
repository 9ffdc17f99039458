//! State larger than its resident budget (`[checkpoint] resident_bytes_max`):
//! rows are evicted after checkpoints and read through from redb, and
//! nothing a client sees changes. Each domain plugin's recorded fixture
//! (real traffic from its benchmark workload) is replayed through the real
//! component on a host whose budget holds a fraction of the plugin's rows
//! and checkpoints every few milliseconds: every answer as recorded, the
//! same rows and state hash as a host that keeps everything resident,
//! and through a crash.

use keel_tests::{TestHost, component, plugins};

const SPOT: &str = include_str!("fixtures/spot.jsonl");
const DAG: &str = include_str!("fixtures/dag.jsonl");
const AUCTION: &str = include_str!("fixtures/auction.jsonl");
const PERP: &str = include_str!("fixtures/perp.jsonl");

/// A budget of a few dozen rows.
const SMALL_BUDGET_BYTES: u64 = 8 << 10;

type Tables = std::collections::BTreeMap<(String, Vec<u8>), Vec<u8>>;

/// Equal tables, or a panic naming the first difference (not both maps).
fn assert_same_rows(got: &Tables, want: &Tables, plugin: &str) {
    let first = got
        .iter()
        .zip(want.iter())
        .find(|(a, b)| a != b)
        .map(|(a, b)| format!("{a:?} against {b:?}"));
    assert!(
        got.len() == want.len() && first.is_none(),
        "{plugin}: {} rows against {}; first difference: {first:?}",
        got.len(),
        want.len()
    );
}

fn small_budget_host() -> TestHost {
    TestHost::with_config(|c| {
        c.checkpoint.resident_bytes_max = SMALL_BUDGET_BYTES;
        c.checkpoint.interval_ms = 2;
    })
}

#[test]
fn every_fixture_answers_exactly_with_most_rows_evicted() {
    for (text, wasm) in [
        (SPOT, plugins::SPOT),
        (DAG, plugins::DAG),
        (AUCTION, plugins::AUCTION),
        (PERP, plugins::PERP),
    ] {
        let resident = TestHost::new();
        let all = resident.replay_fixture(&component(wasm), text).unwrap();
        all.assert_same();
        let plugin = all.plugin.clone();

        let mut t = small_budget_host();
        let report = t.replay_fixture(&component(wasm), text).unwrap();
        report.assert_same();
        t.host().db().checkpoint().unwrap();
        assert!(
            t.host().db().evicted_rows() > 0,
            "{plugin}: the budget evicted rows"
        );
        let rows = resident.tables(&plugin);
        assert!(
            rows.len() > 100,
            "{plugin}: the state outgrows the budget ({} rows)",
            rows.len()
        );
        assert_same_rows(&t.tables(&plugin), &rows, &plugin);
        assert_eq!(t.state_hash(&plugin), resident.state_hash(&plugin));

        // A crash: the rows come back through the log and redb, and a
        // restarted host loads only its budget's worth.
        t.crash_and_restart();
        assert_same_rows(&t.tables(&plugin), &rows, &plugin);
        assert_eq!(t.state_hash(&plugin), resident.state_hash(&plugin));
    }
}

#[test]
fn commands_after_a_restart_read_evicted_rows_through() {
    // The spot fixture's book and balances, restarted with a small budget
    // (only its budget's worth loaded): queries and the fixture's last
    // commands sent again read rows that are not resident, and answer as
    // on a host that holds every row.
    let mut t = small_budget_host();
    t.replay_fixture(&component(plugins::SPOT), SPOT)
        .unwrap()
        .assert_same();
    let resident = TestHost::new();
    resident
        .replay_fixture(&component(plugins::SPOT), SPOT)
        .unwrap()
        .assert_same();
    t.restart();
    let text = |r: Result<serde_json::Value, keel_host::HostError>| match r {
        Ok(v) => v.to_string(),
        Err(e) => format!("error: {e}"),
    };
    for market in 1..=4 {
        let depth = serde_json::json!({"depth": {"market": market, "levels": 50}});
        assert_eq!(
            text(t.query("spot", depth.clone())),
            text(resident.query("spot", depth))
        );
    }
    let commands: Vec<serde_json::Value> = SPOT
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["command"].clone())
        .collect();
    assert!(commands.len() > 1000);
    for command in &commands[commands.len() - 500..] {
        assert_eq!(
            text(t.call("spot", command.clone())),
            text(resident.call("spot", command.clone())),
            "{command}"
        );
    }
    // The commands ran at other times on the two hosts (orders keep their
    // timestamp), so the rows are compared with the state hash the host
    // kept up to date write by write, from the values each write replaced:
    // a wrong value read through from redb would show here.
    let rows = t.tables("spot");
    assert_eq!(rows.len(), resident.tables("spot").len());
    let mut hash = keel_host::state_hash::StateHash::EMPTY;
    for ((table, key), value) in &rows {
        hash.add(table, key, value);
    }
    assert_eq!(hash.to_hex(), t.state_hash("spot"));
    assert!(t.host().db().evicted_rows() > 0);
}
