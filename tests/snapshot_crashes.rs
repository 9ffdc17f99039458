//! SIGKILL while snapshots are written and pruned, the journal archived
//! and restores run: a real `keel serve` takes a snapshot every 40 ms
//! (three kept, the journal before the oldest archived, old segments
//! pruned), clients stream commands and an operator asks for snapshots
//! and restores, and the process is killed at a random moment. After each
//! kill: every acknowledged command is in the journal at its sequence
//! with its bytes, every acknowledged restore is journaled, every listed
//! snapshot verifies, every archive segment reads, and replay reproduces
//! the state. Cycles: `KEEL_SNAPSHOT_CRASH_CYCLES` (default 20).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_host::snapshot::SnapshotStore;
use keel_host::storage::{Db, Durability, EntryKind, Outcome};
use keel_tests::server::Server;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// sequence → what was acknowledged there.
#[derive(Debug, Clone, PartialEq)]
enum Acked {
    Command(Vec<u8>),
    Restore(u64),
}

type Log = Arc<Mutex<BTreeMap<u64, Acked>>>;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent()
}

fn post(agent: &ureq::Agent, url: &str, body: &[u8]) -> Option<(u16, Value)> {
    let mut resp = agent.post(url).send(body).ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.body_mut().read_json().unwrap_or(Value::Null)))
}

fn client(url: String, id: usize, cycle: usize, stop: Arc<AtomicBool>, log: Log) {
    let agent = agent();
    let mut i = 0u64;
    while !stop.load(Ordering::Acquire) {
        i += 1;
        let command = json!({"add": {"name": format!("c{}", (id as u64 * 7 + i) % 23), "amount": cycle as i64 + 1}})
            .to_string()
            .into_bytes();
        let Some((status, body)) = post(
            &agent,
            &format!("{url}/v1/plugins/counter/commands"),
            &command,
        ) else {
            break;
        };
        if status != 200 {
            break;
        }
        let sequence = body["sequence"].as_u64().unwrap();
        log.lock()
            .unwrap()
            .insert(sequence, Acked::Command(command));
    }
}

fn operator(url: String, seed: u64, stop: Arc<AtomicBool>, log: Log) {
    let agent = agent();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(rng.random_range(10..60)));
        if rng.random_bool(0.5) {
            let _ = post(&agent, &format!("{url}/v1/plugins/counter/snapshots"), b"");
            continue;
        }
        let last = log.lock().unwrap().keys().next_back().copied().unwrap_or(0);
        let query = if rng.random_bool(0.5) || last < 50 {
            String::new()
        } else {
            format!("?to_sequence={}", last - rng.random_range(1..50))
        };
        let Some((status, body)) = post(
            &agent,
            &format!("{url}/v1/plugins/counter/restore{query}"),
            b"",
        ) else {
            break;
        };
        if status == 200 {
            let sequence = body["sequence"].as_u64().unwrap();
            let to = body["restored_to"].as_u64().unwrap();
            log.lock().unwrap().insert(sequence, Acked::Restore(to));
        }
    }
}

#[test]
fn sigkill_during_snapshots_pruning_archiving_and_restores_loses_nothing() {
    let cycles: usize = std::env::var("KEEL_SNAPSHOT_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("KEEL_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x736e6170);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start_with(
        dir.path(),
        &[("counter", None)],
        "[checkpoint]\ninterval_ms = 30\n\n[snapshots]\ninterval_ms = 40\nevery_commands = 0\nkeep_newest = 3\n\n[archive]\nkeep_segments_max = 1000\n",
    );
    let log: Log = Arc::default();
    let (mut restores, mut snapshots_seen, mut segments_seen) = (0, 0, 0);
    for cycle in 0..cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads: Vec<_> = (0..2)
            .map(|c| {
                let (url, stop, log) = (server.base_url().to_owned(), stop.clone(), log.clone());
                std::thread::spawn(move || client(url, c, cycle, stop, log))
            })
            .collect();
        {
            let (url, stop, log) = (server.base_url().to_owned(), stop.clone(), log.clone());
            let op_seed = seed ^ cycle as u64;
            threads.push(std::thread::spawn(move || {
                operator(url, op_seed, stop, log)
            }));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(30..400)));
        server.kill();
        stop.store(true, Ordering::Release);
        for t in threads {
            t.join().expect("a client thread");
        }

        // The files as the kill left them.
        let store = SnapshotStore::new(&data);
        {
            let db = Db::open(&data.join("keel.redb"), Durability::Immediate).unwrap();
            let record = db.plugins().unwrap().remove(0);
            let first = db
                .archive_segments("counter")
                .unwrap()
                .first()
                .map_or(1, |s| s.first);
            // Every archive segment and every journal entry still kept reads.
            let journal = db.journal(record.id, first, record.last_sequence).unwrap();
            assert_eq!(
                journal.len() as u64,
                record.last_sequence - first + 1,
                "cycle {cycle} (seed {seed}): the journal has a gap"
            );
            segments_seen += db.archive_segments("counter").unwrap().len();
            let log = log.lock().unwrap();
            for (sequence, acked) in log.range(first..) {
                let entry = &journal[(sequence - first) as usize];
                match (acked, &entry.kind, &entry.outcome) {
                    (Acked::Command(bytes), EntryKind::Command { bytes: b }, Outcome::Ok(_))
                        if b == bytes => {}
                    (Acked::Restore(to), EntryKind::Restore { to_sequence, .. }, _)
                        if to == to_sequence =>
                    {
                        restores += 1;
                    }
                    _ => panic!(
                        "cycle {cycle} (seed {seed}): acknowledged {acked:?} at {sequence} is journaled as {entry:?}"
                    ),
                }
            }
            // Every listed snapshot verifies.
            for s in store.list("counter").unwrap() {
                store.read("counter", s.sequence).unwrap_or_else(|e| {
                    panic!(
                        "cycle {cycle} (seed {seed}): listed snapshot {} fails: {e}",
                        s.sequence
                    )
                });
                snapshots_seen += 1;
            }
        }
        // The state is what replaying the retained journal gives.
        let verdicts = keel_tests::verify_data_dir(&data);
        assert!(
            verdicts[0].ok(),
            "cycle {cycle} (seed {seed}): {:?}",
            verdicts[0]
        );
        server.restart();
    }
    let acked = log.lock().unwrap().len();
    assert!(
        acked > cycles * 10,
        "only {acked} acknowledgements: nothing was exercised"
    );
    assert!(restores > 0, "no acknowledged restore was ever checked");
    assert!(
        snapshots_seen > cycles,
        "too few snapshots were checked ({snapshots_seen})"
    );
    assert!(segments_seen > 0, "the journal was never archived");
}
