//! Read-only queries over committed state.

use keel_guest::{Direction, Error};

use crate::api::{
    Answer, Best, BookCursor, BookDump, Cursor, Depth, Level, OrderView, Query, Queue, QueuedOrder,
    Status, Trade, TradePage,
};
use crate::engine::{load_market, market_view};
use crate::store::{
    BOOK, MARKETS, ORDERS, Order, OrderKind, Side, Stored, TRADES, TradeBatch, WALLETS,
};

/// Default page size of the fill and trade queries.
pub const PAGE_ENTRIES_DEFAULT: u32 = 100;
/// Largest page of the fill and trade queries (bounds the answer's size).
pub const PAGE_ENTRIES_MAX: u32 = 1000;
/// Default orders per page of the book query.
pub const BOOK_ORDERS_DEFAULT: u32 = 1000;
/// Most orders per page of the book query (bounds the answer's size).
pub const BOOK_ORDERS_MAX: u32 = 10_000;
/// Default number of depth levels per side.
pub const DEPTH_LEVELS_DEFAULT: u32 = 10;
/// Most depth levels per side.
pub const DEPTH_LEVELS_MAX: u32 = 1000;

/// Answers a query.
pub fn answer(q: Query) -> Result<Answer, Error> {
    Ok(match q {
        Query::Markets => {
            Answer::Markets(MARKETS.iter().map(|(id, m)| market_view(id, m)).collect())
        }
        Query::Balances { user } => Answer::Balances(
            WALLETS
                .get(&user)
                .unwrap_or_default()
                .assets
                .into_iter()
                .collect(),
        ),
        Query::Order { id } => {
            let order = ORDERS
                .get(&id)
                .ok_or_else(|| Error::not_found(format!("no order {id}")))?;
            Answer::Order(order_view(id, order)?)
        }
        Query::OpenOrders { user, market } => {
            let open = WALLETS.get(&user).unwrap_or_default().open;
            let mut out = Vec::new();
            for id in open
                .iter()
                .filter(|o| market.is_none_or(|m| o.market == m))
                .map(|o| o.id)
            {
                let order = ORDERS.get(&id).ok_or_else(|| {
                    crate::engine::corrupt(format!("open order {id} has no order row"))
                })?;
                out.push(order_view(id, order)?);
            }
            Answer::Orders(out)
        }
        Query::Depth { market, levels } => {
            load_market(market)?;
            let n = levels
                .unwrap_or(DEPTH_LEVELS_DEFAULT)
                .clamp(1, DEPTH_LEVELS_MAX) as usize;
            Answer::Depth(Depth {
                market,
                bids: levels_of(market, Side::Buy, n),
                asks: levels_of(market, Side::Sell, n),
            })
        }
        Query::Best { market } => {
            load_market(market)?;
            Answer::Best(Best {
                market,
                bid: levels_of(market, Side::Buy, 1).pop(),
                ask: levels_of(market, Side::Sell, 1).pop(),
            })
        }
        Query::OrderFills { id, before, limit } => {
            let order = ORDERS
                .get(&id)
                .ok_or_else(|| Error::not_found(format!("no order {id}")))?;
            Answer::Trades(order_fills(id, &order, before, page_size(limit))?)
        }
        Query::UserFills {
            user,
            before,
            limit,
        } => Answer::Trades(user_fills(user, before, page_size(limit))?),
        Query::Trades {
            market,
            before,
            limit,
        } => {
            load_market(market)?;
            Answer::Trades(market_trades(market, before, page_size(limit)))
        }
        Query::Book {
            market,
            after,
            limit,
        } => {
            load_market(market)?;
            let limit = limit
                .unwrap_or(BOOK_ORDERS_DEFAULT)
                .clamp(1, BOOK_ORDERS_MAX) as usize;
            Answer::Book(book_page(market, after, limit))
        }
        Query::Audit => Answer::Audit(crate::audit::whole()),
        Query::AuditPage { after, limit } => Answer::AuditPage(crate::audit::page(after, limit)),
        Query::Account { principal } => Answer::Account(crate::access::account_query(principal)?),
    })
}

fn page_size(limit: Option<u32>) -> usize {
    limit
        .unwrap_or(PAGE_ENTRIES_DEFAULT)
        .clamp(1, PAGE_ENTRIES_MAX) as usize
}

