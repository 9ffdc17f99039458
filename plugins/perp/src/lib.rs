//! Perpetual positions: markets with an operator-set mark price, isolated
//! margin per position, realized and unrealized PnL, lazy funding through
//! cumulative indexes, liquidation into an insurance fund.
//!
//! Units: all amounts (collateral, margin, PnL, funding) are integers in the
//! quote currency's smallest unit; sizes are signed integers in the
//! contract's smallest unit; a price is quote units per unit of size, so a
//! notional is exactly `|size| × price`. Prices are at most [`PRICE_MAX`] and
//! position sizes at most [`POSITION_SIZE_MAX`] (1e9 each), so every
//! position can always be valued and closed. Margin ratios are in basis points,
//! funding rates in parts per million per application. Products are computed
//! in `i128` with checked arithmetic; anything that leaves the range is an
//! `overflow` error. See [`engine`] for the money model, the conservation
//! identity and the funding rounding argument.
//!
//! Commands (JSON):
//! ```text
//! {"create_market": {"market": "BTC", "mark_price": 50000, "initial_margin_bps": 1000, "maintenance_margin_bps": 500}}  // operator
//! {"set_mark": {"market": "BTC", "price": 51000}}                // operator
//! {"apply_funding": {"market": "BTC", "rate_ppm": 100}}          // operator; > 0: longs pay shorts
//! {"deposit": {"user": "alice", "amount": 1000000}}              // operator
//! {"withdraw": {"user": "alice", "amount": 5000}}                // free collateral only
//! {"trade": {"user": "alice", "market": "BTC", "size": -3}}      // signed: open/increase/reduce/close/flip
//! {"open": {"user": "alice", "market": "BTC", "size": 10, "margin": 80000}}  // margin optional
//! {"increase": {"user": "alice", "market": "BTC", "amount": 5}}
//! {"reduce": {"user": "alice", "market": "BTC", "amount": 2}}
//! {"close": {"user": "alice", "market": "BTC"}}
//! {"adjust_margin": {"user": "alice", "market": "BTC", "amount": -1000}}
//! {"liquidate": {"user": "alice", "market": "BTC"}}             // operator
//! ```
//! Without `margin`, an open or increase assigns the least margin that meets
//! the initial requirement; with it, exactly that much.
//!
//! Access rule ([`access`]): with no caller (a call from inside the host,
//! or a host with no principals configured: loopback-only development
//! mode) every command is trusted and acts on the `user` it names. With a
//! caller, `create_market`, `set_mark`, `apply_funding`, `liquidate` and
//! `deposit` (collateral from outside the venue: the custody side) are
//! operator-only (`operator-only`); positions and collateral belong to
//! their caller: `withdraw`, `trade`, `open`, `increase`, `reduce`,
//! `close` and `adjust_margin` act on the account named by the caller's
//! principal, and naming another `user` is refused (`not-owner`). `user`
//! may be left out: it is then the caller's principal. Queries are open to
//! every caller.
//!
//! Queries: `{"position": {"user", "market"}}`, `{"account": {"user"}}`,
//! `{"market": {"market"}}`, `"markets"`, `"insurance_fund"`,
//! `{"liquidatable": {"market"}}`, `"totals"`.

pub mod access;
pub mod engine;
pub mod fixed;
#[cfg(not(target_arch = "wasm32"))]
#[doc(hidden)]
pub mod sim;
pub mod state;
mod view;

use keel_guest::{Error, Plugin, TableCodec};
use serde::{Deserialize, Serialize};

pub use engine::{FUNDING_RATE_PPM_MAX, ID_BYTES_MAX, POSITION_SIZE_MAX, PRICE_MAX};
pub use fixed::FUNDING_INDEX_SCALE;
pub use state::Side;

use engine::Intent;

/// A state-changing command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Creates a market (operator).
    CreateMarket {
        market: String,
        mark_price: i64,
        initial_margin_bps: u32,
        maintenance_margin_bps: u32,
    },
    /// Sets the mark price (operator).
    SetMark { market: String, price: i64 },
    /// Applies one funding payment at the current mark (operator); positive
    /// `rate_ppm`: longs pay shorts.
    ApplyFunding { market: String, rate_ppm: i64 },
    /// Adds free collateral (operator: collateral comes from outside).
    Deposit {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        user: String,
        amount: i64,
    },
    /// Removes free collateral.
    Withdraw {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        user: String,
        amount: i64,
    },
    /// Changes the position by a signed size at the mark: opens, increases,
    /// reduces, closes or flips it.
    Trade {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        user: String,
        market: String,
        size: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        margin: Option<i64>,
    },
    /// Opens a position (refused if one exists).
    Open {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        user: String,
        market: String,
        size: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        margin: Option<i64>,
    },
    /// Grows the existing position by `amount` on its side.
    Increase {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        user: String,
        market: String,
        amount: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        margin: Option<i64>,
    },
    /// Shrinks the existing position by `amount` (≤ its size).
    Reduce {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        user: String,
        market: String,
        amount: i64,
    },
    /// Closes the existing position.
    Close {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        user: String,
        market: String,
    },
    /// Moves collateral into (positive) or out of (negative) a position's margin.
    AdjustMargin {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        user: String,
        market: String,
        amount: i64,
    },
    /// Liquidates a position below maintenance (operator).
    Liquidate {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        user: String,
        market: String,
    },
}

