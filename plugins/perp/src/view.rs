//! Read-only answers: positions valued at the mark, accounts, markets, the
//! insurance fund and the conservation totals.

use keel_guest::{Direction, Error};

use crate::engine::{check_id, load_market};
use crate::fixed::{self, BPS};
use crate::state::{
    ACCOUNTS, Account, LEDGER, LEDGER_KEY, MARKETS, Market, POSITIONS, Position, Side,
};
use crate::{AccountView, CollateralView, InsuranceView, MarketView, PositionView, TotalsView};

impl MarketView {
    /// The view of a stored market.
    pub fn of(id: &str, m: &Market) -> MarketView {
        MarketView {
            market: id.to_owned(),
            mark_price: m.mark_price,
            initial_margin_bps: m.initial_margin_bps,
            maintenance_margin_bps: m.maintenance_margin_bps,
            open_interest_long: m.open_interest_long,
            open_interest_short: m.open_interest_short,
            funding_index_long: m.funding_index_long.to_string(),
            funding_index_short: m.funding_index_short.to_string(),
            funding_pool: m.funding_pool,
            funding_rounds: m.funding_rounds,
            last_funding_rate_ppm: m.last_funding_rate_ppm,
        }
    }
}

/// A position valued at its market's mark.
pub fn position(
    user: &str,
    market_id: &str,
    p: &Position,
    market: &Market,
) -> Result<PositionView, Error> {
    let v = p.value(market)?;
    Ok(PositionView {
        user: user.to_owned(),
        market: market_id.to_owned(),
        side: Side::of(p.size),
        size: p.size,
        entry_price: fixed::to_i64(
            fixed::div_trunc(
                i128::from(p.open_notional),
                i128::from(p.size),
                "entry price",
            )?,
            "entry price",
        )?,
        open_notional: p.open_notional,
        margin: p.margin,
        pending_funding: v.pending_funding,
        unrealized_pnl: v.unrealized_pnl,
        equity: v.equity,
        mark_price: market.mark_price,
        notional: v.notional,
        margin_ratio_bps: v.margin_ratio_bps,
        initial_requirement: v.initial_requirement,
        maintenance_requirement: v.maintenance_requirement,
        liquidatable: v.below_maintenance(),
        realized_pnl: p.realized_pnl,
    })
}

/// An account's collateral figures after a deposit or withdrawal.
pub fn collateral(user: &str, a: &Account) -> CollateralView {
    CollateralView {
        user: user.to_owned(),
        free_collateral: a.free_collateral,
        realized_pnl: a.realized_pnl,
        funding_paid: a.funding_paid,
    }
}

pub fn position_query(user: &str, market_id: &str) -> Result<PositionView, Error> {
    check_id("user", user)?;
    let market = load_market(market_id)?;
    let p = POSITIONS
        .get(&(user.to_owned(), market_id.to_owned()))
        .ok_or_else(|| {
            Error::new(
                "no-position",
                format!("user {user:?} has no position in {market_id:?}"),
            )
        })?;
    position(user, market_id, &p, &market)
}

pub fn market_query(market_id: &str) -> Result<MarketView, Error> {
    Ok(MarketView::of(market_id, &load_market(market_id)?))
}

pub fn markets() -> Vec<MarketView> {
    MARKETS
        .iter()
        .map(|(id, m)| MarketView::of(&id, &m))
        .collect()
}

