//! Commands: markets, transfers, matching and cancels.
//!
//! Every check that can refuse a command runs before, or fails the command
//! after, its writes: an `Err` discards every write of the command (the
//! host's atomicity), so a refusal never changes anything.

use std::collections::BTreeMap;

use keel_guest::{Direction, Error};

use crate::api::{
    Balance, BalanceView, Cancel, CancelAll, Canceled, CreateMarket, FillView, MarketView, Place,
    Placed, Status, Transfer,
};
use crate::store::{
    BOOK, Fill, LEDGER, MARKETS, Market, OPEN_ORDERS_PER_USER_MAX, ORDERS, OpenRef, Order,
    OrderKind, Resting, Side, Stored, TRADES, TradeBatch, WALLETS, Wallet,
};

/// Book entries fetched per host call while matching. Most incoming orders
/// look at one or two resting orders; a sweep fetches more chunks.
const MATCH_SCAN_CHUNK_ENTRIES: u32 = 4;
/// Most resting orders one incoming order may meet (fill or cancel by
/// self-trade prevention): keeps every command well inside the host's
/// per-call fuel budget, so a sweep through a deep book is refused with
/// `too-many-matches` rather than running out of fuel.
pub const MATCHES_PER_ORDER_MAX: usize = 5000;
/// Longest asset name, in bytes.
pub const ASSET_NAME_BYTES_MAX: usize = 32;

/// The error for arithmetic that would leave the representable range.
pub fn overflow(what: &str) -> Error {
    Error::new("overflow", format!("{what} would overflow"))
}

/// The error for state that contradicts the plugin's invariants; never
/// expected, reported rather than trapping.
pub fn corrupt(what: String) -> Error {
    Error::new("corrupt-state", what)
}

fn validate_asset(asset: &str) -> Result<(), Error> {
    let ok = !asset.is_empty()
        && asset.len() <= ASSET_NAME_BYTES_MAX
        && asset
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            "bad-asset",
            format!(
                "asset name {asset:?} must be 1..={ASSET_NAME_BYTES_MAX} bytes of [A-Za-z0-9_.-]"
            ),
        ))
    }
}

/// Loads a market or refuses with `unknown-market`.
pub fn load_market(market: u32) -> Result<Market, Error> {
    MARKETS.get(&market).ok_or_else(|| {
        Error::new(
            "unknown-market",
            format!("no market {market}; create it first"),
        )
    })
}

/// The wallets one command touches, read once and written once at the end
/// (in user order).
#[derive(Default)]
struct Funds {
    rows: BTreeMap<u64, Wallet>,
}

impl Funds {
    fn wallet(&mut self, user: u64) -> &mut Wallet {
        self.rows
            .entry(user)
            .or_insert_with(|| WALLETS.get(&user).unwrap_or_default())
    }

    fn entry(&mut self, user: u64, asset: &str) -> &mut Balance {
        self.wallet(user).balance_mut(asset)
    }

    fn credit(&mut self, user: u64, asset: &str, amount: u128) -> Result<(), Error> {
        let b = self.entry(user, asset);
        b.available = b
            .available
            .checked_add(amount)
            .ok_or_else(|| overflow(&format!("balance of user {user} in {asset}")))?;
        Ok(())
    }

    fn unfreeze(&mut self, user: u64, asset: &str, amount: u128) -> Result<(), Error> {
        self.spend_frozen(user, asset, amount)?;
        self.credit(user, asset, amount)
    }

    fn spend_frozen(&mut self, user: u64, asset: &str, amount: u128) -> Result<(), Error> {
        let b = self.entry(user, asset);
        b.frozen = b.frozen.checked_sub(amount).ok_or_else(|| {
            corrupt(format!(
                "user {user} has {} {asset} frozen, less than the {amount} its orders hold",
                b.frozen
            ))
        })?;
        Ok(())
    }

    /// Writes every wallet touched (zero balances dropped, empty wallets removed).
    fn flush(self) {
        for (user, mut wallet) in self.rows {
            wallet.assets.retain(|(_, b)| *b != Balance::default());
            if wallet == Wallet::default() {
                WALLETS.remove(&user);
            } else {
                WALLETS.put(&user, &wallet);
            }
        }
    }
}

