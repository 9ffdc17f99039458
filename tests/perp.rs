//! The perp component in a real host on a real redb file: positions and
//! collateral survive crashes (in-process crash, and SIGKILL of a real
//! `keel serve`) exactly, and the component behaves exactly like the same
//! crate run natively (responses, refusals and raw tables), with restarts
//! inserted anywhere in random operation sequences.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use keel_guest::testing::{Dump, Harness};
use keel_host::HostError;
use keel_plugin_perp::sim::{self, Op};
use keel_plugin_perp::{Command, Perp};
use keel_tests::server::Server;
use keel_tests::{TestHost, plugins};
use proptest::prelude::*;
use serde_json::{Value, json};

type Tables = BTreeMap<(String, Vec<u8>), Vec<u8>>;

fn host() -> TestHost {
    let t = TestHost::new();
    t.deploy_file(plugins::PERP);
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

/// A command's outcome in a form both paths produce: the JSON response, or
/// the refusal's code and message.
fn outcome_native(h: &mut Harness<Perp>, cmd: &Command) -> Result<Value, (String, String)> {
    h.handle_json(&to_json(cmd).to_string())
        .map_err(|e| (e.code, e.message))
}

fn outcome_host(t: &TestHost, cmd: &Command) -> Result<Value, (String, String)> {
    t.call("perp", to_json(cmd)).map_err(|e| match e {
        HostError::Rejected { code, message, .. } => (code, message),
        other => panic!("{cmd:?}: not a plugin refusal: {other}"),
    })
}

/// Everything a user of the venue can observe.
fn observe(query: impl Fn(Value) -> Value) -> Value {
    let mut accounts = serde_json::Map::new();
    for u in sim::USERS.iter().chain(["alice", "bob", "carol"].iter()) {
        accounts.insert(u.to_string(), query(json!({"account": {"user": u}})));
    }
    json!({
        "accounts": accounts,
        "markets": query(json!("markets")),
        "insurance": query(json!("insurance_fund")),
        "totals": query(json!("totals")),
    })
}

fn observe_host(t: &TestHost) -> Value {
    observe(|q| {
        t.query("perp", q)
            .unwrap_or_else(|e| json!({"error": e.code()}))
    })
}

fn observe_native(h: &Harness<Perp>) -> Value {
    observe(|q| {
        h.query_json(&q.to_string())
            .unwrap_or_else(|e| json!({"error": e.code}))
    })
}

fn assert_conserved(totals: &Value) {
    assert_eq!(totals["conserved"], true, "{totals}");
    assert_eq!(totals["funding_balanced"], true, "{totals}");
    assert_eq!(totals["open_interest_consistent"], true, "{totals}");
    assert_eq!(totals["holdings"], totals["expected_holdings"], "{totals}");
}

fn scenario() -> Vec<Value> {
    vec![
        json!({"create_market": {"market": "BTC", "mark_price": 1000, "initial_margin_bps": 1000, "maintenance_margin_bps": 500}}),
        json!({"create_market": {"market": "ETH", "mark_price": 200, "initial_margin_bps": 2000, "maintenance_margin_bps": 1000}}),
        json!({"deposit": {"user": "alice", "amount": 10000}}),
        json!({"deposit": {"user": "bob", "amount": 10000}}),
        json!({"deposit": {"user": "carol", "amount": 3000}}),
        json!({"open": {"user": "alice", "market": "BTC", "size": 10}}),
        json!({"open": {"user": "bob", "market": "BTC", "size": -7, "margin": 2000}}),
        json!({"trade": {"user": "carol", "market": "ETH", "size": 25}}),
        json!({"trade": {"user": "bob", "market": "ETH", "size": -20}}),
        json!({"apply_funding": {"market": "BTC", "rate_ppm": 333}}),
        json!({"set_mark": {"market": "BTC", "price": 1070}}),
        json!({"reduce": {"user": "alice", "market": "BTC", "amount": 3}}),
        json!({"apply_funding": {"market": "ETH", "rate_ppm": -1234}}),
        json!({"withdraw": {"user": "alice", "amount": 500}}),
    ]
}

#[test]
fn positions_and_collateral_survive_crash_and_restart() {
    let mut t = host();
    for cmd in scenario() {
        t.call("perp", cmd.clone())
            .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    }
    let position = json!({"position": {"user": "alice", "market": "BTC"}});
    let before = (
        observe_host(&t),
        t.query("perp", position.clone()).unwrap(),
        t.tables("perp"),
        t.state_hash("perp"),
    );
    assert_eq!(before.1["size"], 7);
    assert_conserved(&before.0["totals"]);
    t.crash_and_restart();
    let after = (
        observe_host(&t),
        t.query("perp", position.clone()).unwrap(),
        t.tables("perp"),
        t.state_hash("perp"),
    );
    assert_eq!(after, before);
    // Still serving after the crash: settle funding and close.
    let closed = t
        .call("perp", json!({"close": {"user": "bob", "market": "BTC"}}))
        .unwrap();
    assert_eq!(closed["kind"], "close");
    assert_conserved(&t.query("perp", json!("totals")).unwrap());
    t.restart();
    assert!(t.verify_replay().iter().all(|v| v.ok()), "replay differs");
    keel_tests::assert_export_round_trip(&t, "perp", plugins::PERP);
}

/// Commands in flight at the crash: every acknowledged one is there, and the
/// state is exactly the native result of the committed prefix.
#[test]
fn crash_with_commands_in_flight_keeps_exactly_a_prefix() {
    let mut t = TestHost::with_config(|c| c.batch.max_commands = 64);
    t.deploy_file(plugins::PERP);
    let mut native = Harness::<Perp>::new();
    let setup: Vec<Command> = sim::setup();
    for cmd in &setup {
        assert_eq!(outcome_host(&t, cmd), outcome_native(&mut native, cmd));
    }
    let base = t.status("perp").last_sequence;
    let mut rng = 0x5eed_u64;
    let ops: Vec<Command> = (0..600)
        .map(|_| sim::command(random_op(&mut rng)))
        .collect();
    let pending: Vec<_> = ops
        .iter()
        .map(|c| {
            t.host()
                .submit_pipelined("perp", to_json(c).to_string().as_bytes())
                .unwrap()
        })
        .collect();
    let mut acked = 0u64;
    for rx in pending.into_iter().take(200) {
        let receipt = rx
            .blocking_recv()
            .expect("acknowledged")
            .map(|r| r.sequence);
        let seq = receipt.unwrap_or_else(|e| e.sequence().expect("journaled"));
        acked = acked.max(seq);
    }
    t.crash_and_restart();
    let last = t.status("perp").last_sequence;
    assert!(
        last >= acked,
        "acknowledged command {acked} lost (last {last})"
    );
    let committed = usize::try_from(last - base).unwrap();
    for cmd in &ops[..committed] {
        let _ = outcome_native(&mut native, cmd);
    }
    assert_eq!(t.tables("perp"), flatten(native.dump()));
    assert_eq!(observe_host(&t), observe_native(&native));
    assert_conserved(&t.query("perp", json!("totals")).unwrap());
}

fn random_op(state: &mut u64) -> Op {
    // xorshift64: a fixed, reproducible sequence.
    let mut next = |n: u64| {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state % n
    };
    (
        next(u64::from(sim::KINDS)) as u8,
        next(3) as u8,
        next(u64::from(sim::MARKET_CHOICES)) as u8,
        next(2 * sim::X_MAX as u64 + 1) as i64 - sim::X_MAX,
    )
}

fn op() -> impl Strategy<Value = (Op, bool)> {
    (
        (
            0..sim::KINDS,
            0..3u8,
            0..sim::MARKET_CHOICES,
            -sim::X_MAX..=sim::X_MAX,
        ),
        prop::bool::weighted(0.08),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    /// The component answers every command exactly as the native crate does,
    /// holds exactly the same tables after every crash-restart, keeps the
    /// money conserved, and never leaves an opened or increased position
    /// below its margin requirements.
    #[test]
    fn component_matches_native_across_restarts(ops in prop::collection::vec(op(), 1..40)) {
        let mut t = host();
        let mut native = Harness::<Perp>::new();
        for cmd in sim::setup() {
            prop_assert_eq!(outcome_host(&t, &cmd), outcome_native(&mut native, &cmd));
        }
        for (op, crash) in ops {
            let cmd = sim::command(op);
            let got = outcome_host(&t, &cmd);
            prop_assert_eq!(&got, &outcome_native(&mut native, &cmd), "{:?}", cmd);
            if let Ok(r) = &got
                && matches!(r["kind"].as_str(), Some("open" | "increase" | "flip"))
            {
                let p = &r["position"];
                prop_assert!(p["equity"].as_i64() >= p["initial_requirement"].as_i64(), "{}", r);
                prop_assert_eq!(&p["liquidatable"], &json!(false));
            }
            if crash {
                t.crash_and_restart();
                prop_assert_eq!(t.tables("perp"), flatten(native.dump()));
                assert_conserved(&t.query("perp", json!("totals")).unwrap());
            }
        }
        t.crash_and_restart();
        prop_assert_eq!(t.tables("perp"), flatten(native.dump()));
        prop_assert_eq!(observe_host(&t), observe_native(&native));
        assert_conserved(&t.query("perp", json!("totals")).unwrap());
    }
}

fn observe_server(s: &Server) -> Value {
    observe(|q| {
        s.query("perp", &q)
            .unwrap_or_else(|(_, body)| json!({"error": body["error"]["code"].clone()}))
    })
}

/// A real `keel serve` killed with SIGKILL while a client is sending
/// commands, three times: every acknowledged command survives, and the
/// state equals the native result of exactly the committed prefix.
#[test]
fn positions_and_collateral_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[("perp", None)]);
    let mut native = Harness::<Perp>::new();
    for cmd in sim::setup() {
        server.call("perp", &to_json(&cmd)).unwrap();
        outcome_native(&mut native, &cmd).unwrap();
    }
    let mut rng = 0xdead_beef_u64;
    for cycle in 0..3 {
        let base = server.plugin_status("perp")["last_sequence"]
            .as_u64()
            .unwrap();
        let ops: Vec<Command> = (0..400)
            .map(|_| sim::command(random_op(&mut rng)))
            .collect();
        let acked = Arc::new(AtomicUsize::new(0));
        let client = {
            let (url, ops, acked) = (
                format!("{}/v1/plugins/perp/commands", server.base_url()),
                ops.clone(),
                acked.clone(),
            );
            std::thread::spawn(move || {
                let agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(10)))
                    .build()
                    .new_agent();
                for cmd in &ops {
                    match agent.post(&url).send(to_json(cmd).to_string()) {
                        Ok(r) if r.status() == 200 || r.status() == 422 => {
                            acked.fetch_add(1, Ordering::SeqCst)
                        }
                        _ => return,
                    };
                }
            })
        };
        // Kill mid-stream, at a different point each cycle.
        let target = 40 + 60 * cycle;
        let started = Instant::now();
        while acked.load(Ordering::SeqCst) < target && started.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let pid = server.pid().expect("running");
        let status = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        client.join().unwrap();
        server.restart();
        let acked = acked.load(Ordering::SeqCst);
        assert!(
            acked >= target,
            "cycle {cycle}: only {acked} commands acknowledged"
        );
        let last = server.plugin_status("perp")["last_sequence"]
            .as_u64()
            .unwrap();
        let committed = usize::try_from(last - base).unwrap();
        assert!(
            committed == acked || committed == acked + 1,
            "cycle {cycle}: {acked} acknowledged, {committed} committed"
        );
        for cmd in &ops[..committed] {
            let _ = outcome_native(&mut native, cmd);
        }
        let state = observe_server(&server);
        assert_eq!(state, observe_native(&native), "cycle {cycle}");
        assert_conserved(&state["totals"]);
    }
}

