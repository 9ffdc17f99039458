//! Invariants 2 and 3: a command is acknowledged only once durable, and
//! after `kill -9` at any instant the restarted host holds exactly what
//! replaying the journal yields, with every acknowledged command present.
//!
//! A real `keel serve` process is driven over HTTP by client threads that
//! record every acknowledged command; it is killed with SIGKILL at a random
//! moment, the journal is replayed into a fresh database and compared, the
//! host is restarted, and every acknowledged effect is checked.
//! Cycles: `KEEL_CRASH_CYCLES` (default 20).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_host::storage::{Db, Durability};
use keel_tests::server::Server;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const CLIENTS: usize = 4;

/// (counter name → value it must have) for acknowledged commands.
type Acked = Arc<Mutex<BTreeMap<String, i64>>>;

fn drive(
    server_url: String,
    client: usize,
    cycle: usize,
    stop: Arc<AtomicBool>,
    acked: Acked,
) -> usize {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .new_agent();
    let mut sent = 0;
    let mut i = 0u64;
    while !stop.load(Ordering::Acquire) {
        i += 1;
        let name = format!("c{cycle}-{client}-{i}");
        // One command in ten must fail (reset of a counter that does not exist).
        let (command, expect_ok) = if i % 10 == 0 {
            (json!({"reset": {"name": format!("missing-{name}")}}), false)
        } else {
            (json!({"add": {"name": name, "amount": i as i64}}), true)
        };
        let result = agent
            .post(format!("{server_url}/v1/plugins/counter/commands"))
            .send(command.to_string().as_bytes());
        let Ok(mut resp) = result else { break };
        let status = resp.status().as_u16();
        let body: Value = resp.body_mut().read_json().unwrap_or(Value::Null);
        sent += 1;
        if expect_ok {
            if status != 200 {
                break; // the server is going down
            }
            assert_eq!(body["response"]["value"], json!(i), "{body}");
            acked.lock().unwrap().insert(name, i as i64);
        } else if status != 422 {
            break;
        } else {
            assert_eq!(body["error"]["code"], "not-found", "{body}");
        }
    }
    sent
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_command() {
    let cycles: usize = std::env::var("KEEL_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("KEEL_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x6b65656c);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[("counter", None)]);
    let acked: Acked = Arc::default();
    let mut total_acked = 0;
    let mut recovered_from_log = 0;
    for cycle in 0..cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (url, stop, acked) =
                    (server.base_url().to_owned(), stop.clone(), acked.clone());
                std::thread::spawn(move || drive(url, c, cycle, stop, acked))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.random_range(20..400)));
        server.kill();
        stop.store(true, Ordering::Release);
        for c in clients {
            c.join().expect("client thread");
        }

        // The database as the crash left it: its journal must replay to the same state.
        let (stored_hash, recovered_by_check) = {
            let db = Db::open(
                &dir.path().join("data").join("keel.redb"),
                Durability::Immediate,
            )
            .unwrap();
            let recovered = db.recovered_batches();
            recovered_from_log += recovered;
            let scratch = tempfile::tempdir().unwrap();
            let verdicts = keel_host::replay::replay(&db, scratch.path(), |_, _, _| {}).unwrap();
            assert_eq!(verdicts.len(), 1);
            assert!(
                verdicts[0].ok(),
                "cycle {cycle} (seed {seed}): replay differs: {:?}",
                verdicts[0]
            );
            (verdicts[0].stored_hash.clone(), recovered)
        };

        server.restart();
        // The replay check above opened the database first and recovered
        // it into memory (the log stays until a checkpoint writes it to
        // redb): the server finds no more to recover than it did, and
        // comes back to the same state (below).
        let metrics = server.get("/metrics").unwrap();
        let recovered_by_server: u64 = metrics
            .as_str()
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("keel_recovered_batches "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no keel_recovered_batches in {metrics}"));
        assert!(
            recovered_by_server <= recovered_by_check,
            "cycle {cycle}: the server recovered {recovered_by_server} batches, the check {recovered_by_check}"
        );
        let status = server.plugin_status("counter");
        assert_eq!(status["state_hash"], json!(stored_hash), "cycle {cycle}");
        let all = server.query("counter", &json!("list")).unwrap();
        let acked = acked.lock().unwrap();
        for (name, value) in acked.iter() {
            assert_eq!(
                all[name],
                json!(value),
                "cycle {cycle} (seed {seed}): acknowledged {name} lost"
            );
        }
        for (name, _) in all.as_object().unwrap() {
            assert!(
                !name.starts_with("missing-"),
                "a failed command left {name} behind"
            );
        }
        total_acked = acked.len();
    }
    assert!(
        total_acked > cycles,
        "too few commands were acknowledged ({total_acked}) to prove anything"
    );
    assert!(
        recovered_from_log > 0,
        "no kill ever left group commits for the write-ahead log to bring back: the test did not exercise recovery"
    );
}

