//! Invariant 5: hot-swap loses nothing. Deploying a new version of a
//! running plugin pauses its queue at a batch boundary, runs `migrate` in
//! one transaction, and either commits the new version or keeps the old one
//! with state untouched; commands that arrive meanwhile wait; every version
//! is kept so that `rollback` is one command.
//!
//! The subject is the counter plugin: version 1.0.0 (schema 1, table
//! `counts`) and version 2.0.0 (`COUNTER_V2`, schema 2), which adds the
//! tables `ranking` and `summary` (built by `migrate(1)` from `counts`),
//! answers `add` with the running `total`, and refuses to migrate a counter
//! outside the `i32` range. Version 1's `migrate(2)` drops the schema-2
//! tables (see plugins/counter/src/lib.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};

use keel_host::error::HostError;
use keel_host::host::PluginStatus;
use keel_tests::{TestHost, component, plugins};
use serde_json::{Value, json};

const PLUGIN: &str = "counter";

fn v1() -> Vec<u8> {
    component(plugins::COUNTER)
}

fn v2() -> Vec<u8> {
    component(plugins::COUNTER_V2)
}

fn add(name: &str, amount: i64) -> Value {
    json!({"add": {"name": name, "amount": amount}})
}

fn reset(name: &str) -> Value {
    json!({"reset": {"name": name}})
}

/// The names of the tables the plugin has rows in.
fn table_names(t: &TestHost) -> BTreeSet<String> {
    t.tables(PLUGIN)
        .into_keys()
        .map(|(table, _)| table)
        .collect()
}

/// The raw rows of one table.
fn rows(t: &TestHost, table: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
    t.tables(PLUGIN)
        .into_iter()
        .filter(|((name, _), _)| name == table)
        .map(|((_, key), value)| (key, value))
        .collect()
}

/// What version 2's `top` and `summary` must answer for these counters.
fn expected_v2_views(counts: &BTreeMap<String, i64>) -> (Value, Value) {
    let mut ranked: Vec<(i64, &String)> = counts.iter().map(|(n, v)| (*v, n)).collect();
    ranked.sort();
    ranked.reverse();
    let top: Vec<Value> = ranked
        .iter()
        .map(|(v, n)| json!({"name": n, "value": v}))
        .collect();
    let summary = json!({"counters": counts.len(), "total": counts.values().sum::<i64>()});
    (Value::Array(top), summary)
}

fn assert_v2_views(t: &TestHost, counts: &BTreeMap<String, i64>) {
    let (top, summary) = expected_v2_views(counts);
    assert_eq!(t.query(PLUGIN, json!({"top": {"n": 1000}})).unwrap(), top);
    assert_eq!(t.query(PLUGIN, json!("summary")).unwrap(), summary);
    assert_eq!(
        t.query(PLUGIN, json!("list")).unwrap(),
        serde_json::to_value(counts).unwrap()
    );
}

fn assert_replay_ok(t: &TestHost) {
    let verdicts = t.verify_replay();
    assert_eq!(verdicts.len(), 1, "{verdicts:?}");
    assert!(verdicts[0].ok(), "{:?}", verdicts[0]);
    assert_eq!(verdicts[0].stored_hash, t.state_hash(PLUGIN));
}

/// When a command of the stream was submitted relative to the deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before `deploy` was called: must run on version 1.
    Before,
    /// While `deploy` was running: either version, in submission order.
    During,
    /// After `deploy` returned: must run on version 2.
    After,
}

/// The `i`-th command of the stream: mostly adds over 16 counters, with a
/// reset now and then (which fails with `not-found` when the counter is
/// already gone).
fn stream_command(i: usize) -> Value {
    let name = format!("k{}", i % 16);
    if i % 97 == 13 {
        reset(&name)
    } else {
        add(&name, (i % 11) as i64 - 4)
    }
}

const STREAM_BEFORE: usize = 2000;
const STREAM_DURING_MAX: usize = 3000;
const STREAM_AFTER: usize = 1000;

