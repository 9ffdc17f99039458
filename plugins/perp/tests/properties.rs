//! Property tests over random operation sequences (natively, many cases).
//!
//! Conserved, with exact integer equality after every command:
//!
//! ```text
//! Σ free_collateral + Σ position margin + insurance_fund + Σ funding_pool
//!     = Σ deposits − Σ withdrawals + Σ realized_pnl
//! ```
//!
//! where deposits and withdrawals are counted by the test from the commands
//! it saw succeed, and realized PnL is summed both from the responses and
//! from the accounts. Funding nets to zero:
//! `Σ funding_paid = Σ funding_pool + funding_residue`, the residue (≥ 0,
//! non-decreasing) having moved to the insurance fund. Also: a successful open/increase/flip leaves the
//! position at or above its initial (hence maintenance) requirement; every
//! refusal leaves the store byte-for-byte unchanged; position sizes follow a
//! model of the commands; reduce/close of an existing position always
//! succeed; liquidation succeeds exactly when the position is below
//! maintenance.

use std::collections::BTreeMap;

use keel_guest::testing::Harness;
use keel_plugin_perp::sim::{self, Op};
use keel_plugin_perp::{
    Answer, Command, Perp, PositionView, Query, Response, TotalsView, TradeKind,
};
use proptest::prelude::*;

fn position(h: &Harness<Perp>, user: &str, market: &str) -> Option<PositionView> {
    match h.query(Query::Position {
        user: user.to_owned(),
        market: market.to_owned(),
    }) {
        Ok(Answer::Position(p)) => Some(p),
        Ok(other) => panic!("unexpected {other:?}"),
        Err(e) => {
            assert!(e.code == "no-position" || e.code == "unknown-market", "{e}");
            None
        }
    }
}

fn free(h: &Harness<Perp>, user: &str) -> Option<i64> {
    match h.query(Query::Account {
        user: user.to_owned(),
    }) {
        Ok(Answer::Account(a)) => Some(a.free_collateral),
        Ok(other) => panic!("unexpected {other:?}"),
        Err(_) => None,
    }
}

fn totals(h: &Harness<Perp>) -> TotalsView {
    match h.query(Query::Totals).unwrap() {
        Answer::Totals(t) => t,
        other => panic!("unexpected {other:?}"),
    }
}

/// What the test knows independently of the plugin.
#[derive(Default)]
struct Model {
    sizes: BTreeMap<(String, String), i64>,
    net_deposits: i128,
    realized: i128,
    residue: i128,
}

fn target(cmd: &Command) -> Option<(String, String)> {
    match cmd {
        Command::Trade { user, market, .. }
        | Command::Open { user, market, .. }
        | Command::Increase { user, market, .. }
        | Command::Reduce { user, market, .. }
        | Command::Close { user, market }
        | Command::AdjustMargin { user, market, .. }
        | Command::Liquidate { user, market } => Some((user.clone(), market.clone())),
        _ => None,
    }
}

