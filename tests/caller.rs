//! The caller inside the plugin: every command and query carries the
//! principal that sent it (`keel:plugin/context.caller`), commands journal
//! it, and replay runs each command with its journaled caller.
//!
//! The witness is `misbehave`'s `whoami`: it answers its caller and stores
//! the principal's name in a row, so both the responses (compared byte for
//! byte by replay) and the state hash depend on the caller.

use keel_host::Caller;
use keel_host::storage::EntryKind;
use keel_tests::{TestHost, plugins};
use serde_json::{Value, json};

fn alice() -> Caller {
    Caller::new("alice", ["client"])
}

fn ops() -> Caller {
    Caller::new("ops", ["client", "operator"])
}

fn caller_json(c: &Caller) -> Value {
    json!({"principal": c.principal, "roles": c.roles})
}

fn whoami(key: &str) -> Value {
    json!({"whoami": {"key": key}})
}

#[test]
fn each_command_and_query_sees_its_own_caller() {
    let t = TestHost::new();
    t.deploy_file(plugins::MISBEHAVE);
    let (a, o) = (alice(), ops());
    assert_eq!(
        t.call_as("misbehave", &a, whoami("1")).unwrap(),
        caller_json(&a)
    );
    assert_eq!(
        t.call_as("misbehave", &o, whoami("2")).unwrap(),
        caller_json(&o)
    );
    // A call through the API without a caller: none, not the previous one.
    assert_eq!(t.call("misbehave", whoami("3")).unwrap(), Value::Null);
    assert_eq!(
        t.call_as("misbehave", &a, whoami("4")).unwrap(),
        caller_json(&a)
    );
    // Queries see theirs, between and after commands.
    assert_eq!(
        t.query_as("misbehave", &o, json!("whoami")).unwrap(),
        caller_json(&o)
    );
    assert_eq!(t.query("misbehave", json!("whoami")).unwrap(), Value::Null);
    assert_eq!(
        t.query_as("misbehave", &a, json!("whoami")).unwrap(),
        caller_json(&a)
    );
    // The other commands still answer null.
    assert_eq!(
        t.call_as(
            "misbehave",
            &a,
            json!({"write": {"key": "w", "value": "v"}})
        )
        .unwrap(),
        Value::Null
    );
    let rows = t.query("misbehave", json!("rows")).unwrap();
    assert_eq!(
        rows,
        json!([
            ["1", "alice"],
            ["2", "ops"],
            ["3", "-"],
            ["4", "alice"],
            ["w", "v"]
        ])
    );
}

#[test]
fn pipelined_commands_in_one_batch_each_see_their_caller() {
    let t = TestHost::new();
    t.deploy_file(plugins::MISBEHAVE);
    let callers: Vec<Option<Caller>> = (0..64)
        .map(|i| match i % 3 {
            0 => Some(alice()),
            1 => Some(Caller::new(format!("user-{i}"), ["client"])),
            _ => None,
        })
        .collect();
    let pending: Vec<_> = callers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let cmd = whoami(&format!("k{i:02}")).to_string();
            t.host()
                .submit_pipelined_as("misbehave", cmd.as_bytes(), c.clone())
                .unwrap()
        })
        .collect();
    for (rx, c) in pending.into_iter().zip(&callers) {
        let receipt = rx.blocking_recv().unwrap().unwrap();
        let got: Value = serde_json::from_slice(&receipt.response).unwrap();
        assert_eq!(got, c.as_ref().map_or(Value::Null, caller_json));
    }
}

