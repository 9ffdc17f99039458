//! Property test: random order streams through the plugin (natively, over
//! the SDK's in-memory store) and through the reference model in
//! `model/mod.rs` give the same answers, the same books and the same
//! balances, with the invariants checked after every step.

mod model;

use std::collections::BTreeMap;

use keel_guest::testing::Harness;
use keel_plugin_spot::Spot;
use keel_plugin_spot::api::{Audit, Balance, BookDump, Command, OrderView, Response, TradePage};
use model::{Model, streams};
use proptest::prelude::*;
use serde_json::{Value, json};

fn query<T: serde::de::DeserializeOwned>(h: &Harness<Spot>, q: Value) -> T {
    serde_json::from_value(h.query_json(&q.to_string()).unwrap()).unwrap()
}

/// Runs one command through both; panics on any disagreement.
fn step(h: &mut Harness<Spot>, m: &mut Model, cmd: &Command) -> Result<(), TestCaseError> {
    let books_before: Vec<Option<BookDump>> = (1..=2)
        .map(|id| {
            h.query_json(&json!({"book": {"market": id}}).to_string())
                .ok()
        })
        .map(|v| v.map(|v| serde_json::from_value(v).unwrap()))
        .collect();
    let seq = h.sequence() + 1;
    let expected = m.apply(seq, cmd);
    let got = h.handle_json(&serde_json::to_string(cmd).unwrap());
    match (&expected, &got) {
        (Ok(e), Ok(g)) => prop_assert_eq!(&serde_json::to_value(e).unwrap(), g, "{:?}", cmd),
        (Err(e), Err(g)) => prop_assert_eq!(e, &g.code, "{:?}: {}", cmd, g),
        _ => prop_assert!(false, "{:?}: model {:?}, plugin {:?}", cmd, expected, got),
    }
    // No fill exceeds either order's remaining quantity.
    if let (Command::Place(p), Ok(Response::Placed(placed))) = (cmd, &expected) {
        let total: u64 = placed.fills.iter().map(|f| f.qty).sum();
        prop_assert!(total <= p.qty);
        let before = books_before[(p.market - 1) as usize]
            .as_ref()
            .expect("the market existed");
        for f in &placed.fills {
            let maker = before
                .bids
                .iter()
                .chain(&before.asks)
                .flat_map(|q| &q.orders)
                .find(|o| o.id == f.maker_order)
                .expect("makers were on the book");
            prop_assert!(f.qty > 0 && f.qty <= maker.remaining);
        }
    }
    check_state(h, m)
}

fn check_state(h: &Harness<Spot>, m: &Model) -> Result<(), TestCaseError> {
    for id in m.markets.keys().copied() {
        let book: BookDump = query(h, json!({"book": {"market": id, "limit": 10_000}}));
        prop_assert_eq!(&book, &m.book(id));
        if let (Some(bid), Some(ask)) = (book.bids.first(), book.asks.first()) {
            prop_assert!(bid.price < ask.price, "crossed book {:?}", book);
        }
    }
    prop_assert!(!m.crossed());
    let mut held: BTreeMap<String, u128> = BTreeMap::new();
    for user in 1..=streams::USERS {
        let b: BTreeMap<String, Balance> = query(h, json!({"balances": {"user": user}}));
        prop_assert_eq!(&b, &m.balances(user), "user {}", user);
        for (asset, bal) in b {
            *held.entry(asset).or_default() += bal.available + bal.frozen;
        }
    }
    // Conservation: per asset, holdings equal deposits minus withdrawals.
    for asset in streams::ASSETS {
        let net = m.net.get(asset).copied().unwrap_or(0);
        prop_assert_eq!(
            i128::try_from(held.get(asset).copied().unwrap_or(0)).unwrap(),
            net,
            "{}",
            asset
        );
    }
    let audit: Audit = query(h, json!("audit"));
    prop_assert!(audit.problems.is_empty(), "{:?}", audit.problems);
    Ok(())
}

/// Every page of a fills query, following `next`.
fn all_pages(h: &Harness<Spot>, mut q: Value, page: u32) -> Vec<keel_plugin_spot::api::Trade> {
    let key = q.as_object().unwrap().keys().next().unwrap().clone();
    q[&key]["limit"] = json!(page);
    let mut out = Vec::new();
    loop {
        let p: TradePage = query(h, q.clone());
        out.extend(p.trades);
        match p.next {
            Some(c) => q[&key]["before"] = json!(c),
            None => return out,
        }
    }
}

