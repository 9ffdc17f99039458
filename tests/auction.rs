//! The auction component in a real host on a real redb file:
//!
//! - utilization and statistics survive an in-process crash, a crash with
//!   commands in flight (exactly a prefix is kept, every acknowledged
//!   command included) and SIGKILL of a real `keel serve`, exactly;
//! - the component answers every command exactly as the same crate run
//!   natively, and holds the same state, with restarts inserted anywhere in
//!   random command sequences; utilization never exceeds capacity and always
//!   equals the units of the provider's open jobs;
//! - refused commands (zero units, unknown precision, duplicate job, ...)
//!   are journaled as failures and change nothing.
//!
//! Job records carry the sequence number and timestamp of their auction,
//! which differ between the host and the native Harness; native comparisons
//! therefore compare every other table byte for byte and the jobs through
//! their query view without those three fields.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use keel_guest::testing::{Dump, Harness};
use keel_host::HostError;
use keel_plugin_auction::workload::{self, Shape};
use keel_plugin_auction::{Auction, Command, Config, JobSpec};
use keel_tests::server::Server;
use keel_tests::{TestHost, plugins};
use proptest::prelude::*;
use serde_json::{Value, json};

type Tables = BTreeMap<(String, Vec<u8>), Vec<u8>>;

const PLUGIN: &str = "auction";

fn host() -> TestHost {
    let t = TestHost::new();
    t.deploy_file(plugins::AUCTION);
    t
}

fn to_json(cmd: &Command) -> Value {
    serde_json::to_value(cmd).unwrap()
}

/// The native store in the host's (table, key) → value shape.
fn flatten(dump: Dump) -> Tables {
    dump.into_iter()
        .flat_map(|(table, rows)| rows.into_iter().map(move |(k, v)| ((table.clone(), k), v)))
        .collect()
}

/// Every table but `jobs` (whose rows hold host-assigned sequence numbers and timestamps).
fn without_jobs(tables: Tables) -> Tables {
    tables
        .into_iter()
        .filter(|((table, _), _)| table != "jobs")
        .collect()
}

fn outcome_native(h: &mut Harness<Auction>, cmd: &Command) -> Result<Value, (String, String)> {
    h.handle_json(&to_json(cmd).to_string())
        .map_err(|e| (e.code, e.message))
}

fn outcome_host(t: &TestHost, cmd: &Command) -> Result<Value, (String, String)> {
    t.call(PLUGIN, to_json(cmd)).map_err(|e| match e {
        HostError::Rejected { code, message, .. } => (code, message),
        other => panic!("{cmd:?}: not a plugin refusal: {other}"),
    })
}

/// The ids of every job the commands auction, in order, without repeats.
fn job_ids(commands: &[Command]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    commands
        .iter()
        .filter_map(|c| match c {
            Command::RunAuction { job, .. } => Some(job.id.clone()),
            _ => None,
        })
        .filter(|id| seen.insert(id.clone()))
        .collect()
}

/// Everything a client can observe: stats, providers with utilization,
/// routes, open jobs and every job's status. With `strip`, the fields that
/// depend on when the host ran the command are removed (for comparisons
/// with the native Harness).
fn observe(query: impl Fn(Value) -> Value, jobs: &[String], strip: bool) -> Value {
    let strip_one = |j: &mut Value| {
        if let Some(o) = j.as_object_mut() {
            for field in ["auctioned_at_seq", "auctioned_at_ms", "closed_at_seq"] {
                o.remove(field);
            }
        }
    };
    let clean = |mut v: Value| {
        if strip {
            match v.as_array_mut() {
                Some(list) => list.iter_mut().for_each(strip_one),
                None => strip_one(&mut v),
            }
        }
        v
    };
    let mut by_id = serde_json::Map::new();
    for id in jobs {
        by_id.insert(id.clone(), clean(query(json!({"job": {"id": id}}))));
    }
    json!({
        "stats": query(json!("stats")),
        "providers": query(json!("providers")),
        "routes": query(json!("routes")),
        "config": query(json!("config")),
        "open_jobs": clean(query(json!({"open_jobs": {}}))),
        "jobs": by_id,
    })
}

