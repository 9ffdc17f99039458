//! Invariant 3: replaying the journal into an empty database reproduces
//! every plugin's state hash exactly, including after a crash, and with
//! failed commands in the history.

use keel_tests::{TestHost, plugins};
use serde_json::json;

#[test]
fn replay_reproduces_every_plugin_exactly() {
    let mut t = TestHost::new();
    t.deploy_file(plugins::COUNTER);
    t.deploy_file(plugins::MISBEHAVE);
    for i in 0..200 {
        t.call(
            "counter",
            json!({"add": {"name": format!("k{}", i % 17), "amount": i}}),
        )
        .unwrap();
        if i % 7 == 0 {
            let _ = t
                .call("counter", json!({"reset": {"name": "never-existed"}}))
                .unwrap_err();
            let _ = t
                .call(
                    "misbehave",
                    json!({"write_then_trap": {"key": format!("t{i}")}}),
                )
                .unwrap_err();
        }
        if i % 11 == 0 {
            t.call(
                "counter",
                json!({"reset": {"name": format!("k{}", i % 17)}}),
            )
            .unwrap();
            t.call(
                "misbehave",
                json!({"write": {"key": format!("w{i}"), "value": "v"}}),
            )
            .unwrap();
        }
        if i == 120 {
            t.crash_and_restart();
        }
    }
    let verdicts = t.verify_replay();
    assert_eq!(verdicts.len(), 2);
    for v in &verdicts {
        assert!(v.ok(), "{v:?}");
        assert_eq!(v.stored_hash, t.state_hash(&v.plugin));
    }
    let counter = verdicts.iter().find(|v| v.plugin == "counter").unwrap();
    assert!(counter.entries > 200, "{counter:?}");
}

#[test]
fn responses_see_the_journaled_sequence_and_replay_them_identically() {
    let t = TestHost::new();
    t.deploy_file(plugins::COUNTER);
    let first = t
        .call("counter", json!({"add": {"name": "a", "amount": 1}}))
        .unwrap();
    // Sequence 1 is the plugin's init; commands start at 2.
    assert_eq!(first["sequence"], json!(2));
    let second = t
        .call("counter", json!({"add": {"name": "a", "amount": 1}}))
        .unwrap();
    assert_eq!(second["sequence"], json!(3));
    let v = &t.verify_replay()[0];
    assert!(v.ok() && v.response_mismatches.is_empty(), "{v:?}");
}

#[test]
fn an_empty_plugin_hashes_to_the_empty_state() {
    let t = TestHost::new();
    let status = t.deploy_file(plugins::COUNTER);
    assert_eq!(status.last_sequence, 1);
    assert_eq!(
        status.state_hash,
        keel_host::state_hash::StateHash::EMPTY.to_hex()
    );
}

#[test]
fn verify_detects_a_row_damaged_behind_the_hosts_back() {
    let mut t = TestHost::new();
    t.deploy_file(plugins::COUNTER);
    for i in 0..20 {
        t.call(
            "counter",
            json!({"add": {"name": format!("k{}", i % 3), "amount": i}}),
        )
        .unwrap();
    }
    t.stop();
    assert!(
        keel_tests::verify_data_dir(t.data_dir())
            .iter()
            .all(|v| v.ok())
    );
    // Change one stored value with redb directly, as a disk or an
    // operator might.
    {
        let db = redb::Database::open(t.data_dir().join("keel.redb")).unwrap();
        let state: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("state");
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(state).unwrap();
            let key = {
                let (k, _) = redb::ReadableTable::first(&table).unwrap().unwrap();
                k.value().to_vec()
            };
            table.insert(key.as_slice(), [9u8].as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let verdicts = keel_tests::verify_data_dir(t.data_dir());
    assert!(!verdicts[0].ok(), "{verdicts:?}");
    assert_ne!(verdicts[0].rows_hash, verdicts[0].stored_hash);
    assert_eq!(verdicts[0].replayed_hash, verdicts[0].stored_hash);
}
