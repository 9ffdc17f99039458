//! The spot plugin's tables and stored records.
//!
//! | table | key | value | written |
//! |---|---|---|---|
//! | `markets` | market id `u32` | [`Market`] | `create_market` |
//! | `wallets` | user `u64` | [`Wallet`]: balances per asset, open orders, latest trade batch | whenever the user's funds move |
//! | `ledger` | asset | [`Ledger`] (deposited, withdrawn) | `deposit`, `withdraw` |
//! | `orders` | order id `u64` | [`Order`]: terms, final state, maker fills | placement, full fill, cancel |
//! | `book` | `(market, side, price key, order id)` | [`Resting`] (user, remaining, maker fills) | placement, fill, cancel |
//! | `trades` | `(market, taker order id)` | [`TradeBatch`]: every fill of one command | crossing orders |
//!
//! The book key sorts each side best-first: the price key is the price for
//! asks and `u64::MAX - price` for bids, and the order id (the journaled
//! sequence number of the command that placed it) breaks ties in arrival
//! order, so a forward prefix scan over `(market, side)` walks the book in
//! price-time priority.
//!
//! Write economy (every row written is what throughput depends on): while
//! an order rests, its live state — remaining quantity and the fills it
//! took part in as maker — lives only in its `book` entry, which a fill
//! rewrites anyway; its `orders` row keeps the terms and says `Resting`
//! until the order leaves the book (filled or canceled), when the row is
//! rewritten with the final state and the maker fills. All fills of one
//! command share one `trades` row, and the taker's fills are found there by
//! its order id, so recording a fill costs no row of its own. A user's
//! balances, list of open orders and latest trade batch share one
//! `wallets` row: every change to a user's open orders (rest, fill off the
//! book, cancel) and every fill also moves that user's funds, so these
//! indexes cost no write of their own. A user's fills form a linked list,
//! newest first: the wallet points at the user's latest batch, and each
//! batch records, for each user in it, that user's previous batch.

use keel_guest::Table;
use serde::{Deserialize, Serialize};

/// Market id → market.
pub const MARKETS: Table<u32, Market> = Table::new("markets");
/// User → balances and open orders.
pub const WALLETS: Table<u64, Wallet> = Table::new("wallets");
/// Asset → total deposited and withdrawn (for the conservation audit).
pub const LEDGER: Table<String, Ledger> = Table::new("ledger");
/// Order id → order terms and state.
pub const ORDERS: Table<u64, Order> = Table::new("orders");
/// (market, side, price key, order id) → resting order.
pub const BOOK: Table<(u32, u8, u64, u64), Resting> = Table::new("book");
/// Most open orders one user may have across all markets: a wallet row
/// holds them all and is rewritten whenever they change.
pub const OPEN_ORDERS_PER_USER_MAX: usize = 1000;
/// (market, taker order id) → every fill of that command.
pub const TRADES: Table<(u32, u64), TradeBatch> = Table::new("trades");

/// A reference to one fill: (taker order id = `trades` key, index in the batch).
pub type FillRef = (u64, u32);

/// A reference to one trade batch: its `trades` key (market, taker order id).
pub type BatchRef = (u32, u64);

/// Buy or sell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Bid: spends the quote asset, receives the base asset.
    Buy,
    /// Ask: spends the base asset, receives the quote asset.
    Sell,
}

impl Side {
    /// The side an incoming order of this side matches against.
    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }

    /// The side's byte in `book` keys.
    pub fn code(self) -> u8 {
        match self {
            Side::Buy => 0,
            Side::Sell => 1,
        }
    }

    /// The price key that sorts this side best-first.
    pub fn price_key(self, price: u64) -> u64 {
        match self {
            Side::Buy => u64::MAX - price,
            Side::Sell => price,
        }
    }

    /// Inverse of [`Side::price_key`].
    pub fn price_from_key(self, key: u64) -> u64 {
        self.price_key(key)
    }

    /// Whether a resting order at `resting` is acceptable to an incoming
    /// order of this side limited to `limit`.
    pub fn crosses(self, limit: u64, resting: u64) -> bool {
        match self {
            Side::Buy => resting <= limit,
            Side::Sell => resting >= limit,
        }
    }
}

/// How an order executes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderKind {
    /// Good-till-cancel limit order: matches what crosses, rests the rest.
    #[default]
    Limit,
    /// No price: matches the best prices until filled or the book is empty;
    /// the unfilled rest is canceled.
    Market,
    /// Immediate-or-cancel: matches what crosses, cancels the rest.
    Ioc,
    /// Fill-or-kill: fills completely at once or is refused.
    Fok,
    /// Rests only; refused if it would match.
    PostOnly,
}

