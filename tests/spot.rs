//! Component-level tests of the spot plugin: the real component in a real
//! host on a real redb file. The book — levels, FIFO queues, remaining
//! quantities — and every balance come back exactly after a clean restart,
//! a crash (`TestHost::crash_and_restart`) and SIGKILL of a `keel serve`
//! process; random order streams with restarts inserted agree with the
//! reference model; hostile commands are refused without a trap.

#[path = "../plugins/spot/tests/model/mod.rs"]
mod model;

use std::collections::BTreeMap;

use keel_guest::testing::Harness;
use keel_plugin_spot::Spot;
use keel_plugin_spot::api::{Audit, AuditPage, Balance, BookCursor, BookDump, Command, OrderView};
use keel_tests::server::Server;
use keel_tests::{TestHost, plugins};
use model::{Model, streams};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Everything a client can observe of the plugin's state.
#[derive(Debug, PartialEq)]
struct Snapshot {
    books: Vec<BookDump>,
    balances: Vec<BTreeMap<String, Balance>>,
    open_orders: Vec<Vec<OrderView>>,
    audit: Audit,
}

fn snapshot(query: impl Fn(Value) -> Value) -> Snapshot {
    let audit: Audit = serde_json::from_value(query(json!("audit"))).unwrap();
    assert!(audit.problems.is_empty(), "{:#?}", audit.problems);
    // The same audit in bounded pages: the same totals, nothing found.
    let mut page: AuditPage = serde_json::from_value(query(json!({"audit_page": {}}))).unwrap();
    assert_eq!(page.assets.as_ref(), Some(&audit.assets));
    let mut book_entries = 0;
    loop {
        assert!(page.problems.is_empty(), "{:#?}", page.problems);
        if page.users == 0 {
            // The totals page and the book pass's pages.
            book_entries += page.orders;
        }
        let Some(after) = page.next else { break };
        page = serde_json::from_value(query(json!({"audit_page": {"after": after, "limit": 500}})))
            .unwrap();
    }
    assert_eq!(book_entries, audit.resting_orders);
    Snapshot {
        books: (1..=2)
            .map(|m| {
                let page = |after: Option<BookCursor>| -> BookDump {
                    serde_json::from_value(query(
                        json!({"book": {"market": m, "after": after, "limit": 10_000}}),
                    ))
                    .unwrap()
                };
                let mut book = page(None);
                while let Some(after) = book.next {
                    book.extend(page(Some(after)));
                }
                book
            })
            .collect(),
        balances: (1..=streams::USERS)
            .map(|u| serde_json::from_value(query(json!({"balances": {"user": u}}))).unwrap())
            .collect(),
        open_orders: (1..=streams::USERS)
            .map(|u| serde_json::from_value(query(json!({"open_orders": {"user": u}}))).unwrap())
            .collect(),
        audit,
    }
}

impl Snapshot {
    /// Drops journaled timestamps, which differ between a host and the
    /// native harness (everything else must be identical).
    fn without_times(mut self) -> Snapshot {
        for o in self.open_orders.iter_mut().flatten() {
            o.timestamp_ms = 0;
        }
        self
    }
}

fn host_snapshot(t: &TestHost) -> Snapshot {
    snapshot(|q| t.query("spot", q).unwrap())
}

fn harness_snapshot(h: &Harness<Spot>) -> Snapshot {
    snapshot(|q| h.query_json(&q.to_string()).unwrap())
}

/// A deterministic stream of `n` commands (setup first), from a seeded LCG.
fn stream(seed: u64, n: usize) -> Vec<Command> {
    let mut out = streams::setup();
    let mut state = seed;
    let mut seq = out.len() as u64;
    while out.len() < n {
        let mut b = [0u8; 6];
        for x in &mut b {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *x = (state >> 33) as u8;
        }
        if let Some(cmd) = streams::command((b[0], b[1], b[2], b[3], b[4], b[5]), seq) {
            out.push(cmd);
            seq += 1;
        }
    }
    out
}

