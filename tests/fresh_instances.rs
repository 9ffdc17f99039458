//! Replay holds for every component, whatever it keeps in linear memory.
//!
//! The story: a ledger plugin written in Python stored `random.random()`
//! and `keel verify` reported different responses and a different state
//! hash. The interpreter keeps its generator in linear memory; the host
//! reused one instance across commands and reset it at other points live
//! (after a trap, at restart) than in replay. Since then every call runs on
//! a fresh instance from the component's initial memory image (the default
//! `fresh` instance policy), so a plugin's only state is its tables.
//!
//! The witness here is `misbehave`'s `bump_global`: a Rust counter in a
//! `static`, exactly what the SDK's rules forbid.

use keel_host::InstancePolicy;
use keel_tests::{TestHost, plugins};
use serde_json::json;

fn bump(t: &TestHost, key: &str) -> serde_json::Value {
    t.call("misbehave", json!({"bump_global": {"key": key}}))
        .unwrap()
}

#[test]
fn a_global_restarts_from_the_initial_image_at_every_call_and_replay_reproduces_it() {
    let mut t = TestHost::new();
    t.deploy_file(plugins::MISBEHAVE);
    for i in 0..20 {
        // A counter in a global answers 1 every time: each call starts
        // from the component's initial memory image.
        assert_eq!(bump(&t, &format!("k{i}")), json!(1), "call {i}");
        if i % 5 == 0 {
            // Queries, errors and traps between commands change nothing.
            t.query("misbehave", json!("rows")).unwrap();
            t.call("misbehave", json!({"write_then_error": {"key": "e"}}))
                .unwrap_err();
            t.call("misbehave", json!({"write_then_trap": {"key": "t"}}))
                .unwrap_err();
        }
        if i == 12 {
            t.crash_and_restart();
        }
    }
    let verdicts = t.verify_replay();
    assert_eq!(verdicts.len(), 1);
    assert!(verdicts[0].ok(), "{:?}", verdicts[0]);
}

#[test]
fn the_reuse_policy_keeps_memory_between_calls_and_verify_catches_the_divergence() {
    // `reuse` is the operator's promise that the component keeps nothing in
    // linear memory that changes a response. This component breaks it:
    // the count grows live, and replay (which runs under `fresh`) answers 1.
    let t = TestHost::with_config(|c| c.runtime.reuse_instances = vec!["misbehave".into()]);
    t.deploy_file(plugins::MISBEHAVE);
    assert_eq!(
        t.host().plugin("misbehave").unwrap().instances,
        InstancePolicy::Reuse
    );
    let answers: Vec<_> = (0..4).map(|i| bump(&t, &format!("k{i}"))).collect();
    assert_eq!(answers, vec![json!(1), json!(2), json!(3), json!(4)]);
    // A trap replaces the reused instance: the count starts again.
    t.call("misbehave", json!({"write_then_trap": {"key": "t"}}))
        .unwrap_err();
    assert_eq!(bump(&t, "after-trap"), json!(1));
    let verdict = &t.verify_replay()[0];
    assert!(!verdict.ok(), "replay must notice: {verdict:?}");
    assert!(!verdict.response_mismatches.is_empty(), "{verdict:?}");
}

#[test]
fn the_default_policy_is_fresh_and_named_in_the_plugin_status() {
    let t = TestHost::new();
    t.deploy_file(plugins::MISBEHAVE);
    t.deploy_file(plugins::COUNTER);
    for name in ["misbehave", "counter"] {
        assert_eq!(
            t.host().plugin(name).unwrap().instances,
            InstancePolicy::Fresh
        );
    }
}
