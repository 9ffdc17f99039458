//! Stored rows, their tables, and the calculations on them.
//!
//! Layout (a trading command reads and writes three rows: its market, its
//! account and its position; the ledger row only when the insurance fund or
//! the deposit totals move):
//!
//! | table | key | value |
//! |---|---|---|
//! | `markets` | market id | [`Market`] |
//! | `accounts` | user id | [`Account`] |
//! | `positions` | (user id, market id) | [`Position`] |
//! | `ledger` | `0` | [`Ledger`] |

use keel_guest::{Error, Table};
use serde::{Deserialize, Serialize};

use crate::fixed::{self, BPS, FUNDING_INDEX_SCALE};

/// market id → market.
pub const MARKETS: Table<String, Market> = Table::new("markets");
/// user id → account.
pub const ACCOUNTS: Table<String, Account> = Table::new("accounts");
/// (user id, market id) → position. A user's positions are one prefix scan.
pub const POSITIONS: Table<(String, String), Position> = Table::new("positions");
/// The single ledger row (insurance fund and system totals).
pub const LEDGER: Table<u8, Ledger> = Table::new("ledger");
/// Key of the single ledger row.
pub const LEDGER_KEY: u8 = 0;

/// A perpetual market.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Market {
    /// Mark price: quote units per unit of size. Always > 0.
    pub mark_price: i64,
    /// Initial margin ratio (bps of notional) required after an open or increase.
    pub initial_margin_bps: u32,
    /// Maintenance margin ratio (bps); below it a position can be liquidated.
    pub maintenance_margin_bps: u32,
    /// Sum of the sizes of long positions.
    pub open_interest_long: i64,
    /// Sum of the absolute sizes of short positions.
    pub open_interest_short: i64,
    /// Cumulative funding owed per unit of long size, × [`FUNDING_INDEX_SCALE`]
    /// (negative increments: longs receive).
    pub funding_index_long: i128,
    /// Cumulative funding owed per unit of short size, × [`FUNDING_INDEX_SCALE`].
    pub funding_index_short: i128,
    /// Funding collected from positions minus funding paid to positions.
    /// Settlement is lazy, so this is temporarily positive or negative; once
    /// no position is open it holds only the rounding residue (≥ 0), which is
    /// then moved to the insurance fund.
    pub funding_pool: i64,
    /// How many times funding was applied.
    pub funding_rounds: u64,
    /// The last funding rate applied (ppm; positive: longs pay shorts).
    pub last_funding_rate_ppm: i64,
}

/// Which side a position is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Positive size.
    Long,
    /// Negative size.
    Short,
}

impl Side {
    /// The side of a non-zero signed size.
    pub fn of(size: i64) -> Side {
        if size > 0 { Side::Long } else { Side::Short }
    }
}

impl Market {
    /// The cumulative funding index of `side`.
    pub fn funding_index(&self, side: Side) -> i128 {
        match side {
            Side::Long => self.funding_index_long,
            Side::Short => self.funding_index_short,
        }
    }

    /// Adds `delta_abs` to the open interest of `side` (negative: removes).
    pub fn add_open_interest(&mut self, side: Side, delta_abs: i64) -> Result<(), Error> {
        let oi = match side {
            Side::Long => &mut self.open_interest_long,
            Side::Short => &mut self.open_interest_short,
        };
        *oi = oi
            .checked_add(delta_abs)
            .ok_or_else(|| fixed::overflow("open interest"))?;
        Ok(())
    }
}

/// A user's collateral account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Collateral not assigned to any position: what can be withdrawn or
    /// used as margin.
    pub free_collateral: i64,
    /// Trading PnL realized on reduces, closes and liquidations, cumulative.
    pub realized_pnl: i64,
    /// Funding settled from this user's positions, cumulative (positive:
    /// paid; negative: received).
    pub funding_paid: i64,
}

/// A position: isolated margin, signed size, exact cost basis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Signed size (positive long, negative short); never 0 in storage.
    pub size: i64,
    /// Σ size × price of the size still open (same sign as `size`). Kept
    /// exactly, so unrealized PnL is exact; the entry price shown is
    /// `open_notional / size`.
    pub open_notional: i64,
    /// Collateral assigned to this position, after settled funding and
    /// realized PnL. Negative only for a bankrupt position (bad debt).
    pub margin: i64,
    /// The side's funding index at the last settlement.
    pub funding_snapshot: i128,
    /// PnL realized on this position since it was opened.
    pub realized_pnl: i64,
}

