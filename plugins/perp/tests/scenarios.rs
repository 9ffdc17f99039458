//! Worked examples of the perp plugin's rules, natively (no wasm, no host).
//! Every figure below is computed by hand in the comments.

use keel_guest::Error;
use keel_guest::testing::Harness;
use keel_plugin_perp::{
    AccountView, Answer, Command, FundingReport, InsuranceView, LiquidationReport, MarketView,
    Perp, PositionView, Query, Response, TotalsView, TradeKind, TradeReport,
};

fn s(v: &str) -> String {
    v.to_owned()
}

/// BTC at 1000 with 10 % initial and 5 % maintenance margin.
fn venue() -> Harness<Perp> {
    let mut h = Harness::<Perp>::new();
    h.handle(Command::CreateMarket {
        market: s("BTC"),
        mark_price: 1_000,
        initial_margin_bps: 1_000,
        maintenance_margin_bps: 500,
    })
    .unwrap();
    h
}

fn deposit(h: &mut Harness<Perp>, user: &str, amount: i64) {
    h.handle(Command::Deposit {
        user: s(user),
        amount,
    })
    .unwrap();
}

fn trade(h: &mut Harness<Perp>, user: &str, size: i64) -> Result<TradeReport, Error> {
    match h.handle(Command::Trade {
        user: s(user),
        market: s("BTC"),
        size,
        margin: None,
    })? {
        Response::Trade(t) => Ok(t),
        other => panic!("unexpected {other:?}"),
    }
}

fn mark(h: &mut Harness<Perp>, price: i64) {
    h.handle(Command::SetMark {
        market: s("BTC"),
        price,
    })
    .unwrap();
}

fn position(h: &Harness<Perp>, user: &str) -> PositionView {
    match h
        .query(Query::Position {
            user: s(user),
            market: s("BTC"),
        })
        .unwrap()
    {
        Answer::Position(p) => p,
        other => panic!("unexpected {other:?}"),
    }
}

fn account(h: &Harness<Perp>, user: &str) -> AccountView {
    match h.query(Query::Account { user: s(user) }).unwrap() {
        Answer::Account(a) => a,
        other => panic!("unexpected {other:?}"),
    }
}

fn totals(h: &Harness<Perp>) -> TotalsView {
    match h.query(Query::Totals).unwrap() {
        Answer::Totals(t) => t,
        other => panic!("unexpected {other:?}"),
    }
}

fn insurance(h: &Harness<Perp>) -> InsuranceView {
    match h.query(Query::InsuranceFund).unwrap() {
        Answer::Insurance(i) => i,
        other => panic!("unexpected {other:?}"),
    }
}

fn assert_balanced(h: &Harness<Perp>) {
    let t = totals(h);
    assert!(t.conserved, "{t:?}");
    assert!(t.funding_balanced, "{t:?}");
    assert!(t.open_interest_consistent, "{t:?}");
}

/// Runs `command`, expects `code`, and checks that nothing changed.
fn refused(h: &mut Harness<Perp>, command: Command, code: &str) -> Error {
    let before = h.dump();
    let err = h.handle(command.clone()).unwrap_err();
    assert_eq!(err.code, code, "{command:?}: {err}");
    assert_eq!(h.dump(), before, "{command:?} changed state");
    err
}

