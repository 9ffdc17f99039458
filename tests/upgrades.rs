//! Upgrades without fear: a dry run of an identical build finds nothing
//! over 10 000 recorded commands; a changed build is reported command by
//! command with its responses and rows; the deploy gate refuses a changed
//! build unless forced; an undone upgrade ends exactly where a host that
//! never saw the upgrade ends, names the answers that changed, and
//! replays; the live plugin keeps serving through a dry run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use keel_host::config::DeployGate;
use keel_host::dry_run::{DryRunFrom, Shown};
use keel_tests::bench::{env, pipelined};
use keel_tests::{TestHost, component, plugins};
use serde_json::json;

fn adds(n: usize, salt: u64) -> Vec<Vec<u8>> {
    (0..n as u64)
        .map(|i| {
            let i = i + salt;
            json!({"add": {"name": format!("k{}", i % 97), "amount": (i % 13) as i64 - 4}})
                .to_string()
                .into_bytes()
        })
        .collect()
}

#[test]
fn a_dry_run_of_an_identical_build_finds_no_difference_over_10000_commands() {
    let n = env("KEEL_DRY_RUN_COMMANDS", 10_000);
    let t = TestHost::new();
    t.deploy_file(plugins::COUNTER);
    pipelined(t.host(), "counter", &adds(n, 0), 1024);
    let before = t.status("counter");
    let report = t
        .host()
        .dry_run(
            &component(plugins::COUNTER),
            DryRunFrom::Last(n as u64),
            &mut |_, _| {},
        )
        .unwrap();
    assert_eq!(report.replayed, n as u64, "{report:?}");
    assert_eq!(report.different, 0, "{:?}", report.first_differences);
    assert_eq!(report.live_diverged_from_journal, 0);
    assert_eq!(report.identical, n as u64);
    // Nothing live changed.
    assert_eq!(t.status("counter"), before);
}