/// What a position is worth at the mark, funding included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Valuation {
    /// Funding owed and not yet settled (negative: to receive).
    pub pending_funding: i64,
    /// `size × mark − open_notional`.
    pub unrealized_pnl: i64,
    /// `margin − pending_funding + unrealized_pnl`.
    pub equity: i64,
    /// `|size| × mark`.
    pub notional: i64,
    /// `ceil(notional × initial_margin_bps / 10_000)`.
    pub initial_requirement: i64,
    /// `ceil(notional × maintenance_margin_bps / 10_000)`.
    pub maintenance_requirement: i64,
    /// `floor(equity × 10_000 / notional)`.
    pub margin_ratio_bps: i64,
}

impl Valuation {
    /// Whether the position is below maintenance (`equity < maintenance_requirement`,
    /// i.e. `equity × 10_000 < notional × maintenance_margin_bps` exactly).
    pub fn below_maintenance(&self) -> bool {
        self.equity < self.maintenance_requirement
    }

    /// Whether the position meets the initial requirement.
    pub fn meets_initial(&self) -> bool {
        self.equity >= self.initial_requirement
    }
}

impl Position {
    /// Funding owed since the last settlement, rounded toward owing more
    /// (`ceil(|size| × Δindex / SCALE)`): the rounding residue stays with
    /// the market's pool and ends in the insurance fund, never created from
    /// nothing.
    pub fn pending_funding(&self, market: &Market) -> Result<i64, Error> {
        let delta = fixed::sub(
            market.funding_index(Side::of(self.size)),
            self.funding_snapshot,
            "funding index",
        )?;
        let owed = fixed::mul(i128::from(self.size).abs(), delta, "funding owed")?;
        fixed::to_i64(
            fixed::div_ceil(owed, FUNDING_INDEX_SCALE, "funding owed")?,
            "funding owed",
        )
    }

    /// Unrealized PnL at `price`: `size × price − open_notional`.
    pub fn unrealized_pnl(&self, price: i64) -> Result<i64, Error> {
        let value = fixed::mul(i128::from(self.size), i128::from(price), "position value")?;
        fixed::to_i64(
            fixed::sub(value, i128::from(self.open_notional), "unrealized PnL")?,
            "unrealized PnL",
        )
    }

    /// The position valued at the market's mark.
    pub fn value(&self, market: &Market) -> Result<Valuation, Error> {
        let pending_funding = self.pending_funding(market)?;
        let unrealized_pnl = self.unrealized_pnl(market.mark_price)?;
        let equity = fixed::add(
            fixed::sub(
                i128::from(self.margin),
                i128::from(pending_funding),
                "equity",
            )?,
            i128::from(unrealized_pnl),
            "equity",
        )?;
        let notional = fixed::mul(
            i128::from(self.size).abs(),
            i128::from(market.mark_price),
            "notional",
        )?;
        let requirement = |bps: u32| -> Result<i64, Error> {
            let scaled = fixed::mul(notional, i128::from(bps), "margin requirement")?;
            fixed::to_i64(
                fixed::div_ceil(scaled, BPS, "margin requirement")?,
                "margin requirement",
            )
        };
        let ratio = fixed::div_floor(
            fixed::mul(equity, BPS, "margin ratio")?,
            notional,
            "margin ratio",
        )?;
        Ok(Valuation {
            pending_funding,
            unrealized_pnl,
            equity: fixed::to_i64(equity, "equity")?,
            notional: fixed::to_i64(notional, "notional")?,
            initial_requirement: requirement(market.initial_margin_bps)?,
            maintenance_requirement: requirement(market.maintenance_margin_bps)?,
            margin_ratio_bps: fixed::to_i64(ratio, "margin ratio")?,
        })
    }
}

/// System-wide balances: the insurance fund and the totals that make
/// conservation checkable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// The insurance fund. Receives liquidated positions' remaining equity
    /// and funding rounding residue; pays bad debt (negative equity of
    /// closed or liquidated positions). Negative means an uncovered deficit.
    pub insurance_fund: i64,
    /// Σ deposits, cumulative.
    pub deposits: i64,
    /// Σ withdrawals, cumulative.
    pub withdrawals: i64,
    /// Funding rounding residue moved from market pools to the insurance fund.
    pub funding_residue: i64,
    /// Bad debt the insurance fund absorbed (Σ of negative equity at close
    /// or liquidation, as a positive number).
    pub bad_debt: i64,
    /// Liquidations performed.
    pub liquidations: u64,
}

/// Subtracts `amount` from an `i64` field, or fails with an overflow error naming `what`.
pub fn debit(field: &mut i64, amount: i64, what: &str) -> Result<(), Error> {
    *field = field
        .checked_sub(amount)
        .ok_or_else(|| fixed::overflow(what))?;
    Ok(())
}

/// Adds `delta` to an `i64` field, or fails with an overflow error naming `what`.
pub fn bump(field: &mut i64, delta: i64, what: &str) -> Result<(), Error> {
    *field = field
        .checked_add(delta)
        .ok_or_else(|| fixed::overflow(what))?;
    Ok(())
}