/// A read-only request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Query {
    /// One position valued at the mark (`user` left out: the caller's).
    Position {
        #[serde(default)]
        user: String,
        market: String,
    },
    /// An account with its positions (`user` left out: the caller's).
    Account {
        #[serde(default)]
        user: String,
    },
    /// One market.
    Market { market: String },
    /// Every market.
    Markets,
    /// The insurance fund.
    InsuranceFund,
    /// Positions of a market below maintenance.
    Liquidatable { market: String },
    /// System totals and the conservation checks.
    Totals,
}

/// How a trade changed the position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TradeKind {
    /// A new position.
    Open,
    /// Grown on the same side.
    Increase,
    /// Partly closed.
    Reduce,
    /// Fully closed.
    Close,
    /// Closed and reopened on the other side with the remainder.
    Flip,
}

/// What a trading command answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeReport {
    pub kind: TradeKind,
    pub user: String,
    pub market: String,
    /// The mark the trade executed at.
    pub price: i64,
    pub size_before: i64,
    pub size_after: i64,
    /// PnL realized by the closing part (0 for opens and increases).
    pub realized_pnl: i64,
    /// Funding settled from the position before the trade (negative: received).
    pub funding_settled: i64,
    /// Free collateral moved into margin.
    pub margin_added: i64,
    /// Margin plus PnL returned to free collateral by the closing part.
    pub collateral_released: i64,
    /// Negative equity of a bankrupt position absorbed by the insurance fund.
    pub bad_debt: i64,
    /// Free collateral after the trade.
    pub free_collateral: i64,
    /// The position after the trade (absent once closed).
    pub position: Option<PositionView>,
}

/// What `apply_funding` answers. Indexes are decimal strings (i128).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FundingReport {
    pub market: String,
    pub rate_ppm: i64,
    pub mark_price: i64,
    /// `min(OI_long, OI_short)`: the size funding applies to.
    pub matched_open_interest: i64,
    pub index_delta_long: String,
    pub index_delta_short: String,
    pub funding_index_long: String,
    pub funding_index_short: String,
    /// False when nothing moved (rate 0, or one side has no open interest).
    pub applied: bool,
}

/// What `liquidate` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiquidationReport {
    pub user: String,
    pub market: String,
    pub size: i64,
    pub price: i64,
    pub realized_pnl: i64,
    pub funding_settled: i64,
    /// The position's remaining equity moved to the insurance fund
    /// (negative: bad debt the fund absorbed).
    pub to_insurance_fund: i64,
    /// The insurance fund afterwards.
    pub insurance_fund: i64,
}

/// A position valued at the mark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PositionView {
    pub user: String,
    pub market: String,
    pub side: Side,
    pub size: i64,
    /// `open_notional / size`, rounded toward zero (display only: PnL uses
    /// the exact `open_notional`).
    pub entry_price: i64,
    pub open_notional: i64,
    pub margin: i64,
    pub pending_funding: i64,
    pub unrealized_pnl: i64,
    /// `margin − pending_funding + unrealized_pnl`.
    pub equity: i64,
    pub mark_price: i64,
    pub notional: i64,
    /// `floor(equity × 10000 / notional)`.
    pub margin_ratio_bps: i64,
    pub initial_requirement: i64,
    pub maintenance_requirement: i64,
    /// `equity < maintenance_requirement`.
    pub liquidatable: bool,
    /// PnL realized on this position since it was opened.
    pub realized_pnl: i64,
}

/// A market.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketView {
    pub market: String,
    pub mark_price: i64,
    pub initial_margin_bps: u32,
    pub maintenance_margin_bps: u32,
    pub open_interest_long: i64,
    pub open_interest_short: i64,
    /// Decimal string (i128), quote units per unit size × FUNDING_INDEX_SCALE.
    pub funding_index_long: String,
    pub funding_index_short: String,
    pub funding_pool: i64,
    pub funding_rounds: u64,
    pub last_funding_rate_ppm: i64,
}

/// An account's balances after a deposit or withdrawal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollateralView {
    pub user: String,
    pub free_collateral: i64,
    pub realized_pnl: i64,
    pub funding_paid: i64,
}

/// An account with its positions valued at the mark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountView {
    pub user: String,
    /// Withdrawable, and usable as new margin.
    pub free_collateral: i64,
    /// `free_collateral + Σ position margin`.
    pub collateral: i128,
    /// `free_collateral + Σ position equity`.
    pub equity: i128,
    pub unrealized_pnl: i128,
    pub notional: i128,
    /// `floor(Σ position equity × 10000 / Σ notional)`; null without positions.
    pub margin_ratio_bps: Option<i128>,
    pub realized_pnl: i64,
    pub funding_paid: i64,
    pub positions: Vec<PositionView>,
}