#[test]
fn upgrade_while_commands_stream_in_loses_nothing() {
    // Whether a command is submitted while `deploy` runs depends on thread
    // scheduling; on this machine thousands are. Should the submitter be
    // starved for the whole deployment, the run still proves everything
    // else, and another run exercises the waiting.
    for attempt in 1..=3 {
        let waited = stream_through_an_upgrade();
        if waited > 0 {
            return;
        }
        eprintln!("attempt {attempt}: no command arrived while the deployment ran; again");
    }
    panic!("in 3 runs no command arrived while the deployment ran");
}

/// Streams commands through an upgrade from v1 to v2 and checks every
/// answer; returns how many commands submitted while `deploy` ran were
/// queued behind the upgrade and answered by v2.
fn stream_through_an_upgrade() -> usize {
    let t = TestHost::new();
    let v1_status = t.deploy(&v1(), None).unwrap();
    assert_eq!((v1_status.version.as_str(), v1_status.schema), ("1.0.0", 1));
    // Counters the stream never touches: after the stream, their ranking
    // rows are still exactly the ones migrate built.
    let mut model: BTreeMap<String, i64> = BTreeMap::new();
    for j in 0..20i64 {
        let name = format!("static{j:02}");
        let value = (j - 10) * 1000 + j;
        t.call(PLUGIN, add(&name, value)).unwrap();
        model.insert(name, value);
    }
    let first_sequence = t.status(PLUGIN).last_sequence + 1;
    let v2_bytes = v2();
    // Compile version 2 ahead, so that the deployment is quick and the
    // swap happens while the stream is still in flight.
    t.host().load_component(&v2_bytes).unwrap();

    let host = t.host();
    let deployed = AtomicBool::new(false);
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (receipts, v2_status) = std::thread::scope(|s| {
        let submitter = s.spawn(|| {
            let mut pending = Vec::new();
            let mut submit = |phase: Phase| {
                let i = pending.len();
                let bytes = stream_command(i).to_string();
                let rx = host
                    .submit_pipelined(PLUGIN, bytes.as_bytes())
                    .unwrap_or_else(|e| panic!("command {i} refused at submission: {e}"));
                pending.push((i, phase, rx));
            };
            for _ in 0..STREAM_BEFORE {
                submit(Phase::Before);
            }
            started_tx.send(()).unwrap();
            let mut during = 0;
            while !deployed.load(Ordering::Acquire) && during < STREAM_DURING_MAX {
                submit(Phase::During);
                during += 1;
            }
            while !deployed.load(Ordering::Acquire) {
                std::thread::yield_now();
            }
            for _ in 0..STREAM_AFTER {
                submit(Phase::After);
            }
            pending
        });
        started_rx.recv().unwrap();
        let status = host.deploy(&v2_bytes, None).expect("upgrading to v2");
        deployed.store(true, Ordering::Release);
        (submitter.join().unwrap(), status)
    });

    assert_eq!((v2_status.version.as_str(), v2_status.schema), ("2.0.0", 2));
    assert_eq!(v2_status.deployments.len(), 2);
    let migrate_sequence = v2_status.deployments[1].sequence;

    // Every command is answered (none dropped), with its own sequence.
    let total = receipts.len();
    let mut answered = Vec::with_capacity(total);
    for (i, phase, rx) in receipts {
        let outcome = rx
            .blocking_recv()
            .unwrap_or_else(|_| panic!("command {i} ({phase:?}) was dropped unanswered"));
        let (sequence, answer) = match outcome {
            Ok(receipt) => (
                receipt.sequence,
                Ok(serde_json::from_slice::<Value>(&receipt.response).unwrap()),
            ),
            Err(HostError::Rejected { sequence, code, .. }) => (sequence, Err(code)),
            Err(e) => panic!("command {i} ({phase:?}) failed: {e}"),
        };
        answered.push((i, phase, sequence, answer));
    }

    // Sequences: the migration has one, the streamed commands every other
    // one from `first_sequence` on, in submission order (nothing
    // reordered, no gap).
    let status = t.status(PLUGIN);
    assert_eq!(status.last_sequence, first_sequence + total as u64);
    let mut expected_sequence = first_sequence;
    for (i, _, sequence, _) in &answered {
        if expected_sequence == migrate_sequence {
            expected_sequence += 1;
        }
        assert_eq!(*sequence, expected_sequence, "command {i}");
        expected_sequence += 1;
    }
    assert!(migrate_sequence >= first_sequence + STREAM_BEFORE as u64);
    assert!(migrate_sequence <= status.last_sequence - STREAM_AFTER as u64);

    // Each answer is what the version active at its sequence must give,
    // computed from a model of the counters.
    let (mut on_v1, mut on_v2, mut waited) = (0, 0, 0);
    for (i, phase, sequence, answer) in &answered {
        let on_v2_now = *sequence > migrate_sequence;
        if on_v2_now {
            on_v2 += 1;
            assert_ne!(*phase, Phase::Before, "command {i}");
            if *phase == Phase::During {
                waited += 1;
            }
        } else {
            on_v1 += 1;
            assert_ne!(*phase, Phase::After, "command {i}");
        }
        let command = stream_command(*i);
        if let Some(reset) = command.get("reset") {
            let name = reset["name"].as_str().unwrap();
            match model.remove(name) {
                Some(_) => assert_eq!(answer, &Ok(Value::Null), "command {i}"),
                None => assert_eq!(answer, &Err("not-found".to_owned()), "command {i}"),
            }
            continue;
        }
        let name = command["add"]["name"].as_str().unwrap().to_owned();
        let amount = command["add"]["amount"].as_i64().unwrap();
        let value = *model
            .entry(name)
            .and_modify(|v| *v += amount)
            .or_insert(amount);
        let expected = if on_v2_now {
            json!({"value": value, "sequence": sequence, "total": model.values().sum::<i64>()})
        } else {
            json!({"value": value, "sequence": sequence})
        };
        assert_eq!(answer, &Ok(expected), "command {i} ({phase:?})");
    }
    assert_eq!(on_v1 + on_v2, total);
    assert!(on_v1 >= STREAM_BEFORE && on_v2 >= STREAM_AFTER);
    eprintln!(
        "{total} commands: {on_v1} on v1, {on_v2} on v2 ({waited} submitted during the deployment waited for it); migrate at sequence {migrate_sequence}"
    );

    // Every version-2 total above started from the summary migrate built;
    // the tables end exactly as the model says.
    assert_v2_views(&t, &model);
    assert_eq!(
        table_names(&t),
        BTreeSet::from(["counts", "ranking", "summary"].map(String::from))
    );
    assert_eq!(rows(&t, "ranking").len(), model.len());

    // Replay re-runs the Migrate entry with the v2 module.
    assert_replay_ok(&t);
    waited
}