/// A market: base/quote pair and its increments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Market {
    /// Asset bought and sold (quantities are in its units).
    pub base: String,
    /// Asset prices are expressed in: one base unit costs `price` quote units.
    pub quote: String,
    /// Every price is a multiple of this.
    pub tick_size: u64,
    /// Every quantity is a multiple of this.
    pub lot_size: u64,
    /// Smallest order quantity.
    pub min_size: u64,
}

/// A user's holding of one asset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    /// Free to spend or withdraw.
    pub available: u128,
    /// Held by resting orders.
    pub frozen: u128,
}

/// Totals of external flows of one asset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Sum of all deposits.
    pub deposited: u128,
    /// Sum of all withdrawals.
    pub withdrawn: u128,
}

/// Where an order stands, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stored {
    /// On the book; `book` holds its live remaining quantity and fills.
    Resting,
    /// Completely filled.
    Filled,
    /// Canceled (by its owner, self-trade prevention, or the unfilled part
    /// of an IOC or market order); `filled` says how much traded first.
    Canceled,
}

/// An order's terms and stored state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Owner.
    pub user: u64,
    /// Market id.
    pub market: u32,
    /// Buy or sell.
    pub side: Side,
    /// Execution style.
    pub kind: OrderKind,
    /// Limit price (0 for market orders).
    pub price: u64,
    /// Original quantity.
    pub qty: u64,
    /// Stored state.
    pub state: Stored,
    /// Quantity filled when the row was written (for `Resting`: filled by
    /// the placing command itself).
    pub filled: u64,
    /// Journaled time of placement.
    pub timestamp_ms: u64,
    /// Fills as maker, oldest first (for `Resting`: see the book entry).
    pub maker_fills: Vec<FillRef>,
}

/// A resting order's book entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resting {
    /// Owner.
    pub user: u64,
    /// Quantity still open.
    pub remaining: u64,
    /// Fills so far as maker, oldest first.
    pub maker_fills: Vec<FillRef>,
}

/// A user's open order, locating its book entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OpenRef {
    /// Market id.
    pub market: u32,
    /// Order id.
    pub id: u64,
    /// Side of the order.
    pub side: Side,
    /// Limit price.
    pub price: u64,
}

/// Everything a user holds: balances and open orders.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wallet {
    /// Non-zero balances, sorted by asset name.
    pub assets: Vec<(String, Balance)>,
    /// Open orders, sorted by (market, id).
    pub open: Vec<OpenRef>,
    /// The latest trade batch the user took part in (head of the user's
    /// linked list of fills).
    pub last_batch: Option<BatchRef>,
}

impl Wallet {
    /// The balance of `asset`, created at zero if absent.
    pub fn balance_mut(&mut self, asset: &str) -> &mut Balance {
        let i = match self.assets.binary_search_by(|(a, _)| a.as_str().cmp(asset)) {
            Ok(i) => i,
            Err(i) => {
                self.assets
                    .insert(i, (asset.to_owned(), Balance::default()));
                i
            }
        };
        &mut self.assets[i].1
    }

    /// The balance of `asset` (zero if absent).
    pub fn balance(&self, asset: &str) -> Balance {
        self.assets
            .binary_search_by(|(a, _)| a.as_str().cmp(asset))
            .map_or_else(|_| Balance::default(), |i| self.assets[i].1)
    }

    /// Records an open order.
    pub fn add_open(&mut self, r: OpenRef) {
        let i = self.open.binary_search(&r).unwrap_or_else(|i| i);
        self.open.insert(i, r);
    }

    /// Forgets an open order; returns whether it was there.
    pub fn remove_open(&mut self, market: u32, id: u64) -> bool {
        match self
            .open
            .binary_search_by(|o| (o.market, o.id).cmp(&(market, id)))
        {
            Ok(i) => {
                self.open.remove(i);
                true
            }
            Err(_) => false,
        }
    }
}

/// One fill: the incoming (taker) order against one resting (maker) order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fill {
    /// The resting order.
    pub maker_order: u64,
    /// Its owner.
    pub maker_user: u64,
    /// Execution price (the maker's limit price).
    pub price: u64,
    /// Quantity traded.
    pub qty: u64,
    /// The maker's previous trade batch (the same for all of its fills in
    /// this batch).
    pub maker_prev: Option<BatchRef>,
}

/// Every fill of one incoming order, in execution order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeBatch {
    /// Owner of the incoming order (whose id keys the batch).
    pub taker_user: u64,
    /// Side of the incoming order.
    pub taker_side: Side,
    /// Journaled time of execution.
    pub timestamp_ms: u64,
    /// The taker's previous trade batch.
    pub taker_prev: Option<BatchRef>,
    /// The fills.
    pub fills: Vec<Fill>,
}