#[test]
fn open_reduce_close_realizes_pnl_exactly() {
    let mut h = venue();
    deposit(&mut h, "alice", 10_000);
    // Long 10 at 1000: notional 10 000, initial requirement 10 % = 1000.
    let t = trade(&mut h, "alice", 10).unwrap();
    assert_eq!(
        (t.kind, t.margin_added, t.free_collateral),
        (TradeKind::Open, 1_000, 9_000)
    );
    let p = position(&h, "alice");
    assert_eq!(
        (
            p.size,
            p.entry_price,
            p.margin,
            p.equity,
            p.margin_ratio_bps
        ),
        (10, 1_000, 1_000, 1_000, 1_000)
    );

    // Mark 1100: unrealized +1000, equity 2000, ratio 2000/11000 = 1818 bps.
    mark(&mut h, 1_100);
    let p = position(&h, "alice");
    assert_eq!(
        (p.unrealized_pnl, p.equity, p.margin_ratio_bps),
        (1_000, 2_000, 1_818)
    );

    // Reduce 4: basis 4000, realized 4×1100 − 4000 = 400; 4/10 of equity
    // 2000 = 800 released; margin 1000 + 400 − 800 = 600.
    let t = h
        .handle(Command::Reduce {
            user: s("alice"),
            market: s("BTC"),
            amount: 4,
        })
        .unwrap();
    let Response::Trade(t) = t else { panic!() };
    assert_eq!(
        (
            t.kind,
            t.realized_pnl,
            t.collateral_released,
            t.free_collateral
        ),
        (TradeKind::Reduce, 400, 800, 9_800)
    );
    let p = position(&h, "alice");
    assert_eq!(
        (p.size, p.open_notional, p.margin, p.equity, p.realized_pnl),
        (6, 6_000, 600, 1_200, 400)
    );

    // Close: realized 6×1100 − 6000 = 600, everything returns.
    let Response::Trade(t) = h
        .handle(Command::Close {
            user: s("alice"),
            market: s("BTC"),
        })
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (t.kind, t.realized_pnl, t.collateral_released, t.size_after),
        (TradeKind::Close, 600, 1_200, 0)
    );
    assert!(t.position.is_none());
    let a = account(&h, "alice");
    assert_eq!(
        (a.free_collateral, a.realized_pnl, a.collateral),
        (11_000, 1_000, 11_000)
    );
    assert!(a.positions.is_empty() && a.margin_ratio_bps.is_none());
    let tot = totals(&h);
    assert_eq!((tot.holdings, tot.expected_holdings), (11_000, 11_000));
    assert_balanced(&h);
}

#[test]
fn short_profits_when_the_mark_falls() {
    let mut h = venue();
    deposit(&mut h, "bob", 10_000);
    trade(&mut h, "bob", -10).unwrap();
    mark(&mut h, 900);
    let p = position(&h, "bob");
    assert_eq!(
        (p.side, p.size, p.entry_price, p.open_notional),
        (keel_plugin_perp::Side::Short, -10, 1_000, -10_000)
    );
    assert_eq!(
        (p.unrealized_pnl, p.equity, p.notional),
        (1_000, 2_000, 9_000)
    );
    let t = trade(&mut h, "bob", 10).unwrap();
    assert_eq!(
        (t.kind, t.realized_pnl, t.free_collateral),
        (TradeKind::Close, 1_000, 11_000)
    );
    assert_balanced(&h);
}

#[test]
fn flip_closes_then_opens_the_remainder() {
    let mut h = venue();
    deposit(&mut h, "alice", 10_000);
    trade(&mut h, "alice", 10).unwrap();
    mark(&mut h, 1_050);
    // Close 10 (realized +500, 1500 released), then short 5 at 1050:
    // notional 5250, requirement 525.
    let t = trade(&mut h, "alice", -15).unwrap();
    assert_eq!(
        (t.kind, t.size_before, t.size_after),
        (TradeKind::Flip, 10, -5)
    );
    assert_eq!(
        (t.realized_pnl, t.collateral_released, t.margin_added),
        (500, 1_500, 525)
    );
    assert_eq!(t.free_collateral, 10_000 - 1_000 + 1_500 - 525);
    let p = t.position.unwrap();
    assert_eq!(
        (p.size, p.entry_price, p.margin, p.realized_pnl),
        (-5, 1_050, 525, 0)
    );
    let m = match h.query(Query::Market { market: s("BTC") }).unwrap() {
        Answer::Market(m) => m,
        other => panic!("{other:?}"),
    };
    assert_eq!((m.open_interest_long, m.open_interest_short), (0, 5));
    assert_balanced(&h);
}