#[test]
fn a_failing_migrate_keeps_version_1_running_with_state_untouched() {
    let mut t = TestHost::new();
    let v2_bytes = v2();
    t.deploy(&v1(), None).unwrap();
    // Counters sort by name: migrate writes the ranking rows of "a" and
    // "b" before it meets "z", which version 2 cannot represent.
    for (name, amount) in [("a", 1), ("b", 2), ("z", 5_000_000_000)] {
        t.call(PLUGIN, add(name, amount)).unwrap();
    }
    let status_before = t.status(PLUGIN);
    let tables_before = t.tables(PLUGIN);

    let err = t.deploy(&v2_bytes, None).unwrap_err();
    assert_eq!(err.code(), "deploy-refused", "{err}");
    let message = err.to_string();
    for part in [
        "out-of-range",
        "counter z",
        "5000000000",
        "1.0.0 keeps running",
    ] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }

    // Nothing changed: same version, same deployments, same sequence, same
    // state hash, the very same rows.
    let status_after = t.status(PLUGIN);
    assert_eq!(status_after, status_before);
    assert_eq!(status_after.version, "1.0.0");
    assert_eq!(t.tables(PLUGIN), tables_before);
    assert_eq!(
        table_names(&t),
        BTreeSet::from(["counts".to_owned()]),
        "the rows migrate wrote before failing are gone"
    );

    // Version 1 keeps serving, with version 1's behaviour.
    let seq = status_before.last_sequence;
    assert_eq!(
        t.call(PLUGIN, add("a", 1)).unwrap(),
        json!({"value": 2, "sequence": seq + 1})
    );
    assert_eq!(
        t.query(PLUGIN, json!("summary")).unwrap_err().code(),
        "bad-query"
    );

    // A failing deployment in the middle of a stream: every command is
    // answered by version 1, in order.
    let pending: Vec<_> = (0..300)
        .map(|i| {
            if i == 150 {
                assert!(t.deploy(&v2_bytes, None).is_err());
            }
            let cmd = add("s", 1).to_string();
            t.host().submit_pipelined(PLUGIN, cmd.as_bytes()).unwrap()
        })
        .collect();
    for (i, rx) in pending.into_iter().enumerate() {
        let receipt = rx.blocking_recv().unwrap().unwrap();
        assert_eq!(receipt.sequence, seq + 2 + i as u64);
        let answer: Value = serde_json::from_slice(&receipt.response).unwrap();
        assert_eq!(
            answer,
            json!({"value": i + 1, "sequence": receipt.sequence})
        );
    }
    assert_eq!(t.status(PLUGIN).deployments, status_before.deployments);

    // A failed migration leaves no trace in the journal or after a crash.
    assert_replay_ok(&t);
    t.crash_and_restart();
    assert_eq!(t.status(PLUGIN).version, "1.0.0");
    assert_eq!(t.status(PLUGIN).deployments, status_before.deployments);

    // The way out the error names: bring the counter into range with
    // version 1, deploy again.
    t.call(PLUGIN, reset("z")).unwrap();
    let upgraded = t.deploy(&v2_bytes, None).unwrap();
    assert_eq!(upgraded.version, "2.0.0");
    let model = BTreeMap::from([
        ("a".to_owned(), 2),
        ("b".to_owned(), 2),
        ("s".to_owned(), 300),
    ]);
    assert_v2_views(&t, &model);
    assert_replay_ok(&t);
}

