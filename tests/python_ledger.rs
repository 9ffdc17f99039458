//! A plugin written in Python: `plugins/python-ledger`, built with
//! componentize-py by `plugins/python-ledger/build.sh` into an 18 MB
//! component (CPython compiled to WebAssembly plus the ledger's modules).
//!
//! It runs in the real host like any other plugin: commands and queries; a
//! refused transfer (which wrote its debit before finding the overdraft)
//! and a Python exception (a trap) leave nothing; SIGKILL and restart lose
//! no acknowledged command; and `verify` reproduces every response and the
//! state hash — including lottery commands drawn with Python's own
//! `random` and `time`, interleaved with failures, queries and crashes.
//!
//! The component is not built by cargo (it needs Python and
//! componentize-py): when it is absent these tests print `SKIPPED` and
//! pass, unless `KEEL_REQUIRE_FOREIGN_PLUGINS=1` (set by `.ci/run`, which
//! builds it first) makes its absence a failure.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use keel_tests::TestHost;
use keel_tests::foreign::code_of;
use keel_tests::server::{Server, keel_bin};
use serde_json::{Value, json};

const PLUGIN: &str = "python-ledger";

/// Held while deploying: the tests here run in parallel, and the first
/// deploy compiles the component (minutes in a debug build) into the shared
/// cache, from which the second then loads it instead of compiling it again.
static DEPLOYING: Mutex<()> = Mutex::new(());

/// How long a deploy over HTTP may take (a cold compile in a debug build).
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The built component, or `None` (after saying so) when it is absent and
/// not required.
fn component() -> Option<Vec<u8>> {
    keel_tests::foreign::component(
        "python-ledger",
        "plugins/python-ledger/build.sh",
        "python3 with venv and pip",
    )
}

/// A refused command: its code, and proof that it left no trace.
fn refused_without_trace(t: &TestHost, command: Value) -> String {
    keel_tests::foreign::refused_without_trace(t, PLUGIN, command)
}

fn balance(t: &TestHost, account: &str) -> i64 {
    t.query(PLUGIN, json!({"balance": {"account": account}}))
        .unwrap()["balance"]
        .as_i64()
        .unwrap()
}

/// Checks one lottery draw's response and returns it without the balance
/// (the stored draw).
fn checked_draw(draw: &Value) -> Value {
    let roll = draw["roll"].as_i64().unwrap();
    let luck = draw["luck"].as_f64().unwrap();
    assert!((1..=6).contains(&roll), "{draw}");
    assert!((0.0..1.0).contains(&luck), "{draw}");
    assert!(
        draw["drawn_at_ms"].as_u64().unwrap() > 1_600_000_000_000,
        "{draw}"
    );
    let mut stored = draw.clone();
    stored.as_object_mut().unwrap().remove("balance");
    stored
}

/// POSTs the component to `/v1/plugins` (with a client of its own: the
/// server's has a 30 s timeout, too short for a cold compile in a debug
/// build).
fn deploy_over_http(server: &Server, bytes: &[u8]) -> Value {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(DEPLOY_TIMEOUT))
        .build()
        .new_agent();
    let mut resp = agent
        .post(format!("{}/v1/plugins?config=%7B%7D", server.base_url()))
        .send(bytes)
        .unwrap_or_else(|e| panic!("deploying over HTTP: {e}"));
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    assert_eq!(status, 200, "deploying over HTTP: {body}");
    serde_json::from_str(&body).expect("a deploy answers JSON")
}