#[test]
fn increase_tops_margin_up_to_the_initial_requirement() {
    let mut h = venue();
    deposit(&mut h, "alice", 10_000);
    trade(&mut h, "alice", 10).unwrap();
    mark(&mut h, 960); // equity 1000 − 400 = 600
    let Response::Trade(t) = h
        .handle(Command::Increase {
            user: s("alice"),
            market: s("BTC"),
            amount: 5,
            margin: None,
        })
        .unwrap()
    else {
        panic!()
    };
    // 15 × 960 = 14 400 notional → 1440 required; 840 added.
    assert_eq!(
        (t.kind, t.margin_added, t.size_after),
        (TradeKind::Increase, 840, 15)
    );
    let p = t.position.unwrap();
    assert_eq!(
        (p.equity, p.initial_requirement, p.open_notional),
        (1_440, 1_440, 14_800)
    );
    assert_balanced(&h);
}

#[test]
fn refusals_are_clear_and_change_nothing() {
    let mut h = venue();
    deposit(&mut h, "alice", 1_500);
    let open = |size, margin| Command::Open {
        user: s("alice"),
        market: s("BTC"),
        size,
        margin,
    };
    refused(&mut h, open(20, None), "insufficient-collateral");
    let e = refused(&mut h, open(10, Some(999)), "insufficient-margin");
    assert!(e.message.contains("add at least 1 more margin"), "{e}");
    refused(
        &mut h,
        Command::Open {
            user: s("alice"),
            market: s("ETH"),
            size: 1,
            margin: None,
        },
        "unknown-market",
    );
    refused(&mut h, open(0, None), "invalid-argument");
    refused(&mut h, open(1, Some(-5)), "invalid-argument");
    refused(
        &mut h,
        Command::Close {
            user: s("alice"),
            market: s("BTC"),
        },
        "no-position",
    );
    refused(
        &mut h,
        Command::Liquidate {
            user: s("alice"),
            market: s("BTC"),
        },
        "no-position",
    );
    h.handle(open(10, None)).unwrap();
    refused(&mut h, open(1, None), "position-exists");
    let e = refused(
        &mut h,
        Command::Reduce {
            user: s("alice"),
            market: s("BTC"),
            amount: 11,
        },
        "reduce-too-large",
    );
    assert!(e.message.contains("size 10"), "{e}");
    refused(
        &mut h,
        Command::Trade {
            user: s("alice"),
            market: s("BTC"),
            size: -3,
            margin: Some(10),
        },
        "invalid-argument",
    );
    refused(
        &mut h,
        Command::Withdraw {
            user: s("alice"),
            amount: 501,
        },
        "insufficient-collateral",
    );
    refused(
        &mut h,
        Command::Withdraw {
            user: s("nobody"),
            amount: 1,
        },
        "unknown-account",
    );
    refused(
        &mut h,
        Command::Deposit {
            user: s("alice"),
            amount: 0,
        },
        "invalid-argument",
    );
    refused(
        &mut h,
        Command::Deposit {
            user: s(""),
            amount: 1,
        },
        "invalid-argument",
    );
    refused(
        &mut h,
        Command::Liquidate {
            user: s("alice"),
            market: s("BTC"),
        },
        "not-liquidatable",
    );
    refused(
        &mut h,
        Command::AdjustMargin {
            user: s("alice"),
            market: s("BTC"),
            amount: -1,
        },
        "insufficient-margin",
    );
    refused(
        &mut h,
        Command::AdjustMargin {
            user: s("alice"),
            market: s("BTC"),
            amount: 501,
        },
        "insufficient-collateral",
    );
    refused(
        &mut h,
        Command::SetMark {
            market: s("BTC"),
            price: 0,
        },
        "invalid-argument",
    );
    refused(
        &mut h,
        Command::ApplyFunding {
            market: s("BTC"),
            rate_ppm: 100_001,
        },
        "invalid-argument",
    );
    refused(
        &mut h,
        Command::CreateMarket {
            market: s("BTC"),
            mark_price: 1,
            initial_margin_bps: 100,
            maintenance_margin_bps: 50,
        },
        "market-exists",
    );
    refused(
        &mut h,
        Command::CreateMarket {
            market: s("X"),
            mark_price: 1,
            initial_margin_bps: 100,
            maintenance_margin_bps: 100,
        },
        "invalid-argument",
    );
    h.handle(Command::Withdraw {
        user: s("alice"),
        amount: 500,
    })
    .unwrap();
    assert_eq!(account(&h, "alice").free_collateral, 0);
    assert_balanced(&h);
}