/// A refusal's code (panics on anything that is not a plugin refusal).
fn refusal_code(e: HostError) -> String {
    match e {
        HostError::Rejected { code, .. } => code,
        other => panic!("not a plugin refusal: {other}"),
    }
}

#[test]
fn positions_belong_to_their_caller_and_prices_to_the_operator() {
    use keel_host::Caller;
    let t = host();
    let alice = Caller::new("alice", ["client"]);
    let bob = Caller::new("bob", ["client"]);
    let ops = Caller::new("ops", ["client", "operator"]);
    for cmd in [
        json!({"create_market": {"market": "BTC", "mark_price": 1000, "initial_margin_bps": 1000, "maintenance_margin_bps": 500}}),
        json!({"deposit": {"user": "alice", "amount": 10_000}}),
        json!({"deposit": {"user": "bob", "amount": 10_000}}),
    ] {
        t.call_as("perp", &ops, cmd).unwrap();
    }
    // Alice opens a long of 10 as herself (the user left out is the caller).
    let opened = t
        .call_as(
            "perp",
            &alice,
            json!({"open": {"market": "BTC", "size": 10}}),
        )
        .unwrap();
    assert_eq!(opened["user"], "alice");
    assert_eq!(
        t.query_as("perp", &alice, json!({"account": {}})).unwrap()["positions"][0]["size"],
        10
    );

    // Bob against alice's position and collateral, and against the
    // operator's commands: refused with its code, state hash unchanged.
    let hash = t.state_hash("perp");
    let attempts = [
        (
            json!({"close": {"user": "alice", "market": "BTC"}}),
            "not-owner",
        ),
        (
            json!({"reduce": {"user": "alice", "market": "BTC", "amount": 5}}),
            "not-owner",
        ),
        (
            json!({"trade": {"user": "alice", "market": "BTC", "size": -10}}),
            "not-owner",
        ),
        (
            json!({"adjust_margin": {"user": "alice", "market": "BTC", "amount": -100}}),
            "not-owner",
        ),
        (
            json!({"withdraw": {"user": "alice", "amount": 1}}),
            "not-owner",
        ),
        (
            json!({"set_mark": {"market": "BTC", "price": 905}}),
            "operator-only",
        ),
        (
            json!({"apply_funding": {"market": "BTC", "rate_ppm": 1000}}),
            "operator-only",
        ),
        (
            json!({"liquidate": {"user": "alice", "market": "BTC"}}),
            "operator-only",
        ),
        (json!({"deposit": {"amount": 1_000_000}}), "operator-only"),
        (
            json!({"create_market": {"market": "ETH", "mark_price": 10, "initial_margin_bps": 1000, "maintenance_margin_bps": 500}}),
            "operator-only",
        ),
    ];
    for (cmd, code) in attempts {
        let e = t.call_as("perp", &bob, cmd.clone()).unwrap_err();
        assert_eq!(refusal_code(e), code, "{cmd}");
        assert_eq!(t.state_hash("perp"), hash, "{cmd} changed the state");
    }
    // The operator does not trade for alice either.
    let e = t
        .call_as(
            "perp",
            &ops,
            json!({"close": {"user": "alice", "market": "BTC"}}),
        )
        .unwrap_err();
    assert_eq!(refusal_code(e), "not-owner");
    assert_eq!(t.state_hash("perp"), hash);

    // Bob trades as himself; the operator moves the mark and liquidates
    // alice (long 10 at 1000 with 1000 margin: at 905 her equity of 50 is
    // below the 452 maintenance requirement).
    t.call_as(
        "perp",
        &bob,
        json!({"open": {"user": "bob", "market": "BTC", "size": -5}}),
    )
    .unwrap();
    t.call_as(
        "perp",
        &ops,
        json!({"set_mark": {"market": "BTC", "price": 905}}),
    )
    .unwrap();
    let liq = t
        .call_as(
            "perp",
            &ops,
            json!({"liquidate": {"user": "alice", "market": "BTC"}}),
        )
        .unwrap();
    assert_eq!(liq["user"], "alice");
    assert_conserved(&t.query("perp", json!("totals")).unwrap());

    let verdicts = t.verify_replay();
    assert!(verdicts.iter().all(|v| v.ok()), "{verdicts:?}");
}