/// Funds, then hundreds of resting orders on both sides of both markets
/// (several per level, so FIFO queues are long), then crossing orders that
/// leave partially filled makers behind.
fn deep_book() -> Vec<Command> {
    use keel_plugin_spot::api::{OrderKind, Place, Side, Transfer};
    let mut out = Vec::new();
    for user in 1..=streams::USERS {
        for asset in streams::ASSETS {
            out.push(Command::Deposit(Transfer {
                user,
                asset: asset.into(),
                amount: 1_000_000,
            }));
        }
    }
    for i in 0..320u64 {
        let market = (i % 2) as u32 + 1;
        let (tick, lot) = if market == 1 { (1, 1) } else { (5, 10) };
        let side = if i % 4 < 2 { Side::Buy } else { Side::Sell };
        // Bids at 1..=8 ticks, asks at 17..=24 ticks: never crossing each other.
        let level = (i / 4) % 8;
        let price = match side {
            Side::Buy => tick * (8 - level),
            Side::Sell => tick * (17 + level),
        };
        out.push(Command::Place(Place {
            user: i % streams::USERS + 1,
            market,
            side,
            kind: OrderKind::Limit,
            price: Some(price),
            qty: lot * (2 + i % 5),
        }));
    }
    for (market, side, price, qty) in [
        (1, Side::Buy, 18, 25),
        (2, Side::Sell, 30, 130),
        (1, Side::Sell, 7, 17),
    ] {
        out.push(Command::Place(Place {
            user: 1,
            market,
            side,
            kind: OrderKind::Ioc,
            price: Some(price),
            qty,
        }));
    }
    out
}

fn json_of(cmd: &Command) -> Value {
    serde_json::to_value(cmd).unwrap()
}

/// Runs `commands` natively (no restarts) as commands `base + 1 ..` (order
/// ids are sequence numbers) and returns the resulting snapshot.
fn native_snapshot(base: u64, commands: &[Command]) -> Snapshot {
    let mut h = Harness::<Spot>::new();
    while h.sequence() < base {
        let _ = h.handle_json("null");
    }
    for cmd in commands {
        let _ = h.handle(cmd.clone());
    }
    harness_snapshot(&h).without_times()
}

fn spot_host() -> TestHost {
    let t = TestHost::new();
    t.deploy_file(plugins::SPOT);
    t
}

/// Submits commands pipelined (many in flight, group commit) and waits for all.
fn run_pipelined(t: &TestHost, commands: &[Command]) {
    let pending: Vec<_> = commands
        .iter()
        .map(|c| {
            t.host()
                .submit_pipelined("spot", json_of(c).to_string().as_bytes())
                .unwrap()
        })
        .collect();
    for rx in pending {
        match rx.blocking_recv().unwrap() {
            Ok(_) => {}
            Err(e) => assert!(
                e.sequence().is_some(),
                "only plugin refusals are expected: {e}"
            ),
        }
    }
}

#[test]
fn clean_restart_and_crash_restore_the_exact_book() {
    let mut t = spot_host();
    let base = t.status("spot").last_sequence;
    let mut commands = stream(7, 600);
    commands.extend(deep_book());
    let split = commands.len();
    commands.extend(stream(8, 600).into_iter().skip(streams::setup().len()));
    let (first, second) = commands.split_at(split);
    run_pipelined(&t, first);
    let before = host_snapshot(&t);
    let tables = t.tables("spot");
    let hash = t.state_hash("spot");
    let resting: usize = before
        .books
        .iter()
        .flat_map(|b| b.bids.iter().chain(&b.asks))
        .map(|q| q.orders.len())
        .sum();
    assert!(
        resting > 200,
        "the book should be deep: {resting} resting orders"
    );

    t.restart();
    assert_eq!(
        host_snapshot(&t),
        before,
        "clean restart changed the book or balances"
    );
    assert_eq!(t.tables("spot"), tables);
    assert_eq!(t.state_hash("spot"), hash);

    t.crash_and_restart();
    assert_eq!(
        host_snapshot(&t),
        before,
        "crash changed the book or balances"
    );
    assert_eq!(t.tables("spot"), tables);

    // Priority survived: the rest of the stream after two restarts ends
    // exactly where an uninterrupted native run ends.
    run_pipelined(&t, second);
    t.crash_and_restart();
    assert_eq!(
        host_snapshot(&t).without_times(),
        native_snapshot(base, &commands)
    );
    assert!(
        t.verify_replay().iter().all(|v| v.ok()),
        "journal replay disagrees"
    );
    keel_tests::assert_export_round_trip(&t, "spot", plugins::SPOT);
}