#[test]
fn a_dry_run_of_a_changed_build_reports_exactly_the_commands_that_change() {
    let t = TestHost::new();
    t.deploy_file(plugins::COUNTER);
    // A state for the candidate's migrate to work on.
    pipelined(t.host(), "counter", &adds(50, 0), 64);
    let mut changed = Vec::new();
    let mut unchanged = 0;
    for i in 0..200u64 {
        let command = if i % 5 == 0 {
            // Refused by both versions alike.
            json!({"reset": {"name": format!("missing-{i}")}})
        } else {
            json!({"add": {"name": format!("k{}", i % 7), "amount": i as i64}})
        };
        match t.call_raw("counter", command.to_string().as_bytes()) {
            // Version 2 answers every accepted command with more (a total)
            // and writes its ranking and summary rows.
            Ok((sequence, _)) => changed.push(sequence),
            Err(_) => unchanged += 1,
        }
    }
    let report = t
        .host()
        .dry_run(
            &component(plugins::COUNTER_V2),
            DryRunFrom::Last(200),
            &mut |_, _| {},
        )
        .unwrap();
    assert_eq!(report.replayed, 200);
    assert_eq!(report.different_sequences, changed);
    assert_eq!(report.identical, unchanged);
    assert!(report.migrate_rows_written > 0, "{report:?}");
    let first = &report.first_differences[0];
    assert_eq!(first.sequence, changed[0]);
    match (&first.live, &first.candidate) {
        (Shown::Ok(live), Shown::Ok(candidate)) => {
            assert!(
                !live.contains("total") && candidate.contains("total"),
                "{first:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    // The rows version 2 writes besides the count, decoded as JSON.
    let tables: Vec<&str> = first.rows.iter().map(|r| r.table.as_str()).collect();
    assert!(
        tables.contains(&"ranking") && tables.contains(&"summary"),
        "{first:?}"
    );
    assert!(
        first.rows.iter().all(|r| !r.key.is_object()),
        "keys decoded: {first:?}"
    );
    // Nothing live changed.
    assert_eq!(t.status("counter").version, "1.0.0");
}

#[test]
fn the_deploy_gate_refuses_a_changed_build_unless_forced() {
    let t = TestHost::with_config(|c| c.deploy.dry_run = DeployGate::Refuse);
    t.deploy_file(plugins::COUNTER);
    for i in 0..20 {
        t.call("counter", json!({"add": {"name": "a", "amount": i}}))
            .unwrap();
    }
    let v2 = component(plugins::COUNTER_V2);
    let err = t.host().deploy(&v2, None).unwrap_err().to_string();
    assert!(
        err.contains("handled differently") && err.contains("force"),
        "{err}"
    );
    assert_eq!(t.status("counter").version, "1.0.0");
    t.host().deploy_gated(&v2, None, true).unwrap();
    assert_eq!(t.status("counter").version, "2.0.0");
}

#[test]
fn an_undone_upgrade_ends_where_a_host_that_never_upgraded_ends() {
    let with = TestHost::new();
    let without = TestHost::new();
    with.deploy_file(plugins::COUNTER);
    without.deploy_file(plugins::COUNTER);
    let before = adds(100, 0);
    pipelined(with.host(), "counter", &before, 256);
    pipelined(without.host(), "counter", &before, 256);
    with.deploy(&component(plugins::COUNTER_V2), None).unwrap();
    let upgrade = with.status("counter").last_sequence;
    // The upgrade left a snapshot of the state it started from.
    let before_deploy = with.host().snapshots("counter").unwrap();
    assert!(
        before_deploy
            .iter()
            .any(|s| s.reason == "before-deploy" && s.sequence == upgrade - 1),
        "{before_deploy:?}"
    );
    // 1000 commands, ten of which version 2 refuses (out of its range)
    // and version 1 accepts.
    let mut after: Vec<Vec<u8>> = (0..10)
        .map(|i| {
            json!({"add": {"name": format!("big{i}"), "amount": i64::from(i32::MAX) + 1 + i}})
                .to_string()
                .into_bytes()
        })
        .collect();
    after.extend(adds(990, 100));
    pipelined(with.host(), "counter", &after, 256);
    pipelined(without.host(), "counter", &after, 256);
    assert_ne!(with.state_hash("counter"), without.state_hash("counter"));

    let report = with.host().undo_upgrade("counter", None).unwrap();
    assert_eq!(report.upgrade_sequence, upgrade);
    assert_eq!(report.version, "1.0.0");
    assert_eq!(report.replayed, 1000);
    assert_eq!(with.state_hash("counter"), without.state_hash("counter"));
    assert_eq!(with.tables("counter"), without.tables("counter"));
    assert_eq!(with.status("counter").version, "1.0.0");
    // Every accepted add answered with a total under version 2; the ten
    // big ones were refused then and are accepted now.
    assert_eq!(report.responses_changed, 1000);
    assert!(
        report
            .changes
            .iter()
            .any(|c| c.told.contains("out-of-range") && c.now.starts_with("ok")),
        "{:?}",
        report.changes
    );
    // The plugin serves on the old version and the whole history replays.
    with.call("counter", json!({"add": {"name": "a", "amount": 1}}))
        .unwrap();
    assert!(with.verify_replay().iter().all(|v| v.ok()));
}

#[test]
fn the_live_plugin_keeps_serving_through_a_dry_run() {
    let t = Arc::new(TestHost::new());
    t.deploy_file(plugins::COUNTER);
    pipelined(t.host(), "counter", &adds(2000, 0), 512);
    let stop = Arc::new(AtomicBool::new(false));
    let streamer = {
        let (t, stop) = (t.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Acquire) {
                let command = json!({"add": {"name": format!("live{}", i % 5), "amount": 1}});
                let (sequence, _) = t
                    .call_raw("counter", command.to_string().as_bytes())
                    .unwrap();
                acked.push(sequence);
                i += 1;
            }
            acked
        })
    };
    let report = t
        .host()
        .dry_run(
            &component(plugins::COUNTER),
            DryRunFrom::Last(2000),
            &mut |_, _| {},
        )
        .unwrap();
    stop.store(true, Ordering::Release);
    let acked = streamer.join().unwrap();
    assert!(report.identical(), "{report:?}");
    assert!(
        !acked.is_empty(),
        "no command was answered during the dry run"
    );
    let journal = t.journal("counter");
    for sequence in acked {
        assert!(matches!(
            journal[sequence as usize - 1].kind,
            keel_host::storage::EntryKind::Command { .. }
        ));
    }
}
