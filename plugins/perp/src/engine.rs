//! The state-changing commands.
//!
//! Every command loads the few rows it needs, computes the new rows in
//! memory with checked fixed-point arithmetic, and writes them at the end.
//! Any refusal returns an `Err` (the host then discards whatever was
//! written), so a refused command changes nothing.
//!
//! ## Money model (isolated margin)
//!
//! Trades execute at the market's mark price against the venue. Each
//! position holds its own margin, moved from (and back to) the user's free
//! collateral. Every movement of money is a transfer between these balances:
//! free collateral, position margin, a market's funding pool and the
//! insurance fund — plus realized trading PnL, which is the venue's
//! counterparty leg. Hence, exactly and at every commit:
//!
//! ```text
//! Σ free_collateral + Σ position margin + insurance_fund + Σ funding_pool
//!     = Σ deposits − Σ withdrawals + Σ realized_pnl
//! ```
//!
//! ## Funding (lazy, zero-sum, residue to the insurance fund)
//!
//! `apply_funding(rate_ppm)` charges `mark × |rate| / 10⁶` per unit of the
//! *matched* open interest `min(OI_long, OI_short)` from the paying side
//! (longs when the rate is positive) to the receiving side, pro rata within
//! each side. It only moves two per-side cumulative indexes (no position is
//! touched): the payer index rises by `ceil(per_unit × matched / OI_payer)`,
//! the receiver index falls by `floor(per_unit × matched / OI_receiver)`.
//! A position settles lazily, whenever it is next touched, owing
//! `ceil(|size| × Δindex / SCALE)`; settlement moves that amount between its
//! margin and the market's funding pool. Both roundings favour the pool, so
//! Σ settled ≥ the exact transfer, which is zero: once a market has no open
//! position, its pool holds exactly the rounding residue (≥ 0), which is
//! moved to the insurance fund and counted in `ledger.funding_residue`.
//! Funding therefore nets to zero across longs and shorts exactly:
//! `Σ account.funding_paid = Σ funding_pool + ledger.funding_residue`.

use keel_guest::Error;

use crate::fixed::{self, FUNDING_INDEX_SCALE, PPM};
use crate::state::{
    ACCOUNTS, Account, LEDGER, LEDGER_KEY, Ledger, MARKETS, Market, POSITIONS, Position, Side,
    bump, debit,
};
use crate::{FundingReport, LiquidationReport, MarketView, Response, TradeKind, TradeReport, view};

/// Longest user or market id, in bytes.
pub const ID_BYTES_MAX: usize = 64;
/// Largest funding rate per application, in ppm (10 %): a larger one is
/// certainly a typo, and the bound keeps index arithmetic far from overflow.
pub const FUNDING_RATE_PPM_MAX: i64 = 100_000;
/// Largest mark price (quote units per unit of size).
pub const PRICE_MAX: i64 = 1_000_000_000;
/// Largest absolute position size (units of size).
pub const POSITION_SIZE_MAX: i64 = 1_000_000_000;
// With both bounds a notional and an open notional stay within ±1e18, so
// unrealized and realized PnL (a difference of two of them) always fit an
// i64: a position can always be valued, closed and liquidated, whatever the
// mark does. Choose units accordingly (e.g. µUSD per 0.001 BTC: 1e8 at
// 100 000 USD, and up to 1e6 BTC per position).
const _: () = assert!((PRICE_MAX as i128) * (POSITION_SIZE_MAX as i128) * 2 <= i64::MAX as i128);

/// What a trading command insists on, beyond the signed size change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// `trade`: whatever the size change means (open, increase, reduce, close, flip).
    Any,
    /// `open`: there must be no position yet.
    Open,
    /// `increase`, `reduce`, `close`: there must be a position (the size
    /// change was derived from it).
    Existing,
}