#[test]
fn crash_with_commands_in_flight_keeps_every_acknowledged_order() {
    let mut t = spot_host();
    let base = t.status("spot").last_sequence;
    let commands = stream(11, 3000);
    let pending: Vec<_> = commands
        .iter()
        .map(|c| {
            t.host()
                .submit_pipelined("spot", json_of(c).to_string().as_bytes())
                .unwrap()
        })
        .collect();
    // Wait for some acknowledgements, then crash with the rest in flight.
    let mut acked = Vec::new();
    for (i, rx) in pending.into_iter().enumerate() {
        if i < 1000 {
            acked.push(
                rx.blocking_recv()
                    .unwrap()
                    .map(|r| r.sequence)
                    .unwrap_or_else(|e| e.sequence().unwrap()),
            );
        }
    }
    t.crash_and_restart();
    let committed = (t.status("spot").last_sequence - base) as usize;
    assert!(
        committed >= acked.len(),
        "an acknowledged command is missing"
    );
    assert!(acked.iter().all(|s| *s <= base + committed as u64));
    // The state is exactly the committed prefix of the stream.
    assert_eq!(
        host_snapshot(&t).without_times(),
        native_snapshot(base, &commands[..committed])
    );
    assert!(t.verify_replay().iter().all(|v| v.ok()));
}

fn server_query(s: &Server, q: Value) -> Value {
    s.query("spot", &q).unwrap()
}

#[test]
fn sigkill_restores_the_exact_book() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &[("spot", None)]);
    let base = s.plugin_status("spot")["last_sequence"].as_u64().unwrap();
    let commands = stream(23, 450);
    let mut sent = 0;
    for cycle in 0..3 {
        let end = 150 * (cycle + 1);
        for cmd in &commands[sent..end] {
            let _ = s.call("spot", &json_of(cmd));
        }
        sent = end;
        let before = snapshot(|q| server_query(&s, q));
        let status = s.plugin_status("spot");
        s.kill();
        s.restart();
        assert_eq!(
            snapshot(|q| server_query(&s, q)),
            before,
            "cycle {cycle}: SIGKILL changed the book"
        );
        let after = s.plugin_status("spot");
        assert_eq!(after["state_hash"], status["state_hash"]);
        assert_eq!(after["last_sequence"].as_u64().unwrap(), base + sent as u64);
    }
    assert_eq!(
        snapshot(|q| server_query(&s, q)).without_times(),
        native_snapshot(base, &commands)
    );
}

#[test]
fn sigkill_while_orders_stream_in_keeps_every_acknowledged_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &[("spot", None)]);
    let base = s.plugin_status("spot")["last_sequence"].as_u64().unwrap();
    let commands = stream(29, 2000);
    let url = s.base_url().to_owned();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let sender = {
        let commands = commands.clone();
        std::thread::spawn(move || {
            let agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .new_agent();
            let mut acked = Vec::new();
            for cmd in &commands {
                if stop_rx.try_recv().is_ok() {
                    break;
                }
                let Ok(mut resp) = agent
                    .post(format!("{url}/v1/plugins/spot/commands"))
                    .send(json_of(cmd).to_string())
                else {
                    break; // the server is gone
                };
                let body: Value =
                    serde_json::from_str(&resp.body_mut().read_to_string().unwrap_or_default())
                        .unwrap_or(Value::Null);
                let seq = body["sequence"]
                    .as_u64()
                    .or_else(|| body["error"]["sequence"].as_u64());
                match seq {
                    Some(seq) => acked.push(seq),
                    None => break,
                }
            }
            acked
        })
    };
    // Let some orders through, then kill without warning.
    let started = std::time::Instant::now();
    while s.plugin_status("spot")["last_sequence"].as_u64().unwrap() < base + 100
        && started.elapsed() < std::time::Duration::from_secs(30)
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    s.kill();
    let _ = stop_tx.send(());
    let acked = sender.join().unwrap();
    s.restart();
    let committed = s.plugin_status("spot")["last_sequence"].as_u64().unwrap() - base;
    assert!(
        acked.iter().all(|seq| *seq <= base + committed),
        "an acknowledged command was lost"
    );
    assert!(committed as usize >= acked.len());
    assert_eq!(
        snapshot(|q| server_query(&s, q)).without_times(),
        native_snapshot(base, &commands[..committed as usize])
    );
}

