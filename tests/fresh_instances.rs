//! Replay holds for every component, whatever it keeps in linear memory.
//!
//! The story: a ledger plugin written in Python stored `random.random()`
//! and `keel verify` reported different responses and a different state
//! hash. The interpreter keeps its generator in linear memory; the host
//! reused one instance across commands and reset it at other points live
//! (after a trap, at restart) than in replay. For a while every call then
//! ran on a new instance from the component's initial memory image, which
//! cost about as much as a small command. Now each batch starts on a new
//! instance (the default `batch` policy), and every journal entry records
//! whether its call ran on a new instance, which replay follows: replay
//! reproduces every response again, at a new instance per batch.
//!
//! The witness here is `misbehave`'s `bump_global`: a Rust counter in a
//! `static`, exactly what the SDK's rules forbid.

use keel_host::InstancePolicy;
use keel_tests::{TestHost, plugins};
use serde_json::{Value, json};

fn bump(t: &TestHost, key: &str) -> Value {
    t.call("misbehave", json!({"bump_global": {"key": key}}))
        .unwrap()
}

/// Submits `commands` at once (so that the host batches them) and returns
/// each one's answer, `Err(code)` for a failed one.
fn pipelined(t: &TestHost, commands: &[Value]) -> Vec<Result<Value, String>> {
    let pending: Vec<_> = commands
        .iter()
        .map(|c| {
            t.host()
                .submit_pipelined("misbehave", c.to_string().as_bytes())
                .unwrap()
        })
        .collect();
    pending
        .into_iter()
        .map(|rx| match rx.blocking_recv().unwrap() {
            Ok(receipt) => Ok(serde_json::from_slice(&receipt.response).unwrap()),
            Err(e) => Err(e.to_string()),
        })
        .collect()
}

fn bumps(from: usize, n: usize) -> Vec<Value> {
    (from..from + n)
        .map(|i| json!({"bump_global": {"key": format!("k{i}")}}))
        .collect()
}

#[test]
fn a_global_lives_at_most_one_batch_and_replay_reproduces_it() {
    let mut t = TestHost::new();
    t.deploy_file(plugins::MISBEHAVE);
    // One command at a time: each is a batch of its own, on a new instance.
    for i in 0..5 {
        assert_eq!(bump(&t, &format!("alone{i}")), json!(1), "call {i}");
    }
    // Many at once: a batch's first command counts 1, each later one of
    // the same batch one more than the command before.
    let answers: Vec<u64> = pipelined(&t, &bumps(0, 300))
        .into_iter()
        .map(|a| a.unwrap().as_u64().unwrap())
        .collect();
    assert_eq!(answers[0], 1);
    for pair in answers.windows(2) {
        assert!(pair[1] == 1 || pair[1] == pair[0] + 1, "{answers:?}");
    }
    assert!(
        answers.iter().any(|&a| a > 1),
        "300 commands at once share batches: {answers:?}"
    );
    // A trap ends its instance: the next command starts on a new one. A
    // refusal does not: what the refused command counted stays, and
    // replay runs the refused command again to reproduce it.
    let mut saw_refusal_counted = false;
    for _ in 0..5 {
        let commands = vec![
            json!({"bump_global": {"key": "a"}}),
            json!({"bump_then_error": {"key": "b"}}),
            json!({"bump_global": {"key": "c"}}),
            json!({"write_then_trap": {"key": "t"}}),
            json!({"bump_global": {"key": "d"}}),
        ];
        let answers = pipelined(&t, &commands);
        assert!(answers[1].is_err() && answers[3].is_err(), "{answers:?}");
        assert_eq!(answers[4], Ok(json!(1)), "{answers:?}");
        let (a, c) = (&answers[0], &answers[2]);
        if *a == Ok(json!(1)) && *c == Ok(json!(3)) {
            // One batch: the refused command's count reached the next.
            saw_refusal_counted = true;
        }
    }
    assert!(saw_refusal_counted, "five commands at once share a batch");
    t.crash_and_restart();
    assert_eq!(bump(&t, "after-restart"), json!(1));
    pipelined(&t, &bumps(2000, 100));
    let verdicts = t.verify_replay();
    assert_eq!(verdicts.len(), 1);
    assert!(verdicts[0].ok(), "{:?}", verdicts[0]);
}

#[test]
fn the_fresh_policy_gives_every_call_a_new_instance() {
    let t = TestHost::with_config(|c| c.runtime.fresh_instances = vec!["misbehave".into()]);
    t.deploy_file(plugins::MISBEHAVE);
    assert_eq!(
        t.host().plugin("misbehave").unwrap().instances,
        InstancePolicy::Fresh
    );
    for answer in pipelined(&t, &bumps(0, 200)) {
        assert_eq!(answer, Ok(json!(1)));
    }
    let verdict = &t.verify_replay()[0];
    assert!(verdict.ok(), "{verdict:?}");
}

#[test]
fn the_reuse_policy_keeps_memory_between_batches_and_replay_still_reproduces_it() {
    // `reuse` keeps one instance until a call traps: the count grows
    // across batches, and replay, following the journaled boundaries and
    // running refused commands again, answers exactly what was answered
    // live.
    let t = TestHost::with_config(|c| c.runtime.reuse_instances = vec!["misbehave".into()]);
    t.deploy_file(plugins::MISBEHAVE);
    assert_eq!(
        t.host().plugin("misbehave").unwrap().instances,
        InstancePolicy::Reuse
    );
    let answers: Vec<_> = (0..4).map(|i| bump(&t, &format!("k{i}"))).collect();
    assert_eq!(answers, vec![json!(1), json!(2), json!(3), json!(4)]);
    // A trap replaces the instance: the count starts again. A refusal
    // keeps it, with what the refused call counted.
    t.call("misbehave", json!({"write_then_trap": {"key": "t"}}))
        .unwrap_err();
    assert_eq!(bump(&t, "after-trap"), json!(1));
    t.call("misbehave", json!({"bump_then_error": {"key": "e"}}))
        .unwrap_err();
    assert_eq!(bump(&t, "after-refusal"), json!(3));
    // An instance whose memory grew past half its cap (64 MiB) is replaced
    // before its next call, so a leak never makes a later call run out.
    t.call("misbehave", json!({"leak": {"mib": 24}})).unwrap();
    assert_eq!(bump(&t, "after-small-leak"), json!(4));
    t.call("misbehave", json!({"leak": {"mib": 24}})).unwrap();
    assert_eq!(bump(&t, "after-large-leak"), json!(1));
    let verdict = &t.verify_replay()[0];
    assert!(verdict.ok(), "{verdict:?}");
}

#[test]
fn the_default_policy_is_batch_and_named_in_the_plugin_status() {
    let t = TestHost::new();
    t.deploy_file(plugins::MISBEHAVE);
    t.deploy_file(plugins::COUNTER);
    for name in ["misbehave", "counter"] {
        assert_eq!(
            t.host().plugin(name).unwrap().instances,
            InstancePolicy::Batch
        );
    }
}

#[test]
fn a_plugin_in_both_instance_lists_is_refused_at_start() {
    let mut config = keel_host::HostConfig::default();
    config.runtime.reuse_instances = vec!["spot".into()];
    config.runtime.fresh_instances = vec!["spot".into()];
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("both"), "{err}");
}
