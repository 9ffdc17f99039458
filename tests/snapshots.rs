//! Snapshots and restore: a snapshot holds exactly the plugin's state at
//! its sequence; restore to a snapshot or to any past sequence gives back
//! the state the plugin had then (hashes recorded during the run), across
//! an upgrade; a restore can be undone and is replayed by `verify`; a
//! damaged snapshot is refused with the file, the offset and what failed,
//! and nothing changes; scheduled snapshots keep to their retention.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use keel_host::restore::RestoreTarget;
use keel_host::storage::EntryKind;
use keel_tests::{TestHost, component, plugins};
use serde_json::json;

fn add(t: &TestHost, i: u64) {
    t.call(
        "counter",
        json!({"add": {"name": format!("k{}", i % 13), "amount": (i % 7) as i64 - 2}}),
    )
    .unwrap();
}

#[test]
fn a_snapshot_restores_exactly_and_a_restore_can_be_undone_and_replayed() {
    let t = TestHost::new();
    t.deploy_file(plugins::COUNTER);
    for i in 0..100 {
        add(&t, i);
    }
    let at_snapshot = t.status("counter");
    let tables_then = t.tables("counter");
    let snap = t.host().snapshot("counter").unwrap();
    assert_eq!(snap.sequence, at_snapshot.last_sequence);
    assert_eq!(snap.state_hash, at_snapshot.state_hash);
    assert_eq!(snap.rows as usize, tables_then.len());
    for i in 100..180 {
        add(&t, i);
    }
    t.call("counter", json!({"reset": {"name": "k3"}})).unwrap();
    let before_restore = t.status("counter");
    let tables_before = t.tables("counter");

    let report = t.host().restore("counter", RestoreTarget::Newest).unwrap();
    assert_eq!(report.restored_to, snap.sequence);
    assert_eq!(report.sequence, before_restore.last_sequence + 1);
    assert_eq!(report.undo_snapshot, before_restore.last_sequence);
    assert_eq!(report.undo_to_sequence, before_restore.last_sequence);
    assert_eq!(t.state_hash("counter"), at_snapshot.state_hash);
    assert_eq!(t.tables("counter"), tables_then);
    let last = t.journal("counter").pop().unwrap();
    assert!(
        matches!(last.kind, EntryKind::Restore { to_sequence, from_snapshot }
            if to_sequence == snap.sequence && from_snapshot == snap.sequence),
        "{last:?}"
    );
    // The plugin keeps working from the restored state.
    add(&t, 5);

    // Undo: back to the state just before the restore.
    t.host()
        .restore("counter", RestoreTarget::Snapshot(report.undo_snapshot))
        .unwrap();
    assert_eq!(t.state_hash("counter"), before_restore.state_hash);
    assert_eq!(t.tables("counter"), tables_before);

    // Replay (from the first entry, without snapshots) reproduces it all,
    // restores included.
    let verdicts = t.verify_replay();
    assert!(verdicts.iter().all(|v| v.ok()), "{verdicts:?}");
}