#[test]
fn hostile_commands_are_refused_without_a_trap() {
    let t = spot_host();
    for cmd in streams::setup() {
        t.call("spot", json_of(&cmd)).unwrap();
    }
    t.call(
        "spot",
        json!({"place": {"user": 1, "market": 1, "side": "sell", "price": 10, "qty": 5}}),
    )
    .unwrap();
    let hash = t.state_hash("spot");
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"place": {"user": 2, "market": 1, "side": "buy", "price": 10, "qty": 0}}),
            "invalid-argument",
        ),
        (
            json!({"place": {"user": 2, "market": 1, "side": "buy", "price": 10, "qty": -1}}),
            "bad-command",
        ),
        (
            json!({"place": {"user": 2, "market": 2, "side": "buy", "price": 12, "qty": 20}}),
            "bad-tick",
        ),
        (
            json!({"place": {"user": 2, "market": 2, "side": "buy", "price": 10, "qty": 25}}),
            "bad-lot",
        ),
        (
            json!({"place": {"user": 2, "market": 2, "side": "buy", "price": 10, "qty": 10}}),
            "below-minimum",
        ),
        (
            json!({"place": {"user": 2, "market": 1, "side": "buy", "price": 10, "qty": 5, "x": 1}}),
            "bad-command",
        ),
        (
            json!({"place": {"user": 2, "market": 1, "side": "buy", "price": u64::MAX, "qty": u64::MAX}}),
            "insufficient-balance",
        ),
        (
            json!({"place": {"user": 2, "market": 1, "side": "buy", "price": 10, "qty": 1e30}}),
            "bad-command",
        ),
        (
            json!({"place": {"user": 2, "market": 1, "side": "buy", "price": 10, "qty": 5.5}}),
            "bad-command",
        ),
        (
            json!({"place": {"user": 1, "market": 1, "side": "buy", "kind": "post_only", "price": 10, "qty": 5}}),
            "would-cross",
        ),
        (
            json!({"cancel": {"user": 2, "order": 999_999}}),
            "not-found",
        ),
        (
            json!({"deposit": {"user": 2, "asset": "USD", "amount": 0}}),
            "invalid-argument",
        ),
        (
            json!({"withdraw": {"user": 2, "asset": "USD", "amount": 1_000_000_000u64}}),
            "insufficient-balance",
        ),
        (
            json!({"deposit": {"user": 2, "asset": "x".repeat(100), "amount": 1}}),
            "bad-asset",
        ),
        (
            json!({"create_market": {"market": 1, "base": "A", "quote": "B", "tick_size": 1, "lot_size": 1, "min_size": 1}}),
            "market-exists",
        ),
        (json!({"what": {}}), "bad-command"),
        (
            serde_json::from_str::<Value>(&deep).unwrap_or(Value::Null),
            "bad-command",
        ),
    ];
    for (cmd, code) in cases {
        let err = t.call("spot", cmd.clone()).unwrap_err();
        assert_eq!(err.code(), code, "{cmd}: {err}");
        assert_eq!(t.state_hash("spot"), hash, "{cmd} changed state");
    }
    // Raw bytes the JSON layer catches before the plugin.
    for raw in [
        deep.as_bytes(),
        b"{\"place\":".as_slice(),
        b"\xff\xfe".as_slice(),
    ] {
        let err = t.call_raw("spot", raw).unwrap_err();
        assert_ne!(err.code(), "trap", "{err}");
    }
    // An over-deep but valid JSON command reaches the plugin and is refused, not trapped.
    let nested = format!("{{\"place\":{}1{}}}", "[".repeat(200), "]".repeat(200));
    let err = t.call_raw("spot", nested.as_bytes()).unwrap_err();
    assert_ne!(err.code(), "trap", "{err}");
    assert_eq!(t.state_hash("spot"), hash);
    // The plugin still serves.
    t.call(
        "spot",
        json!({"place": {"user": 2, "market": 1, "side": "buy", "price": 10, "qty": 5}}),
    )
    .unwrap();
    assert!(t.verify_replay().iter().all(|v| v.ok()));
}

