//! Native tests of the spot plugin's access rule (`keel_plugin_spot::access`):
//! the harness sets the caller each command sees.

use keel_guest::Caller;
use keel_guest::testing::Harness;
use keel_plugin_spot::Spot;
use keel_plugin_spot::api::{AccountView, Balance, Placed};
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

/// The operator creates a market, links alice to account 1 and bob to
/// account 2, and funds both.
fn market() -> Harness<Spot> {
    let mut h = Harness::<Spot>::new();
    let op = ops();
    h.as_caller(&op)
        .handle_json(&json!({"create_market": {"market": 1, "base": "BTC", "quote": "USD", "tick_size": 1, "lot_size": 1, "min_size": 1}}).to_string())
        .unwrap();
    for (principal, user) in [("alice", 1), ("bob", 2)] {
        let view: AccountView = serde_json::from_value(
            h.handle_json(
                &json!({"open_account": {"principal": principal, "user": user}}).to_string(),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(view.user, user);
        for asset in ["BTC", "USD"] {
            h.handle_json(
                &json!({"deposit": {"user": user, "asset": asset, "amount": 10_000}}).to_string(),
            )
            .unwrap();
        }
    }
    h
}

fn run(h: &mut Harness<Spot>, caller: &Caller, command: Value) -> Result<Value, String> {
    h.as_caller(caller)
        .handle_json(&command.to_string())
        .map_err(|e| e.code)
}

fn place(user: u64, side: &str, price: u64) -> Value {
    json!({"place": {"user": user, "market": 1, "side": side, "price": price, "qty": 5}})
}

/// Runs `command` as `caller`, expects refusal `code` and no change at all.
fn refused(h: &mut Harness<Spot>, caller: &Caller, command: Value, code: &str) {
    let before = h.dump();
    assert_eq!(
        run(h, caller, command.clone()),
        Err(code.to_owned()),
        "{command}"
    );
    assert_eq!(h.dump(), before, "{command} changed the state");
}

fn balance(h: &Harness<Spot>, user: u64, asset: &str) -> Balance {
    let all: std::collections::BTreeMap<String, Balance> = serde_json::from_value(
        h.query_json(&json!({"balances": {"user": user}}).to_string())
            .unwrap(),
    )
    .unwrap();
    all.get(asset).copied().unwrap_or_default()
}

#[test]
fn a_client_acts_only_as_its_own_account() {
    let mut h = market();
    let (a, b) = (alice(), bob());
    let order: Placed =
        serde_json::from_value(run(&mut h, &a, place(1, "buy", 100)).unwrap()).unwrap();

    // Bob cannot place, withdraw or cancel as alice.
    refused(&mut h, &b, place(1, "buy", 100), "not-owner");
    refused(
        &mut h,
        &b,
        json!({"withdraw": {"user": 1, "asset": "USD", "amount": 1}}),
        "not-owner",
    );
    refused(
        &mut h,
        &b,
        json!({"cancel": {"user": 1, "order": order.order}}),
        "not-owner",
    );
    refused(
        &mut h,
        &b,
        json!({"cancel_all": {"user": 1, "market": 1}}),
        "not-owner",
    );
    // Naming himself does not let him cancel alice's order either.
    refused(
        &mut h,
        &b,
        json!({"cancel": {"user": 2, "order": order.order}}),
        "not-owner",
    );

    // Alice can do all of it as herself.
    run(
        &mut h,
        &a,
        json!({"withdraw": {"user": 1, "asset": "USD", "amount": 1}}),
    )
    .unwrap();
    run(
        &mut h,
        &a,
        json!({"cancel": {"user": 1, "order": order.order}}),
    )
    .unwrap();
    assert_eq!(balance(&h, 1, "USD").available, 9_999);
}

#[test]
fn operator_only_commands_refuse_clients() {
    let mut h = market();
    let a = alice();
    refused(
        &mut h,
        &a,
        json!({"deposit": {"user": 1, "asset": "USD", "amount": 1_000_000}}),
        "operator-only",
    );
    refused(
        &mut h,
        &a,
        json!({"create_market": {"market": 2, "base": "ETH", "quote": "USD", "tick_size": 1, "lot_size": 1, "min_size": 1}}),
        "operator-only",
    );
    refused(
        &mut h,
        &a,
        json!({"open_account": {"principal": "mallory", "user": 9}}),
        "operator-only",
    );
}

#[test]
fn the_operator_cancels_for_others_but_does_not_trade_or_withdraw_for_them() {
    let mut h = market();
    let (a, op) = (alice(), ops());
    let order: Placed =
        serde_json::from_value(run(&mut h, &a, place(1, "sell", 120)).unwrap()).unwrap();
    // Without an account of its own the operator trades as nobody ...
    refused(&mut h, &op, place(1, "buy", 120), "no-account");
    run(
        &mut h,
        &op,
        json!({"open_account": {"principal": "ops", "user": 9}}),
    )
    .unwrap();
    // ... and with one, only as itself.
    refused(&mut h, &op, place(1, "buy", 120), "not-owner");
    refused(
        &mut h,
        &op,
        json!({"withdraw": {"user": 1, "asset": "BTC", "amount": 1}}),
        "not-owner",
    );
    let canceled = run(
        &mut h,
        &op,
        json!({"cancel": {"user": 1, "order": order.order}}),
    )
    .unwrap();
    assert_eq!(canceled, json!({"canceled": [order.order]}));
    run(&mut h, &a, place(1, "sell", 130)).unwrap();
    run(&mut h, &a, place(1, "sell", 140)).unwrap();
    let all = run(&mut h, &op, json!({"cancel_all": {"user": 1, "market": 1}})).unwrap();
    assert_eq!(all["canceled"].as_array().unwrap().len(), 2);
    assert_eq!(balance(&h, 1, "BTC").frozen, 0);
}

#[test]
fn accounts_are_linked_once_each_way() {
    let mut h = market();
    let op = ops();
    refused(
        &mut h,
        &op,
        json!({"open_account": {"principal": "alice", "user": 7}}),
        "account-exists",
    );
    refused(
        &mut h,
        &op,
        json!({"open_account": {"principal": "carol", "user": 1}}),
        "account-taken",
    );
    refused(
        &mut h,
        &op,
        json!({"open_account": {"principal": "", "user": 7}}),
        "invalid-argument",
    );
    // A principal without an account is refused until it gets one.
    let carol = Caller::new("carol", ["client"]);
    refused(&mut h, &carol, place(3, "buy", 100), "no-account");
    run(
        &mut h,
        &op,
        json!({"open_account": {"principal": "carol", "user": 3}}),
    )
    .unwrap();
    run(
        &mut h,
        &op,
        json!({"deposit": {"user": 3, "asset": "USD", "amount": 1000}}),
    )
    .unwrap();
    run(&mut h, &carol, place(3, "buy", 100)).unwrap();

    // Queries: the caller's own account, or any principal's.
    h.set_caller(Some(carol));
    assert_eq!(
        h.query_json(r#"{"account": {}}"#).unwrap(),
        json!({"principal": "carol", "user": 3})
    );
    assert_eq!(
        h.query_json(r#"{"account": {"principal": "bob"}}"#)
            .unwrap(),
        json!({"principal": "bob", "user": 2})
    );
    h.set_caller(None);
    assert_eq!(
        h.query_json(r#"{"account": {}}"#).unwrap_err().code,
        "invalid-argument"
    );
}

#[test]
fn without_a_caller_every_command_is_trusted_as_before() {
    let mut h = market();
    h.set_caller(None);
    h.handle_json(r#"{"deposit": {"user": 5, "asset": "USD", "amount": 100}}"#)
        .unwrap();
    h.handle_json(&place(5, "buy", 10).to_string()).unwrap();
    h.handle_json(r#"{"cancel_all": {"user": 5, "market": 1}}"#)
        .unwrap();
    h.handle_json(r#"{"withdraw": {"user": 5, "asset": "USD", "amount": 100}}"#)
        .unwrap();
}