/// Per-user fills (a linked list through the wallets) agree with the
/// per-market trade log, newest first, paged or not.
fn check_user_fills(h: &Harness<Spot>, m: &Model) -> Result<(), TestCaseError> {
    let mut all = Vec::new();
    for market in m.markets.keys() {
        all.extend(all_pages(h, json!({"trades": {"market": market}}), 1000));
    }
    all.sort_by_key(|t| std::cmp::Reverse((t.seq, t.index)));
    for user in 1..=streams::USERS {
        let expected: Vec<_> = all
            .iter()
            .filter(|t| t.taker_user == user || t.maker_user == user)
            .cloned()
            .collect();
        let whole = all_pages(h, json!({"user_fills": {"user": user}}), 1000);
        prop_assert_eq!(&whole, &expected, "user {}", user);
        let paged = all_pages(h, json!({"user_fills": {"user": user}}), 3);
        prop_assert_eq!(&paged, &expected, "user {} paged", user);
    }
    Ok(())
}

fn check_orders(h: &Harness<Spot>, m: &Model) -> Result<(), TestCaseError> {
    check_user_fills(h, m)?;
    for (id, rec) in &m.orders {
        let o: OrderView = query(h, json!({"order": {"id": id}}));
        prop_assert_eq!(
            (o.user, o.market, o.side, o.qty),
            (rec.user, rec.market, rec.side, rec.qty)
        );
        prop_assert_eq!(
            (o.status, o.filled),
            (rec.status, rec.filled),
            "order {}",
            id
        );
        // Its fills audit adds up to what it filled, newest first.
        let fills: TradePage = query(h, json!({"order_fills": {"id": id, "limit": 1000}}));
        let total: u64 = fills.trades.iter().map(|t| t.qty).sum();
        prop_assert_eq!(total, rec.filled, "order {}", id);
        prop_assert!(
            fills
                .trades
                .windows(2)
                .all(|w| (w[0].seq, w[0].index) > (w[1].seq, w[1].index))
        );
        prop_assert!(
            fills
                .trades
                .iter()
                .all(|t| t.maker_order == *id || t.taker_order == *id)
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn plugin_matches_the_reference_model(ops in prop::collection::vec(any::<(u8, u8, u8, u8, u8, u8)>(), 1..160)) {
        let mut h = Harness::<Spot>::new();
        let mut m = Model::default();
        for cmd in streams::setup() {
            step(&mut h, &mut m, &cmd)?;
        }
        for op in ops {
            if let Some(cmd) = streams::command(op, h.sequence()) {
                step(&mut h, &mut m, &cmd)?;
            }
        }
        check_orders(&h, &m)?;
    }
}

/// A long deterministic stream (a seeded LCG) through both, checking that
/// the random streams exercise what they should: fills, sweeps, self-trade
/// prevention and every kind of refusal.
#[test]
fn long_stream_matches_the_model_and_covers_the_rules() {
    let mut h = Harness::<Spot>::new();
    let mut m = Model::default();
    for cmd in streams::setup() {
        step(&mut h, &mut m, &cmd).unwrap();
    }
    let mut state: u64 = 0x5EED;
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..3000 {
        let mut b = [0u8; 6];
        for x in &mut b {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *x = (state >> 33) as u8;
        }
        let Some(cmd) = streams::command((b[0], b[1], b[2], b[3], b[4], b[5]), h.sequence()) else {
            continue;
        };
        let seq = h.sequence() + 1;
        let mut probe = m.clone();
        let outcome = probe.apply(seq, &cmd);
        step(&mut h, &mut m, &cmd).unwrap();
        let label = match outcome {
            Err(code) => code,
            Ok(Response::Placed(p)) if p.fills.len() > 1 => "sweep".into(),
            Ok(Response::Placed(p)) if !p.self_trade_canceled.is_empty() => "self-trade".into(),
            Ok(Response::Placed(p)) => format!("{:?}", p.status),
            Ok(_) => "other".into(),
        };
        *seen.entry(label).or_default() += 1;
    }
    check_orders(&h, &m).unwrap();
    for label in [
        "sweep",
        "self-trade",
        "Open",
        "Filled",
        "Canceled",
        "PartiallyFilled",
        "insufficient-balance",
        "bad-lot",
        "bad-tick",
        "below-minimum",
        "invalid-argument",
        "would-cross",
        "would-not-fill",
        "not-open",
        "not-owner",
    ] {
        assert!(
            seen.get(label).copied().unwrap_or(0) > 0,
            "{label} never happened: {seen:?}"
        );
    }
}