fn observe_host(t: &TestHost, jobs: &[String], strip: bool) -> Value {
    observe(
        |q| {
            t.query(PLUGIN, q)
                .unwrap_or_else(|e| json!({"error": e.code()}))
        },
        jobs,
        strip,
    )
}

fn observe_native(h: &Harness<Auction>, jobs: &[String]) -> Value {
    observe(
        |q| {
            h.query_json(&q.to_string())
                .unwrap_or_else(|e| json!({"error": e.code}))
        },
        jobs,
        true,
    )
}

fn observe_server(s: &Server, jobs: &[String], strip: bool) -> Value {
    observe(
        |q| {
            s.query(PLUGIN, &q)
                .unwrap_or_else(|(_, body)| json!({"error": body["error"]["code"].clone()}))
        },
        jobs,
        strip,
    )
}

/// Utilization never exceeds capacity and equals the units of the
/// provider's open jobs, as the plugin reports them.
fn assert_utilization_consistent(observed: &Value) {
    let open = observed["open_jobs"].as_array().unwrap();
    for p in observed["providers"].as_array().unwrap() {
        let (capacity, utilization) = (
            p["capacity"].as_u64().unwrap(),
            p["utilization"].as_u64().unwrap(),
        );
        assert!(utilization <= capacity, "{p}");
        let mine = open.iter().filter(|j| j["provider"] == p["id"]);
        let reserved: u64 = mine.clone().map(|j| j["units"].as_u64().unwrap()).sum();
        assert_eq!(
            utilization, reserved,
            "provider {} vs its open jobs",
            p["id"]
        );
        assert_eq!(p["open_jobs"].as_u64().unwrap(), mine.count() as u64);
    }
    let s = &observed["stats"];
    assert_eq!(
        s["auctions"].as_u64(),
        Some(s["matches"].as_u64().unwrap() + s["no_matches"].as_u64().unwrap())
    );
    assert_eq!(s["open_jobs"].as_u64(), Some(open.len() as u64));
}

/// Submits every command pipelined and waits for all acknowledgements.
fn run_pipelined(t: &TestHost, commands: &[Command]) {
    let pending: Vec<_> = commands
        .iter()
        .map(|c| {
            t.host()
                .submit_pipelined(PLUGIN, to_json(c).to_string().as_bytes())
                .unwrap()
        })
        .collect();
    for rx in pending {
        let _ = rx.blocking_recv().expect("acknowledged");
    }
}

fn small_shape() -> Shape {
    Shape {
        providers: 20,
        routes: 8,
        lanes: 4,
        open_target: 60,
    }
}

#[test]
fn utilization_and_statistics_survive_crash_and_restart() {
    let commands = workload::stream(11, small_shape(), Config::default(), 800);
    let jobs = job_ids(&commands);
    let mut t = host();
    run_pipelined(&t, &commands[..500]);
    let before = (
        observe_host(&t, &jobs, false),
        t.tables(PLUGIN),
        t.state_hash(PLUGIN),
    );
    assert!(
        before.0["stats"]["open_jobs"].as_u64().unwrap() > 0,
        "the crash must find open jobs"
    );
    assert_utilization_consistent(&before.0);
    t.crash_and_restart();
    let after = (
        observe_host(&t, &jobs, false),
        t.tables(PLUGIN),
        t.state_hash(PLUGIN),
    );
    assert_eq!(after, before, "the crash changed the state");

    // Still serving: the rest of the stream, then a clean restart.
    run_pipelined(&t, &commands[500..]);
    t.restart();
    let host_view = observe_host(&t, &jobs, true);
    assert_utilization_consistent(&host_view);
    let mut native = Harness::<Auction>::with_config(Config::default()).unwrap();
    for c in &commands {
        let _ = native.handle(c.clone());
    }
    assert_eq!(host_view, observe_native(&native, &jobs));
    assert_eq!(
        without_jobs(t.tables(PLUGIN)),
        without_jobs(flatten(native.dump()))
    );
    assert!(t.verify_replay().iter().all(|v| v.ok()), "replay differs");
    keel_tests::assert_export_round_trip(&t, PLUGIN, plugins::AUCTION);
}