/// What a resting order of `side` at `price` holds frozen for `qty`:
/// (asset, amount).
fn frozen_for(market: &Market, side: Side, price: u64, qty: u64) -> (&str, u128) {
    match side {
        Side::Buy => (&market.quote, u128::from(price) * u128::from(qty)),
        Side::Sell => (&market.base, u128::from(qty)),
    }
}

/// `create_market`.
pub fn create_market(c: CreateMarket) -> Result<MarketView, Error> {
    validate_asset(&c.base)?;
    validate_asset(&c.quote)?;
    if c.base == c.quote {
        return Err(Error::invalid("base and quote must be different assets"));
    }
    if c.tick_size == 0 || c.lot_size == 0 || c.min_size == 0 {
        return Err(Error::invalid(
            "tick_size, lot_size and min_size must be positive",
        ));
    }
    if !c.min_size.is_multiple_of(c.lot_size) {
        return Err(Error::invalid(format!(
            "min_size {} must be a multiple of lot_size {}",
            c.min_size, c.lot_size
        )));
    }
    if MARKETS.contains(&c.market) {
        return Err(Error::new(
            "market-exists",
            format!("market {} already exists", c.market),
        ));
    }
    let market = Market {
        base: c.base,
        quote: c.quote,
        tick_size: c.tick_size,
        lot_size: c.lot_size,
        min_size: c.min_size,
    };
    MARKETS.put(&c.market, &market);
    Ok(market_view(c.market, market))
}

/// A market with its id.
pub fn market_view(id: u32, m: Market) -> MarketView {
    MarketView {
        market: id,
        base: m.base,
        quote: m.quote,
        tick_size: m.tick_size,
        lot_size: m.lot_size,
        min_size: m.min_size,
    }
}

fn check_transfer(t: &Transfer) -> Result<(), Error> {
    validate_asset(&t.asset)?;
    if t.amount == 0 {
        return Err(Error::invalid("amount must be positive"));
    }
    Ok(())
}

/// `deposit`.
pub fn deposit(t: Transfer) -> Result<BalanceView, Error> {
    check_transfer(&t)?;
    let mut ledger = LEDGER.get(&t.asset).unwrap_or_default();
    ledger.deposited = ledger
        .deposited
        .checked_add(t.amount)
        .ok_or_else(|| overflow(&format!("total deposits of {}", t.asset)))?;
    let mut funds = Funds::default();
    funds.credit(t.user, &t.asset, t.amount)?;
    let b = *funds.entry(t.user, &t.asset);
    LEDGER.put(&t.asset, &ledger);
    funds.flush();
    Ok(balance_view(t.user, t.asset, b))
}

/// `withdraw` (from the available balance only).
pub fn withdraw(t: Transfer) -> Result<BalanceView, Error> {
    check_transfer(&t)?;
    let mut funds = Funds::default();
    let b = funds.entry(t.user, &t.asset);
    if b.available < t.amount {
        return Err(Error::new(
            "insufficient-balance",
            format!(
                "user {} has {} {} available (frozen {}), cannot withdraw {}",
                t.user, b.available, t.asset, b.frozen, t.amount
            ),
        ));
    }
    b.available -= t.amount;
    let b = *b;
    let mut ledger = LEDGER.get(&t.asset).unwrap_or_default();
    ledger.withdrawn = ledger
        .withdrawn
        .checked_add(t.amount)
        .ok_or_else(|| overflow(&format!("total withdrawals of {}", t.asset)))?;
    LEDGER.put(&t.asset, &ledger);
    funds.flush();
    Ok(balance_view(t.user, t.asset, b))
}

fn balance_view(user: u64, asset: String, b: Balance) -> BalanceView {
    BalanceView {
        user,
        asset,
        available: b.available,
        frozen: b.frozen,
    }
}

