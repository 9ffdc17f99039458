//! Commands, queries and their answers: the plugin's JSON interface.
//!
//! Every type here is both `Serialize` and `Deserialize` so that clients
//! (tests, benchmarks, tools) build commands and read answers with the same
//! types the plugin uses. Commands and queries refuse unknown fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::store::{Balance, Market, OrderKind, Side};

/// A state-changing command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// `{"create_market": {"market": 1, "base": "BTC", "quote": "USD", "tick_size": 1, "lot_size": 1, "min_size": 1}}`
    CreateMarket(CreateMarket),
    /// `{"deposit": {"user": 7, "asset": "USD", "amount": 1000}}`
    Deposit(Transfer),
    /// `{"withdraw": {"user": 7, "asset": "USD", "amount": 10}}` (from available only)
    Withdraw(Transfer),
    /// `{"place": {"user": 7, "market": 1, "side": "buy", "kind": "limit", "price": 100, "qty": 5}}`
    Place(Place),
    /// `{"cancel": {"user": 7, "order": 42}}`
    Cancel(Cancel),
    /// `{"cancel_all": {"user": 7, "market": 1}}`
    CancelAll(CancelAll),
    /// `{"open_account": {"principal": "alice", "user": 7}}` (operator):
    /// links a principal to the account it acts as (see [`crate::access`]).
    OpenAccount(OpenAccount),
}

/// Creates a market.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateMarket {
    /// Market id, chosen by the operator; must be unused.
    pub market: u32,
    /// Base asset (what is bought and sold).
    pub base: String,
    /// Quote asset (what prices are in).
    pub quote: String,
    /// Price increment (> 0).
    pub tick_size: u64,
    /// Quantity increment (> 0).
    pub lot_size: u64,
    /// Smallest order quantity (a positive multiple of `lot_size`).
    pub min_size: u64,
}

/// Moves funds into or out of a user's available balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    /// User.
    pub user: u64,
    /// Asset.
    pub asset: String,
    /// Amount (> 0).
    pub amount: u128,
}

/// Places an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Place {
    /// Owner.
    pub user: u64,
    /// Market id.
    pub market: u32,
    /// Buy or sell.
    pub side: Side,
    /// Execution style (default `limit`).
    #[serde(default)]
    pub kind: OrderKind,
    /// Limit price: required for every kind but `market`, where it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<u64>,
    /// Quantity in base units.
    pub qty: u64,
}

/// Cancels one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cancel {
    /// The order's owner (anyone else is refused).
    pub user: u64,
    /// Order id.
    pub order: u64,
}

/// Cancels every open order of a user in a market.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelAll {
    /// Owner.
    pub user: u64,
    /// Market id.
    pub market: u32,
}

/// Links a principal to an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAccount {
    /// The principal's name, as the host authenticates it.
    pub principal: String,
    /// The account it acts as.
    pub user: u64,
}

/// A principal and the account it acts as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountView {
    /// Principal.
    pub principal: String,
    /// Account.
    pub user: u64,
}

/// What a command answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Response {
    /// `create_market`: the market.
    Market(MarketView),
    /// `deposit`, `withdraw`: the new balance.
    Balance(BalanceView),
    /// `place`: the outcome.
    Placed(Placed),
    /// `cancel`, `cancel_all`: the orders canceled.
    Canceled(Canceled),
    /// `open_account`: the link made.
    Account(AccountView),
}

/// A market with its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketView {
    /// Market id.
    pub market: u32,
    /// Base asset.
    pub base: String,
    /// Quote asset.
    pub quote: String,
    /// Price increment.
    pub tick_size: u64,
    /// Quantity increment.
    pub lot_size: u64,
    /// Smallest order quantity.
    pub min_size: u64,
}

/// One balance after a transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceView {
    /// User.
    pub user: u64,
    /// Asset.
    pub asset: String,
    /// Free to spend or withdraw.
    pub available: u128,
    /// Held by resting orders.
    pub frozen: u128,
}

/// Order status as clients see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// On the book, nothing filled.
    Open,
    /// On the book, partly filled.
    PartiallyFilled,
    /// Completely filled.
    Filled,
    /// Canceled; `filled` says what traded before.
    Canceled,
}

/// A fill as reported to the taker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FillView {
    /// The resting order.
    pub maker_order: u64,
    /// Its owner.
    pub maker_user: u64,
    /// Execution price (the maker's price).
    pub price: u64,
    /// Quantity traded.
    pub qty: u64,
}

/// The outcome of `place`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placed {
    /// The new order's id (the command's sequence number).
    pub order: u64,
    /// Its status after the command.
    pub status: Status,
    /// Quantity filled by this command.
    pub filled: u64,
    /// Quantity left resting on the book.
    pub resting: u64,
    /// Fills in execution order.
    pub fills: Vec<FillView>,
    /// The user's own resting orders canceled by self-trade prevention.
    pub self_trade_canceled: Vec<u64>,
}

