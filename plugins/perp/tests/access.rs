//! Native tests of the perp plugin's access rule (`keel_plugin_perp::access`):
//! the harness sets the caller each command sees.

use keel_guest::Caller;
use keel_guest::testing::Harness;
use keel_plugin_perp::Perp;
use serde_json::{Value, json};

fn alice() -> Caller {
    Caller::new("alice", ["client"])
}

fn bob() -> Caller {
    Caller::new("bob", ["client"])
}

fn ops() -> Caller {
    Caller::new("ops", ["client", "operator"])
}

fn run(h: &mut Harness<Perp>, caller: &Caller, command: Value) -> Result<Value, String> {
    h.as_caller(caller)
        .handle_json(&command.to_string())
        .map_err(|e| e.code)
}

/// Runs `command` as `caller`, expects refusal `code` and no change at all.
fn refused(h: &mut Harness<Perp>, caller: &Caller, command: Value, code: &str) {
    let before = h.dump();
    assert_eq!(
        run(h, caller, command.clone()),
        Err(code.to_owned()),
        "{command}"
    );
    assert_eq!(h.dump(), before, "{command} changed the state");
}

/// The operator creates BTC at 1000 (10 % / 5 %) and funds alice and bob;
/// alice opens a long of 10 as herself.
fn venue() -> Harness<Perp> {
    let mut h = Harness::<Perp>::new();
    let op = ops();
    run(
        &mut h,
        &op,
        json!({"create_market": {"market": "BTC", "mark_price": 1000, "initial_margin_bps": 1000, "maintenance_margin_bps": 500}}),
    )
    .unwrap();
    for user in ["alice", "bob"] {
        run(
            &mut h,
            &op,
            json!({"deposit": {"user": user, "amount": 10_000}}),
        )
        .unwrap();
    }
    let a = alice();
    let report = run(&mut h, &a, json!({"open": {"market": "BTC", "size": 10}})).unwrap();
    assert_eq!(report["user"], "alice", "a left-out user is the caller");
    h
}

#[test]
fn positions_and_collateral_belong_to_their_caller() {
    let mut h = venue();
    let b = bob();
    for command in [
        json!({"withdraw": {"user": "alice", "amount": 1}}),
        json!({"trade": {"user": "alice", "market": "BTC", "size": -10}}),
        json!({"open": {"user": "alice", "market": "BTC", "size": 1}}),
        json!({"increase": {"user": "alice", "market": "BTC", "amount": 1}}),
        json!({"reduce": {"user": "alice", "market": "BTC", "amount": 1}}),
        json!({"close": {"user": "alice", "market": "BTC"}}),
        json!({"adjust_margin": {"user": "alice", "market": "BTC", "amount": -1}}),
    ] {
        refused(&mut h, &b, command, "not-owner");
    }
    // Bob trades as himself, naming himself or nobody.
    run(
        &mut h,
        &b,
        json!({"open": {"user": "bob", "market": "BTC", "size": -5}}),
    )
    .unwrap();
    run(&mut h, &b, json!({"withdraw": {"amount": 100}})).unwrap();
    // Alice closes her own position.
    let a = alice();
    let closed = run(&mut h, &a, json!({"close": {"market": "BTC"}})).unwrap();
    assert_eq!(closed["kind"], "close");
}

#[test]
fn operator_only_commands_refuse_clients() {
    let mut h = venue();
    let a = alice();
    for command in [
        json!({"create_market": {"market": "ETH", "mark_price": 10, "initial_margin_bps": 1000, "maintenance_margin_bps": 500}}),
        json!({"set_mark": {"market": "BTC", "price": 1}}),
        json!({"apply_funding": {"market": "BTC", "rate_ppm": 100}}),
        json!({"deposit": {"user": "alice", "amount": 1_000_000}}),
        json!({"deposit": {"amount": 1_000_000}}),
        json!({"liquidate": {"user": "alice", "market": "BTC"}}),
    ] {
        refused(&mut h, &a, command, "operator-only");
    }
}

#[test]
fn the_operator_marks_funds_and_liquidates_but_does_not_trade_for_others() {
    let mut h = venue();
    let op = ops();
    refused(
        &mut h,
        &op,
        json!({"close": {"user": "alice", "market": "BTC"}}),
        "not-owner",
    );
    refused(
        &mut h,
        &op,
        json!({"withdraw": {"user": "alice", "amount": 1}}),
        "not-owner",
    );
    run(
        &mut h,
        &op,
        json!({"apply_funding": {"market": "BTC", "rate_ppm": 0}}),
    )
    .unwrap();
    // Alice's long of 10 at 1000 has 1000 margin: at 905 its equity (50)
    // is below maintenance (452): liquidatable.
    run(
        &mut h,
        &op,
        json!({"set_mark": {"market": "BTC", "price": 905}}),
    )
    .unwrap();
    let liq = run(
        &mut h,
        &op,
        json!({"liquidate": {"user": "alice", "market": "BTC"}}),
    )
    .unwrap();
    assert_eq!(liq["user"], "alice");
    let totals = h.query_json(r#""totals""#).unwrap();
    assert_eq!(totals["conserved"], true);
}

#[test]
fn without_a_caller_every_command_is_trusted_but_must_name_its_user() {
    let mut h = venue();
    h.set_caller(None);
    h.handle_json(r#"{"deposit": {"user": "carol", "amount": 500}}"#)
        .unwrap();
    h.handle_json(r#"{"withdraw": {"user": "carol", "amount": 500}}"#)
        .unwrap();
    h.handle_json(r#"{"set_mark": {"market": "BTC", "price": 1001}}"#)
        .unwrap();
    let before = h.dump();
    assert_eq!(
        h.handle_json(r#"{"withdraw": {"amount": 1}}"#)
            .unwrap_err()
            .code,
        "invalid-argument"
    );
    assert_eq!(h.dump(), before);
    assert_eq!(
        h.query_json(r#"{"account": {}}"#).unwrap_err().code,
        "invalid-argument"
    );
    // A query without `user` reads the caller's own account.
    h.set_caller(Some(bob()));
    assert_eq!(h.query_json(r#"{"account": {}}"#).unwrap()["user"], "bob");
}