pub fn check_id(what: &str, id: &str) -> Result<(), Error> {
    if id.is_empty() || id.len() > ID_BYTES_MAX || id.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "{what} id {id:?} must be 1..={ID_BYTES_MAX} bytes without control characters"
        )));
    }
    Ok(())
}

fn check_price(what: &str, price: i64) -> Result<(), Error> {
    if price <= 0 || price > PRICE_MAX {
        return Err(Error::invalid(format!(
            "{what} must be in 1..={PRICE_MAX}, got {price}"
        )));
    }
    Ok(())
}

fn positive(what: &str, v: i64) -> Result<(), Error> {
    if v <= 0 {
        return Err(Error::invalid(format!("{what} must be positive, got {v}")));
    }
    Ok(())
}

pub fn load_market(id: &str) -> Result<Market, Error> {
    check_id("market", id)?;
    MARKETS.get(&id.to_owned()).ok_or_else(|| {
        Error::new(
            "unknown-market",
            format!("no market {id:?}; create it with create_market"),
        )
    })
}

fn load_position(user: &str, market: &str) -> Result<Position, Error> {
    POSITIONS
        .get(&(user.to_owned(), market.to_owned()))
        .ok_or_else(|| {
            Error::new(
                "no-position",
                format!("user {user:?} has no position in {market:?}"),
            )
        })
}

fn ledger(slot: &mut Option<Ledger>) -> &mut Ledger {
    slot.get_or_insert_with(|| LEDGER.get(&LEDGER_KEY).unwrap_or_default())
}

fn save_ledger(slot: Option<Ledger>) {
    if let Some(l) = slot {
        LEDGER.put(&LEDGER_KEY, &l);
    }
}

/// Settles the position's pending funding into its margin and the pool.
fn settle_funding(
    market: &mut Market,
    pos: &mut Position,
    account: &mut Account,
) -> Result<i64, Error> {
    let owed = pos.pending_funding(market)?;
    pos.funding_snapshot = market.funding_index(Side::of(pos.size));
    if owed != 0 {
        debit(&mut pos.margin, owed, "position margin")?;
        bump(&mut market.funding_pool, owed, "funding pool")?;
        bump(&mut account.funding_paid, owed, "funding paid")?;
    }
    Ok(owed)
}

/// Once a market has no open position, its pool holds only rounding residue:
/// move it to the insurance fund.
fn sweep_residue(market: &mut Market, slot: &mut Option<Ledger>) -> Result<(), Error> {
    if market.open_interest_long == 0 && market.open_interest_short == 0 && market.funding_pool != 0
    {
        let pool = std::mem::take(&mut market.funding_pool);
        let l = ledger(slot);
        bump(&mut l.insurance_fund, pool, "insurance fund")?;
        bump(&mut l.funding_residue, pool, "funding residue")?;
    }
    Ok(())
}

fn abs(v: i64, what: &str) -> Result<i64, Error> {
    v.checked_abs().ok_or_else(|| fixed::overflow(what))
}