#[test]
fn the_journal_records_each_caller_and_replay_reproduces_them() {
    let mut t = TestHost::new();
    t.deploy_file(plugins::MISBEHAVE);
    let (a, o) = (alice(), ops());
    t.call_as("misbehave", &a, whoami("a1")).unwrap();
    t.call_as("misbehave", &o, whoami("o1")).unwrap();
    t.call("misbehave", whoami("none")).unwrap();
    // A failed command journals its caller too.
    t.call_as("misbehave", &o, json!({"write_then_error": {"key": "e"}}))
        .unwrap_err();
    t.crash_and_restart();
    t.call_as("misbehave", &o, whoami("o2")).unwrap();
    t.call_as("misbehave", &a, whoami("a2")).unwrap();

    let journal = t.journal("misbehave");
    let seen: Vec<(String, Option<String>)> = journal
        .iter()
        .map(|e| {
            let kind = match &e.kind {
                EntryKind::Init { .. } => "init".to_owned(),
                EntryKind::Command { bytes } => String::from_utf8_lossy(bytes).into_owned(),
                EntryKind::Migrate { .. } => "migrate".to_owned(),
                EntryKind::Restore { .. } => "restore".to_owned(),
                EntryKind::UndoUpgrade { .. } => "undo-upgrade".to_owned(),
            };
            (kind, e.caller.as_ref().map(|c| c.principal.clone()))
        })
        .collect();
    let cmd = |k: &str| whoami(k).to_string();
    assert_eq!(
        seen,
        vec![
            ("init".to_owned(), None),
            (cmd("a1"), Some("alice".into())),
            (cmd("o1"), Some("ops".into())),
            (cmd("none"), None),
            (
                json!({"write_then_error": {"key": "e"}}).to_string(),
                Some("ops".into())
            ),
            (cmd("o2"), Some("ops".into())),
            (cmd("a2"), Some("alice".into())),
        ]
    );
    assert_eq!(
        journal[2].caller.as_deref(),
        Some(&o),
        "roles are journaled too"
    );

    // Replay re-runs every command with its journaled caller: the echoed
    // responses match byte for byte and the state hash is reproduced.
    let verdicts = t.verify_replay();
    assert_eq!(verdicts.len(), 1);
    assert!(verdicts[0].ok(), "{verdicts:?}");
    assert_eq!(verdicts[0].entries, 7);
}

#[test]
fn keel_journal_shows_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config = keel_host::HostConfig {
        data_dir: data_dir.clone(),
        cache_dir: Some(std::env::temp_dir().join("keel-test-component-cache")),
        ..keel_host::HostConfig::default()
    };
    let host = keel_host::Host::open(config).unwrap();
    host.deploy(&keel_tests::component(plugins::MISBEHAVE), None)
        .unwrap();
    host.submit_as("misbehave", whoami("x").to_string().as_bytes(), Some(ops()))
        .unwrap();
    // `keel journal` reads a stopped host's database.
    host.shutdown();
    let out = std::process::Command::new(keel_tests::server::keel_bin())
        .args(["journal", "--data-dir"])
        .arg(&data_dir)
        .arg("misbehave")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["kind"], "init");
    assert_eq!(lines[0]["caller"], Value::Null);
    assert_eq!(lines[1]["caller"], caller_json(&ops()));
    // The command ran as its batch's first: on a new instance.
    assert_eq!(lines[1]["new_instance"], true);
}

/// Over real HTTP: two principals' tokens reach the plugin as two callers
/// (with the roles the configuration gives them), commands and queries
/// alike; the journal keeps them and `keel verify` replays them.
#[test]
fn http_tokens_reach_the_plugin_as_their_principals() {
    use keel_tests::server::{Server, principal_toml};

    let dir = tempfile::tempdir().unwrap();
    let principals = principal_toml("alice", "alice-token-0123456789", &["client"], None)
        + &principal_toml("ops", "ops-token-0123456789", &["client", "operator"], None);
    let mut server = Server::start_with(dir.path(), &[("misbehave", None)], &principals);
    let alice = json!({"principal": "alice", "roles": ["client"]});
    let ops = json!({"principal": "ops", "roles": ["client", "operator"]});

    server.set_token(Some("alice-token-0123456789"));
    let (_, got) = server.call("misbehave", &whoami("a")).unwrap();
    assert_eq!(got, alice);
    assert_eq!(server.query("misbehave", &json!("whoami")).unwrap(), alice);
    server.set_token(Some("ops-token-0123456789"));
    let (_, got) = server.call("misbehave", &whoami("o")).unwrap();
    assert_eq!(got, ops);
    assert_eq!(server.query("misbehave", &json!("whoami")).unwrap(), ops);
    server.set_token(Some("alice-token-0123456789"));
    let (_, got) = server.call("misbehave", &whoami("a2")).unwrap();
    assert_eq!(got, alice);
    assert!(
        server
            .terminate(std::time::Duration::from_secs(30))
            .is_some_and(|s| s.success()),
        "keel serve did not stop cleanly"
    );

    let data_dir = dir.path().join("data");
    let keel = |args: &[&str]| {
        let out = std::process::Command::new(keel_tests::server::keel_bin())
            .args(args)
            .arg("--data-dir")
            .arg(&data_dir)
            .args(if args == ["journal"] {
                &["misbehave"][..]
            } else {
                &[][..]
            })
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "keel {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let callers: Vec<Value> = keel(&["journal"])
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["caller"].clone())
        .collect();
    assert_eq!(callers, vec![Value::Null, alice.clone(), ops, alice]);
    keel(&["verify"]);
}