/// The outcome of `cancel` and `cancel_all`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Canceled {
    /// Canceled order ids, ascending.
    pub canceled: Vec<u64>,
}

/// A page cursor: entries strictly older than `(seq, index)` come next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cursor {
    /// Sequence number of the command that traded (the taker's order id).
    pub seq: u64,
    /// Index of the fill within that command.
    pub index: u32,
}

/// A read-only request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Query {
    /// `"markets"`: every market.
    Markets,
    /// `{"balances": {"user": 7}}`: every asset the user holds.
    Balances {
        /// User.
        user: u64,
    },
    /// `{"order": {"id": 42}}`
    Order {
        /// Order id.
        id: u64,
    },
    /// `{"open_orders": {"user": 7}}` or with `"market": 1`.
    OpenOrders {
        /// User.
        user: u64,
        /// Only this market.
        #[serde(default)]
        market: Option<u32>,
    },
    /// `{"depth": {"market": 1, "levels": 10}}`: top levels per side, aggregated.
    Depth {
        /// Market id.
        market: u32,
        /// Levels per side (default 10, at most 1000).
        #[serde(default)]
        levels: Option<u32>,
    },
    /// `{"best": {"market": 1}}`: best bid and ask.
    Best {
        /// Market id.
        market: u32,
    },
    /// `{"order_fills": {"id": 42}}`: an order's fills, newest first.
    OrderFills {
        /// Order id.
        id: u64,
        /// Page cursor (from a previous answer's `next`).
        #[serde(default)]
        before: Option<Cursor>,
        /// Page size (default 100, at most 1000).
        #[serde(default)]
        limit: Option<u32>,
    },
    /// `{"user_fills": {"user": 7}}`: a user's fills, newest first.
    UserFills {
        /// User.
        user: u64,
        /// Page cursor.
        #[serde(default)]
        before: Option<Cursor>,
        /// Page size (default 100, at most 1000).
        #[serde(default)]
        limit: Option<u32>,
    },
    /// `{"trades": {"market": 1}}`: a market's trades, newest first.
    Trades {
        /// Market id.
        market: u32,
        /// Page cursor.
        #[serde(default)]
        before: Option<Cursor>,
        /// Page size (default 100, at most 1000).
        #[serde(default)]
        limit: Option<u32>,
    },
    /// `{"book": {"market": 1}}`: the book page by page, bids (best first)
    /// then asks, every level with its FIFO queue; at most `limit` orders
    /// a page (default 1000, at most 10,000). The answer's `next`, when
    /// present, is the `after` of the next page; a level split between
    /// pages continues at the start of the next one.
    Book {
        /// Market id.
        market: u32,
        /// Where the page starts: just after this order.
        #[serde(default)]
        after: Option<BookCursor>,
        /// Orders per page.
        #[serde(default)]
        limit: Option<u32>,
    },
    /// `"audit"`: checks the conservation and consistency invariants over
    /// all state in one answer (see [`crate::audit`]); its cost grows with
    /// the state, so a large book needs the pages of `audit_page`.
    Audit,
    /// `{"audit_page": {}}`: the same checks in pages of bounded cost.
    /// The first page (no `after`) checks the totals; each answer's `next`,
    /// while present, is the `after` of the next page. At most `limit`
    /// wallets and orders are checked a page (default 2000, at most 10,000).
    AuditPage {
        /// Where the page starts (absent: the first page).
        #[serde(default)]
        after: Option<AuditCursor>,
        /// Wallets and orders checked per page.
        #[serde(default)]
        limit: Option<u32>,
    },
    /// `{"account": {"principal": "alice"}}`: the account a principal acts
    /// as; `{"account": {}}` asks for the caller's own.
    Account {
        /// Principal (default: the caller).
        #[serde(default)]
        principal: Option<String>,
    },
}

/// What a query answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Answer {
    /// `markets`.
    Markets(Vec<MarketView>),
    /// `balances`.
    Balances(BTreeMap<String, Balance>),
    /// `order`.
    Order(OrderView),
    /// `open_orders`.
    Orders(Vec<OrderView>),
    /// `depth`.
    Depth(Depth),
    /// `best`.
    Best(Best),
    /// `order_fills`, `user_fills`, `trades`.
    Trades(TradePage),
    /// `book`.
    Book(BookDump),
    /// `audit`.
    Audit(Audit),
    /// `audit_page`.
    AuditPage(AuditPage),
    /// `account`.
    Account(AccountView),
}