/// Adds `delta` (same sign as the position, or any sign for a new one) at
/// the mark, then assigns margin: `margin` if given, else the least that
/// meets the initial requirement. Returns the margin added.
fn add_size(
    market: &mut Market,
    pos: &mut Position,
    account: &mut Account,
    delta: i64,
    margin: Option<i64>,
) -> Result<i64, Error> {
    let new_size = pos
        .size
        .checked_add(delta)
        .filter(|s| s.unsigned_abs() <= POSITION_SIZE_MAX as u64);
    if new_size.is_none() {
        return Err(Error::new(
            "position-too-large",
            format!(
                "a position's size is limited to ±{POSITION_SIZE_MAX}; this trade would take it beyond"
            ),
        ));
    }
    let price = i128::from(market.mark_price);
    let cost = fixed::mul(i128::from(delta), price, "trade notional")?;
    pos.open_notional = fixed::to_i64(
        fixed::add(i128::from(pos.open_notional), cost, "open notional")?,
        "open notional",
    )?;
    bump(&mut pos.size, delta, "position size")?;
    market.add_open_interest(Side::of(delta), abs(delta, "size")?)?;
    let before = pos.value(market)?;
    let add = match margin {
        Some(m) => m,
        None => before
            .initial_requirement
            .saturating_sub(before.equity)
            .max(0),
    };
    if add > account.free_collateral {
        return Err(Error::new(
            "insufficient-collateral",
            format!(
                "the position needs {add} of margin but only {} of free collateral is available; deposit more or trade less",
                account.free_collateral
            ),
        ));
    }
    debit(&mut account.free_collateral, add, "free collateral")?;
    bump(&mut pos.margin, add, "position margin")?;
    let after = pos.value(market)?;
    if !after.meets_initial() {
        return Err(Error::new(
            "insufficient-margin",
            format!(
                "the position would have equity {} below its initial margin requirement {} ({} bps < {} bps); add at least {} more margin",
                after.equity,
                after.initial_requirement,
                after.margin_ratio_bps,
                market.initial_margin_bps,
                after.initial_requirement.saturating_sub(after.equity)
            ),
        ));
    }
    Ok(add)
}

/// What closing part of a position yields.
struct Closed {
    realized_pnl: i64,
    released: i64,
}

/// Closes `part` of the position (same sign as its size, `|part| ≤ |size|`)
/// at the mark. Funding must be settled. The closed fraction's share of the
/// position's equity is released to free collateral (nothing when equity is
/// not positive); the rest stays as the position's margin.
fn close_part(
    market: &mut Market,
    pos: &mut Position,
    account: &mut Account,
    part: i64,
) -> Result<Closed, Error> {
    let size = i128::from(pos.size);
    let c = i128::from(part);
    let notional = i128::from(pos.open_notional);
    let price = i128::from(market.mark_price);
    // Cost basis of the closed part; truncation only moves PnL between
    // partial closes (a full close releases the exact remainder).
    let basis = fixed::div_trunc(fixed::mul(notional, c, "cost basis")?, size, "cost basis")?;
    let realized = fixed::sub(
        fixed::mul(c, price, "closed notional")?,
        basis,
        "realized PnL",
    )?;
    let equity = fixed::add(
        i128::from(pos.margin),
        fixed::sub(
            fixed::mul(size, price, "position value")?,
            notional,
            "unrealized PnL",
        )?,
        "equity",
    )?;
    // c / size ∈ (0, 1], so this is floor(equity × fraction) for equity > 0.
    let released = if equity > 0 {
        fixed::div_trunc(
            fixed::mul(equity, c, "released margin")?,
            size,
            "released margin",
        )?
    } else {
        0
    };
    let realized = fixed::to_i64(realized, "realized PnL")?;
    let released = fixed::to_i64(released, "released margin")?;
    pos.open_notional = fixed::to_i64(
        fixed::sub(notional, basis, "open notional")?,
        "open notional",
    )?;
    debit(&mut pos.size, part, "position size")?;
    bump(&mut pos.margin, realized, "position margin")?;
    debit(&mut pos.margin, released, "position margin")?;
    bump(&mut pos.realized_pnl, realized, "realized PnL")?;
    market.add_open_interest(Side::of(part), -abs(part, "size")?)?;
    bump(&mut account.free_collateral, released, "free collateral")?;
    bump(&mut account.realized_pnl, realized, "realized PnL")?;
    Ok(Closed {
        realized_pnl: realized,
        released,
    })
}

fn classify(size: i64, delta: i64) -> TradeKind {
    if size == 0 {
        TradeKind::Open
    } else if (size > 0) == (delta > 0) {
        TradeKind::Increase
    } else {
        match delta.unsigned_abs().cmp(&size.unsigned_abs()) {
            std::cmp::Ordering::Less => TradeKind::Reduce,
            std::cmp::Ordering::Equal => TradeKind::Close,
            std::cmp::Ordering::Greater => TradeKind::Flip,
        }
    }
}

