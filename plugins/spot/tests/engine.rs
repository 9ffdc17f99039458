//! Native tests of the spot plugin's behaviour over the SDK's in-memory
//! store: matching rules, order kinds, funds, refusals and queries.

use keel_guest::testing::Harness;
use keel_plugin_spot::Spot;
use keel_plugin_spot::api::*;
use serde_json::{Value, json};

fn h() -> Harness<Spot> {
    let mut h = Harness::<Spot>::new();
    h.handle_json(r#"{"create_market":{"market":1,"base":"BTC","quote":"USD","tick_size":5,"lot_size":10,"min_size":20}}"#)
        .unwrap();
    for user in 1..=4 {
        h.handle_json(&format!(
            r#"{{"deposit":{{"user":{user},"asset":"BTC","amount":100000}}}}"#
        ))
        .unwrap();
        h.handle_json(&format!(
            r#"{{"deposit":{{"user":{user},"asset":"USD","amount":10000000}}}}"#
        ))
        .unwrap();
    }
    h
}

fn place(
    h: &mut Harness<Spot>,
    user: u64,
    side: &str,
    kind: &str,
    price: Option<u64>,
    qty: u64,
) -> Result<Placed, keel_guest::Error> {
    let mut p = json!({"user": user, "market": 1, "side": side, "kind": kind, "qty": qty});
    if let Some(price) = price {
        p["price"] = json!(price);
    }
    h.handle_json(&json!({ "place": p }).to_string())
        .map(|v| serde_json::from_value(v).expect("a place answer"))
}

fn limit(h: &mut Harness<Spot>, user: u64, side: &str, price: u64, qty: u64) -> Placed {
    place(h, user, side, "limit", Some(price), qty).unwrap()
}

fn query<T: serde::de::DeserializeOwned>(h: &Harness<Spot>, q: Value) -> T {
    serde_json::from_value(h.query_json(&q.to_string()).unwrap()).unwrap()
}

fn balance(h: &Harness<Spot>, user: u64, asset: &str) -> Balance {
    let all: std::collections::BTreeMap<String, Balance> =
        query(h, json!({"balances": {"user": user}}));
    all.get(asset).copied().unwrap_or_default()
}

/// The whole book of market 1, page by page (`limit` orders a page).
fn book_paged(h: &Harness<Spot>, limit: u32) -> BookDump {
    let mut book: BookDump = query(h, json!({"book": {"market": 1, "limit": limit}}));
    while let Some(after) = book.next {
        let page: BookDump = query(
            h,
            json!({"book": {"market": 1, "after": after, "limit": limit}}),
        );
        assert!(
            page.bids.len() + page.asks.len() > 0,
            "a next page is never empty"
        );
        book.extend(page);
    }
    book
}

fn book(h: &Harness<Spot>) -> BookDump {
    book_paged(h, 1000)
}

fn audit_clean(h: &Harness<Spot>) {
    let audit: Audit = query(h, json!("audit"));
    assert!(audit.problems.is_empty(), "{:#?}", audit.problems);
    let (pages, problems) = audit_paged(h, 3);
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(pages[0].assets.as_ref(), Some(&audit.assets));
    let book_orders: u64 = pages
        .iter()
        .filter(|p| p.users == 0)
        .map(|p| p.orders)
        .sum();
    assert_eq!(book_orders, audit.resting_orders);
}

/// Every page of the audit (`limit` wallets and orders a page), and every
/// problem they found, sorted.
fn audit_paged(h: &Harness<Spot>, limit: u32) -> (Vec<AuditPage>, Vec<String>) {
    let mut pages: Vec<AuditPage> = vec![query(h, json!({"audit_page": {}}))];
    while let Some(after) = pages.last().unwrap().next {
        let page: AuditPage = query(h, json!({"audit_page": {"after": after, "limit": limit}}));
        assert!(
            page.users + page.orders <= u64::from(limit) + 1000,
            "a page checks at most `limit` plus one user's orders"
        );
        pages.push(page);
        assert!(pages.len() < 10_000, "the audit pages end");
    }
    let mut problems: Vec<String> = pages.iter().flat_map(|p| p.problems.clone()).collect();
    problems.sort();
    (pages, problems)
}

#[test]
fn the_audit_finds_damage_whole_and_page_by_page() {
    use keel_plugin_spot::store::{BOOK, Resting, WALLETS};
    let mut h = h();
    let mut ids = Vec::new();
    for user in 1..=4u64 {
        ids.push(limit(&mut h, user, "buy", 90 - 5 * user, 20).order);
        limit(&mut h, user, "sell", 120 + 5 * user, 20);
    }
    audit_clean(&h);
    let (pages, _) = audit_paged(&h, 3);
    assert!(pages.len() > 4, "small pages: {}", pages.len());

    // Damage the state behind the engine's back: user 1's bid leaves the
    // book, an order nobody lists appears on it, user 3 gains 1 USD.
    assert!(BOOK.remove(&(1, Side::Buy.code(), Side::Buy.price_key(85), ids[0])));
    BOOK.put(
        &(1, Side::Buy.code(), Side::Buy.price_key(50), 999_999),
        &Resting {
            user: 2,
            remaining: 20,
            maker_fills: Vec::new(),
        },
    );
    let mut wallet = WALLETS.get(&3).unwrap();
    wallet.balance_mut("USD").available += 1;
    WALLETS.put(&3, &wallet);

    let whole: Audit = query(&h, json!("audit"));
    let mut found = whole.problems.clone();
    found.sort();
    let (_, paged) = audit_paged(&h, 3);
    assert_eq!(paged, found, "pages find what the whole audit finds");
    let expect = [
        "USD: balances hold",
        &format!(
            "user 1's open order {} in market 1 is not on the book",
            ids[0]
        ),
        "user 1 has 1700 USD frozen, resting orders hold 0",
        "resting order 999999 is missing from its owner's open orders",
    ];
    for e in expect {
        assert!(
            found.iter().any(|p| p.contains(e)),
            "{e:?} not in {found:#?}"
        );
    }
    assert_eq!(found.len(), expect.len(), "{found:#?}");
}

#[test]
fn the_book_pages_through_every_order_once_in_order() {
    let mut h = h();
    // Bids and asks on a few levels, several orders per level.
    for i in 0..12u64 {
        limit(&mut h, 1 + i % 4, "buy", 90 - 5 * (i % 3), 20);
        limit(&mut h, 1 + i % 4, "sell", 110 + 5 * (i % 3), 20);
    }
    let whole = book_paged(&h, 10_000);
    assert_eq!(whole.next, None);
    let orders = |b: &BookDump| {
        b.bids
            .iter()
            .chain(&b.asks)
            .map(|q| q.orders.len())
            .sum::<usize>()
    };
    assert_eq!(orders(&whole), 24);
    assert_eq!((whole.bids.len(), whole.asks.len()), (3, 3));
    // Every page size, levels split between pages included, joins into
    // the same book; a full page says where the next starts.
    for limit in 1..=25 {
        assert_eq!(book_paged(&h, limit), whole, "pages of {limit}");
    }
    let first: BookDump = query(&h, json!({"book": {"market": 1, "limit": 5}}));
    assert_eq!(orders(&first), 5);
    let after = first.next.expect("more than one page");
    assert_eq!(after.side, Side::Buy);
    assert_eq!(
        after.id,
        first.bids.last().unwrap().orders.last().unwrap().id
    );
    // A cursor past the last order gives an empty last page.
    let last = whole.asks.last().unwrap();
    let end = json!({"book": {"market": 1, "after": {"side": "sell", "price": last.price, "id": last.orders.last().unwrap().id}}});
    let empty: BookDump = query(&h, end);
    assert_eq!((orders(&empty), empty.next), (0, None));
}

#[test]
fn price_then_time_priority() {
    let mut h = h();
    let a = limit(&mut h, 1, "sell", 105, 20).order;
    let b = limit(&mut h, 2, "sell", 100, 20).order;
    let c = limit(&mut h, 3, "sell", 100, 20).order;
    let d = limit(&mut h, 1, "sell", 100, 20).order;
    let dump = book(&h);
    assert_eq!(dump.asks[0].price, 100);
    assert_eq!(
        dump.asks[0].orders.iter().map(|o| o.id).collect::<Vec<_>>(),
        vec![b, c, d]
    );
    assert_eq!(dump.asks[1].price, 105);
    let taker = limit(&mut h, 4, "buy", 105, 70);
    let makers: Vec<(u64, u64, u64)> = taker
        .fills
        .iter()
        .map(|f| (f.maker_order, f.price, f.qty))
        .collect();
    assert_eq!(
        makers,
        vec![(b, 100, 20), (c, 100, 20), (d, 100, 20), (a, 105, 10)]
    );
    assert_eq!(taker.status, Status::Filled);
    assert_eq!(taker.resting, 0);
    // The buyer paid each maker's price, not its limit.
    let usd = balance(&h, 4, "USD");
    assert_eq!(usd.available, 10_000_000 - (60 * 100 + 10 * 105));
    assert_eq!(balance(&h, 4, "BTC").available, 100_000 + 70);
    let dump = book(&h);
    assert_eq!(dump.asks.len(), 1);
    assert_eq!(
        dump.asks[0].orders,
        vec![QueuedOrder {
            id: a,
            user: 1,
            remaining: 10
        }]
    );
    audit_clean(&h);
}

#[test]
fn resting_orders_freeze_exactly_what_they_may_spend() {
    let mut h = h();
    let buy = limit(&mut h, 1, "buy", 100, 30).order;
    assert_eq!(
        balance(&h, 1, "USD"),
        Balance {
            available: 10_000_000 - 3000,
            frozen: 3000
        }
    );
    limit(&mut h, 2, "sell", 110, 50);
    assert_eq!(
        balance(&h, 2, "BTC"),
        Balance {
            available: 100_000 - 50,
            frozen: 50
        }
    );
    // A partial fill releases exactly the filled part.
    let sell = limit(&mut h, 3, "sell", 95, 20);
    assert_eq!(
        sell.fills,
        vec![FillView {
            maker_order: buy,
            maker_user: 1,
            price: 100,
            qty: 20
        }]
    );
    assert_eq!(
        balance(&h, 1, "USD"),
        Balance {
            available: 10_000_000 - 3000,
            frozen: 1000
        }
    );
    assert_eq!(balance(&h, 1, "BTC").available, 100_020);
    assert_eq!(balance(&h, 3, "USD").available, 10_000_000 + 2000);
    let o: OrderView = query(&h, json!({"order": {"id": buy}}));
    assert_eq!(
        (o.status, o.filled, o.remaining),
        (Status::PartiallyFilled, 20, 10)
    );
    // A buy that crosses pays the ask and freezes its rest at its own limit.
    let t = limit(&mut h, 4, "buy", 115, 70);
    assert_eq!(t.filled, 50);
    assert_eq!(t.resting, 20);
    assert_eq!(t.status, Status::PartiallyFilled);
    assert_eq!(
        balance(&h, 4, "USD"),
        Balance {
            available: 10_000_000 - 50 * 110 - 20 * 115,
            frozen: 20 * 115
        }
    );
    audit_clean(&h);
}

#[test]
fn order_kinds() {
    let mut h = h();
    limit(&mut h, 1, "sell", 100, 20);
    limit(&mut h, 1, "sell", 110, 20);
    // Post-only that would cross is refused and changes nothing.
    let before = h.dump();
    let e = place(&mut h, 2, "buy", "post_only", Some(100), 20).unwrap_err();
    assert_eq!(e.code, "would-cross");
    assert_eq!(h.dump(), before);
    assert_eq!(
        place(&mut h, 2, "buy", "post_only", Some(95), 20)
            .unwrap()
            .status,
        Status::Open
    );
    // FOK that cannot fill completely is refused.
    let before = h.dump();
    assert_eq!(
        place(&mut h, 2, "buy", "fok", Some(105), 30)
            .unwrap_err()
            .code,
        "would-not-fill"
    );
    assert_eq!(h.dump(), before);
    let fok = place(&mut h, 2, "buy", "fok", Some(110), 30).unwrap();
    assert_eq!((fok.status, fok.filled), (Status::Filled, 30));
    // IOC fills what crosses and cancels the rest; nothing rests.
    let ioc = place(&mut h, 3, "buy", "ioc", Some(120), 30).unwrap();
    assert_eq!(
        (ioc.status, ioc.filled, ioc.resting),
        (Status::Canceled, 10, 0)
    );
    let o: OrderView = query(&h, json!({"order": {"id": ioc.order}}));
    assert_eq!(
        (o.status, o.filled, o.remaining),
        (Status::Canceled, 10, 20)
    );
    // An IOC that trades nothing is recorded as canceled.
    let none = place(&mut h, 3, "buy", "ioc", Some(100), 20).unwrap();
    assert_eq!((none.status, none.filled), (Status::Canceled, 0));
    // Market orders: refused with no liquidity, partially filled otherwise.
    let before = h.dump();
    assert_eq!(
        place(&mut h, 3, "buy", "market", None, 20)
            .unwrap_err()
            .code,
        "no-liquidity"
    );
    assert_eq!(h.dump(), before);
    limit(&mut h, 4, "sell", 130, 20);
    let mkt = place(&mut h, 3, "buy", "market", None, 50).unwrap();
    assert_eq!(
        (mkt.status, mkt.filled, mkt.resting),
        (Status::Canceled, 20, 0)
    );
    assert_eq!(mkt.fills[0].price, 130);
    let sell = place(&mut h, 1, "sell", "market", None, 20).unwrap();
    assert_eq!(
        (sell.status, sell.filled, sell.fills[0].price),
        (Status::Filled, 20, 95)
    );
    audit_clean(&h);
}

#[test]
fn self_trade_prevention_cancels_the_resting_order() {
    let mut h = h();
    let own = limit(&mut h, 1, "sell", 100, 20).order;
    let other = limit(&mut h, 2, "sell", 100, 20).order;
    let t = limit(&mut h, 1, "buy", 100, 20);
    assert_eq!(t.self_trade_canceled, vec![own]);
    assert_eq!(
        t.fills,
        vec![FillView {
            maker_order: other,
            maker_user: 2,
            price: 100,
            qty: 20
        }]
    );
    let o: OrderView = query(&h, json!({"order": {"id": own}}));
    assert_eq!((o.status, o.filled), (Status::Canceled, 0));
    assert_eq!(
        balance(&h, 1, "BTC"),
        Balance {
            available: 100_020,
            frozen: 0
        }
    );
    assert!(book(&h).asks.is_empty());
    // Post-only refuses even against the user's own order; FOK does not count it.
    limit(&mut h, 1, "sell", 100, 20);
    assert_eq!(
        place(&mut h, 1, "buy", "post_only", Some(100), 20)
            .unwrap_err()
            .code,
        "would-cross"
    );
    assert_eq!(
        place(&mut h, 1, "buy", "fok", Some(100), 20)
            .unwrap_err()
            .code,
        "would-not-fill"
    );
    // A market order facing only its own user's orders is refused, leaving them.
    assert_eq!(
        place(&mut h, 1, "buy", "market", None, 20)
            .unwrap_err()
            .code,
        "no-liquidity"
    );
    assert_eq!(book(&h).asks[0].orders.len(), 1);
    audit_clean(&h);
}

#[test]
fn cancel_rules() {
    let mut h = h();
    let a = limit(&mut h, 1, "buy", 100, 20).order;
    let b = limit(&mut h, 1, "buy", 95, 20).order;
    let c = limit(&mut h, 1, "sell", 200, 20).order;
    let other = limit(&mut h, 2, "buy", 90, 20).order;
    let before = h.dump();
    let e = h
        .handle_json(&format!(r#"{{"cancel":{{"user":2,"order":{a}}}}}"#))
        .unwrap_err();
    assert_eq!(e.code, "not-owner");
    let e = h
        .handle_json(r#"{"cancel":{"user":1,"order":999}}"#)
        .unwrap_err();
    assert_eq!(e.code, "not-found");
    assert_eq!(h.dump(), before);
    let r = h
        .handle_json(&format!(r#"{{"cancel":{{"user":1,"order":{a}}}}}"#))
        .unwrap();
    assert_eq!(r, json!({"canceled": [a]}));
    let e = h
        .handle_json(&format!(r#"{{"cancel":{{"user":1,"order":{a}}}}}"#))
        .unwrap_err();
    assert_eq!(e.code, "not-open");
    let r = h
        .handle_json(r#"{"cancel_all":{"user":1,"market":1}}"#)
        .unwrap();
    assert_eq!(r, json!({"canceled": [b, c]}));
    assert_eq!(
        balance(&h, 1, "USD"),
        Balance {
            available: 10_000_000,
            frozen: 0
        }
    );
    assert_eq!(
        balance(&h, 1, "BTC"),
        Balance {
            available: 100_000,
            frozen: 0
        }
    );
    let open: Vec<OrderView> = query(&h, json!({"open_orders": {"user": 2}}));
    assert_eq!(open.iter().map(|o| o.id).collect::<Vec<_>>(), vec![other]);
    assert!(
        query::<Vec<OrderView>>(&h, json!({"open_orders": {"user": 1, "market": 1}})).is_empty()
    );
    // A filled order cannot be canceled.
    let s = limit(&mut h, 3, "sell", 90, 20);
    assert_eq!(s.fills.len(), 1);
    let e = h
        .handle_json(&format!(r#"{{"cancel":{{"user":2,"order":{other}}}}}"#))
        .unwrap_err();
    assert_eq!(e.code, "not-open");
    let o: OrderView = query(&h, json!({"order": {"id": other}}));
    assert_eq!((o.status, o.filled, o.remaining), (Status::Filled, 20, 0));
    audit_clean(&h);
}

#[test]
fn deposits_and_withdrawals() {
    let mut h = h();
    limit(&mut h, 1, "buy", 100, 20);
    let e = h
        .handle_json(r#"{"withdraw":{"user":1,"asset":"USD","amount":10000000}}"#)
        .unwrap_err();
    assert_eq!(
        e.code, "insufficient-balance",
        "frozen funds cannot be withdrawn"
    );
    let r = h
        .handle_json(r#"{"withdraw":{"user":1,"asset":"USD","amount":9998000}}"#)
        .unwrap();
    assert_eq!(
        r,
        json!({"user": 1, "asset": "USD", "available": 0, "frozen": 2000})
    );
    let e = place(&mut h, 1, "buy", "limit", Some(100), 20).unwrap_err();
    assert_eq!(e.code, "insufficient-balance");
    let audit: Audit = query(&h, json!("audit"));
    let usd = audit.assets["USD"];
    assert_eq!(usd.deposited - usd.withdrawn, usd.available + usd.frozen);
    assert!(audit.problems.is_empty());
}

#[test]
fn hostile_commands_are_refused_and_change_nothing() {
    let mut h = h();
    limit(&mut h, 1, "sell", 100, 20);
    let before = h.dump();
    let cases: &[(&str, &str)] = &[
        (
            r#"{"place":{"user":2,"market":1,"side":"buy","price":100,"qty":0}}"#,
            "invalid-argument",
        ),
        (
            r#"{"place":{"user":2,"market":1,"side":"buy","price":100,"qty":-10}}"#,
            "bad-command",
        ),
        (
            r#"{"place":{"user":2,"market":1,"side":"buy","price":-5,"qty":20}}"#,
            "bad-command",
        ),
        (
            r#"{"place":{"user":2,"market":1,"side":"buy","price":101,"qty":20}}"#,
            "bad-tick",
        ),
        (
            r#"{"place":{"user":2,"market":1,"side":"buy","price":0,"qty":20}}"#,
            "invalid-argument",
        ),
        (
            r#"{"place":{"user":2,"market":1,"side":"buy","price":100,"qty":25}}"#,
            "bad-lot",
        ),
        (
            r#"{"place":{"user":2,"market":1,"side":"buy","price":100,"qty":10}}"#,
            "below-minimum",
        ),
        (
            r#"{"place":{"user":2,"market":9,"side":"buy","price":100,"qty":20}}"#,
            "unknown-market",
        ),
        (
            r#"{"place":{"user":2,"market":1,"side":"buy","qty":20}}"#,
            "invalid-argument",
        ),
        (
            r#"{"place":{"user":2,"market":1,"side":"buy","kind":"market","price":100,"qty":20}}"#,
            "invalid-argument",
        ),
        (
            r#"{"place":{"user":2,"market":1,"side":"buy","price":100,"qty":20,"leverage":5}}"#,
            "bad-command",
        ),
        (
            r#"{"place":{"user":2,"market":1,"side":"up","price":100,"qty":20}}"#,
            "bad-command",
        ),
        (
            r#"{"place":{"user":2,"market":1,"side":"buy","kind":"gtd","price":100,"qty":20}}"#,
            "bad-command",
        ),
        (
            r#"{"place":{"user":2,"market":1,"side":"buy","price":100,"qty":18446744073709551616}}"#,
            "bad-command",
        ),
        (
            r#"{"place":{"user":2,"market":1,"side":"buy","price":1e3,"qty":20}}"#,
            "bad-command",
        ),
        (
            r#"{"place":{"user":2,"market":1,"side":"buy","price":"100","qty":20}}"#,
            "bad-command",
        ),
        (
            r#"{"place":{"user":2,"market":1,"side":"buy","price":18446744073709551610,"qty":18446744073709551610}}"#,
            "insufficient-balance",
        ),
        (
            r#"{"place":{"user":2,"market":1,"side":"sell","price":18446744073709551610,"qty":18446744073709551610}}"#,
            "insufficient-balance",
        ),
        (
            r#"{"deposit":{"user":2,"asset":"USD","amount":0}}"#,
            "invalid-argument",
        ),
        (
            r#"{"deposit":{"user":2,"asset":"","amount":5}}"#,
            "bad-asset",
        ),
        (
            r#"{"deposit":{"user":2,"asset":"U\u0000SD","amount":5}}"#,
            "bad-asset",
        ),
        (
            r#"{"deposit":{"user":2,"asset":"USD","amount":340282366920938463463374607431768211456}}"#,
            "bad-command",
        ),
        (
            r#"{"deposit":{"user":2,"asset":"USD","amount":340282366920938463463374607431768211455}}"#,
            "overflow",
        ),
        (
            r#"{"withdraw":{"user":2,"asset":"USD","amount":340282366920938463463374607431768211455}}"#,
            "insufficient-balance",
        ),
        (
            r#"{"withdraw":{"user":9,"asset":"XYZ","amount":1}}"#,
            "insufficient-balance",
        ),
        (
            r#"{"cancel":{"user":2,"order":1,"force":true}}"#,
            "bad-command",
        ),
        (r#"{"cancel_all":{"user":2,"market":7}}"#, "unknown-market"),
        (
            r#"{"create_market":{"market":1,"base":"BTC","quote":"USD","tick_size":5,"lot_size":10,"min_size":20}}"#,
            "market-exists",
        ),
        (
            r#"{"create_market":{"market":2,"base":"BTC","quote":"BTC","tick_size":5,"lot_size":10,"min_size":20}}"#,
            "invalid-argument",
        ),
        (
            r#"{"create_market":{"market":2,"base":"BTC","quote":"USD","tick_size":0,"lot_size":10,"min_size":20}}"#,
            "invalid-argument",
        ),
        (
            r#"{"create_market":{"market":2,"base":"BTC","quote":"USD","tick_size":5,"lot_size":10,"min_size":25}}"#,
            "invalid-argument",
        ),
        (
            r#"{"create_market":{"market":4294967296,"base":"BTC","quote":"USD","tick_size":5,"lot_size":10,"min_size":20}}"#,
            "bad-command",
        ),
        (r#"{"liquidate":{}}"#, "bad-command"),
        (r#"[1,2,3]"#, "bad-command"),
        (r#"null"#, "bad-command"),
    ];
    for (command, code) in cases {
        let e = h.handle_json(command).unwrap_err();
        assert_eq!(e.code, *code, "{command}: {e}");
        assert_ne!(e.code, "trap", "{command}");
        assert_eq!(h.dump(), before, "{command} changed state");
    }
    // A deposit that fills a balance to the brim is fine; one more overflows.
    h.handle_json(
        r#"{"deposit":{"user":2,"asset":"BIG","amount":340282366920938463463374607431768211455}}"#,
    )
    .unwrap();
    let before = h.dump();
    let e = h
        .handle_json(r#"{"deposit":{"user":3,"asset":"BIG","amount":1}}"#)
        .unwrap_err();
    assert_eq!(e.code, "overflow", "the ledger total overflows: {e}");
    assert_eq!(h.dump(), before);
    for q in [
        r#"{"order":{"id":1,"x":1}}"#,
        r#"{"depth":{"market":1,"levels":-1}}"#,
        r#"{"trades":{"market":1,"limit":99999999999999999999}}"#,
        r#""nope""#,
    ] {
        assert_eq!(h.query_json(q).unwrap_err().code, "bad-query", "{q}");
    }
    assert_eq!(
        h.query_json(r#"{"depth":{"market":5}}"#).unwrap_err().code,
        "unknown-market"
    );
    assert_eq!(
        h.query_json(r#"{"order":{"id":12345}}"#).unwrap_err().code,
        "not-found"
    );
}

#[test]
fn depth_and_best() {
    let mut h = h();
    limit(&mut h, 1, "buy", 95, 20);
    limit(&mut h, 2, "buy", 95, 30);
    limit(&mut h, 1, "buy", 90, 20);
    limit(&mut h, 3, "sell", 105, 40);
    limit(&mut h, 3, "sell", 110, 20);
    limit(&mut h, 4, "sell", 120, 20);
    let d: Depth = query(&h, json!({"depth": {"market": 1, "levels": 2}}));
    assert_eq!(
        d.bids,
        vec![
            Level {
                price: 95,
                qty: 50,
                orders: 2
            },
            Level {
                price: 90,
                qty: 20,
                orders: 1
            }
        ]
    );
    assert_eq!(
        d.asks,
        vec![
            Level {
                price: 105,
                qty: 40,
                orders: 1
            },
            Level {
                price: 110,
                qty: 20,
                orders: 1
            }
        ]
    );
    let b: Best = query(&h, json!({"best": {"market": 1}}));
    assert_eq!(
        b.bid,
        Some(Level {
            price: 95,
            qty: 50,
            orders: 2
        })
    );
    assert_eq!(
        b.ask,
        Some(Level {
            price: 105,
            qty: 40,
            orders: 1
        })
    );
}

#[test]
fn fills_and_trades_are_recorded_and_paged_newest_first() {
    let mut h = h();
    let m1 = limit(&mut h, 1, "sell", 100, 20).order;
    let m2 = limit(&mut h, 2, "sell", 100, 20).order;
    let m3 = limit(&mut h, 1, "sell", 105, 40).order;
    let t1 = limit(&mut h, 3, "buy", 105, 50).order; // m1 20, m2 20, m3 10
    let t2 = limit(&mut h, 4, "buy", 105, 20).order; // m3 20
    let page: TradePage = query(&h, json!({"trades": {"market": 1}}));
    let seen: Vec<(u64, u32, u64, u64)> = page
        .trades
        .iter()
        .map(|t| (t.taker_order, t.index, t.maker_order, t.qty))
        .collect();
    assert_eq!(
        seen,
        vec![
            (t2, 0, m3, 20),
            (t1, 2, m3, 10),
            (t1, 1, m2, 20),
            (t1, 0, m1, 20)
        ]
    );
    assert_eq!(page.next, None);
    // Paging: two at a time, resuming from the cursor.
    let p1: TradePage = query(&h, json!({"trades": {"market": 1, "limit": 2}}));
    assert_eq!(p1.trades.len(), 2);
    let cursor = p1.next.unwrap();
    let p2: TradePage = query(
        &h,
        json!({"trades": {"market": 1, "limit": 2, "before": cursor}}),
    );
    let both: Vec<_> = p1.trades.iter().chain(&p2.trades).cloned().collect();
    assert_eq!(both, page.trades);
    // Per order: the maker order m3 traded twice, newest first.
    let f: TradePage = query(&h, json!({"order_fills": {"id": m3}}));
    assert_eq!(
        f.trades
            .iter()
            .map(|t| (t.taker_order, t.qty))
            .collect::<Vec<_>>(),
        vec![(t2, 20), (t1, 10)]
    );
    let f: TradePage = query(&h, json!({"order_fills": {"id": t1}}));
    assert_eq!(
        f.trades.iter().map(|t| t.maker_order).collect::<Vec<_>>(),
        vec![m3, m2, m1]
    );
    // Per user: user 1 made m1 (with t1) and m3 (with t1 and t2).
    let u: TradePage = query(&h, json!({"user_fills": {"user": 1}}));
    assert_eq!(
        u.trades
            .iter()
            .map(|t| (t.taker_order, t.maker_order))
            .collect::<Vec<_>>(),
        vec![(t2, m3), (t1, m3), (t1, m1)]
    );
    let u: TradePage = query(
        &h,
        json!({"user_fills": {"user": 1, "limit": 1, "before": {"seq": t1, "index": 2}}}),
    );
    assert_eq!(
        u.trades.iter().map(|t| t.maker_order).collect::<Vec<_>>(),
        vec![m1]
    );
    for cursor in [
        json!({"seq": t2, "index": 0}),
        json!({"seq": 99_999, "index": 0}),
    ] {
        let q = json!({"user_fills": {"user": 2, "before": cursor}}).to_string();
        assert_eq!(
            h.query_json(&q).unwrap_err().code,
            "invalid-argument",
            "{q}"
        );
    }
    let u: TradePage = query(&h, json!({"user_fills": {"user": 3}}));
    assert_eq!(u.trades.len(), 3);
    assert!(
        u.trades
            .iter()
            .all(|t| t.taker_user == 3 && t.taker_side == Side::Buy)
    );
}

#[test]
fn queries_write_nothing_and_markets_list() {
    let h = h();
    let before = h.dump();
    let m: Vec<MarketView> = query(&h, json!("markets"));
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].base, "BTC");
    query::<Audit>(&h, json!("audit"));
    assert_eq!(h.dump(), before);
}

#[test]
fn open_orders_per_user_are_capped() {
    let mut h = h();
    for i in 0..1000u64 {
        limit(&mut h, 1, "buy", 5 * (1 + i % 10), 20);
    }
    let before = h.dump();
    let e = place(&mut h, 1, "buy", "limit", Some(5), 20).unwrap_err();
    assert_eq!(e.code, "too-many-open-orders");
    assert_eq!(h.dump(), before);
    // Orders that do not rest are still accepted, and a cancel makes room.
    assert_eq!(
        place(&mut h, 1, "buy", "ioc", Some(5), 20).unwrap().status,
        Status::Canceled
    );
    let open: Vec<OrderView> = query(&h, json!({"open_orders": {"user": 1}}));
    assert_eq!(open.len(), 1000);
    h.handle_json(&format!(
        r#"{{"cancel":{{"user":1,"order":{}}}}}"#,
        open[0].id
    ))
    .unwrap();
    limit(&mut h, 1, "buy", 5, 20);
    audit_clean(&h);
}