/// Checks an order's quantity and price against the market; returns the
/// limit price (`None` for market orders).
fn validate_order(p: &Place, m: &Market) -> Result<Option<u64>, Error> {
    if p.qty == 0 {
        return Err(Error::invalid("qty must be positive"));
    }
    if !p.qty.is_multiple_of(m.lot_size) {
        return Err(Error::new(
            "bad-lot",
            format!(
                "qty {} is not a multiple of the lot size {}",
                p.qty, m.lot_size
            ),
        ));
    }
    if p.qty < m.min_size {
        return Err(Error::new(
            "below-minimum",
            format!(
                "qty {} is below the market's minimum size {}",
                p.qty, m.min_size
            ),
        ));
    }
    match (p.kind, p.price) {
        (OrderKind::Market, None) => Ok(None),
        (OrderKind::Market, Some(_)) => Err(Error::invalid("a market order takes no price")),
        (kind, None) => Err(Error::invalid(format!("a {kind:?} order needs a price"))),
        (_, Some(0)) => Err(Error::invalid("price must be positive")),
        (_, Some(price)) if !price.is_multiple_of(m.tick_size) => Err(Error::new(
            "bad-tick",
            format!(
                "price {price} is not a multiple of the tick size {}",
                m.tick_size
            ),
        )),
        (_, Some(price)) => Ok(Some(price)),
    }
}

/// Cancels a resting order: releases what it froze, takes it off the book
/// and records the cancel. `order` is its row when the caller has read it.
#[allow(clippy::too_many_arguments)]
fn cancel_resting(
    funds: &mut Funds,
    market: &Market,
    market_id: u32,
    side: Side,
    price: u64,
    order_id: u64,
    rest: Resting,
    order: Option<Order>,
) -> Result<(), Error> {
    let (asset, amount) = frozen_for(market, side, price, rest.remaining);
    funds.unfreeze(rest.user, asset, amount)?;
    BOOK.remove(&(market_id, side.code(), side.price_key(price), order_id));
    if !funds.wallet(rest.user).remove_open(market_id, order_id) {
        return Err(corrupt(format!(
            "resting order {order_id} is missing from its owner's open orders"
        )));
    }
    let mut order = match order {
        Some(order) => order,
        None => load_resting_order(order_id)?,
    };
    order.state = Stored::Canceled;
    order.filled = order
        .qty
        .checked_sub(rest.remaining)
        .ok_or_else(|| corrupt(format!("order {order_id} rests more than its quantity")))?;
    order.maker_fills = rest.maker_fills;
    ORDERS.put(&order_id, &order);
    Ok(())
}

fn load_resting_order(order_id: u64) -> Result<Order, Error> {
    ORDERS
        .get(&order_id)
        .ok_or_else(|| corrupt(format!("resting order {order_id} has no order row")))
}