fn new_position(market: &Market, size_sign: i64) -> Position {
    Position {
        size: 0,
        open_notional: 0,
        margin: 0,
        funding_snapshot: market.funding_index(Side::of(size_sign)),
        realized_pnl: 0,
    }
}

/// Changes `user`'s position in `market_id` by the signed `delta` at the mark.
pub fn trade(
    user: &str,
    market_id: &str,
    delta: i64,
    margin: Option<i64>,
    intent: Intent,
) -> Result<Response, Error> {
    check_id("user", user)?;
    if delta == 0 {
        return Err(Error::invalid("size must not be 0"));
    }
    abs(delta, "size")?;
    if let Some(m) = margin
        && m < 0
    {
        return Err(Error::invalid(format!(
            "margin must not be negative, got {m}"
        )));
    }
    let market = load_market(market_id)?;
    let existing = POSITIONS.get(&(user.to_owned(), market_id.to_owned()));
    trade_loaded(user, market_id, market, existing, delta, margin, intent)
}

/// [`trade`] once the market and the position are loaded.
fn trade_loaded(
    user: &str,
    market_id: &str,
    mut market: Market,
    existing: Option<Position>,
    delta: i64,
    margin: Option<i64>,
    intent: Intent,
) -> Result<Response, Error> {
    let key = (user.to_owned(), market_id.to_owned());
    match (intent, &existing) {
        (Intent::Open, Some(p)) => {
            return Err(Error::new(
                "position-exists",
                format!(
                    "user {user:?} already has a position of {} in {market_id:?}; use increase, reduce or trade",
                    p.size
                ),
            ));
        }
        (Intent::Existing, None) => return Err(load_position(user, market_id).unwrap_err()),
        _ => {}
    }
    let size_before = existing.as_ref().map_or(0, |p| p.size);
    let kind = classify(size_before, delta);
    if margin.is_some() && matches!(kind, TradeKind::Reduce | TradeKind::Close) {
        return Err(Error::invalid(
            "margin applies only to opens, increases and flips; a reduce or close releases margin",
        ));
    }
    let mut account = ACCOUNTS.get(&user.to_owned()).unwrap_or_default();
    let mut ledger_slot = None;
    let mut funding_settled = 0;
    let mut realized_pnl = 0;
    let mut released = 0;
    let mut margin_added = 0;
    let mut bad_debt = 0;
    let mut pos = match existing {
        Some(mut p) => {
            funding_settled = settle_funding(&mut market, &mut p, &mut account)?;
            p
        }
        None => new_position(&market, delta),
    };
    match kind {
        TradeKind::Open | TradeKind::Increase => {
            margin_added = add_size(&mut market, &mut pos, &mut account, delta, margin)?;
        }
        TradeKind::Reduce | TradeKind::Close | TradeKind::Flip => {
            let part = if kind == TradeKind::Reduce {
                -delta
            } else {
                pos.size
            };
            let closed = close_part(&mut market, &mut pos, &mut account, part)?;
            realized_pnl = closed.realized_pnl;
            released = closed.released;
            if pos.size == 0 {
                // What is left is zero, or the negative equity of a bankrupt
                // position: the insurance fund absorbs it.
                let left = pos.margin;
                if left != 0 {
                    let l = ledger(&mut ledger_slot);
                    bump(&mut l.insurance_fund, left, "insurance fund")?;
                    debit(&mut l.bad_debt, left, "bad debt")?;
                    bad_debt = left
                        .checked_neg()
                        .ok_or_else(|| fixed::overflow("bad debt"))?;
                }
                if kind == TradeKind::Flip {
                    let rest = fixed::to_i64(
                        fixed::add(i128::from(delta), i128::from(size_before), "flip size")?,
                        "flip size",
                    )?;
                    pos = new_position(&market, rest);
                    margin_added = add_size(&mut market, &mut pos, &mut account, rest, margin)?;
                }
            }
        }
    }
    sweep_residue(&mut market, &mut ledger_slot)?;
    let position = if pos.size == 0 {
        POSITIONS.remove(&key);
        None
    } else {
        POSITIONS.put(&key, &pos);
        Some(view::position(user, market_id, &pos, &market)?)
    };
    MARKETS.put(&key.1, &market);
    ACCOUNTS.put(&key.0, &account);
    save_ledger(ledger_slot);
    Ok(Response::Trade(TradeReport {
        kind,
        user: key.0,
        market: key.1,
        price: market.mark_price,
        size_before,
        size_after: pos.size,
        realized_pnl,
        funding_settled,
        margin_added,
        collateral_released: released,
        bad_debt,
        free_collateral: account.free_collateral,
        position,
    }))
}