#[test]
fn restore_to_any_past_sequence_gives_the_state_of_that_sequence_across_an_upgrade() {
    let t = TestHost::new();
    t.deploy_file(plugins::COUNTER);
    let mut hashes: BTreeMap<u64, String> = BTreeMap::new();
    let mut record = |t: &TestHost| {
        let s = t.status("counter");
        hashes.insert(s.last_sequence, s.state_hash);
    };
    record(&t);
    for i in 0..240 {
        add(&t, i);
        record(&t);
        if i % 60 == 59 {
            t.host().snapshot("counter").unwrap();
        }
        if i == 150 {
            t.deploy(&component(plugins::COUNTER_V2), None).unwrap();
            record(&t);
        }
    }
    let v2 = t.status("counter").module_hash;
    // Before the first snapshot (replayed from the first entry), exactly
    // at a snapshot, between snapshots, just before and after the upgrade.
    for target in [3, 60, 61, 100, 150, 152, 153, 200, 241] {
        let report = t
            .host()
            .restore("counter", RestoreTarget::Sequence(target))
            .unwrap_or_else(|e| panic!("restoring to {target}: {e}"));
        assert_eq!(report.restored_to, target);
        assert_eq!(
            t.state_hash("counter"),
            hashes[&target],
            "state after restoring to {target}"
        );
        // The module that ran then is active again.
        let status = t.status("counter");
        assert_eq!(status.module_hash, report.module_hash);
        assert_eq!(
            status.module_hash == v2,
            target > 152,
            "module after restoring to {target}"
        );
    }
    let err = t
        .host()
        .restore("counter", RestoreTarget::Sequence(1_000_000))
        .unwrap_err();
    assert!(err.to_string().contains("no sequence"), "{err}");
    let verdicts = t.verify_replay();
    assert!(verdicts.iter().all(|v| v.ok()), "{verdicts:?}");
}

#[test]
fn a_damaged_snapshot_is_refused_with_file_offset_and_reason_and_nothing_changes() {
    let t = TestHost::new();
    t.deploy_file(plugins::COUNTER);
    for i in 0..50 {
        add(&t, i);
    }
    let snap = t.host().snapshot("counter").unwrap();
    for i in 50..60 {
        add(&t, i);
    }
    let good = std::fs::read(&snap.path).unwrap();
    let live = t.status("counter");
    let live_tables = t.tables("counter");
    let step = (good.len() / 40).max(1);
    let mut damaged: Vec<(String, Vec<u8>)> = (0..good.len())
        .step_by(step)
        .map(|i| {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            (format!("byte {i} flipped"), bad)
        })
        .collect();
    for cut in [good.len() - 1, good.len() / 2, 10] {
        damaged.push((format!("cut at {cut}"), good[..cut].to_vec()));
    }
    for (what, bytes) in damaged {
        std::fs::write(&snap.path, &bytes).unwrap();
        let err = t
            .host()
            .restore("counter", RestoreTarget::Snapshot(snap.sequence))
            .expect_err(&what)
            .to_string();
        assert!(
            err.contains(&snap.path.display().to_string()) && err.contains("at byte"),
            "{what}: {err}"
        );
        assert_eq!(t.status("counter").state_hash, live.state_hash, "{what}");
        assert_eq!(t.tables("counter"), live_tables, "{what}");
        // A point-in-time restore that needs the file refuses too.
        let err = t
            .host()
            .restore("counter", RestoreTarget::Sequence(snap.sequence + 2))
            .expect_err(&what)
            .to_string();
        assert!(
            err.contains(&snap.path.display().to_string()),
            "{what}: {err}"
        );
        assert_eq!(
            t.status("counter").last_sequence,
            live.last_sequence,
            "{what}"
        );
    }
    std::fs::write(&snap.path, &good).unwrap();
    t.host()
        .restore("counter", RestoreTarget::Snapshot(snap.sequence))
        .unwrap();
}

#[test]
fn scheduled_snapshots_follow_the_policy_and_every_listed_one_verifies() {
    let t = TestHost::with_config(|c| {
        c.snapshots.interval_ms = 100;
        c.snapshots.every_commands = 0;
        c.snapshots.keep_newest = 3;
    });
    t.deploy_file(plugins::COUNTER);
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        add(&t, i);
        i += 1;
    }
    std::thread::sleep(Duration::from_millis(300));
    let listed = t.host().snapshots("counter").unwrap();
    assert!(
        !listed.is_empty() && listed.len() <= 3,
        "{} snapshots listed",
        listed.len()
    );
    for s in &listed {
        assert_eq!(s.reason, "scheduled");
        let snap = t
            .host()
            .snapshot_store()
            .read("counter", s.sequence)
            .unwrap();
        assert_eq!(snap.header.record.state_hash.to_hex(), s.state_hash);
    }
    // Idle: no new snapshot of an unchanged plugin.
    let newest = listed.last().unwrap().sequence;
    assert_eq!(newest, t.status("counter").last_sequence);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        t.host()
            .snapshots("counter")
            .unwrap()
            .last()
            .unwrap()
            .sequence,
        newest
    );
}