fn step(h: &mut Harness<Perp>, model: &mut Model, cmd: Command) -> Result<(), TestCaseError> {
    let key = target(&cmd);
    let before_dump = h.dump();
    let pos_before = key.as_ref().and_then(|(u, m)| position(h, u, m));
    let size_before = pos_before.as_ref().map_or(0, |p| p.size);
    let free_before = match &cmd {
        Command::Withdraw { user, .. } => free(h, user),
        _ => None,
    };
    let unknown_market = key.as_ref().is_some_and(|k| k.1 == sim::UNKNOWN_MARKET)
        || matches!(&cmd, Command::SetMark { market, .. } | Command::ApplyFunding { market, .. } if market == sim::UNKNOWN_MARKET);
    let result = h.handle(cmd.clone());
    match &result {
        Err(e) => {
            prop_assert_eq!(
                &h.dump(),
                &before_dump,
                "refused {:?} ({}) changed state",
                cmd,
                e
            );
            prop_assert!(e.code != "trap" && e.code != "overflow", "{:?}: {}", cmd, e);
        }
        Ok(_) => prop_assert!(!unknown_market, "{:?} succeeded on an unknown market", cmd),
    }
    // Outcomes the test can predict.
    match (&cmd, &result) {
        (Command::Withdraw { amount, .. }, r) => {
            let ok = free_before.is_some_and(|f| *amount > 0 && *amount <= f);
            prop_assert_eq!(
                r.is_ok(),
                ok,
                "{:?} with free {:?}: {:?}",
                cmd,
                free_before,
                r
            );
        }
        (Command::Reduce { amount, .. }, r) if !unknown_market => {
            let ok = pos_before.is_some() && *amount > 0 && *amount <= size_before.abs();
            prop_assert_eq!(r.is_ok(), ok, "{:?} on size {}: {:?}", cmd, size_before, r);
            if pos_before.is_some() && *amount > size_before.abs() {
                prop_assert_eq!(&r.as_ref().unwrap_err().code, "reduce-too-large");
            }
        }
        (Command::Close { .. }, r) if !unknown_market => {
            prop_assert_eq!(r.is_ok(), pos_before.is_some(), "{:?}: {:?}", cmd, r);
        }
        (
            Command::Trade {
                size, margin: None, ..
            },
            r,
        ) if !unknown_market
            && pos_before.is_some()
            && *size != 0
            && (size_before > 0) != (*size > 0)
            && size.abs() <= size_before.abs() =>
        {
            // Reducing or closing an existing position never fails.
            prop_assert!(r.is_ok(), "{:?} on size {}: {:?}", cmd, size_before, r);
        }
        (Command::Liquidate { .. }, r) if !unknown_market => {
            let expected = pos_before.as_ref().is_some_and(|p| p.liquidatable);
            prop_assert_eq!(
                r.is_ok(),
                expected,
                "{:?} on {:?}: {:?}",
                cmd,
                pos_before,
                r
            );
            if let (Some(_), Err(e)) = (&pos_before, r) {
                prop_assert_eq!(&e.code, "not-liquidatable");
            }
        }
        _ => {}
    }
    let Ok(response) = result else { return Ok(()) };
    // Update the model.
    match (&cmd, &response) {
        (Command::Deposit { amount, .. }, _) => model.net_deposits += i128::from(*amount),
        (Command::Withdraw { amount, .. }, _) => model.net_deposits -= i128::from(*amount),
        (_, Response::Trade(t)) => {
            let key = key.clone().unwrap();
            let expected = match &cmd {
                Command::Trade { size, .. } | Command::Open { size, .. } => size_before + size,
                Command::Increase { amount, .. } => size_before + size_before.signum() * amount,
                Command::Reduce { amount, .. } => size_before - size_before.signum() * amount,
                Command::Close { .. } => 0,
                other => unreachable!("{other:?}"),
            };
            prop_assert_eq!(t.size_before, size_before);
            prop_assert_eq!(t.size_after, expected, "{:?}", cmd);
            model.sizes.insert(key.clone(), expected);
            model.realized += i128::from(t.realized_pnl);
            if matches!(
                t.kind,
                TradeKind::Open | TradeKind::Increase | TradeKind::Flip
            ) {
                let p = position(h, &key.0, &key.1).expect("position after an open/increase");
                prop_assert!(p.equity >= p.initial_requirement, "{:?} left {:?}", cmd, p);
                prop_assert!(
                    !p.liquidatable && p.equity >= p.maintenance_requirement,
                    "{:?} left {:?}",
                    cmd,
                    p
                );
                prop_assert_eq!(t.position.as_ref(), Some(&p));
            }
        }
        (Command::Liquidate { .. }, Response::Liquidation(l)) => {
            model.sizes.insert(key.clone().unwrap(), 0);
            model.realized += i128::from(l.realized_pnl);
        }
        _ => {}
    }
    Ok(())
}

fn check_invariants(h: &Harness<Perp>, model: &mut Model) -> Result<(), TestCaseError> {
    let t = totals(h);
    prop_assert!(
        t.conserved && t.funding_balanced && t.open_interest_consistent,
        "{:?}",
        t
    );
    prop_assert_eq!(t.realized_pnl, model.realized);
    prop_assert_eq!(t.deposits - t.withdrawals, model.net_deposits);
    prop_assert_eq!(
        t.free_collateral + t.position_margin + t.insurance_fund + t.funding_pools,
        model.net_deposits + model.realized
    );
    prop_assert_eq!(t.funding_paid, t.funding_pools + t.funding_residue);
    prop_assert!(
        t.funding_residue >= model.residue,
        "residue decreased: {:?}",
        t
    );
    model.residue = t.funding_residue;
    for ((user, market), size) in &model.sizes {
        prop_assert_eq!(
            position(h, user, market).map_or(0, |p| p.size),
            *size,
            "{} {}",
            user,
            market
        );
    }
    for (market, ..) in sim::MARKETS {
        if let Ok(Answer::Market(m)) = h.query(Query::Market {
            market: market.to_owned(),
        }) && m.open_interest_long == 0
            && m.open_interest_short == 0
        {
            prop_assert_eq!(m.funding_pool, 0, "pool of an empty market holds residue");
        }
    }
    Ok(())
}