/// `increase`/`reduce`/`close` phrase the size change relative to the position.
pub fn relative(
    user: &str,
    market_id: &str,
    amount: Option<i64>,
    grow: bool,
    margin: Option<i64>,
) -> Result<Response, Error> {
    check_id("user", user)?;
    let market = load_market(market_id)?;
    let pos = load_position(user, market_id)?;
    let sign = pos.size.signum();
    let delta = match amount {
        None => pos
            .size
            .checked_neg()
            .ok_or_else(|| fixed::overflow("position size"))?,
        Some(a) => {
            positive("amount", a)?;
            if !grow && a > pos.size.unsigned_abs().min(i64::MAX as u64) as i64 {
                return Err(Error::new(
                    "reduce-too-large",
                    format!(
                        "cannot reduce by {a}: the position in {market_id:?} has size {}; use close, or trade to flip",
                        pos.size
                    ),
                ));
            }
            if grow { a * sign } else { -a * sign }
        }
    };
    trade_loaded(
        user,
        market_id,
        market,
        Some(pos),
        delta,
        margin,
        Intent::Existing,
    )
}

pub fn create_market(
    market: &str,
    mark_price: i64,
    initial_margin_bps: u32,
    maintenance_margin_bps: u32,
) -> Result<Response, Error> {
    check_id("market", market)?;
    check_price("mark_price", mark_price)?;
    if !(0 < maintenance_margin_bps
        && maintenance_margin_bps < initial_margin_bps
        && initial_margin_bps <= 10_000)
    {
        return Err(Error::invalid(format!(
            "margin ratios must satisfy 0 < maintenance ({maintenance_margin_bps}) < initial ({initial_margin_bps}) <= 10000 bps"
        )));
    }
    let id = market.to_owned();
    if MARKETS.contains(&id) {
        return Err(Error::new(
            "market-exists",
            format!("market {market:?} already exists"),
        ));
    }
    let m = Market {
        mark_price,
        initial_margin_bps,
        maintenance_margin_bps,
        open_interest_long: 0,
        open_interest_short: 0,
        funding_index_long: 0,
        funding_index_short: 0,
        funding_pool: 0,
        funding_rounds: 0,
        last_funding_rate_ppm: 0,
    };
    MARKETS.put(&id, &m);
    Ok(Response::Market(MarketView::of(market, &m)))
}

pub fn set_mark(market_id: &str, price: i64) -> Result<Response, Error> {
    check_price("price", price)?;
    let mut market = load_market(market_id)?;
    market.mark_price = price;
    MARKETS.put(&market_id.to_owned(), &market);
    Ok(Response::Market(MarketView::of(market_id, &market)))
}