fn model_step(t: &TestHost, m: &mut Model, cmd: &Command) -> Result<(), TestCaseError> {
    let seq = t.status("spot").last_sequence + 1;
    let expected = m.apply(seq, cmd);
    let got = t.call("spot", json_of(cmd));
    match (&expected, &got) {
        (Ok(e), Ok(g)) => prop_assert_eq!(&serde_json::to_value(e).unwrap(), g, "{:?}", cmd),
        (Err(e), Err(g)) => prop_assert_eq!(e.as_str(), g.code(), "{:?}: {}", cmd, g),
        _ => prop_assert!(false, "{:?}: model {:?}, plugin {:?}", cmd, expected, got),
    }
    if m.markets.len() < 2 {
        return Ok(()); // still setting up
    }
    let snap = host_snapshot(t);
    for (i, book) in snap.books.iter().enumerate() {
        prop_assert_eq!(book, &m.book(i as u32 + 1));
        if let (Some(bid), Some(ask)) = (book.bids.first(), book.asks.first()) {
            prop_assert!(bid.price < ask.price);
        }
    }
    for (i, b) in snap.balances.iter().enumerate() {
        prop_assert_eq!(b, &m.balances(i as u64 + 1));
    }
    for asset in streams::ASSETS {
        let t = snap.audit.assets.get(asset).copied().unwrap_or_default();
        prop_assert_eq!(
            i128::try_from(t.available + t.frozen).unwrap(),
            m.net.get(asset).copied().unwrap_or(0)
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    #[test]
    fn component_matches_the_model_across_restarts(
        ops in prop::collection::vec(any::<(u8, u8, u8, u8, u8, u8)>(), 20..80),
    ) {
        let mut t = spot_host();
        let mut m = Model::default();
        for cmd in streams::setup() {
            model_step(&t, &mut m, &cmd)?;
        }
        let mut restarts = 0;
        for op in ops {
            let last = t.status("spot").last_sequence;
            match streams::command(op, last) {
                Some(cmd) => model_step(&t, &mut m, &cmd)?,
                None => {
                    restarts += 1;
                    if restarts % 2 == 0 { t.restart() } else { t.crash_and_restart() }
                }
            }
        }
        for (id, rec) in &m.orders {
            let o: OrderView = serde_json::from_value(t.query("spot", json!({"order": {"id": id}})).unwrap()).unwrap();
            prop_assert_eq!((o.status, o.filled, o.user), (rec.status, rec.filled, rec.user));
        }
        prop_assert!(t.verify_replay().iter().all(|v| v.ok()));
    }
}

/// A sweep through thousands of resting orders, each from a different user
/// (the most expensive shape), stays inside the host's per-call fuel; one
/// resting order more than the engine's cap is refused with a clear error
/// and changes nothing — never a trap.
#[test]
fn deep_sweeps_succeed_or_are_refused_cleanly() {
    use keel_plugin_spot::api::{OrderKind, Place, Side, Transfer};
    use keel_plugin_spot::engine::MATCHES_PER_ORDER_MAX;
    let t = spot_host();
    let makers = MATCHES_PER_ORDER_MAX as u64 + 1;
    let mut cmds = streams::setup();
    cmds.push(Command::Deposit(Transfer {
        user: 1,
        asset: "USD".into(),
        amount: 1 << 40,
    }));
    for i in 0..makers {
        let user = 100 + i;
        cmds.push(Command::Deposit(Transfer {
            user,
            asset: "AAA".into(),
            amount: 1,
        }));
        cmds.push(Command::Place(Place {
            user,
            market: 1,
            side: Side::Sell,
            kind: OrderKind::Limit,
            price: Some(20 + i % 7),
            qty: 1,
        }));
    }
    run_pipelined(&t, &cmds);
    let hash = t.state_hash("spot");
    let too_many =
        json!({"place": {"user": 1, "market": 1, "side": "buy", "kind": "market", "qty": makers}});
    let err = t.call("spot", too_many).unwrap_err();
    assert_eq!(err.code(), "too-many-matches", "{err}");
    assert_eq!(t.state_hash("spot"), hash);
    let sweep = json!({"place": {"user": 1, "market": 1, "side": "buy", "kind": "market", "qty": makers - 1}});
    let placed = t.call("spot", sweep).unwrap();
    assert_eq!(placed["filled"], json!(makers - 1));
    let book: BookDump =
        serde_json::from_value(t.query("spot", json!({"book": {"market": 1}})).unwrap()).unwrap();
    assert_eq!(book.asks.iter().map(|q| q.orders.len()).sum::<usize>(), 1);
    let audit: Audit = serde_json::from_value(t.query("spot", json!("audit")).unwrap()).unwrap();
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);
}

#[test]
fn the_audit_pages_through_a_book_under_the_default_query_fuel() {
    // 40,000 resting orders: more than the whole `audit` checks within the
    // default query fuel (it ran out between 20,000 and 30,000), while
    // every page, even of the largest size, stays within it. Fuel is what
    // is tested: the wall-clock deadline is raised, since a 10,000-row page
    // of a debug build on a loaded 2-core machine can take seconds.
    let t = TestHost::with_config(|c| c.limits.deadline_ms = 120_000);
    t.deploy_file(plugins::SPOT);
    keel_tests::bench::fund_spot_market(t.host(), 400);
    let orders: Vec<Vec<u8>> = (0..40_000u64)
        .map(|i| {
            let user = 1 + i % 400;
            let (side, price) = if i % 2 == 0 {
                ("buy", 1_000_000 - i)
            } else {
                ("sell", 2_000_000 + i)
            };
            json!({"place": {"user": user, "market": 1, "side": side, "kind": "limit", "price": price, "qty": 1}})
                .to_string()
                .into_bytes()
        })
        .collect();
    for chunk in orders.chunks(2000) {
        keel_tests::bench::submit_all(t.host(), "spot", chunk);
    }
    let mut page: AuditPage =
        serde_json::from_value(t.query("spot", json!({"audit_page": {}})).unwrap()).unwrap();
    let (mut pages, mut users, mut book_entries) = (1, 0, 0);
    while let Some(after) = page.next {
        let request = json!({"audit_page": {"after": after, "limit": 10_000}});
        page = serde_json::from_value(t.query("spot", request).unwrap()).unwrap();
        assert!(page.problems.is_empty(), "{:#?}", page.problems);
        pages += 1;
        users += page.users;
        if page.users == 0 {
            book_entries += page.orders;
        }
    }
    assert_eq!((users, book_entries), (400, 40_000));
    // Totals; the wallets in 4 pages (a page stops at 10,000 wallets and
    // orders, never inside a user's 100 orders); the book in 4.
    assert_eq!(pages, 9);
}

/// A refusal's code (panics on anything that is not a plugin refusal).
fn refusal_code(e: keel_host::HostError) -> String {
    match e {
        keel_host::HostError::Rejected { code, .. } => code,
        other => panic!("not a plugin refusal: {other}"),
    }
}

#[test]
fn callers_act_only_as_their_own_accounts_and_the_operator_as_the_rule_allows() {
    use keel_host::Caller;
    let t = spot_host();
    let alice = Caller::new("alice", ["client"]);
    let bob = Caller::new("bob", ["client"]);
    let ops = Caller::new("ops", ["client", "operator"]);
    let setup = [
        json!({"create_market": {"market": 1, "base": "BTC", "quote": "USD", "tick_size": 1, "lot_size": 1, "min_size": 1}}),
        json!({"open_account": {"principal": "alice", "user": 1}}),
        json!({"open_account": {"principal": "bob", "user": 2}}),
        json!({"deposit": {"user": 1, "asset": "BTC", "amount": 1000}}),
        json!({"deposit": {"user": 2, "asset": "USD", "amount": 100000}}),
    ];
    for cmd in setup {
        t.call_as("spot", &ops, cmd).unwrap();
    }
    let order = t
        .call_as(
            "spot",
            &alice,
            json!({"place": {"user": 1, "market": 1, "side": "sell", "price": 100, "qty": 10}}),
        )
        .unwrap()["order"]
        .as_u64()
        .unwrap();
    assert_eq!(
        t.query_as("spot", &alice, json!({"account": {}})).unwrap(),
        json!({"principal": "alice", "user": 1})
    );

    // Bob against alice's order, funds and the operator's commands: every
    // attempt refused with its code, the state hash unchanged.
    let hash = t.state_hash("spot");
    let attempts = [
        (json!({"cancel": {"user": 1, "order": order}}), "not-owner"),
        (json!({"cancel": {"user": 2, "order": order}}), "not-owner"),
        (json!({"cancel_all": {"user": 1, "market": 1}}), "not-owner"),
        (
            json!({"withdraw": {"user": 1, "asset": "BTC", "amount": 1}}),
            "not-owner",
        ),
        (
            json!({"place": {"user": 1, "market": 1, "side": "buy", "price": 100, "qty": 1}}),
            "not-owner",
        ),
        (
            json!({"deposit": {"user": 2, "asset": "USD", "amount": 1_000_000}}),
            "operator-only",
        ),
        (
            json!({"create_market": {"market": 2, "base": "ETH", "quote": "USD", "tick_size": 1, "lot_size": 1, "min_size": 1}}),
            "operator-only",
        ),
        (
            json!({"open_account": {"principal": "bob", "user": 1}}),
            "operator-only",
        ),
    ];
    for (cmd, code) in attempts {
        let e = t.call_as("spot", &bob, cmd.clone()).unwrap_err();
        assert_eq!(refusal_code(e), code, "{cmd}");
        assert_eq!(t.state_hash("spot"), hash, "{cmd} changed the state");
    }
    // A principal with no account is refused too.
    let mallory = Caller::new("mallory", ["client"]);
    let e = t
        .call_as(
            "spot",
            &mallory,
            json!({"cancel": {"user": 1, "order": order}}),
        )
        .unwrap_err();
    assert_eq!(refusal_code(e), "no-account");
    assert_eq!(t.state_hash("spot"), hash);

    // Bob trades as himself against alice's order.
    let placed = t
        .call_as(
            "spot",
            &bob,
            json!({"place": {"user": 2, "market": 1, "side": "buy", "price": 100, "qty": 4}}),
        )
        .unwrap();
    assert_eq!(placed["filled"], 4);
    // The operator cancels the rest of alice's order on her behalf.
    assert_eq!(
        t.call_as("spot", &ops, json!({"cancel": {"user": 1, "order": order}}))
            .unwrap(),
        json!({"canceled": [order]})
    );
    let balances = t.query("spot", json!({"balances": {"user": 1}})).unwrap();
    assert_eq!(balances["BTC"], json!({"available": 996, "frozen": 0}));
    assert_eq!(balances["USD"], json!({"available": 400, "frozen": 0}));

    // Replay runs every command with its journaled caller and reproduces
    // the refusals' absence of effects and the state hash.
    let verdicts = t.verify_replay();
    assert!(verdicts.iter().all(|v| v.ok()), "{verdicts:?}");
}
