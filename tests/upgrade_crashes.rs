//! SIGKILL during a dry run and during an undone upgrade, at random
//! moments, against a real `keel serve`: a dry run never changes anything
//! live; an undo is all or nothing — after the restart the plugin either
//! has exactly its state before the undo, or the undo is journaled and
//! replaying the journal reproduces the state. Cycles:
//! `KEEL_UPGRADE_CRASH_CYCLES` (default 10).

use std::time::Duration;

use keel_host::storage::{Db, Durability, EntryKind};
use keel_tests::server::Server;
use keel_tests::{component, plugins};
use rand::{Rng, SeedableRng};
use serde_json::json;

fn verify(data: &std::path::Path) -> (String, Option<EntryKind>) {
    let (hash, last) = {
        let db = Db::open(&data.join("keel.redb"), Durability::Immediate).unwrap();
        let record = db.plugins().unwrap().remove(0);
        let last = db
            .journal(record.id, record.last_sequence, record.last_sequence)
            .unwrap()
            .pop()
            .map(|e| e.kind);
        (record.state_hash.to_hex(), last)
    };
    // The state is what replaying the journal gives: no half-done undo.
    let verdicts = keel_tests::verify_data_dir(data);
    assert!(verdicts[0].ok(), "{:?}", verdicts[0]);
    (hash, last)
}

#[test]
fn sigkill_during_dry_runs_and_undone_upgrades_changes_nothing_or_everything() {
    let cycles: usize = std::env::var("KEEL_UPGRADE_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x756e646f);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(dir.path(), &[("counter", None)]);
    let v2 = component(plugins::COUNTER_V2);
    let (mut undone, mut interrupted) = (0, 0);
    for cycle in 0..cycles {
        for i in 0..40 {
            server
                .call(
                    "counter",
                    &json!({"add": {"name": format!("c{}", i % 9), "amount": i}}),
                )
                .unwrap();
        }
        let dry = cycle % 2 == 0;
        if !dry && server.plugin_status("counter")["version"] == "1.0.0" {
            server.post_raw("/v1/plugins?force=true", &v2).unwrap();
            for i in 0..20 {
                server
                    .call(
                        "counter",
                        &json!({"add": {"name": format!("d{i}"), "amount": 1}}),
                    )
                    .unwrap();
            }
        }
        let before = server.plugin_status("counter");
        let url = server.base_url().to_owned();
        let body = v2.clone();
        let request = std::thread::spawn(move || {
            let agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(30)))
                .build()
                .new_agent();
            let path = if dry {
                format!("{url}/v1/plugins?dry_run=true&last=200")
            } else {
                format!("{url}/v1/plugins/counter/undo-upgrade")
            };
            let body = if dry { body } else { Vec::new() };
            agent
                .post(&path)
                .send(&body[..])
                .ok()
                .map(|r| r.status().as_u16())
        });
        std::thread::sleep(Duration::from_millis(rng.random_range(5..250)));
        server.kill();
        let answered = request.join().unwrap();
        let (hash, last) = verify(&data);
        let before_hash = before["state_hash"].as_str().unwrap();
        if dry {
            assert_eq!(
                hash, before_hash,
                "cycle {cycle}: a dry run changed the live state"
            );
        } else if matches!(last, Some(EntryKind::UndoUpgrade { .. })) {
            undone += 1;
        } else {
            assert_eq!(hash, before_hash, "cycle {cycle}: a half-done undo");
            assert_ne!(
                answered,
                Some(200),
                "cycle {cycle}: an acknowledged undo is missing"
            );
            interrupted += 1;
        }
        server.restart();
    }
    eprintln!("undos applied {undone}, interrupted {interrupted}");
    assert!(undone + interrupted == cycles / 2);
}