/// `place`: matches in price-time priority, then rests, cancels or
/// refuses the rest according to the order's kind.
pub fn place(p: Place) -> Result<Placed, Error> {
    let market = load_market(p.market)?;
    let limit = validate_order(&p, &market)?;
    let (user, side, qty, market_id) = (p.user, p.side, p.qty, p.market);
    let id = keel_guest::sequence();
    let timestamp_ms = keel_guest::timestamp_ms();
    let opp = side.opposite();
    let prefix = (market_id, opp.code());
    let crosses = |price: u64| limit.is_none_or(|l| side.crosses(l, price));

    match p.kind {
        OrderKind::PostOnly => {
            if let Some(((_, _, pk, _), _)) = BOOK
                .prefix(&prefix, Direction::Forward)
                .with_chunk(1)
                .next()
            {
                let best = opp.price_from_key(pk);
                if crosses(best) {
                    return Err(Error::new(
                        "would-cross",
                        format!(
                            "post-only {side:?} at {} would trade against {best}",
                            limit.unwrap_or(0)
                        ),
                    ));
                }
            }
        }
        OrderKind::Fok => {
            let mut available: u64 = 0;
            for ((_, _, pk, _), rest) in BOOK.prefix(&prefix, Direction::Forward).with_chunk(16) {
                if available >= qty || !crosses(opp.price_from_key(pk)) {
                    break;
                }
                if rest.user != user {
                    available = available.saturating_add(rest.remaining);
                }
            }
            if available < qty {
                return Err(Error::new(
                    "would-not-fill",
                    format!("fill-or-kill for {qty} finds only {available} at acceptable prices"),
                ));
            }
        }
        _ => {}
    }

    let mut funds = Funds::default();
    let mut remaining = qty;
    let mut fills: Vec<Fill> = Vec::new();
    let mut self_trade_canceled = Vec::new();
    // Each maker user met so far, with its previous trade batch.
    let mut makers: BTreeMap<u64, Option<crate::store::BatchRef>> = BTreeMap::new();
    // What the taker pays and receives for its fills.
    let mut spent: u128 = 0;
    let mut received: u128 = 0;

    // A post-only order was checked not to cross: nothing to match.
    let scan = (p.kind != OrderKind::PostOnly).then(|| {
        BOOK.prefix(&prefix, Direction::Forward)
            .with_chunk(MATCH_SCAN_CHUNK_ENTRIES)
    });
    // `matched`: resting orders met so far (filled or canceled by self-trade
    // prevention); every entry that does not end the loop is one of them.
    for (matched, ((_, _, pk, maker_id), mut rest)) in scan.into_iter().flatten().enumerate() {
        if remaining == 0 {
            break;
        }
        let price = opp.price_from_key(pk);
        if !crosses(price) {
            break;
        }
        if matched == MATCHES_PER_ORDER_MAX {
            return Err(Error::new(
                "too-many-matches",
                format!(
                    "the order would meet more than {MATCHES_PER_ORDER_MAX} resting orders; split it into smaller orders"
                ),
            ));
        }
        if rest.user == user {
            // Self-trade prevention: the resting order is canceled.
            cancel_resting(
                &mut funds, &market, market_id, opp, price, maker_id, rest, None,
            )?;
            self_trade_canceled.push(maker_id);
            continue;
        }
        let q = remaining.min(rest.remaining);
        let notional = u128::from(price) * u128::from(q);
        match side {
            Side::Buy => {
                funds.spend_frozen(rest.user, &market.base, u128::from(q))?;
                funds.credit(rest.user, &market.quote, notional)?;
                spent = spent
                    .checked_add(notional)
                    .ok_or_else(|| overflow("order cost"))?;
                received += u128::from(q);
            }
            Side::Sell => {
                funds.spend_frozen(rest.user, &market.quote, notional)?;
                funds.credit(rest.user, &market.base, u128::from(q))?;
                spent += u128::from(q);
                received = received
                    .checked_add(notional)
                    .ok_or_else(|| overflow("order proceeds"))?;
            }
        }
        rest.remaining -= q;
        remaining -= q;
        let index = u32::try_from(fills.len()).map_err(|_| overflow("fill count"))?;
        rest.maker_fills.push((id, index));
        // Link this batch into the maker's list of fills (once per maker).
        let maker_prev = *makers
            .entry(rest.user)
            .or_insert_with(|| funds.wallet(rest.user).last_batch.replace((market_id, id)));
        fills.push(Fill {
            maker_order: maker_id,
            maker_user: rest.user,
            price,
            qty: q,
            maker_prev,
        });
        let key = (market_id, opp.code(), pk, maker_id);
        if rest.remaining == 0 {
            // Off the book: the order row takes the final state.
            BOOK.remove(&key);
            if !funds.wallet(rest.user).remove_open(market_id, maker_id) {
                return Err(corrupt(format!(
                    "order {maker_id} is missing from its owner's open orders"
                )));
            }
            let mut order = load_resting_order(maker_id)?;
            order.state = Stored::Filled;
            order.filled = order.qty;
            order.maker_fills = rest.maker_fills;
            ORDERS.put(&maker_id, &order);
        } else {
            BOOK.put(&key, &rest);
        }
    }

    let filled = qty - remaining;
    if p.kind == OrderKind::Market && filled == 0 {
        return Err(Error::new(
            "no-liquidity",
            format!(
                "market {market_id} has no {opp:?} orders from other users to fill a market order"
            ),
        ));
    }
    let rests = matches!(p.kind, OrderKind::Limit | OrderKind::PostOnly) && remaining > 0;
    let resting = if rests { remaining } else { 0 };
    let (spend_asset, receive_asset) = match side {
        Side::Buy => (&market.quote, &market.base),
        Side::Sell => (&market.base, &market.quote),
    };
    let freeze = match limit {
        Some(price) if rests => frozen_for(&market, side, price, resting).1,
        _ => 0,
    };
    let need = spent
        .checked_add(freeze)
        .ok_or_else(|| overflow("order cost"))?;
    // An order that neither trades nor rests (an IOC meeting nothing)
    // leaves the taker's funds untouched.
    if need > 0 {
        let b = funds.entry(user, spend_asset);
        if b.available < need {
            return Err(Error::new(
                "insufficient-balance",
                format!(
                    "user {user} has {} {spend_asset} available, the order needs {need} ({spent} to trade, {freeze} to rest)",
                    b.available
                ),
            ));
        }
        b.available -= need;
        b.frozen = b
            .frozen
            .checked_add(freeze)
            .ok_or_else(|| overflow("frozen balance"))?;
    }
    if received > 0 {
        funds.credit(user, receive_asset, received)?;
    }

    let (state, status) = if rests {
        (
            Stored::Resting,
            if filled == 0 {
                Status::Open
            } else {
                Status::PartiallyFilled
            },
        )
    } else if filled == qty {
        (Stored::Filled, Status::Filled)
    } else {
        (Stored::Canceled, Status::Canceled)
    };
    let price = limit.unwrap_or(0);
    ORDERS.put(
        &id,
        &Order {
            user,
            market: market_id,
            side,
            kind: p.kind,
            price,
            qty,
            state,
            filled,
            timestamp_ms,
            maker_fills: Vec::new(),
        },
    );
    if rests {
        BOOK.put(
            &(market_id, side.code(), side.price_key(price), id),
            &Resting {
                user,
                remaining: resting,
                maker_fills: Vec::new(),
            },
        );
        let wallet = funds.wallet(user);
        if wallet.open.len() >= OPEN_ORDERS_PER_USER_MAX {
            return Err(Error::new(
                "too-many-open-orders",
                format!(
                    "user {user} already has {OPEN_ORDERS_PER_USER_MAX} open orders; cancel some first"
                ),
            ));
        }
        wallet.add_open(OpenRef {
            market: market_id,
            id,
            side,
            price,
        });
    }
    let taker_prev = if fills.is_empty() {
        None
    } else {
        funds.wallet(user).last_batch.replace((market_id, id))
    };
    funds.flush();
    let fill_views = fills
        .iter()
        .map(|f| FillView {
            maker_order: f.maker_order,
            maker_user: f.maker_user,
            price: f.price,
            qty: f.qty,
        })
        .collect();
    if !fills.is_empty() {
        TRADES.put(
            &(market_id, id),
            &TradeBatch {
                taker_user: user,
                taker_side: side,
                timestamp_ms,
                taker_prev,
                fills,
            },
        );
    }
    Ok(Placed {
        order: id,
        status,
        filled,
        resting,
        fills: fill_views,
        self_trade_canceled,
    })
}