#[test]
fn overflow_is_a_clear_error() {
    let mut h = venue();
    deposit(&mut h, "alice", i64::MAX);
    refused(
        &mut h,
        Command::Deposit {
            user: s("alice"),
            amount: 1,
        },
        "overflow",
    );
    refused(
        &mut h,
        Command::Trade {
            user: s("alice"),
            market: s("BTC"),
            size: i64::MIN,
            margin: None,
        },
        "overflow",
    );
}

#[test]
fn the_largest_position_at_the_highest_price_can_always_be_closed() {
    let mut h = venue();
    deposit(&mut h, "alice", 200_000_000_000_000_000);
    refused(
        &mut h,
        Command::Trade {
            user: s("alice"),
            market: s("BTC"),
            size: i64::MAX / 2,
            margin: None,
        },
        "position-too-large",
    );
    refused(
        &mut h,
        Command::SetMark {
            market: s("BTC"),
            price: 1_000_000_001,
        },
        "invalid-argument",
    );
    mark(&mut h, 1_000_000_000);
    trade(&mut h, "alice", -1_000_000_000).unwrap();
    refused(
        &mut h,
        Command::Trade {
            user: s("alice"),
            market: s("BTC"),
            size: -1,
            margin: None,
        },
        "position-too-large",
    );
    // The mark collapses: the short's PnL is as large as it can get.
    mark(&mut h, 1);
    let p = position(&h, "alice");
    assert_eq!(p.unrealized_pnl, 999_999_999_000_000_000);
    let t = trade(&mut h, "alice", 1_000_000_000).unwrap();
    assert_eq!(t.realized_pnl, 999_999_999_000_000_000);
    assert_balanced(&h);
}