pub fn apply_funding(market_id: &str, rate_ppm: i64) -> Result<Response, Error> {
    if rate_ppm.unsigned_abs() > FUNDING_RATE_PPM_MAX as u64 {
        return Err(Error::invalid(format!(
            "funding rate {rate_ppm} ppm is beyond ±{FUNDING_RATE_PPM_MAX} ppm per application"
        )));
    }
    let mut market = load_market(market_id)?;
    let long = i128::from(market.open_interest_long);
    let short = i128::from(market.open_interest_short);
    let matched = long.min(short);
    let (mut delta_long, mut delta_short) = (0i128, 0i128);
    if rate_ppm != 0 && matched > 0 {
        let per_unit = fixed::mul(
            fixed::mul(
                i128::from(market.mark_price),
                i128::from(rate_ppm.abs()),
                "funding per unit",
            )?,
            FUNDING_INDEX_SCALE / PPM,
            "funding per unit",
        )?;
        let total = fixed::mul(per_unit, matched, "funding total")?;
        let (payer_oi, receiver_oi) = if rate_ppm > 0 {
            (long, short)
        } else {
            (short, long)
        };
        let paid = fixed::div_ceil(total, payer_oi, "funding index")?;
        let received = fixed::div_floor(total, receiver_oi, "funding index")?;
        if rate_ppm > 0 {
            (delta_long, delta_short) = (paid, -received);
        } else {
            (delta_long, delta_short) = (-received, paid);
        }
        market.funding_index_long =
            fixed::add(market.funding_index_long, delta_long, "funding index")?;
        market.funding_index_short =
            fixed::add(market.funding_index_short, delta_short, "funding index")?;
    }
    market.funding_rounds = market
        .funding_rounds
        .checked_add(1)
        .ok_or_else(|| fixed::overflow("funding rounds"))?;
    market.last_funding_rate_ppm = rate_ppm;
    MARKETS.put(&market_id.to_owned(), &market);
    Ok(Response::Funding(FundingReport {
        market: market_id.to_owned(),
        rate_ppm,
        mark_price: market.mark_price,
        matched_open_interest: fixed::to_i64(matched, "open interest")?,
        index_delta_long: delta_long.to_string(),
        index_delta_short: delta_short.to_string(),
        funding_index_long: market.funding_index_long.to_string(),
        funding_index_short: market.funding_index_short.to_string(),
        applied: delta_long != 0 || delta_short != 0,
    }))
}

pub fn deposit(user: &str, amount: i64) -> Result<Response, Error> {
    check_id("user", user)?;
    positive("amount", amount)?;
    let id = user.to_owned();
    let mut account = ACCOUNTS.get(&id).unwrap_or_default();
    bump(&mut account.free_collateral, amount, "free collateral")?;
    let mut slot = None;
    bump(&mut ledger(&mut slot).deposits, amount, "total deposits")?;
    ACCOUNTS.put(&id, &account);
    save_ledger(slot);
    Ok(Response::Collateral(view::collateral(user, &account)))
}

pub fn withdraw(user: &str, amount: i64) -> Result<Response, Error> {
    check_id("user", user)?;
    positive("amount", amount)?;
    let id = user.to_owned();
    let mut account = ACCOUNTS.get(&id).ok_or_else(|| {
        Error::new(
            "unknown-account",
            format!("user {user:?} has never deposited"),
        )
    })?;
    if amount > account.free_collateral {
        return Err(Error::new(
            "insufficient-collateral",
            format!(
                "cannot withdraw {amount}: only {} of free collateral (collateral not assigned to positions)",
                account.free_collateral
            ),
        ));
    }
    debit(&mut account.free_collateral, amount, "free collateral")?;
    let mut slot = None;
    bump(
        &mut ledger(&mut slot).withdrawals,
        amount,
        "total withdrawals",
    )?;
    ACCOUNTS.put(&id, &account);
    save_ledger(slot);
    Ok(Response::Collateral(view::collateral(user, &account)))
}