/// `cancel`.
pub fn cancel(c: Cancel) -> Result<Canceled, Error> {
    let order = ORDERS
        .get(&c.order)
        .ok_or_else(|| Error::not_found(format!("no order {}", c.order)))?;
    if order.user != c.user {
        return Err(Error::new(
            "not-owner",
            format!(
                "order {} belongs to another user; user {} cannot cancel it",
                c.order, c.user
            ),
        ));
    }
    let not_open = || Error::new("not-open", format!("order {} is no longer open", c.order));
    if order.state != Stored::Resting {
        return Err(not_open());
    }
    let key = (
        order.market,
        order.side.code(),
        order.side.price_key(order.price),
        c.order,
    );
    let rest = BOOK
        .get(&key)
        .ok_or_else(|| corrupt(format!("resting order {} is not on the book", c.order)))?;
    let market = load_market(order.market)?;
    let mut funds = Funds::default();
    let (market_id, side, price) = (order.market, order.side, order.price);
    cancel_resting(
        &mut funds,
        &market,
        market_id,
        side,
        price,
        c.order,
        rest,
        Some(order),
    )?;
    funds.flush();
    Ok(Canceled {
        canceled: vec![c.order],
    })
}

/// `cancel_all`.
pub fn cancel_all(c: CancelAll) -> Result<Canceled, Error> {
    let market = load_market(c.market)?;
    let mut funds = Funds::default();
    let open: Vec<OpenRef> = funds
        .wallet(c.user)
        .open
        .iter()
        .filter(|o| o.market == c.market)
        .copied()
        .collect();
    if open.is_empty() {
        return Ok(Canceled {
            canceled: Vec::new(),
        }); // nothing to write
    }
    let mut canceled = Vec::with_capacity(open.len());
    for r in open {
        let rest = BOOK
            .get(&(c.market, r.side.code(), r.side.price_key(r.price), r.id))
            .ok_or_else(|| corrupt(format!("open order {} is not on the book", r.id)))?;
        cancel_resting(
            &mut funds, &market, c.market, r.side, r.price, r.id, rest, None,
        )?;
        canceled.push(r.id);
    }
    funds.flush();
    Ok(Canceled { canceled })
}