/// Commands in flight at the crash: every acknowledged one is there, and the
/// state is exactly the native result of the committed prefix.
#[test]
fn crash_with_commands_in_flight_keeps_exactly_a_prefix() {
    let commands = workload::stream(12, small_shape(), Config::default(), 1_500);
    let jobs = job_ids(&commands);
    let market = small_shape().providers + small_shape().routes;
    let mut t = TestHost::with_config(|c| c.batch.max_commands = 64);
    t.deploy_file(plugins::AUCTION);
    let base = t.status(PLUGIN).last_sequence;
    run_pipelined(&t, &commands[..market]);
    let pending: Vec<_> = commands[market..]
        .iter()
        .map(|c| {
            t.host()
                .submit_pipelined(PLUGIN, to_json(c).to_string().as_bytes())
                .unwrap()
        })
        .collect();
    let mut acked = 0u64;
    for rx in pending.into_iter().take(300) {
        let seq = match rx.blocking_recv().expect("acknowledged") {
            Ok(receipt) => receipt.sequence,
            Err(e) => e.sequence().expect("a refusal is journaled"),
        };
        acked = acked.max(seq);
    }
    t.crash_and_restart();
    let last = t.status(PLUGIN).last_sequence;
    assert!(
        last >= acked,
        "acknowledged command {acked} lost (last {last})"
    );
    let committed = usize::try_from(last - base).unwrap();
    let mut native = Harness::<Auction>::with_config(Config::default()).unwrap();
    for c in &commands[..committed] {
        let _ = native.handle(c.clone());
    }
    let host_view = observe_host(&t, &jobs, true);
    assert_utilization_consistent(&host_view);
    assert_eq!(host_view, observe_native(&native, &jobs));
    assert_eq!(
        without_jobs(t.tables(PLUGIN)),
        without_jobs(flatten(native.dump()))
    );
}

#[test]
fn refused_commands_are_journaled_and_change_nothing() {
    let t = host();
    for c in workload::market(3, small_shape()) {
        t.call(PLUGIN, to_json(&c)).unwrap();
    }
    let taken = json!({"run_auction": {"job": {"id": "taken", "precision": "fp16", "units": 1, "max_price": 1000, "preferred_lane": "lane-0"}}});
    assert_eq!(t.call(PLUGIN, taken.clone()).unwrap()["outcome"], "matched");
    let job = |id: &str, precision: &str, units: u64| json!({"run_auction": {"job": {"id": id, "precision": precision, "units": units, "max_price": 1000, "preferred_lane": "lane-0"}, "priority": 3}});
    let refusals = [
        (job("new", "fp16", 0), "invalid-units"),
        (job("new", "fp64", 1), "unknown-precision"),
        (taken, "duplicate-job"),
        (
            job("new", "fp16", 1).pointer_mut_owned("/run_auction/priority", json!(12)),
            "invalid-priority",
        ),
        (json!({"complete_job": {"id": "ghost"}}), "unknown-job"),
        (
            json!({"update_provider": {"id": "prov-000", "capacity": 0}}),
            "invalid-capacity",
        ),
        (
            json!({"add_route": {"id": "route-000", "lane": "x", "cost": 1, "latency_ms": 1}}),
            "route-exists",
        ),
        (
            json!({"run_auction": {"job": {"id": "new"}}}),
            "bad-command",
        ),
    ];
    let stats_before = t.query(PLUGIN, json!("stats")).unwrap();
    for (command, code) in refusals {
        let (tables, hash, last) = (
            t.tables(PLUGIN),
            t.state_hash(PLUGIN),
            t.status(PLUGIN).last_sequence,
        );
        let err = t.call(PLUGIN, command.clone()).unwrap_err();
        assert_eq!(err.code(), code, "{command}: {err}");
        assert_eq!(
            err.sequence(),
            Some(last + 1),
            "a refusal is still journaled"
        );
        assert_eq!(t.tables(PLUGIN), tables, "{command} changed the tables");
        assert_eq!(
            t.state_hash(PLUGIN),
            hash,
            "{command} changed the state hash"
        );
    }
    assert_eq!(
        t.query(PLUGIN, json!("stats")).unwrap(),
        stats_before,
        "refusals are not auctions"
    );
    assert!(t.verify_replay().iter().all(|v| v.ok()), "replay differs");
}

