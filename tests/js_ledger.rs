//! A plugin written in JavaScript: `plugins/js-ledger`, built with
//! componentize-js by `plugins/js-ledger/build.sh` into a 12 MB component
//! (the SpiderMonkey engine plus the ledger's module, pre-initialised). It
//! targets the world `kv-plugin`: its storage is `wasi:keyvalue` (buckets
//! are its tables), with `atomics.increment` counting transfers and
//! `batch` get-many / set-many reading and opening accounts.
//!
//! It runs in the real host like any other plugin: commands and queries; a
//! refused transfer (which wrote its debit and bumped its counter before
//! finding the overdraft) and a JavaScript exception (a trap) leave
//! nothing; SIGKILL and restart lose no acknowledged command; and `verify`
//! reproduces every response and the state hash — including lottery
//! commands drawn with `Math.random()` and stamped with `Date.now()`,
//! interleaved with failures, queries and crashes.
//!
//! The component is not built by cargo (it needs Node.js and npm): when it
//! is absent these tests print `SKIPPED` and pass, unless
//! `KEEL_REQUIRE_FOREIGN_PLUGINS=1` (set by `.ci/run`, which builds it
//! first) makes its absence a failure.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use keel_tests::TestHost;
use keel_tests::foreign::code_of;
use keel_tests::server::{Server, keel_bin};
use serde_json::{Value, json};

const PLUGIN: &str = "js-ledger";

