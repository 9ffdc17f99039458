//! The dag's access rule, natively through the Harness with callers: a
//! committee author inserts only its own batches and certificates; commit
//! and prune are operator-only; every refusal changes nothing; without a
//! caller every command is trusted as before.

use keel_guest::Caller;
use keel_guest::testing::Harness;
use keel_plugin_dag::{Config, Dag};
use serde_json::{Value, json};

fn author(name: &str) -> Caller {
    Caller::new(name, ["client"])
}

fn operator() -> Caller {
    Caller::new("ops", ["client", "operator"])
}

fn dag() -> Harness<Dag> {
    let config: Config = serde_json::from_value(json!({"authors": ["a", "b", "c", "d"]})).unwrap();
    Harness::with_config(config).unwrap()
}

fn run(h: &mut Harness<Dag>, caller: &Caller, cmd: &Value) -> Result<Value, String> {
    h.as_caller(caller)
        .handle_json(&cmd.to_string())
        .map_err(|e| e.code)
}

/// Asserts that `caller` sending `cmd` is refused with `code` and that no
/// table changed.
fn refused(h: &mut Harness<Dag>, caller: &Caller, cmd: &Value, code: &str) {
    let before = h.dump();
    assert_eq!(
        run(h, caller, cmd),
        Err(code.to_owned()),
        "{} sending {cmd}",
        caller.principal
    );
    assert_eq!(h.dump(), before, "a refusal changed state: {cmd}");
}

fn cert(round: u64, author: &str, parents: &[Value]) -> Value {
    json!({"round": round, "author": author, "parents": parents, "signature": "00"})
}

/// Inserts every author's genesis certificate, each as its own author;
/// returns their digests.
fn genesis(h: &mut Harness<Dag>) -> Vec<Value> {
    ["a", "b", "c", "d"]
        .iter()
        .map(|name| {
            let r = run(h, &author(name), &json!({"insert": cert(0, name, &[])})).unwrap();
            r["inserted"]["digest"].clone()
        })
        .collect()
}

#[test]
fn an_author_inserts_only_its_own_certificates_and_batches() {
    let mut h = dag();
    // b may not insert a's certificate or batch, nor may the operator or an outsider.
    for caller in [author("b"), operator(), author("mallory")] {
        refused(
            &mut h,
            &caller,
            &json!({"insert": cert(0, "a", &[])}),
            "not-owner",
        );
        refused(
            &mut h,
            &caller,
            &json!({"store_batch": {"author": "a", "payload": "00ff"}}),
            "not-owner",
        );
    }
    // An outsider naming itself is still not a committee member.
    refused(
        &mut h,
        &author("mallory"),
        &json!({"insert": cert(0, "mallory", &[])}),
        "unknown-author",
    );
    let stored = run(
        &mut h,
        &author("a"),
        &json!({"store_batch": {"author": "a", "payload": "00ff"}}),
    )
    .unwrap();
    let batch = stored["batch_stored"]["digest"].clone();
    // a's batch in b's certificate: refused before the batch-author check.
    refused(
        &mut h,
        &author("a"),
        &json!({"insert": {"round": 0, "author": "b", "batches": [batch.clone()]}}),
        "not-owner",
    );
    let ok = run(
        &mut h,
        &author("a"),
        &json!({"insert": {"round": 0, "author": "a", "batches": [batch]}}),
    )
    .unwrap();
    assert_eq!(ok["inserted"]["round"], 0);
}

#[test]
fn insert_many_naming_another_author_is_refused_whole() {
    let mut h = dag();
    let mixed = json!({"insert_many": {"certificates": [cert(0, "a", &[]), cert(0, "b", &[])]}});
    refused(&mut h, &author("a"), &mixed, "not-owner");
    let own = json!({"insert_many": {"certificates": [cert(0, "a", &[])]}});
    let r = run(&mut h, &author("a"), &own).unwrap();
    assert_eq!(r["inserted_many"]["inserted"], 1);
}

#[test]
fn commit_and_prune_are_operator_only() {
    let mut h = dag();
    let g = genesis(&mut h);
    let leader = run(
        &mut h,
        &author("a"),
        &json!({"insert": cert(1, "a", &g[..3])}),
    )
    .unwrap();
    let leader = leader["inserted"]["digest"].clone();
    let commit = json!({"commit": {"leader": leader}});
    let prune = json!({"prune": {}});
    for name in ["a", "b"] {
        refused(&mut h, &author(name), &commit, "operator-only");
        refused(&mut h, &author(name), &prune, "operator-only");
    }
    let committed = run(&mut h, &operator(), &commit).unwrap();
    assert_eq!(
        committed["committed"]["certificates"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    let pruned = run(&mut h, &operator(), &prune).unwrap();
    assert!(pruned.get("pruned").is_some(), "{pruned}");
}

#[test]
fn without_a_caller_every_command_is_trusted() {
    let mut h = dag();
    h.set_caller(None);
    let mut genesis = Vec::new();
    for name in ["a", "b", "c", "d"] {
        let r = h
            .handle_json(&json!({"insert": cert(0, name, &[])}).to_string())
            .unwrap();
        genesis.push(r["inserted"]["digest"].clone());
    }
    h.handle_json(&json!({"store_batch": {"author": "c", "payload": "01"}}).to_string())
        .unwrap();
    let leader = h
        .handle_json(&json!({"insert": cert(1, "b", &genesis[..3])}).to_string())
        .unwrap();
    h.handle_json(&json!({"commit": {"leader": leader["inserted"]["digest"]}}).to_string())
        .unwrap();
    h.handle_json(r#"{"prune": {}}"#).unwrap();
}