/// An order as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderView {
    /// Order id.
    pub id: u64,
    /// Owner.
    pub user: u64,
    /// Market id.
    pub market: u32,
    /// Buy or sell.
    pub side: Side,
    /// Execution style.
    pub kind: OrderKind,
    /// Limit price (absent for market orders).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<u64>,
    /// Original quantity.
    pub qty: u64,
    /// Status.
    pub status: Status,
    /// Quantity filled.
    pub filled: u64,
    /// Quantity not filled (`qty - filled`): open when the order is open,
    /// canceled when it is canceled.
    pub remaining: u64,
    /// Journaled time of placement.
    pub timestamp_ms: u64,
}

/// One aggregated price level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Level {
    /// Price.
    pub price: u64,
    /// Sum of the remaining quantities at this price.
    pub qty: u128,
    /// Number of orders at this price.
    pub orders: u32,
}

/// Top levels of both sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Depth {
    /// Market id.
    pub market: u32,
    /// Bids, best (highest) first.
    pub bids: Vec<Level>,
    /// Asks, best (lowest) first.
    pub asks: Vec<Level>,
}

/// Best bid and ask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Best {
    /// Market id.
    pub market: u32,
    /// Best bid level, if any.
    pub bid: Option<Level>,
    /// Best ask level, if any.
    pub ask: Option<Level>,
}

/// One trade (a fill) with both sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trade {
    /// Sequence of the command that traded (= the taker's order id).
    pub seq: u64,
    /// Index of the fill within that command.
    pub index: u32,
    /// Market id.
    pub market: u32,
    /// Execution price.
    pub price: u64,
    /// Quantity traded.
    pub qty: u64,
    /// Side of the taker (the incoming order).
    pub taker_side: Side,
    /// The incoming order.
    pub taker_order: u64,
    /// Its owner.
    pub taker_user: u64,
    /// The resting order.
    pub maker_order: u64,
    /// Its owner.
    pub maker_user: u64,
    /// Journaled time of execution.
    pub timestamp_ms: u64,
}

/// A page of trades, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradePage {
    /// The trades.
    pub trades: Vec<Trade>,
    /// Cursor for the next (older) page, when there may be one.
    pub next: Option<Cursor>,
}

/// One order in a book dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedOrder {
    /// Order id.
    pub id: u64,
    /// Owner.
    pub user: u64,
    /// Open quantity.
    pub remaining: u64,
}

/// One price level with its FIFO queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queue {
    /// Price.
    pub price: u64,
    /// Orders in time priority (first to fill first).
    pub orders: Vec<QueuedOrder>,
}

/// One page of a market's book.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookDump {
    /// Market id.
    pub market: u32,
    /// Bid levels, best first.
    pub bids: Vec<Queue>,
    /// Ask levels, best first.
    pub asks: Vec<Queue>,
    /// Where the next page starts, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<BookCursor>,
}

impl BookDump {
    /// Appends the next page (a level split between the pages is joined).
    pub fn extend(&mut self, page: BookDump) {
        for (levels, more) in [(&mut self.bids, page.bids), (&mut self.asks, page.asks)] {
            let mut more = more.into_iter();
            if let (Some(last), Some(first)) = (levels.last_mut(), more.as_slice().first())
                && last.price == first.price
            {
                let first = more.next().expect("checked");
                last.orders.extend(first.orders);
            }
            levels.extend(more);
        }
        self.next = page.next;
    }
}

/// A book page cursor: the last order of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BookCursor {
    /// Its side.
    pub side: Side,
    /// Its price.
    pub price: u64,
    /// Its id.
    pub id: u64,
}

/// Where an audit page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditCursor {
    /// The wallets pass, after this user (absent: from the first).
    Wallets {
        /// The last user checked.
        after: Option<u64>,
    },
    /// The book pass, after this entry (absent: from the first).
    Book {
        /// The last entry checked.
        after: Option<AuditBookKey>,
    },
}

/// A book entry's position, across markets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditBookKey {
    /// Market id.
    pub market: u32,
    /// Its side.
    pub side: Side,
    /// Its price.
    pub price: u64,
    /// Its id.
    pub id: u64,
}

/// One page of the audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPage {
    /// Totals per asset (on the first page only).
    pub assets: Option<BTreeMap<String, AssetTotals>>,
    /// Wallets checked on this page.
    pub users: u64,
    /// Open orders or book entries checked on this page.
    pub orders: u64,
    /// Every violated invariant found on this page, in words.
    pub problems: Vec<String>,
    /// Where the next page starts; absent after the last page.
    pub next: Option<AuditCursor>,
}

/// Per-asset totals found by the audit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetTotals {
    /// Sum of available balances.
    pub available: u128,
    /// Sum of frozen balances.
    pub frozen: u128,
    /// Sum of deposits.
    pub deposited: u128,
    /// Sum of withdrawals.
    pub withdrawn: u128,
}

/// The audit's findings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Audit {
    /// Totals per asset.
    pub assets: BTreeMap<String, AssetTotals>,
    /// Resting orders across all markets.
    pub resting_orders: u64,
    /// Every violated invariant, in words; empty when all hold.
    pub problems: Vec<String>,
}