/// A power cut in-process: redb loses every commit since its last durable
/// one (checkpoints are far apart here), and the write-ahead log must bring
/// each acknowledged command back, failures staying absent.
#[test]
fn a_power_cut_loses_redb_commits_and_the_log_brings_them_back() {
    use keel_host::testkit::TestHost;
    let mut t = TestHost::with_config(|c| {
        c.checkpoint.interval_ms = 3_600_000;
        c.batch.max_commands = 7; // many group commits, many log records
    });
    t.deploy_file(keel_plugins::COUNTER);
    let host = t.host();
    let pending: Vec<_> = (0..300)
        .map(|i| {
            let command = if i % 10 == 0 {
                json!({"reset": {"name": format!("missing-{i}")}})
            } else {
                json!({"add": {"name": format!("c{i}"), "amount": i}})
            };
            host.submit_pipelined("counter", command.to_string().as_bytes())
                .unwrap()
        })
        .collect();
    let mut failures = 0;
    for (i, rx) in pending.into_iter().enumerate() {
        match rx.blocking_recv().unwrap() {
            Ok(_) => assert_ne!(i % 10, 0),
            Err(_) => failures += 1,
        }
    }
    assert_eq!(failures, 30);
    let before_hash = t.state_hash("counter");
    let before_tables = t.tables("counter");
    let before_sequence = t.status("counter").last_sequence;

    t.crash_and_restart();

    assert!(
        t.host().status().recovered_batches > 0,
        "the crash image held no commit past redb's durable point"
    );
    assert_eq!(t.state_hash("counter"), before_hash);
    assert_eq!(t.tables("counter"), before_tables);
    assert_eq!(t.status("counter").last_sequence, before_sequence);
    let all = t.query("counter", json!("list")).unwrap();
    for i in (0..300).filter(|i| i % 10 != 0) {
        assert_eq!(all[format!("c{i}")], json!(i), "acknowledged c{i} lost");
    }
    assert!(
        all.as_object()
            .unwrap()
            .keys()
            .all(|k| !k.starts_with("missing-"))
    );
    assert!(t.verify_replay().iter().all(|v| v.ok()));
    // The recovered state is durable on its own: a second power cut with
    // nothing new changes nothing (recovery fsynced the log it replayed
    // into memory; it brings back no more than the first time).
    let recovered_first = t.host().status().recovered_batches;
    t.crash_and_restart();
    assert!(t.host().status().recovered_batches <= recovered_first);
    assert_eq!(t.state_hash("counter"), before_hash);
    assert_eq!(t.tables("counter"), before_tables);
}

/// Power cuts at random points of a stream whose log is retired every few
/// batches (a tiny `log_bytes_max`): segment rotation, deletion after the
/// durable commit and recovery of the segments written since must add up
/// to every acknowledged command, cut after cut.
#[test]
fn power_cuts_between_frequent_checkpoints_lose_nothing() {
    use keel_host::testkit::TestHost;
    let seed: u64 = std::env::var("KEEL_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x6b65656c);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut t = TestHost::with_config(|c| {
        c.checkpoint.log_bytes_max = 4096;
        c.checkpoint.interval_ms = 3_600_000;
        c.batch.max_commands = 5;
    });
    t.deploy_file(keel_plugins::COUNTER);
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    let (mut checkpoints, mut recovered) = (0, 0);
    for cut in 0..12 {
        let commands: Vec<(String, i64)> = (0..rng.random_range(1..200))
            .map(|_| {
                (
                    format!("k{}", rng.random_range(0..20)),
                    rng.random_range(-1000..1000),
                )
            })
            .collect();
        let pending: Vec<_> = commands
            .iter()
            .map(|(name, amount)| {
                let command = json!({"add": {"name": name, "amount": amount}});
                t.host()
                    .submit_pipelined("counter", command.to_string().as_bytes())
                    .unwrap()
            })
            .collect();
        for (i, ((name, amount), rx)) in commands.iter().zip(pending).enumerate() {
            rx.blocking_recv().unwrap().unwrap();
            *expected.entry(name.clone()).or_default() += amount;
            if i == commands.len() / 2 {
                // Checkpoints run in the background, by the byte budget, as
                // fast as the machine allows; one explicit checkpoint per
                // cut, with commands still flowing, makes sure rotation is
                // exercised however slow the machine is.
                t.host().db().checkpoint().unwrap();
            }
        }
        if cut % 3 == 2 {
            // However fast the background checkpointer caught up, this cut
            // leaves an acknowledged command for the log alone: a
            // checkpoint writes everything so far, then one command (far
            // below the byte budget, with the interval an hour away) is
            // logged after it.
            t.host().db().checkpoint().unwrap();
            let (name, amount) = ("tail".to_string(), cut as i64);
            let command = json!({"add": {"name": name, "amount": amount}});
            t.host()
                .submit("counter", command.to_string().as_bytes())
                .unwrap();
            *expected.entry(name).or_default() += amount;
        }
        checkpoints += t.host().db().checkpoints();
        t.crash_and_restart();
        let recovered_now = t.host().status().recovered_batches;
        assert!(
            cut % 3 != 2 || recovered_now >= 1,
            "cut {cut} (seed {seed}): the command logged after the last checkpoint was not recovered from the log"
        );
        recovered += recovered_now;
        let all = t.query("counter", json!("list")).unwrap();
        for (name, value) in &expected {
            assert_eq!(
                all[name].as_i64().unwrap_or(0),
                *value,
                "cut {cut} (seed {seed}): {name}"
            );
        }
        assert!(t.verify_replay().iter().all(|v| v.ok()), "cut {cut}");
    }
    assert!(
        checkpoints >= 12,
        "too few checkpoints ({checkpoints}) to exercise rotation"
    );
    assert!(recovered > 0, "no cut left anything for the log to recover");
}