#[test]
fn python_ledger_in_a_test_host() {
    let Some(bytes) = component() else { return };
    let mut t = TestHost::new();
    let status = {
        let _gate = DEPLOYING.lock().unwrap_or_else(|e| e.into_inner());
        t.deploy(&bytes, Some(json!({"currency": "credits"})))
            .unwrap()
    };
    assert_eq!(
        (status.name.as_str(), status.version.as_str()),
        (PLUGIN, "0.1.0")
    );

    // Commands and queries.
    for name in ["alice", "bob", "carol"] {
        assert_eq!(
            t.call(PLUGIN, json!({"open": {"account": name}})).unwrap(),
            json!({"account": name, "balance": 0})
        );
    }
    t.call(
        PLUGIN,
        json!({"deposit": {"account": "alice", "amount": 100}}),
    )
    .unwrap();
    let moved = t
        .call(
            PLUGIN,
            json!({"transfer": {"from": "alice", "to": "bob", "amount": 30}}),
        )
        .unwrap();
    assert_eq!(moved["from"], json!({"account": "alice", "balance": 70}));
    assert_eq!(moved["to"], json!({"account": "bob", "balance": 30}));
    assert_eq!(balance(&t, "bob"), 30);

    // Refusals leave nothing, although the transfer wrote its debit (and
    // its credit) before finding the overdraft.
    let overdraft = json!({"transfer": {"from": "bob", "to": "carol", "amount": 31}});
    assert_eq!(refused_without_trace(&t, overdraft), "insufficient-funds");
    let to_nobody = json!({"transfer": {"from": "alice", "to": "dave", "amount": 1}});
    assert_eq!(refused_without_trace(&t, to_nobody), "unknown-account");
    for (command, code) in [
        (json!({"open": {"account": "alice"}}), "account-exists"),
        (
            json!({"deposit": {"account": "alice", "amount": -5}}),
            "invalid-amount",
        ),
        (
            json!({"deposit": {"account": "Alice!", "amount": 5}}),
            "invalid-account",
        ),
        (json!({"mint": {}}), "bad-command"),
        (json!([1, 2]), "bad-command"),
    ] {
        assert_eq!(refused_without_trace(&t, command), code);
    }
    // A Python exception after a write is a trap: nothing kept, and the
    // plugin keeps serving.
    let explode = json!({"explode": {"account": "alice"}});
    assert_eq!(refused_without_trace(&t, explode), "trap");
    assert_eq!(balance(&t, "alice"), 70);
    assert_eq!(
        code_of(t.query(PLUGIN, json!({"balance": {"account": "dave"}}))),
        "unknown-account"
    );

    // Python's clock reads the command's journaled timestamp.
    let clock = t.call(PLUGIN, json!({"clock": {}})).unwrap();
    assert_eq!(clock["time_ms"], clock["journaled_ms"], "{clock}");
    assert_eq!(
        clock["time_ns"].as_u64().unwrap() / 1_000_000,
        clock["journaled_ms"].as_u64().unwrap(),
        "{clock}"
    );

    // Lottery draws (Python's `random` and `time`), interleaved with
    // failures, queries, no-ops and a crash.
    let mut draws = Vec::new();
    for round in 0..12 {
        let who = ["alice", "bob", "carol"][round % 3];
        let draw = t
            .call(PLUGIN, json!({"lottery": {"account": who}}))
            .unwrap();
        draws.push(checked_draw(&draw));
        assert_eq!(draw["balance"].as_i64().unwrap(), balance(&t, who));
        match round % 4 {
            0 => assert_eq!(
                code_of(t.call(PLUGIN, json!({"explode": {"account": who}}))),
                "trap"
            ),
            1 => assert_eq!(
                code_of(t.call(
                    PLUGIN,
                    json!({"transfer": {"from": who, "to": "alice", "amount": 1_000_000}})
                )),
                if who == "alice" {
                    "same-account"
                } else {
                    "insufficient-funds"
                }
            ),
            2 => {
                t.call(PLUGIN, json!({"noop": {}})).unwrap();
            }
            _ => t.crash_and_restart(),
        }
    }
    let lucks: std::collections::BTreeSet<String> =
        draws.iter().map(|d| d["luck"].to_string()).collect();
    assert!(
        lucks.len() > 6,
        "Python's generator is seeded per command, not baked in: {draws:?}"
    );
    assert_eq!(
        t.query(PLUGIN, json!({"draws": {}})).unwrap()["draws"],
        Value::Array(draws.clone())
    );
    assert_eq!(
        t.query(PLUGIN, json!({"draws": {"account": "bob", "limit": 2}}))
            .unwrap()["draws"],
        json!([draws[1], draws[4]])
    );

    // Enough accounts that `accounts` reads several cursor chunks.
    for i in 0..150 {
        t.call(PLUGIN, json!({"open": {"account": format!("acct-{i:03}")}}))
            .unwrap();
        if i % 50 == 0 {
            t.call(
                PLUGIN,
                json!({"deposit": {"account": format!("acct-{i:03}"), "amount": i + 1}}),
            )
            .unwrap();
        }
    }
    let listed = t.query(PLUGIN, json!({"accounts": {}})).unwrap();
    let listed: BTreeMap<String, i64> = listed["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["account"].as_str().unwrap().to_owned(),
                a["balance"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed.len(), 153);
    assert_eq!(listed["acct-050"], 51);
    assert_eq!(listed["alice"], balance(&t, "alice"));
    let prizes: i64 = draws.iter().map(|d| d["prize"].as_i64().unwrap()).sum();
    assert_eq!(
        listed.values().sum::<i64>(),
        100 + 1 + 51 + 101 + prizes,
        "money is conserved"
    );

    // A crash keeps everything committed.
    let (hash, tables) = (t.state_hash(PLUGIN), t.tables(PLUGIN));
    t.crash_and_restart();
    assert_eq!(t.state_hash(PLUGIN), hash);
    assert_eq!(t.tables(PLUGIN), tables);

    // Replay reproduces every response byte for byte, and the state hash.
    let verdicts = t.verify_replay();
    assert!(verdicts.iter().all(|v| v.ok()), "{verdicts:?}");
}

#[test]
fn python_ledger_through_a_real_server_survives_sigkill() {
    let Some(bytes) = component() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let deployed = {
        let _gate = DEPLOYING.lock().unwrap_or_else(|e| e.into_inner());
        deploy_over_http(&server, &bytes)
    };
    assert_eq!(deployed["name"], json!(PLUGIN), "{deployed}");

    // Every acknowledged command, and what it must have left behind.
    let mut acked = Vec::new();
    let mut expected_balance = BTreeMap::new();
    let mut draws = Vec::new();
    for name in ["alice", "bob"] {
        acked.push(
            server
                .call(PLUGIN, &json!({"open": {"account": name}}))
                .unwrap()
                .0,
        );
        expected_balance.insert(name, 0i64);
    }
    for round in 0..10 {
        let who = if round % 2 == 0 { "alice" } else { "bob" };
        let (seq, r) = server
            .call(PLUGIN, &json!({"deposit": {"account": who, "amount": 10}}))
            .unwrap();
        acked.push(seq);
        *expected_balance.get_mut(who).unwrap() += 10;
        assert_eq!(r["balance"], json!(expected_balance[who]));
        let (seq, draw) = server
            .call(PLUGIN, &json!({"lottery": {"account": who}}))
            .unwrap();
        acked.push(seq);
        *expected_balance.get_mut(who).unwrap() += draw["prize"].as_i64().unwrap();
        draws.push(checked_draw(&draw));
        let other = if who == "alice" { "bob" } else { "alice" };
        let (status, body) = server
            .call(
                PLUGIN,
                &json!({"transfer": {"from": who, "to": other, "amount": 1_000_000_000}}),
            )
            .unwrap_err();
        assert_eq!(status, 422, "{body}");
        assert!(body.to_string().contains("insufficient-funds"), "{body}");
        if round == 4 {
            // SIGKILL mid-stream: the next commands go to a restarted server.
            server.restart();
        }
    }
    let last = *acked.last().unwrap();

    server.restart(); // SIGKILL, then start again
    let status = server.plugin_status(PLUGIN);
    assert!(
        status["last_sequence"].as_u64().unwrap() >= last,
        "{status}"
    );
    for (name, amount) in &expected_balance {
        let got = server
            .query(PLUGIN, &json!({"balance": {"account": name}}))
            .unwrap();
        assert_eq!(got["balance"], json!(amount), "{name}");
    }
    assert_eq!(
        server.query(PLUGIN, &json!({"draws": {}})).unwrap()["draws"],
        Value::Array(draws)
    );

    // `keel verify` on the stopped host's data directory.
    server.kill();
    let out = std::process::Command::new(keel_bin())
        .args(["verify", "--data-dir"])
        .arg(dir.path().join("data"))
        // The server's compiled components: no second cold compile.
        .arg("--cache-dir")
        .arg(std::env::temp_dir().join("keel-test-component-cache"))
        .output()
        .expect("running keel verify");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "keel verify failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("OK") && l.contains(PLUGIN)),
        "{stdout}"
    );
}
