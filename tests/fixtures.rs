//! Recorded journals as test fixtures: one real fixture per domain plugin
//! (recorded from its benchmark workload with `KEEL_RECORD_FIXTURES`, see
//! `tests/src/bench.rs`) replays natively through the guest SDK's Harness
//! and through the real component with every answer as recorded; a changed
//! build fails a fixture with a readable diff.

use keel_guest::testing::Harness;
use keel_tests::{TestHost, component, plugins};
use serde_json::json;

const SPOT: &str = include_str!("fixtures/spot.jsonl");
const AUCTION: &str = include_str!("fixtures/auction.jsonl");
const PERP: &str = include_str!("fixtures/perp.jsonl");
const DAG: &str = include_str!("fixtures/dag.jsonl");

#[test]
fn every_domain_fixture_replays_natively_exactly() {
    for report in [
        Harness::<keel_plugin_spot::Spot>::replay_fixture(SPOT).unwrap(),
        Harness::<keel_plugin_auction::Auction>::replay_fixture(AUCTION).unwrap(),
        Harness::<keel_plugin_perp::Perp>::replay_fixture(PERP).unwrap(),
        Harness::<keel_plugin_dag::Dag>::replay_fixture(DAG).unwrap(),
    ] {
        assert!(
            report.replayed >= 1000,
            "{}: {} commands",
            report.plugin,
            report.replayed
        );
        report.assert_same();
    }
}

#[test]
fn every_domain_fixture_replays_through_its_component_exactly() {
    for (text, wasm) in [
        (SPOT, plugins::SPOT),
        (AUCTION, plugins::AUCTION),
        (PERP, plugins::PERP),
        (DAG, plugins::DAG),
    ] {
        let t = TestHost::new();
        let report = t.replay_fixture(&component(wasm), text).unwrap();
        assert!(
            report.replayed >= 1000,
            "{}: {}",
            report.plugin,
            report.replayed
        );
        report.assert_same();
    }
}

#[test]
fn a_changed_build_fails_a_fixture_with_a_readable_diff() {
    // Record production traffic of counter 1.0.0...
    let t = TestHost::new();
    t.deploy_file(plugins::COUNTER);
    for i in 0..30 {
        let command = if i % 10 == 9 {
            json!({"reset": {"name": "never"}})
        } else {
            json!({"add": {"name": format!("c{}", i % 4), "amount": i}})
        };
        let _ = t.call("counter", command);
    }
    let mut fixture = Vec::new();
    let last = t.status("counter").last_sequence;
    t.host()
        .write_fixture("counter", 1, last, &mut fixture)
        .unwrap();
    let fixture = String::from_utf8(fixture).unwrap();
    // ...the same build answers it exactly, natively and as a component...
    Harness::<keel_plugin_counter::Counter>::replay_fixture(&fixture)
        .unwrap()
        .assert_same();
    TestHost::new()
        .replay_fixture(&component(plugins::COUNTER), &fixture)
        .unwrap()
        .assert_same();
    // ...and version 2, which answers every add with a total, does not.
    let report = TestHost::new()
        .replay_fixture(&component(plugins::COUNTER_V2), &fixture)
        .unwrap();
    assert_eq!(report.divergences.len(), 27, "{report}");
    let text = report.to_string();
    assert!(
        text.contains("27 of 30 recorded commands answered differently")
            && text.contains("- recorded:")
            && text.contains("+ now:")
            && text.contains("total"),
        "{text}"
    );
    // A fixture edited to expect another answer names that command.
    let edited = fixture.replacen("\"value\":0,", "\"value\":99,", 1);
    assert_ne!(edited, fixture);
    let report = Harness::<keel_plugin_counter::Counter>::replay_fixture(&edited).unwrap();
    assert_eq!(report.diverging_sequences(), vec![2], "{report}");
}