fn book_entry(id: u64, o: &Order) -> Result<crate::store::Resting, Error> {
    BOOK.get(&(o.market, o.side.code(), o.side.price_key(o.price), id))
        .ok_or_else(|| crate::engine::corrupt(format!("resting order {id} is not on the book")))
}

/// An order's client view; a `Resting` row is completed from the book.
pub fn order_view(id: u64, o: Order) -> Result<OrderView, Error> {
    let (status, filled) = match o.state {
        Stored::Resting => {
            let rest = book_entry(id, &o)?;
            let filled = o.qty.saturating_sub(rest.remaining);
            (
                if filled == 0 {
                    Status::Open
                } else {
                    Status::PartiallyFilled
                },
                filled,
            )
        }
        Stored::Filled => (Status::Filled, o.qty),
        Stored::Canceled => (Status::Canceled, o.filled),
    };
    Ok(OrderView {
        id,
        user: o.user,
        market: o.market,
        side: o.side,
        kind: o.kind,
        price: (o.kind != OrderKind::Market).then_some(o.price),
        qty: o.qty,
        status,
        filled,
        remaining: o.qty.saturating_sub(filled),
        timestamp_ms: o.timestamp_ms,
    })
}

fn levels_of(market: u32, side: Side, n: usize) -> Vec<Level> {
    let mut out: Vec<Level> = Vec::new();
    for ((_, _, pk, _), rest) in BOOK
        .prefix(&(market, side.code()), Direction::Forward)
        .with_chunk(64)
    {
        let price = side.price_from_key(pk);
        match out.last_mut() {
            Some(level) if level.price == price => {
                level.qty += u128::from(rest.remaining);
                level.orders += 1;
            }
            _ => {
                if out.len() == n {
                    break;
                }
                out.push(Level {
                    price,
                    qty: u128::from(rest.remaining),
                    orders: 1,
                });
            }
        }
    }
    out
}

/// Up to `limit` orders of `market`'s book after `after`: bids best first,
/// then asks best first.
fn book_page(market: u32, after: Option<BookCursor>, limit: usize) -> BookDump {
    use std::ops::Bound;
    let mut page = BookDump {
        market,
        bids: Vec::new(),
        asks: Vec::new(),
        next: None,
    };
    let mut taken = 0;
    let mut last: Option<BookCursor> = None;
    for side in [Side::Buy, Side::Sell] {
        let start = match after {
            Some(c) if c.side.code() > side.code() => continue,
            Some(c) if c.side == side => {
                Bound::Excluded((market, side.code(), side.price_key(c.price), c.id))
            }
            _ => Bound::Included((market, side.code(), 0, 0)),
        };
        let end = Bound::Included((market, side.code(), u64::MAX, u64::MAX));
        for ((_, _, pk, id), rest) in BOOK.range((start, end)).with_chunk(1024) {
            if taken == limit {
                page.next = last;
                return page;
            }
            let price = side.price_from_key(pk);
            let entry = QueuedOrder {
                id,
                user: rest.user,
                remaining: rest.remaining,
            };
            let levels = match side {
                Side::Buy => &mut page.bids,
                Side::Sell => &mut page.asks,
            };
            match levels.last_mut() {
                Some(q) if q.price == price => q.orders.push(entry),
                _ => levels.push(Queue {
                    price,
                    orders: vec![entry],
                }),
            }
            taken += 1;
            last = Some(BookCursor { side, price, id });
        }
    }
    page
}

fn trade_view(market: u32, seq: u64, index: u32, batch: &TradeBatch) -> Trade {
    let f = batch.fills[index as usize];
    Trade {
        seq,
        index,
        market,
        price: f.price,
        qty: f.qty,
        taker_side: batch.taker_side,
        taker_order: seq,
        taker_user: batch.taker_user,
        maker_order: f.maker_order,
        maker_user: f.maker_user,
        timestamp_ms: batch.timestamp_ms,
    }
}

/// Collects trades newest first into a page.
struct Pager {
    before: Option<Cursor>,
    limit: usize,
    trades: Vec<Trade>,
}

impl Pager {
    fn new(before: Option<Cursor>, limit: usize) -> Self {
        Self {
            before,
            limit,
            trades: Vec::new(),
        }
    }

    fn upper_seq(&self) -> u64 {
        self.before.map_or(u64::MAX, |c| c.seq)
    }

