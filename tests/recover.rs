//! `keel recover` on a stopped host: from scratch, from a snapshot and
//! hybrid, each checked against the database's state hash; and with the
//! database file deleted or damaged, every plugin rebuilt from its newest
//! snapshot that verifies plus the archived journal, with the lost
//! sequences named. The recovered host opens, serves and verifies.

use std::path::Path;

use keel_host::recover::{RecoverMode, RecoveryReport, recover};
use keel_tests::{TestHost, plugins};
use serde_json::json;

fn add(t: &TestHost, i: u64) {
    t.call(
        "counter",
        json!({"add": {"name": format!("k{}", i % 11), "amount": i as i64}}),
    )
    .unwrap();
}

/// A counter with `rounds` × 30 commands, a snapshot after each round
/// (two kept; the journal before the older one archived), checkpointed.
fn history(rounds: u64) -> TestHost {
    let t = TestHost::with_config(|c| {
        c.snapshots = keel_host::snapshot::SnapshotPolicy::OFF;
        c.snapshots.keep_newest = 2;
    });
    t.deploy_file(plugins::COUNTER);
    for round in 0..rounds {
        for i in 0..30 {
            add(&t, round * 30 + i);
        }
        t.host().db().checkpoint().unwrap();
        t.host().snapshot("counter").unwrap();
    }
    t
}

fn run(data_dir: &Path, mode: RecoverMode) -> RecoveryReport {
    let cache = std::env::temp_dir().join("keel-test-component-cache");
    recover(data_dir, &cache, mode, &mut |_, _, _| {}).unwrap()
}

#[test]
fn every_mode_rebuilds_a_readable_database_and_checks_it() {
    for mode in [
        RecoverMode::Scratch,
        RecoverMode::Snapshot,
        RecoverMode::Hybrid,
    ] {
        let mut t = history(4);
        for i in 0..7 {
            add(&t, 1000 + i);
        }
        let before = t.status("counter");
        let tables = t.tables("counter");
        t.stop();
        let report = run(t.data_dir(), mode);
        assert!(report.ok, "{mode:?}: {report:#?}");
        assert_eq!(report.database, "readable");
        let p = &report.plugins[0];
        assert_eq!(p.known_last, Some(before.last_sequence));
        match mode {
            RecoverMode::Snapshot => {
                // The newest snapshot, and the 7 commands after it named as lost.
                assert_eq!(p.recovered_to, before.last_sequence - 7);
                assert_eq!(
                    p.lost.as_deref(),
                    Some(
                        format!("{}..={}", before.last_sequence - 6, before.last_sequence).as_str()
                    )
                );
            }
            _ => {
                assert_eq!(p.recovered_to, before.last_sequence, "{mode:?}");
                assert!(p.lost.is_none(), "{p:?}");
                assert!(p.check.contains("equals the database"), "{p:?}");
            }
        }
        assert!(report.previous_database.is_some());
        t.start();
        if mode != RecoverMode::Snapshot {
            assert_eq!(t.state_hash("counter"), before.state_hash);
            assert_eq!(t.tables("counter"), tables);
        }
        // The recovered host serves, keeps its whole journal readable, and verifies.
        add(&t, 5);
        let status = t.status("counter");
        let journal = t.journal("counter");
        assert_eq!(journal.len() as u64, status.last_sequence, "{mode:?}");
        assert!(t.verify_replay().iter().all(|v| v.ok()), "{mode:?}");
    }
}

#[test]
fn a_lost_or_damaged_database_is_rebuilt_from_snapshots_and_the_archive() {
    for damage in ["delete", "overwrite"] {
        let mut t = history(5);
        let snapshots = t.host().snapshots("counter").unwrap();
        let newest = snapshots.last().unwrap().sequence;
        let archived = t.host().db().archived(t.status("counter").id).unwrap();
        assert_eq!(archived, snapshots[0].sequence);
        for i in 0..4 {
            add(&t, 2000 + i);
        }
        let at_newest = t.host().snapshot_store().read("counter", newest).unwrap();
        t.stop();
        let db = t.data_dir().join("keel.redb");
        match damage {
            "delete" => std::fs::remove_file(&db).unwrap(),
            _ => {
                let mut bytes = std::fs::read(&db).unwrap();
                let len = bytes.len();
                for b in &mut bytes[len / 4..len * 3 / 4] {
                    *b = 0xA5;
                }
                std::fs::write(&db, bytes).unwrap();
            }
        }
        // The newest snapshot is damaged too: the older one and the
        // archive must do.
        let path = keel_host::snapshot::SnapshotStore::new(t.data_dir()).file("counter", newest);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[100] ^= 1;
        std::fs::write(&path, bytes).unwrap();

        let report = run(t.data_dir(), RecoverMode::Hybrid);
        assert!(report.ok, "{damage}: {report:#?}");
        assert!(
            report.database == "missing" || report.database.starts_with("damaged"),
            "{report:?}"
        );
        let p = &report.plugins[0];
        assert_eq!(p.damaged_snapshots.len(), 1, "{p:?}");
        assert!(p.damaged_snapshots[0].contains("at byte"), "{p:?}");
        assert_eq!(p.from_snapshot, snapshots[0].sequence);
        // The archive ends at the older snapshot: nothing after it survives.
        assert_eq!(p.recovered_to, archived);
        assert!(
            p.lost
                .as_deref()
                .unwrap()
                .contains(&format!("after {archived}")),
            "{p:?}"
        );
        t.start();
        assert_eq!(t.status("counter").last_sequence, archived);
        // The state equals what the older snapshot recorded.
        let older = t
            .host()
            .snapshot_store()
            .read("counter", snapshots[0].sequence)
            .unwrap();
        assert_eq!(
            t.state_hash("counter"),
            older.header.record.state_hash.to_hex()
        );
        assert_ne!(
            t.state_hash("counter"),
            at_newest.header.record.state_hash.to_hex()
        );
        add(&t, 1);
    }
}

#[test]
fn nothing_changes_when_a_plugin_cannot_be_recovered() {
    let mut t = history(1);
    add(&t, 7);
    let before = t.status("counter");
    t.stop();
    std::fs::remove_dir_all(t.data_dir().join("snapshots")).unwrap();
    // Snapshot mode needs a snapshot: refused, the database left in place.
    let report = run(t.data_dir(), RecoverMode::Snapshot);
    assert!(!report.ok);
    assert!(
        report.plugins[0].check.contains("no snapshot"),
        "{report:?}"
    );
    assert!(report.previous_database.is_none());
    t.start();
    let after = t.status("counter");
    assert_eq!(
        (after.last_sequence, after.state_hash),
        (before.last_sequence, before.state_hash)
    );
}
