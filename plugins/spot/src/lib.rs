//! The spot plugin: a multi-market limit order book with price-time
//! priority, available/frozen balances and a fills audit trail.
//!
//! Commands (JSON): `create_market`, `deposit`, `withdraw`, `place`
//! (kinds `limit`, `market`, `ioc`, `fok`, `post_only`), `cancel`,
//! `cancel_all`, `open_account` — see [`api::Command`]. Queries: `markets`, `balances`,
//! `order`, `open_orders`, `depth`, `best`, `order_fills`, `user_fills`,
//! `trades`, `book`, `audit`, `audit_page`, `account` — see [`api::Query`]. Storage layout: [`store`].
//!
//! Rules the engine keeps:
//! - Matching is best price first, then FIFO (order id = the journaled
//!   sequence number of the placing command) within a price level; the
//!   execution price is the resting order's price.
//! - A resting order freezes exactly what it may still spend: `remaining`
//!   base units for a sell, `remaining × price` quote units for a buy.
//!   Fills move funds between buyer and seller in the command that matches.
//! - Self-trade prevention: an incoming order never trades with its own
//!   user's resting orders; each such order it meets is canceled (and
//!   listed in `self_trade_canceled`), and matching continues behind it.
//! - `market` orders take no price and sweep the opposite side until filled;
//!   whatever the book cannot fill is canceled; with nothing to trade
//!   against they are refused (`no-liquidity`). `ioc` is the same with a
//!   price limit (an IOC that trades nothing is recorded as canceled).
//!   `fok` trades its whole quantity or is refused (`would-not-fill`).
//!   `post_only` is refused (`would-cross`) if it would trade at all.
//! - Funds are checked against what the order actually spends (its fills'
//!   cost plus what its resting rest freezes); short: `insufficient-balance`.
//! - A user may have at most [`store::OPEN_ORDERS_PER_USER_MAX`] open orders
//!   (`too-many-open-orders`): they live in the user's wallet row.
//! - Every refusal is an error, and an error discards every write.
//!
//! Access rule ([`access`]): with no caller (a call from inside the host,
//! or a host with no principals configured: loopback-only development
//! mode) every command is trusted and acts on the `user` it names. With a
//! caller, the caller acts as the account the operator linked to its
//! principal (`open_account`; `no-account` before that): `place` and
//! `withdraw` only as that account, `cancel` and `cancel_all` as that
//! account or, for the operator, on behalf of anyone (`not-owner`
//! otherwise); `create_market`, `deposit` (funds from outside the market:
//! the custody side) and `open_account` are operator-only
//! (`operator-only`). Queries are open to every caller.

pub mod access;
pub mod api;
pub mod audit;
pub mod engine;
pub mod queries;
pub mod store;

use keel_guest::{Error, Plugin, TableCodec};

use api::{Answer, Command, Query, Response};

/// The plugin.
pub struct Spot;

impl Plugin for Spot {
    const NAME: &'static str = "spot";
    const VERSION: &'static str = "1.0.0";
    const SCHEMA: u32 = 1;
    type Config = serde::de::IgnoredAny;
    type Command = Command;
    type Response = Response;
    type Query = Query;
    type QueryResponse = Answer;

    fn handle(command: Command) -> Result<Response, Error> {
        access::authorize(&command)?;
        Ok(match command {
            Command::CreateMarket(c) => Response::Market(engine::create_market(c)?),
            Command::Deposit(t) => Response::Balance(engine::deposit(t)?),
            Command::Withdraw(t) => Response::Balance(engine::withdraw(t)?),
            Command::Place(p) => Response::Placed(engine::place(p)?),
            Command::Cancel(c) => Response::Canceled(engine::cancel(c)?),
            Command::CancelAll(c) => Response::Canceled(engine::cancel_all(c)?),
            Command::OpenAccount(o) => Response::Account(access::open_account(o)?),
        })
    }

    fn query(request: Query) -> Result<Answer, Error> {
        queries::answer(request)
    }

    fn tables() -> Vec<TableCodec> {
        vec![
            store::MARKETS.codec(),
            store::WALLETS.codec(),
            store::LEDGER.codec(),
            store::ORDERS.codec(),
            store::BOOK.codec(),
            store::TRADES.codec(),
            access::ACCOUNTS.codec(),
            access::ACCOUNT_OWNERS.codec(),
        ]
    }
}

// Exported only in the component: a native cdylib cannot link wit-bindgen's
// export symbols (their names contain ':'), and native tests use the rlib.
#[cfg(target_arch = "wasm32")]
keel_guest::export!(Spot);