#[test]
fn journal_older_than_the_oldest_snapshot_moves_to_the_archive_and_stays_readable() {
    let t = TestHost::with_config(|c| {
        c.snapshots = keel_host::snapshot::SnapshotPolicy::OFF;
        c.snapshots.keep_newest = 2;
        c.checkpoint.interval_ms = 20;
    });
    t.deploy_file(plugins::COUNTER);
    let mut hashes = BTreeMap::new();
    for round in 0..6u64 {
        for i in 0..50 {
            add(&t, round * 50 + i);
            let s = t.status("counter");
            hashes.insert(s.last_sequence, s.state_hash);
        }
        t.host().db().checkpoint().unwrap();
        t.host().snapshot("counter").unwrap();
    }
    let id = t.status("counter").id;
    let snapshots = t.host().snapshots("counter").unwrap();
    assert_eq!(snapshots.len(), 2);
    // Everything up to the oldest retained snapshot left the database...
    let mark = t.host().db().archived(id).unwrap();
    assert_eq!(mark, snapshots[0].sequence);
    let segments = t.host().db().archive_segments("counter").unwrap();
    assert_eq!(segments.first().unwrap().first, 1);
    assert_eq!(segments.last().unwrap().last, mark);
    // ...and is still read, in order and without a gap, with what remains.
    let journal = t.journal("counter");
    let sequences: Vec<u64> = journal.iter().map(|e| e.sequence).collect();
    assert_eq!(
        sequences,
        (1..=t.status("counter").last_sequence).collect::<Vec<_>>()
    );
    // Restore to a point only the archive holds, and replay from scratch.
    let report = t
        .host()
        .restore("counter", RestoreTarget::Sequence(77))
        .unwrap();
    assert_eq!(
        report.from_snapshot, 0,
        "no snapshot at or before 77 is retained"
    );
    assert_eq!(t.state_hash("counter"), hashes[&77]);
    assert!(t.verify_replay().iter().all(|v| v.ok()));

    // A damaged segment is refused by name and offset; the live state stays.
    let live = t.status("counter");
    let path = &segments[0].path;
    let mut bytes = std::fs::read(path).unwrap();
    bytes[40] ^= 1;
    std::fs::write(path, &bytes).unwrap();
    let err = t
        .host()
        .restore("counter", RestoreTarget::Sequence(20))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&path.display().to_string()) && err.contains("at byte"),
        "{err}"
    );
    assert_eq!(t.status("counter").state_hash, live.state_hash);
    assert_eq!(t.status("counter").last_sequence, live.last_sequence);
}

#[test]
fn archive_retention_deletes_the_oldest_segments() {
    let t = TestHost::with_config(|c| {
        c.snapshots = keel_host::snapshot::SnapshotPolicy::OFF;
        c.snapshots.keep_newest = 1;
        c.archive.keep_segments_max = 2;
    });
    t.deploy_file(plugins::COUNTER);
    for round in 0..5u64 {
        for i in 0..20 {
            add(&t, round * 20 + i);
        }
        t.host().db().checkpoint().unwrap();
        t.host().snapshot("counter").unwrap();
    }
    let segments = t.host().db().archive_segments("counter").unwrap();
    assert_eq!(segments.len(), 2, "{segments:?}");
    let id = t.status("counter").id;
    let last = t.status("counter").last_sequence;
    let journal = t.host().db().journal(id, 1, last).unwrap();
    // What is left starts where the oldest kept segment starts.
    assert_eq!(journal.first().unwrap().sequence, segments[0].first);
    assert_eq!(journal.len() as u64, last - segments[0].first + 1);
}