#[test]
fn unknown_fields_are_refused() {
    let mut h = venue();
    let e = h
        .handle_json(r#"{"deposit":{"user":"a","amount":1,"extra":1}}"#)
        .unwrap_err();
    assert_eq!(e.code, "bad-command");
    assert!(e.message.contains("extra"), "{e}");
    let e = h
        .handle_json(r#"{"deposit":{"user":"a","amount":1.5}}"#)
        .unwrap_err();
    assert_eq!(e.code, "bad-command");
}

#[test]
fn json_shapes() {
    let mut h = venue();
    h.handle_json(r#"{"deposit":{"user":"alice","amount":10000}}"#)
        .unwrap();
    let r = h
        .handle_json(r#"{"open":{"user":"alice","market":"BTC","size":10,"margin":2000}}"#)
        .unwrap();
    assert_eq!(r["kind"], "open");
    assert_eq!(r["margin_added"], 2000);
    assert_eq!(r["position"]["margin_ratio_bps"], 2000);
    let q = h.query_json(r#"{"account":{"user":"alice"}}"#).unwrap();
    assert_eq!(q["free_collateral"], 8000);
    assert_eq!(q["collateral"], 10000);
    assert_eq!(q["positions"][0]["unrealized_pnl"], 0);
    let q = h.query_json(r#""totals""#).unwrap();
    assert_eq!(q["conserved"], true);
    let q = h.query_json(r#""markets""#).unwrap();
    assert_eq!(q[0]["market"], "BTC");
    assert_eq!(q[0]["funding_index_long"], "0");
}

#[test]
fn funding_moves_between_sides_and_nets_to_zero() {
    let mut h = venue();
    deposit(&mut h, "alice", 10_000);
    deposit(&mut h, "bob", 10_000);
    trade(&mut h, "alice", 10).unwrap();
    trade(&mut h, "bob", -10).unwrap();
    // 100 ppm of 1000 = 0.1 per unit; 10 units: 1 per application.
    for _ in 0..3 {
        let Response::Funding(f) = h
            .handle(Command::ApplyFunding {
                market: s("BTC"),
                rate_ppm: 100,
            })
            .unwrap()
        else {
            panic!()
        };
        assert!(f.applied);
        assert_eq!(f.matched_open_interest, 10);
    }
    assert_eq!(position(&h, "alice").pending_funding, 3);
    assert_eq!(position(&h, "bob").pending_funding, -3);
    assert_eq!(position(&h, "alice").equity, 997);
    // Negative rate: shorts pay.
    h.handle(Command::ApplyFunding {
        market: s("BTC"),
        rate_ppm: -200,
    })
    .unwrap();
    assert_eq!(position(&h, "alice").pending_funding, 1);
    assert_eq!(position(&h, "bob").pending_funding, -1);
    let t = trade(&mut h, "alice", -10).unwrap();
    assert_eq!((t.funding_settled, t.collateral_released), (1, 999));
    let t = trade(&mut h, "bob", 10).unwrap();
    assert_eq!((t.funding_settled, t.collateral_released), (-1, 1_001));
    assert_eq!(account(&h, "alice").funding_paid, 1);
    assert_eq!(account(&h, "bob").funding_paid, -1);
    assert_eq!(insurance(&h).funding_residue, 0);
    assert_balanced(&h);
}

#[test]
fn funding_rounding_residue_goes_to_the_insurance_fund() {
    let mut h = venue();
    for u in ["a", "b", "c", "d"] {
        deposit(&mut h, u, 10_000);
    }
    for u in ["a", "b", "c"] {
        trade(&mut h, u, 1).unwrap();
    }
    trade(&mut h, "d", -2).unwrap();
    // Per unit 0.1; matched OI 2 → 0.2 moves: each long owes 0.0667
    // (rounded up to 1), the short is owed 0.1 per unit (0.2, rounded down to 0).
    let Response::Funding(f) = h
        .handle(Command::ApplyFunding {
            market: s("BTC"),
            rate_ppm: 100,
        })
        .unwrap()
    else {
        panic!()
    };
    let f: FundingReport = f;
    assert_eq!(
        (
            f.matched_open_interest,
            f.index_delta_long.as_str(),
            f.index_delta_short.as_str()
        ),
        (2, "66666666667", "-100000000000")
    );
    for u in ["a", "b", "c"] {
        assert_eq!(position(&h, u).pending_funding, 1);
    }
    assert_eq!(position(&h, "d").pending_funding, 0);
    for (u, size) in [("a", -1), ("d", 2), ("b", -1)] {
        trade(&mut h, u, size).unwrap();
        assert_balanced(&h);
    }
    assert_eq!(insurance(&h).funding_residue, 0, "a position is still open");
    trade(&mut h, "c", -1).unwrap();
    let i = insurance(&h);
    assert_eq!((i.funding_residue, i.insurance_fund), (3, 3));
    let m = match h.query(Query::Market { market: s("BTC") }).unwrap() {
        Answer::Market(m) => m,
        other => panic!("{other:?}"),
    };
    let m: MarketView = m;
    assert_eq!(m.funding_pool, 0);
    assert_balanced(&h);
}

#[test]
fn one_sided_open_interest_pays_no_funding() {
    let mut h = venue();
    deposit(&mut h, "a", 10_000);
    trade(&mut h, "a", 5).unwrap();
    let Response::Funding(f) = h
        .handle(Command::ApplyFunding {
            market: s("BTC"),
            rate_ppm: 1_000,
        })
        .unwrap()
    else {
        panic!()
    };
    assert!(!f.applied);
    assert_eq!(position(&h, "a").pending_funding, 0);
}

#[test]
fn liquidation_only_below_maintenance_and_equity_goes_to_insurance() {
    let mut h = venue();
    deposit(&mut h, "carol", 2_000);
    trade(&mut h, "carol", 10).unwrap();
    // 950: equity 500, maintenance 5 % × 9500 = 475 → still safe.
    mark(&mut h, 950);
    let e = refused(
        &mut h,
        Command::Liquidate {
            user: s("carol"),
            market: s("BTC"),
        },
        "not-liquidatable",
    );
    assert!(
        e.message.contains("equity 500") && e.message.contains("475"),
        "{e}"
    );
    // 940: equity 400 < 470.
    mark(&mut h, 940);
    assert!(position(&h, "carol").liquidatable);
    let list = match h.query(Query::Liquidatable { market: s("BTC") }).unwrap() {
        Answer::Positions(p) => p,
        other => panic!("{other:?}"),
    };
    assert_eq!(list.len(), 1);
    let Response::Liquidation(l) = h
        .handle(Command::Liquidate {
            user: s("carol"),
            market: s("BTC"),
        })
        .unwrap()
    else {
        panic!()
    };
    let l: LiquidationReport = l;
    assert_eq!(
        (
            l.size,
            l.realized_pnl,
            l.to_insurance_fund,
            l.insurance_fund
        ),
        (10, -600, 400, 400)
    );
    let a = account(&h, "carol");
    assert_eq!((a.free_collateral, a.realized_pnl), (1_000, -600));
    assert_eq!(insurance(&h).liquidations, 1);
    assert_balanced(&h);
}

#[test]
fn bad_debt_is_absorbed_by_the_insurance_fund() {
    let mut h = venue();
    deposit(&mut h, "carol", 2_000);
    deposit(&mut h, "dave", 2_000);
    trade(&mut h, "carol", 10).unwrap();
    trade(&mut h, "dave", 10).unwrap();
    // 880: equity 1000 − 1200 = −200 for both.
    mark(&mut h, 880);
    let Response::Liquidation(l) = h
        .handle(Command::Liquidate {
            user: s("carol"),
            market: s("BTC"),
        })
        .unwrap()
    else {
        panic!()
    };
    assert_eq!((l.to_insurance_fund, l.insurance_fund), (-200, -200));
    // Closing a bankrupt position yourself returns nothing; the fund absorbs the rest.
    let t = trade(&mut h, "dave", -10).unwrap();
    assert_eq!(
        (t.realized_pnl, t.collateral_released, t.bad_debt),
        (-1_200, 0, 200)
    );
    let i = insurance(&h);
    assert_eq!((i.insurance_fund, i.bad_debt), (-400, 400));
    assert_balanced(&h);
}

#[test]
fn adjust_margin_moves_collateral_both_ways() {
    let mut h = venue();
    deposit(&mut h, "alice", 5_000);
    trade(&mut h, "alice", 10).unwrap();
    let r = h
        .handle(Command::AdjustMargin {
            user: s("alice"),
            market: s("BTC"),
            amount: 500,
        })
        .unwrap();
    let Response::Position(p) = r else { panic!() };
    assert_eq!((p.margin, p.margin_ratio_bps), (1_500, 1_500));
    let e = refused(
        &mut h,
        Command::AdjustMargin {
            user: s("alice"),
            market: s("BTC"),
            amount: -501,
        },
        "insufficient-margin",
    );
    assert!(e.message.contains("at most 500"), "{e}");
    h.handle(Command::AdjustMargin {
        user: s("alice"),
        market: s("BTC"),
        amount: -500,
    })
    .unwrap();
    assert_eq!(account(&h, "alice").free_collateral, 4_000);
    assert_balanced(&h);
}