    /// Offers fills `indices` (any order) of batch `seq`; returns false once the page is full.
    fn offer(
        &mut self,
        market: u32,
        seq: u64,
        batch: &TradeBatch,
        indices: impl DoubleEndedIterator<Item = u32>,
    ) -> bool {
        for index in indices.rev() {
            if (index as usize) >= batch.fills.len() {
                continue;
            }
            if self
                .before
                .is_some_and(|c| (seq, index) >= (c.seq, c.index))
            {
                continue;
            }
            if self.trades.len() == self.limit {
                return false;
            }
            self.trades.push(trade_view(market, seq, index, batch));
        }
        true
    }

    fn finish(self, full: bool) -> TradePage {
        let next = if full {
            self.trades.last().map(|t| Cursor {
                seq: t.seq,
                index: t.index,
            })
        } else {
            None
        };
        TradePage {
            trades: self.trades,
            next,
        }
    }
}

fn all_indices(batch: &TradeBatch) -> std::ops::Range<u32> {
    0..batch.fills.len() as u32
}

fn market_trades(market: u32, before: Option<Cursor>, limit: usize) -> TradePage {
    let mut pager = Pager::new(before, limit);
    let upper = pager.upper_seq();
    for ((_, seq), batch) in TRADES
        .range_rev((market, 0)..=(market, upper))
        .with_chunk(16)
    {
        if !pager.offer(market, seq, &batch, all_indices(&batch)) {
            return pager.finish(true);
        }
    }
    pager.finish(false)
}

/// Walks the user's linked list of trade batches, newest first, from the
/// wallet's head or from the batch the cursor names.
fn user_fills(user: u64, before: Option<Cursor>, limit: usize) -> Result<TradePage, Error> {
    let mut pager = Pager::new(before, limit);
    let mut next = match before {
        None => WALLETS.get(&user).and_then(|w| w.last_batch),
        Some(c) => {
            let bad_cursor = || {
                Error::invalid(format!(
                    "cursor ({}, {}) does not name a fill of user {user}",
                    c.seq, c.index
                ))
            };
            let taker = ORDERS.get(&c.seq).ok_or_else(bad_cursor)?;
            Some((taker.market, c.seq))
        }
    };
    let mut first = true;
    while let Some((market, seq)) = next {
        let batch = TRADES.get(&(market, seq)).ok_or_else(|| {
            crate::engine::corrupt(format!("trade batch {seq} of market {market} is missing"))
        })?;
        let (prev, more) = if batch.taker_user == user {
            let more = pager.offer(market, seq, &batch, all_indices(&batch));
            (batch.taker_prev, more)
        } else {
            let mine: Vec<u32> = (0..batch.fills.len() as u32)
                .filter(|i| batch.fills[*i as usize].maker_user == user)
                .collect();
            let Some(first_fill) = mine.first() else {
                if first && before.is_some() {
                    return Err(Error::invalid(format!(
                        "cursor ({seq}, _) does not name a fill of user {user}"
                    )));
                }
                return Err(crate::engine::corrupt(format!(
                    "user {user} is linked to trade batch {seq} without a fill in it"
                )));
            };
            let prev = batch.fills[*first_fill as usize].maker_prev;
            (prev, pager.offer(market, seq, &batch, mine.into_iter()))
        };
        if !more {
            return Ok(pager.finish(true));
        }
        if prev.is_some_and(|(_, p)| p >= seq) {
            return Err(crate::engine::corrupt(format!(
                "user {user}'s fills are not linked newest first at {seq}"
            )));
        }
        next = prev;
        first = false;
    }
    Ok(pager.finish(false))
}

fn order_fills(
    id: u64,
    order: &Order,
    before: Option<Cursor>,
    limit: usize,
) -> Result<TradePage, Error> {
    let mut pager = Pager::new(before, limit);
    // As maker: in later commands, newest first.
    let maker_fills = match order.state {
        Stored::Resting => book_entry(id, order)?.maker_fills,
        _ => order.maker_fills.clone(),
    };
    for (seq, index) in maker_fills.into_iter().rev() {
        if seq > pager.upper_seq() {
            continue;
        }
        let Some(batch) = TRADES.get(&(order.market, seq)) else {
            continue;
        };
        if !pager.offer(order.market, seq, &batch, std::iter::once(index)) {
            return Ok(pager.finish(true));
        }
    }
    // As taker: in the command that placed it.
    if let Some(batch) = TRADES.get(&(order.market, id))
        && !pager.offer(order.market, id, &batch, all_indices(&batch))
    {
        return Ok(pager.finish(true));
    }
    Ok(pager.finish(false))
}