/// Held by each test for its whole run: the first to compile the 12 MB
/// component fills the shared cache and the other then finds it there,
/// instead of both compiling it at once on a small machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Takes [`ONE_AT_A_TIME`] (a failed test does not poison it for the other).
fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// The built component, or `None` (after saying so) when it is absent and
/// not required.
fn component() -> Option<Vec<u8>> {
    keel_tests::foreign::component(
        "js-ledger",
        "plugins/js-ledger/build.sh",
        "Node.js >= 20 and npm",
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

/// Checks one lottery draw: a prize in 0..100 from `Math.random()`, and
/// `Date.now()` equal to the command's journaled timestamp.
fn checked_draw(draw: &Value) -> Value {
    let r = draw["draw"].as_f64().unwrap();
    assert!((0.0..1.0).contains(&r), "{draw}");
    assert_eq!(
        draw["prize"].as_i64().unwrap(),
        (r * 100.0).floor() as i64,
        "{draw}"
    );
    assert_eq!(
        draw["at"], draw["journaled_ms"],
        "Date.now() is the journaled timestamp: {draw}"
    );
    assert!(draw["at"].as_u64().unwrap() > 1_600_000_000_000, "{draw}");
    draw.clone()
}

#[test]
fn js_ledger_in_a_test_host() {
    let Some(bytes) = component() else { return };
    let _serial = one_at_a_time();
    let mut t = TestHost::new();
    let status = t
        .deploy(&bytes, Some(json!({"accounts": {"treasury": 1000}})))
        .unwrap();
    assert_eq!(
        (status.name.as_str(), status.version.as_str()),
        (PLUGIN, "0.1.0")
    );
    assert_eq!(balance(&t, "treasury"), 1000, "init opened the treasury");

    // Commands and queries.
    assert_eq!(
        t.call(
            PLUGIN,
            json!({"open": {"accounts": ["alice", "bob", "carol"]}})
        )
        .unwrap(),
        json!({"opened": ["alice", "bob", "carol"]})
    );
    assert_eq!(
        t.call(
            PLUGIN,
            json!({"deposit": {"account": "alice", "amount": 100}})
        )
        .unwrap(),
        json!({"account": "alice", "balance": 100})
    );
    assert_eq!(
        t.call(
            PLUGIN,
            json!({"transfer": {"from": "alice", "to": "bob", "amount": 30}})
        )
        .unwrap(),
        json!({"from": "alice", "to": "bob", "amount": 30, "transfer": 1})
    );
    assert_eq!((balance(&t, "alice"), balance(&t, "bob")), (70, 30));
    assert_eq!(t.call(PLUGIN, json!("noop")).unwrap(), json!({"ok": true}));

    // Refusals leave nothing, although the transfer wrote its debit and
    // incremented its counter before finding the overdraft.
    let overdraft = json!({"transfer": {"from": "bob", "to": "carol", "amount": 31}});
    assert_eq!(refused_without_trace(&t, overdraft), "insufficient-funds");
    for (command, code) in [
        (
            json!({"transfer": {"from": "alice", "to": "dave", "amount": 1}}),
            "no-such-account",
        ),
        (json!({"open": {"accounts": ["alice"]}}), "account-exists"),
        (
            json!({"open": {"accounts": ["erin", "erin"]}}),
            "invalid-command",
        ),
        (
            json!({"deposit": {"account": "alice", "amount": -5}}),
            "invalid-amount",
        ),
        (
            json!({"deposit": {"account": "alice", "amount": 1.5}}),
            "invalid-amount",
        ),
        (
            json!({"deposit": {"account": "Alice!", "amount": 5}}),
            "invalid-account",
        ),
        (
            json!({"deposit": {"account": "alice", "amount": 9_007_199_254_740_991_i64}}),
            "amount-too-large",
        ),
        (json!({"mint": {}}), "unknown-command"),
        (json!([1, 2]), "unknown-command"),
    ] {
        assert_eq!(
            refused_without_trace(&t, command.clone()),
            code,
            "{command}"
        );
    }
    // The refused transfer's counter increment was dropped with it.
    assert_eq!(
        t.call(
            PLUGIN,
            json!({"transfer": {"from": "bob", "to": "carol", "amount": 30}})
        )
        .unwrap()["transfer"],
        json!(2)
    );
    // A JavaScript exception after a write is a trap: nothing kept, and the
    // plugin keeps serving.
    let explode = json!({"explode": {"account": "alice"}});
    assert_eq!(refused_without_trace(&t, explode), "trap");
    assert_eq!(balance(&t, "alice"), 70);
    assert_eq!(
        code_of(t.query(PLUGIN, json!({"balance": {"account": "dave"}}))),
        "no-such-account"
    );

    // Lottery draws (Math.random() and Date.now()), interleaved with
    // failures, queries, no-ops and crashes.
    let mut draws = Vec::new();
    for round in 0..12 {
        let who = ["alice", "bob", "carol"][round % 3];
        let before = balance(&t, who);
        let draw = checked_draw(
            &t.call(PLUGIN, json!({"lottery": {"account": who}}))
                .unwrap(),
        );
        assert_eq!(draw["account"], json!(who));
        assert_eq!(balance(&t, who), before + draw["prize"].as_i64().unwrap());
        draws.push(draw);
        match round % 4 {
            0 => assert_eq!(
                code_of(t.call(PLUGIN, json!({"explode": {"account": who}}))),
                "trap"
            ),
            1 => assert_eq!(
                code_of(t.call(
                    PLUGIN,
                    json!({"transfer": {"from": who, "to": "treasury", "amount": 1_000_000}})
                )),
                "insufficient-funds"
            ),
            2 => {
                t.call(PLUGIN, json!("noop")).unwrap();
            }
            _ => t.crash_and_restart(),
        }
    }
    let drawn: BTreeSet<String> = draws.iter().map(|d| d["draw"].to_string()).collect();
    assert!(
        drawn.len() > 6,
        "Math.random() is seeded per command, not baked into the snapshot: {draws:?}"
    );
    assert_eq!(
        t.query(PLUGIN, json!({"draws": {}})).unwrap(),
        Value::Array(draws.clone())
    );

    // Enough accounts that `accounts` pages through `list-keys`.
    for batch in 0..15 {
        let names: Vec<String> = (0..10)
            .map(|i| format!("acct-{:03}", batch * 10 + i))
            .collect();
        t.call(PLUGIN, json!({"open": {"accounts": names}}))
            .unwrap();
    }
    t.call(
        PLUGIN,
        json!({"deposit": {"account": "acct-050", "amount": 51}}),
    )
    .unwrap();
    let listed: BTreeMap<String, i64> = t
        .query(PLUGIN, json!({"accounts": {}}))
        .unwrap()
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
    assert_eq!(listed.len(), 154);
    assert_eq!(listed["acct-050"], 51);
    assert_eq!(listed["alice"], balance(&t, "alice"));
    let prizes: i64 = draws.iter().map(|d| d["prize"].as_i64().unwrap()).sum();
    assert_eq!(
        listed.values().sum::<i64>(),
        1000 + 100 + 51 + prizes,
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
fn js_ledger_through_a_real_server_survives_sigkill() {
    let Some(bytes) = component() else { return };
    let _serial = one_at_a_time();
    // Compile the component into the cache the server shares with the test
    // kit first: a cold compilation in a debug build takes minutes, longer
    // than the test client's 30 s HTTP timeout for the deploy below.
    TestHost::new().deploy(&bytes, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let deployed = server
        .post_raw("/v1/plugins?config=%7B%7D", &bytes)
        .unwrap_or_else(|e| panic!("deploying over HTTP: {e:?}"));
    assert_eq!(deployed["name"], json!(PLUGIN), "{deployed}");

    // Every acknowledged command, and what it must have left behind.
    let mut acked = Vec::new();
    let mut expected_balance = BTreeMap::from([("alice", 0i64), ("bob", 0i64)]);
    let mut draws = Vec::new();
    let (seq, _) = server
        .call(PLUGIN, &json!({"open": {"accounts": ["alice", "bob"]}}))
        .unwrap();
    acked.push(seq);
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
        let (status, body) = server
            .call(PLUGIN, &json!({"explode": {"account": who}}))
            .unwrap_err();
        assert!(body.to_string().contains("trap"), "{status} {body}");
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
        server.query(PLUGIN, &json!({"draws": {}})).unwrap(),
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