pub fn account(user: &str) -> Result<AccountView, Error> {
    check_id("user", user)?;
    let a = ACCOUNTS.get(&user.to_owned()).ok_or_else(|| {
        Error::new(
            "unknown-account",
            format!("user {user:?} has never deposited"),
        )
    })?;
    let mut positions = Vec::new();
    let (mut margin, mut equity, mut upnl, mut notional) = (0i128, 0i128, 0i128, 0i128);
    for ((_, market_id), p) in POSITIONS.prefix(&(user.to_owned(),), Direction::Forward) {
        let market = load_market(&market_id)?;
        let v = position(user, &market_id, &p, &market)?;
        margin = fixed::add(margin, i128::from(v.margin), "total margin")?;
        equity = fixed::add(equity, i128::from(v.equity), "total equity")?;
        upnl = fixed::add(upnl, i128::from(v.unrealized_pnl), "total unrealized PnL")?;
        notional = fixed::add(notional, i128::from(v.notional), "total notional")?;
        positions.push(v);
    }
    let margin_ratio_bps = if notional > 0 {
        Some(fixed::div_floor(
            fixed::mul(equity, BPS, "margin ratio")?,
            notional,
            "margin ratio",
        )?)
    } else {
        None
    };
    let free = i128::from(a.free_collateral);
    Ok(AccountView {
        user: user.to_owned(),
        free_collateral: a.free_collateral,
        collateral: fixed::add(free, margin, "collateral")?,
        equity: fixed::add(free, equity, "equity")?,
        unrealized_pnl: upnl,
        notional,
        margin_ratio_bps,
        realized_pnl: a.realized_pnl,
        funding_paid: a.funding_paid,
        positions,
    })
}

pub fn insurance_fund() -> InsuranceView {
    let l = LEDGER.get(&LEDGER_KEY).unwrap_or_default();
    InsuranceView {
        insurance_fund: l.insurance_fund,
        funding_residue: l.funding_residue,
        bad_debt: l.bad_debt,
        liquidations: l.liquidations,
    }
}

/// Positions of `market_id` below maintenance (a full scan: for liquidators
/// and operators, not for the hot path).
pub fn liquidatable(market_id: &str) -> Result<Vec<PositionView>, Error> {
    let market = load_market(market_id)?;
    let mut out = Vec::new();
    for ((user, m), p) in POSITIONS.iter() {
        if m == market_id {
            let v = position(&user, &m, &p, &market)?;
            if v.liquidatable {
                out.push(v);
            }
        }
    }
    Ok(out)
}

/// Sums every balance (full scans) and states the conservation identities.
pub fn totals() -> Result<TotalsView, Error> {
    let l = LEDGER.get(&LEDGER_KEY).unwrap_or_default();
    let mut t = TotalsView {
        insurance_fund: l.insurance_fund.into(),
        deposits: l.deposits.into(),
        withdrawals: l.withdrawals.into(),
        funding_residue: l.funding_residue.into(),
        bad_debt: l.bad_debt.into(),
        ..TotalsView::default()
    };
    for (_, a) in ACCOUNTS.iter() {
        t.accounts += 1;
        t.free_collateral = fixed::add(t.free_collateral, a.free_collateral.into(), "total")?;
        t.realized_pnl = fixed::add(t.realized_pnl, a.realized_pnl.into(), "total")?;
        t.funding_paid = fixed::add(t.funding_paid, a.funding_paid.into(), "total")?;
    }
    let mut size_long = 0i128;
    let mut size_short = 0i128;
    for (_, p) in POSITIONS.iter() {
        t.positions += 1;
        t.position_margin = fixed::add(t.position_margin, p.margin.into(), "total")?;
        if p.size > 0 {
            size_long += i128::from(p.size);
        } else {
            size_short -= i128::from(p.size);
        }
    }
    for (_, m) in MARKETS.iter() {
        t.markets += 1;
        t.funding_pools = fixed::add(t.funding_pools, m.funding_pool.into(), "total")?;
        t.open_interest_long += i128::from(m.open_interest_long);
        t.open_interest_short += i128::from(m.open_interest_short);
    }
    t.holdings = [
        t.free_collateral,
        t.position_margin,
        t.insurance_fund,
        t.funding_pools,
    ]
    .into_iter()
    .try_fold(0i128, |acc, v| fixed::add(acc, v, "total"))?;
    t.expected_holdings = fixed::add(
        fixed::sub(t.deposits, t.withdrawals, "total")?,
        t.realized_pnl,
        "total",
    )?;
    t.conserved = t.holdings == t.expected_holdings;
    t.funding_balanced = t.funding_paid == fixed::add(t.funding_pools, t.funding_residue, "total")?;
    t.open_interest_consistent =
        t.open_interest_long == size_long && t.open_interest_short == size_short;
    Ok(t)
}