/// Moves `amount` of free collateral into the position's margin (positive)
/// or back out of it (negative; the position must still meet its initial
/// requirement afterwards).
pub fn adjust_margin(user: &str, market_id: &str, amount: i64) -> Result<Response, Error> {
    check_id("user", user)?;
    if amount == 0 {
        return Err(Error::invalid("amount must not be 0"));
    }
    abs(amount, "amount")?;
    let mut market = load_market(market_id)?;
    let mut pos = load_position(user, market_id)?;
    let key = (user.to_owned(), market_id.to_owned());
    let mut account = ACCOUNTS.get(&key.0).unwrap_or_default();
    settle_funding(&mut market, &mut pos, &mut account)?;
    if amount > account.free_collateral {
        return Err(Error::new(
            "insufficient-collateral",
            format!(
                "cannot add {amount} of margin: only {} of free collateral",
                account.free_collateral
            ),
        ));
    }
    debit(&mut account.free_collateral, amount, "free collateral")?;
    bump(&mut pos.margin, amount, "position margin")?;
    if amount < 0 {
        let v = pos.value(&market)?;
        if !v.meets_initial() {
            let most = v
                .equity
                .saturating_add(-amount)
                .saturating_sub(v.initial_requirement)
                .max(0);
            return Err(Error::new(
                "insufficient-margin",
                format!(
                    "removing {} would leave equity {} below the initial margin requirement {}; at most {most} can be removed",
                    -amount, v.equity, v.initial_requirement
                ),
            ));
        }
    }
    POSITIONS.put(&key, &pos);
    MARKETS.put(&key.1, &market);
    ACCOUNTS.put(&key.0, &account);
    Ok(Response::Position(view::position(
        user, market_id, &pos, &market,
    )?))
}

/// Liquidates a position whose equity is below its maintenance requirement:
/// it is closed at the mark and its remaining equity (negative: bad debt)
/// goes to the insurance fund.
pub fn liquidate(user: &str, market_id: &str) -> Result<Response, Error> {
    check_id("user", user)?;
    let mut market = load_market(market_id)?;
    let mut pos = load_position(user, market_id)?;
    let v = pos.value(&market)?;
    if !v.below_maintenance() {
        return Err(Error::new(
            "not-liquidatable",
            format!(
                "position of {user:?} in {market_id:?} has equity {} at or above its maintenance requirement {} ({} bps >= {} bps)",
                v.equity,
                v.maintenance_requirement,
                v.margin_ratio_bps,
                market.maintenance_margin_bps
            ),
        ));
    }
    let key = (user.to_owned(), market_id.to_owned());
    let mut account = ACCOUNTS.get(&key.0).unwrap_or_default();
    let funding_settled = settle_funding(&mut market, &mut pos, &mut account)?;
    let size = pos.size;
    let realized = pos.unrealized_pnl(market.mark_price)?;
    let equity = fixed::to_i64(
        fixed::add(i128::from(pos.margin), i128::from(realized), "equity")?,
        "equity",
    )?;
    bump(&mut account.realized_pnl, realized, "realized PnL")?;
    market.add_open_interest(Side::of(size), -abs(size, "size")?)?;
    let mut slot = None;
    let l = ledger(&mut slot);
    bump(&mut l.insurance_fund, equity, "insurance fund")?;
    if equity < 0 {
        debit(&mut l.bad_debt, equity, "bad debt")?;
    }
    l.liquidations = l
        .liquidations
        .checked_add(1)
        .ok_or_else(|| fixed::overflow("liquidations"))?;
    sweep_residue(&mut market, &mut slot)?;
    let insurance_fund = ledger(&mut slot).insurance_fund;
    POSITIONS.remove(&key);
    MARKETS.put(&key.1, &market);
    ACCOUNTS.put(&key.0, &account);
    save_ledger(slot);
    Ok(Response::Liquidation(LiquidationReport {
        user: key.0,
        market: key.1,
        size,
        price: market.mark_price,
        realized_pnl: realized,
        funding_settled,
        to_insurance_fund: equity,
        insurance_fund,
    }))
}