#[test]
fn rollback_by_module_hash_restores_version_1_exactly() {
    let t = TestHost::new();
    let (v1_bytes, v2_bytes) = (v1(), v2());
    t.deploy(&v1_bytes, None).unwrap();
    let mut model = BTreeMap::new();
    for (name, amount) in [("a", 5), ("b", -3), ("c", 7), ("d", 5)] {
        t.call(PLUGIN, add(name, amount)).unwrap();
        model.insert(name.to_owned(), amount);
    }
    let v1_status = t.status(PLUGIN);
    let v1_tables = t.tables(PLUGIN);
    let v1_hash = v1_status.module_hash.clone();

    // Deploying the active version again changes nothing.
    assert_eq!(t.deploy(&v1_bytes, None).unwrap(), v1_status);
    assert_eq!(t.host().rollback(PLUGIN, &v1_hash).unwrap(), v1_status);
    assert_eq!(t.tables(PLUGIN), v1_tables);

    // Upgrade: migrate(1) builds the ranking and the summary and leaves
    // `counts` byte for byte as it was.
    let v2_status = t.deploy(&v2_bytes, None).unwrap();
    assert_eq!((v2_status.version.as_str(), v2_status.schema), ("2.0.0", 2));
    assert_ne!(v2_status.module_hash, v1_hash);
    assert_eq!(v2_status.last_sequence, v1_status.last_sequence + 1);
    assert_ne!(v2_status.state_hash, v1_status.state_hash);
    let v2_hash = v2_status.module_hash.clone();
    assert_eq!(rows(&t, "counts"), {
        let mut counts = BTreeMap::new();
        for ((_, key), value) in &v1_tables {
            counts.insert(key.clone(), value.clone());
        }
        counts
    });
    assert_eq!(rows(&t, "ranking").len(), 4);
    assert_eq!(rows(&t, "summary").len(), 1);
    assert_v2_views(&t, &model);
    assert_eq!(
        t.query(PLUGIN, json!({"top": {"n": 2}})).unwrap(),
        json!([{"name": "c", "value": 7}, {"name": "d", "value": 5}])
    );
    assert_eq!(t.deploy(&v2_bytes, None).unwrap(), v2_status);
    assert_eq!(t.host().rollback(PLUGIN, &v2_hash).unwrap(), v2_status);

    // Rollback right away: exactly version 1's state again.
    let back = t.host().rollback(PLUGIN, &v1_hash).unwrap();
    assert_eq!(back.version, "1.0.0");
    assert_eq!(back.schema, 1);
    assert_eq!(back.module_hash, v1_hash);
    assert_eq!(back.last_sequence, v2_status.last_sequence + 1);
    assert_eq!(back.state_hash, v1_status.state_hash);
    assert_eq!(t.tables(PLUGIN), v1_tables);
    let hashes: Vec<_> = back
        .deployments
        .iter()
        .map(|d| (d.module_hash.as_str(), d.version.as_str(), d.schema))
        .collect();
    assert_eq!(
        hashes,
        [
            (v1_hash.as_str(), "1.0.0", 1),
            (v2_hash.as_str(), "2.0.0", 2),
            (v1_hash.as_str(), "1.0.0", 1)
        ]
    );
    assert_eq!(back.deployments[2].sequence, back.last_sequence);

    // Version 1 serves again, with version 1's answers.
    assert_eq!(
        t.call(PLUGIN, add("a", 1)).unwrap(),
        json!({"value": 6, "sequence": back.last_sequence + 1})
    );
    model.insert("a".to_owned(), 6);

    // Unknown or malformed hashes are refused and change nothing.
    let before = t.status(PLUGIN);
    let unknown = "0".repeat(64);
    let err = t.host().rollback(PLUGIN, &unknown).unwrap_err();
    assert_eq!(err.code(), "deploy-refused");
    assert!(err.to_string().contains("never ran"), "{err}");
    assert!(t.host().rollback(PLUGIN, "not-a-hash").is_err());
    assert!(t.host().rollback("no-such-plugin", &v2_hash).is_err());
    assert_eq!(t.status(PLUGIN), before);

    // Forward again by hash: version 2 rebuilds from the current counters,
    // with every commit in between applied once.
    let again = t.host().rollback(PLUGIN, &v2_hash).unwrap();
    assert_eq!(again.version, "2.0.0");
    assert_eq!(again.deployments.len(), 4);
    assert_v2_views(&t, &model);
    assert_eq!(
        t.call(PLUGIN, add("e", 1)).unwrap(),
        json!({"value": 1, "sequence": again.last_sequence + 1, "total": 16})
    );
    assert_replay_ok(&t);
}