/// `serde_json::Value::pointer_mut` returning the value, for building variants.
trait PointerSet {
    fn pointer_mut_owned(self, pointer: &str, value: Value) -> Value;
}

impl PointerSet for Value {
    fn pointer_mut_owned(mut self, pointer: &str, value: Value) -> Value {
        *self.pointer_mut(pointer).expect("pointer exists") = value;
        self
    }
}

// ------------------------------------------------------------ random sequences with restarts

const PRECISIONS: [&str; 5] = ["fp32", "fp16", "bf16", "int8", "fp64"]; // the last is invalid
const LANES: [&str; 3] = ["lane-0", "lane-1", "lane-2"];

/// A small market that most random auctions can match against.
fn small_market() -> Vec<Command> {
    let provider = |id: &str, capacity, precisions: &[&str], price, lanes: &[&str]| {
        Command::RegisterProvider {
            id: id.into(),
            capacity,
            precisions: precisions.iter().map(|s| s.to_string()).collect(),
            price,
            lanes: lanes.iter().map(|s| s.to_string()).collect(),
        }
    };
    let route = |id: &str, lane: &str, cost, latency_ms| Command::AddRoute {
        id: id.into(),
        lane: lane.into(),
        cost,
        latency_ms,
    };
    vec![
        provider("p0", 30, &["fp32", "fp16"], 10, &["lane-0", "lane-1"]),
        provider("p1", 20, &["fp16", "bf16", "int8"], 10, &["lane-1"]),
        provider(
            "p2",
            40,
            &["fp32", "bf16", "int8"],
            12,
            &["lane-2", "lane-0"],
        ),
        route("r0", "lane-0", 1, 3),
        route("r1", "lane-1", 0, 5),
        route("r2", "lane-2", 2, 1),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    let provider = (0..4usize).prop_map(|p| format!("p{p}"));
    let job = (0..14usize).prop_map(|j| format!("j{j}"));
    prop_oneof![
        1 => (provider.clone(), 5..50u64, prop::collection::vec(0..5usize, 1..3), 0..20u64, prop::collection::vec(0..3usize, 1..3))
            .prop_map(|(id, capacity, precisions, price, lanes)| Command::RegisterProvider {
                id,
                capacity,
                precisions: precisions.into_iter().map(|i| PRECISIONS[i].to_owned()).collect(),
                price,
                lanes: lanes.into_iter().map(|i| LANES[i].to_owned()).collect(),
            }),
        1 => (provider.clone(), 0..50u64, prop::option::of(0..20u64)).prop_map(|(id, capacity, price)| Command::UpdateProvider {
            id,
            capacity: Some(capacity),
            precisions: None,
            price,
            lanes: None,
        }),
        1 => (provider, any::<bool>()).prop_map(|(id, on)| if on {
            Command::ActivateProvider { id }
        } else {
            Command::DeactivateProvider { id }
        }),
        1 => (0..4usize, 0..3usize, 0..4u64, 0..8u32).prop_map(|(r, lane, cost, latency_ms)| Command::AddRoute {
            id: format!("r{r}"),
            lane: LANES[lane].into(),
            cost,
            latency_ms,
        }),
        10 => (job.clone(), 0..5usize, 0..16u64, 0..60u64, 0..3usize, 0..11u32).prop_map(
            |(id, precision, units, max_price, lane, priority)| Command::RunAuction {
                job: JobSpec {
                    id,
                    precision: PRECISIONS[precision].into(),
                    units,
                    max_price,
                    preferred_lane: LANES[lane].into(),
                },
                priority,
            }
        ),
        4 => job.clone().prop_map(|id| Command::CompleteJob { id }),
        2 => job.prop_map(|id| Command::CancelJob { id }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    /// The component answers every command exactly as the native crate
    /// does; after every command utilization ≤ capacity and equals the units
    /// of open jobs; after every crash-restart the state is unchanged and
    /// equal to the native one.
    #[test]
    fn component_matches_native_and_keeps_utilization_exact_across_restarts(
        steps in prop::collection::vec((command(), prop::bool::weighted(0.1)), 1..40),
    ) {
        let mut t = host();
        let mut native = Harness::<Auction>::with_config(Config::default()).unwrap();
        let mut all = small_market();
        for cmd in &all {
            prop_assert_eq!(outcome_host(&t, cmd), outcome_native(&mut native, cmd));
        }
        all.extend(steps.iter().map(|(c, _)| c.clone()));
        let jobs = job_ids(&all);
        for (cmd, crash) in &steps {
            let got = outcome_host(&t, cmd);
            prop_assert_eq!(&got, &outcome_native(&mut native, cmd), "{:?}", cmd);
            let observed = observe_host(&t, &jobs, false);
            assert_utilization_consistent(&observed);
            if *crash {
                let tables = t.tables(PLUGIN);
                t.crash_and_restart();
                prop_assert_eq!(&t.tables(PLUGIN), &tables);
                prop_assert_eq!(observe_host(&t, &jobs, false), observed);
                prop_assert_eq!(without_jobs(tables), without_jobs(flatten(native.dump())));
            }
        }
        t.crash_and_restart();
        prop_assert_eq!(observe_host(&t, &jobs, true), observe_native(&native, &jobs));
        prop_assert_eq!(without_jobs(t.tables(PLUGIN)), without_jobs(flatten(native.dump())));
    }
}

// ------------------------------------------------------------ SIGKILL of a real server

#[test]
fn utilization_and_statistics_survive_sigkill() {
    let commands = workload::stream(21, small_shape(), Config::default(), 420);
    let jobs = job_ids(&commands);
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &[(PLUGIN, None)]);
    let base = s.plugin_status(PLUGIN)["last_sequence"].as_u64().unwrap();
    let cycles = 3;
    let per_cycle = commands.len().div_ceil(cycles);
    let mut sent = 0;
    for cycle in 0..cycles {
        let end = (sent + per_cycle).min(commands.len());
        for c in &commands[sent..end] {
            let _ = s.call(PLUGIN, &to_json(c));
        }
        sent = end;
        let before = observe_server(&s, &jobs, false);
        assert_utilization_consistent(&before);
        let status = s.plugin_status(PLUGIN);
        s.kill();
        s.restart();
        assert_eq!(
            observe_server(&s, &jobs, false),
            before,
            "cycle {cycle}: SIGKILL changed the state"
        );
        let after = s.plugin_status(PLUGIN);
        assert_eq!(after["state_hash"], status["state_hash"]);
        assert_eq!(after["last_sequence"].as_u64().unwrap(), base + sent as u64);
    }
    let mut native = Harness::<Auction>::with_config(Config::default()).unwrap();
    for c in &commands {
        let _ = native.handle(c.clone());
    }
    assert_eq!(
        observe_server(&s, &jobs, true),
        observe_native(&native, &jobs)
    );
}

#[test]
fn sigkill_while_auctions_stream_in_keeps_every_acknowledged_command() {
    let commands = workload::stream(22, small_shape(), Config::default(), 1_500);
    let jobs = job_ids(&commands);
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &[(PLUGIN, None)]);
    let base = s.plugin_status(PLUGIN)["last_sequence"].as_u64().unwrap();
    let url = s.base_url().to_owned();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let sender = {
        let bodies: Vec<String> = commands.iter().map(|c| to_json(c).to_string()).collect();
        std::thread::spawn(move || {
            let agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .new_agent();
            let mut acked = Vec::new();
            for body in bodies {
                if stop_rx.try_recv().is_ok() {
                    break;
                }
                let Ok(mut resp) = agent
                    .post(format!("{url}/v1/plugins/{PLUGIN}/commands"))
                    .send(body)
                else {
                    break; // the server is gone
                };
                let answer: Value =
                    serde_json::from_str(&resp.body_mut().read_to_string().unwrap_or_default())
                        .unwrap_or(Value::Null);
                match answer["sequence"]
                    .as_u64()
                    .or_else(|| answer["error"]["sequence"].as_u64())
                {
                    Some(seq) => acked.push(seq),
                    None => break,
                }
            }
            acked
        })
    };
    // Let the market and some auctions through, then kill without warning.
    let started = Instant::now();
    while s.plugin_status(PLUGIN)["last_sequence"].as_u64().unwrap() < base + 150
        && started.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    s.kill();
    let _ = stop_tx.send(());
    let acked = sender.join().unwrap();
    s.restart();
    let committed = s.plugin_status(PLUGIN)["last_sequence"].as_u64().unwrap() - base;
    assert!(
        acked.iter().all(|seq| *seq <= base + committed),
        "an acknowledged command was lost"
    );
    assert!(committed as usize >= acked.len());
    let mut native = Harness::<Auction>::with_config(Config::default()).unwrap();
    for c in &commands[..committed as usize] {
        let _ = native.handle(c.clone());
    }
    let observed = observe_server(&s, &jobs, true);
    assert_utilization_consistent(&observed);
    assert_eq!(observed, observe_native(&native, &jobs));
}

// ---------------------------------------------------------------- access rule

mod access {
    //! The access rule through the real host with different callers (see
    //! `keel_plugin_auction::access`): one client acting on another's
    //! provider or job is refused and the state hash does not move; the
    //! operator does what the rule allows; replay reproduces every caller.

    use super::*;
    use keel_host::Caller;

    fn alice() -> Caller {
        Caller::new("alice", ["client"])
    }

    fn bob() -> Caller {
        Caller::new("bob", ["client"])
    }

    fn operator() -> Caller {
        Caller::new("ops", ["client", "operator"])
    }

    /// Asserts `caller` sending `cmd` is refused with `code` and that the
    /// state hash is unchanged.
    fn refused(t: &TestHost, caller: &Caller, cmd: Value, code: &str) {
        let before = t.state_hash(PLUGIN);
        match t.call_as(PLUGIN, caller, cmd.clone()) {
            Err(HostError::Rejected { code: got, .. }) => {
                assert_eq!(got, code, "{} sending {cmd}", caller.principal)
            }
            other => panic!(
                "{} sending {cmd}: expected {code}, got {other:?}",
                caller.principal
            ),
        }
        assert_eq!(
            t.state_hash(PLUGIN),
            before,
            "a refusal changed state: {cmd}"
        );
    }

    #[test]
    fn clients_act_only_on_their_own_providers_and_jobs() {
        let t = host();
        t.call_as(
            PLUGIN,
            &operator(),
            json!({"add_route": {"id": "r1", "lane": "eu", "cost": 1, "latency_ms": 1}}),
        )
        .unwrap();
        let p = t
            .call_as(
                PLUGIN,
                &alice(),
                json!({"register_provider": {"id": "pa", "capacity": 100, "precisions": ["fp16"], "price": 10, "lanes": ["eu"]}}),
            )
            .unwrap();
        assert_eq!(p["owner"], "alice");
        let job = |id: &str| json!({"run_auction": {"job": {"id": id, "precision": "fp16", "units": 10, "max_price": 100, "preferred_lane": "eu"}}});
        let matched = t.call_as(PLUGIN, &bob(), job("jb")).unwrap();
        assert_eq!(matched["outcome"], "matched");

        // bob on alice's provider; alice on bob's job; a client adding routes.
        refused(
            &t,
            &bob(),
            json!({"update_provider": {"id": "pa", "price": 1}}),
            "not-owner",
        );
        refused(
            &t,
            &bob(),
            json!({"deactivate_provider": {"id": "pa"}}),
            "not-owner",
        );
        refused(
            &t,
            &alice(),
            json!({"cancel_job": {"id": "jb"}}),
            "not-owner",
        );
        refused(
            &t,
            &alice(),
            json!({"add_route": {"id": "r2", "lane": "us", "cost": 0, "latency_ms": 0}}),
            "operator-only",
        );
        refused(
            &t,
            &operator(),
            json!({"update_provider": {"id": "pa", "price": 1}}),
            "not-owner",
        );

        // What the rule allows.
        let off = t
            .call_as(
                PLUGIN,
                &operator(),
                json!({"deactivate_provider": {"id": "pa"}}),
            )
            .unwrap();
        assert_eq!(off["active"], false);
        t.call_as(PLUGIN, &alice(), json!({"activate_provider": {"id": "pa"}}))
            .unwrap();
        t.call_as(
            PLUGIN,
            &alice(),
            json!({"update_provider": {"id": "pa", "price": 9}}),
        )
        .unwrap();
        let cancelled = t
            .call_as(PLUGIN, &bob(), json!({"cancel_job": {"id": "jb"}}))
            .unwrap();
        assert_eq!(cancelled["status"], "cancelled");
        t.call_as(PLUGIN, &bob(), job("jb2")).unwrap();
        let done = t
            .call_as(PLUGIN, &alice(), json!({"complete_job": {"id": "jb2"}}))
            .unwrap();
        assert_eq!(done["status"], "completed");
        t.call_as(PLUGIN, &bob(), job("jb3")).unwrap();
        t.call_as(PLUGIN, &operator(), json!({"cancel_job": {"id": "jb3"}}))
            .unwrap();

        // Queries are public and show the owners.
        let view = t
            .query_as(PLUGIN, &bob(), json!({"job": {"id": "jb2"}}))
            .unwrap();
        assert_eq!(view["submitter"], "bob");
        assert_eq!(view["provider"], "pa");
        let providers = t.query_as(PLUGIN, &bob(), json!("providers")).unwrap();
        assert_eq!(providers[0]["owner"], "alice");
        assert_eq!(providers[0]["price"], 9);

        // Replay runs every command with its journaled caller.
        let verdicts = t.verify_replay();
        assert!(verdicts.iter().all(|v| v.ok()), "{verdicts:?}");
    }

    #[test]
    fn the_rule_survives_a_crash_and_calls_without_a_caller_are_trusted() {
        let mut t = host();
        t.call_as(
            PLUGIN,
            &alice(),
            json!({"register_provider": {"id": "pa", "capacity": 5, "precisions": ["int8"], "price": 1, "lanes": ["eu"]}}),
        )
        .unwrap();
        t.crash_and_restart();
        refused(
            &t,
            &bob(),
            json!({"update_provider": {"id": "pa", "price": 2}}),
            "not-owner",
        );
        // The unauthenticated path (no caller) is trusted, as before.
        let updated = t
            .call(PLUGIN, json!({"update_provider": {"id": "pa", "price": 2}}))
            .unwrap();
        assert_eq!(updated["price"], 2);
        assert_eq!(updated["owner"], "alice");
        let verdicts = t.verify_replay();
        assert!(verdicts.iter().all(|v| v.ok()), "{verdicts:?}");
    }
}