/// Runs `ops` from the common setup, checking everything after each step,
/// then closes every position and checks that funding netted to zero.
fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut h = Harness::<Perp>::new();
    let mut model = Model::default();
    for cmd in sim::setup() {
        step(&mut h, &mut model, cmd)?;
    }
    for &op in ops {
        step(&mut h, &mut model, sim::command(op))?;
        check_invariants(&h, &mut model)?;
    }
    let open: Vec<_> = model
        .sizes
        .iter()
        .filter(|e| *e.1 != 0)
        .map(|e| e.0.clone())
        .collect();
    for (user, market) in open {
        step(&mut h, &mut model, Command::Close { user, market })?;
        check_invariants(&h, &mut model)?;
    }
    let t = totals(&h);
    prop_assert_eq!(t.positions, 0);
    prop_assert_eq!(t.funding_pools, 0);
    prop_assert_eq!(t.funding_paid, t.funding_residue);
    prop_assert_eq!(
        t.free_collateral + t.insurance_fund,
        model.net_deposits + model.realized
    );
    Ok(())
}

fn op() -> impl Strategy<Value = Op> {
    (
        0..sim::KINDS,
        0..3u8,
        0..sim::MARKET_CHOICES,
        -sim::X_MAX..=sim::X_MAX,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn conservation_margin_and_refusals_hold(ops in prop::collection::vec(op(), 1..150)) {
        run(&ops)?;
    }
}

/// Funding-heavy sequences: many funding rounds between trades, so lazy
/// settlement and rounding get exercised hard.
fn funding_heavy_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (Just(13u8), 0..3u8, 0..8u8, -sim::X_MAX..=sim::X_MAX),
        3 => (2..6u8, 0..3u8, 0..8u8, -sim::X_MAX..=sim::X_MAX),
        1 => (Just(10u8), 0..3u8, 0..8u8, -5i64..=5),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn funding_nets_to_zero_with_residue_to_insurance(ops in prop::collection::vec(funding_heavy_op(), 1..150)) {
        run(&ops)?;
    }
}

/// Integers from the edges of the range as well as ordinary ones.
fn wild() -> impl Strategy<Value = i64> {
    prop_oneof![
        2 => -50i64..50,
        1 => prop::sample::select(vec![i64::MIN, i64::MIN + 1, i64::MAX, i64::MAX - 1, 1 << 32, -(1 << 32), 1 << 62, -(1 << 62)]),
        1 => any::<i64>(),
    ]
}

fn wild_command() -> impl Strategy<Value = Command> {
    let user = prop::sample::select(vec!["ann", "bob"]).prop_map(str::to_owned);
    let market = prop::sample::select(vec!["BTC", "ETH", "NOPE"]).prop_map(str::to_owned);
    prop_oneof![
        (user.clone(), wild()).prop_map(|(user, amount)| Command::Deposit { user, amount }),
        (user.clone(), wild()).prop_map(|(user, amount)| Command::Withdraw { user, amount }),
        (
            user.clone(),
            market.clone(),
            wild(),
            prop::option::of(wild())
        )
            .prop_map(|(user, market, size, margin)| Command::Trade {
                user,
                market,
                size,
                margin
            }),
        (user.clone(), market.clone(), wild()).prop_map(|(user, market, amount)| Command::Reduce {
            user,
            market,
            amount
        }),
        (user.clone(), market.clone()).prop_map(|(user, market)| Command::Close { user, market }),
        (market.clone(), wild()).prop_map(|(market, price)| Command::SetMark { market, price }),
        (market.clone(), wild())
            .prop_map(|(market, rate_ppm)| Command::ApplyFunding { market, rate_ppm }),
        (user.clone(), market.clone(), wild()).prop_map(|(user, market, amount)| {
            Command::AdjustMargin {
                user,
                market,
                amount,
            }
        }),
        (user, market).prop_map(|(user, market)| Command::Liquidate { user, market }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Extreme sizes, prices, amounts and rates: every command either
    /// succeeds or is refused with a clear error (never a panic: this runs
    /// with overflow checks on, so any unchecked arithmetic would trap), and
    /// conservation still holds exactly.
    #[test]
    fn extreme_values_never_trap(cmds in prop::collection::vec(wild_command(), 1..80)) {
        let mut h = Harness::<Perp>::new();
        let mut model = Model::default();
        for cmd in sim::setup() {
            step(&mut h, &mut model, cmd)?;
        }
        for cmd in cmds {
            let before = h.dump();
            match h.handle(cmd.clone()) {
                Ok(_) => {}
                Err(e) => {
                    prop_assert!(e.code != "trap", "{:?} trapped: {}", cmd, e);
                    prop_assert_eq!(&h.dump(), &before);
                }
            }
            let t = totals(&h);
            prop_assert!(t.conserved && t.funding_balanced && t.open_interest_consistent, "{:?}", t);
        }
    }
}