#[test]
fn the_upgrade_and_the_rollback_survive_crash_and_restart() {
    let mut t = TestHost::new();
    t.deploy(&v1(), None).unwrap();
    let mut model = BTreeMap::new();
    for i in 0..50 {
        let name = format!("n{}", i % 7);
        t.call(PLUGIN, add(&name, i)).unwrap();
        *model.entry(name).or_insert(0) += i;
    }
    let v1_hash = t.status(PLUGIN).module_hash;
    let upgraded = t.deploy(&v2(), None).unwrap();
    let answer = t.call(PLUGIN, add("n0", 1)).unwrap();
    *model.get_mut("n0").unwrap() += 1;
    assert_eq!(answer["total"], json!(model.values().sum::<i64>()));
    let before_crash = t.status(PLUGIN);

    t.crash_and_restart();
    let after = t.status(PLUGIN);
    assert_eq!(after, before_crash);
    assert_eq!((after.version.as_str(), after.schema), ("2.0.0", 2));
    assert_eq!(after.module_hash, upgraded.module_hash);
    // Still version 2's behaviour, on version 2's tables.
    let answer = t.call(PLUGIN, add("n1", -1)).unwrap();
    *model.get_mut("n1").unwrap() -= 1;
    assert_eq!(answer["total"], json!(model.values().sum::<i64>()));
    assert_v2_views(&t, &model);
    assert_replay_ok(&t);

    // The rollback survives a crash too.
    let back = t.host().rollback(PLUGIN, &v1_hash).unwrap();
    t.crash_and_restart();
    let after: PluginStatus = t.status(PLUGIN);
    assert_eq!(after, back);
    assert_eq!(after.version, "1.0.0");
    assert_eq!(table_names(&t), BTreeSet::from(["counts".to_owned()]));
    assert_eq!(
        t.call(PLUGIN, add("n2", 0)).unwrap(),
        json!({"value": model["n2"], "sequence": after.last_sequence + 1})
    );
    assert_replay_ok(&t);
}