/// The insurance fund.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InsuranceView {
    pub insurance_fund: i64,
    pub funding_residue: i64,
    pub bad_debt: i64,
    pub liquidations: u64,
}

/// System totals (full scans) and the two conservation identities:
///
/// - `holdings = free_collateral + position_margin + insurance_fund + funding_pools`
///   equals `expected_holdings = deposits − withdrawals + realized_pnl` (`conserved`);
/// - `funding_paid = funding_pools + funding_residue` (`funding_balanced`:
///   funding moves between positions only, residue to the insurance fund).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotalsView {
    pub accounts: u64,
    pub positions: u64,
    pub markets: u64,
    pub free_collateral: i128,
    pub position_margin: i128,
    pub insurance_fund: i128,
    pub funding_pools: i128,
    pub realized_pnl: i128,
    pub funding_paid: i128,
    pub deposits: i128,
    pub withdrawals: i128,
    pub funding_residue: i128,
    pub bad_debt: i128,
    pub open_interest_long: i128,
    pub open_interest_short: i128,
    pub holdings: i128,
    pub expected_holdings: i128,
    pub conserved: bool,
    pub funding_balanced: bool,
    /// Each market's open interest equals the sum of its positions' sizes.
    pub open_interest_consistent: bool,
}

/// What a command answers (untagged: each command has its own shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Response {
    Trade(TradeReport),
    Liquidation(LiquidationReport),
    Funding(FundingReport),
    Position(PositionView),
    Market(MarketView),
    Collateral(CollateralView),
}

/// What a query answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Answer {
    Position(PositionView),
    Account(AccountView),
    Market(MarketView),
    Markets(Vec<MarketView>),
    Insurance(InsuranceView),
    Positions(Vec<PositionView>),
    Totals(TotalsView),
}

/// The plugin.
pub struct Perp;

impl Plugin for Perp {
    const NAME: &'static str = "perp";
    const VERSION: &'static str = "1.0.0";
    const SCHEMA: u32 = 1;
    type Config = serde::de::IgnoredAny;
    type Command = Command;
    type Response = Response;
    type Query = Query;
    type QueryResponse = Answer;

    fn handle(mut command: Command) -> Result<Response, Error> {
        access::authorize(&mut command)?;
        match command {
            Command::CreateMarket {
                market,
                mark_price,
                initial_margin_bps,
                maintenance_margin_bps,
            } => engine::create_market(
                &market,
                mark_price,
                initial_margin_bps,
                maintenance_margin_bps,
            ),
            Command::SetMark { market, price } => engine::set_mark(&market, price),
            Command::ApplyFunding { market, rate_ppm } => engine::apply_funding(&market, rate_ppm),
            Command::Deposit { user, amount } => engine::deposit(&user, amount),
            Command::Withdraw { user, amount } => engine::withdraw(&user, amount),
            Command::Trade {
                user,
                market,
                size,
                margin,
            } => engine::trade(&user, &market, size, margin, Intent::Any),
            Command::Open {
                user,
                market,
                size,
                margin,
            } => engine::trade(&user, &market, size, margin, Intent::Open),
            Command::Increase {
                user,
                market,
                amount,
                margin,
            } => engine::relative(&user, &market, Some(amount), true, margin),
            Command::Reduce {
                user,
                market,
                amount,
            } => engine::relative(&user, &market, Some(amount), false, None),
            Command::Close { user, market } => engine::relative(&user, &market, None, false, None),
            Command::AdjustMargin {
                user,
                market,
                amount,
            } => engine::adjust_margin(&user, &market, amount),
            Command::Liquidate { user, market } => engine::liquidate(&user, &market),
        }
    }

    fn query(request: Query) -> Result<Answer, Error> {
        Ok(match request {
            Query::Position { user, market } => {
                Answer::Position(view::position_query(&access::querier(user)?, &market)?)
            }
            Query::Account { user } => Answer::Account(view::account(&access::querier(user)?)?),
            Query::Market { market } => Answer::Market(view::market_query(&market)?),
            Query::Markets => Answer::Markets(view::markets()),
            Query::InsuranceFund => Answer::Insurance(view::insurance_fund()),
            Query::Liquidatable { market } => Answer::Positions(view::liquidatable(&market)?),
            Query::Totals => Answer::Totals(view::totals()?),
        })
    }

    fn tables() -> Vec<TableCodec> {
        vec![
            state::MARKETS.codec(),
            state::ACCOUNTS.codec(),
            state::POSITIONS.codec(),
            state::LEDGER.codec(),
        ]
    }
}

// Natively (tests, benchmarks) the crate is used as an rlib; exporting the
// component's symbols there breaks the native cdylib link, so export on wasm only.
#[cfg(target_arch = "wasm32")]
keel_guest::export!(Perp);
