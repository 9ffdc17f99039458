//! A reference model of the spot plugin, written separately from it: plain
//! vectors kept sorted best-first, linear matching, whole-state rollback on
//! refusal. Shared by the native property test (plugins/spot/tests) and the
//! component-level one (tests/spot.rs, via `#[path]`).
//!
//! It consumes the plugin's public command types (the interface) and
//! produces the answers the plugin must give; nothing of the plugin's
//! engine is used.

#![allow(dead_code)]

use std::collections::BTreeMap;

use keel_plugin_spot::api::{
    AccountView, Balance, BalanceView, BookDump, Canceled, Command, FillView, Market, MarketView,
    OrderKind, Placed, Queue, QueuedOrder, Response, Side, Status,
};

/// A resting order in the model's book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rest {
    pub id: u64,
    pub user: u64,
    pub price: u64,
    pub remaining: u64,
}

/// What the model remembers of every order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub user: u64,
    pub market: u32,
    pub side: Side,
    pub price: u64,
    pub qty: u64,
    pub filled: u64,
    pub status: Status,
}

#[derive(Debug, Clone, Default)]
pub struct Model {
    pub markets: BTreeMap<u32, Market>,
    pub balances: BTreeMap<(u64, String), Balance>,
    /// (market, side) → resting orders, best first (FIFO within a price).
    pub books: BTreeMap<(u32, Side), Vec<Rest>>,
    pub orders: BTreeMap<u64, Rec>,
    /// Asset → deposits minus withdrawals.
    pub net: BTreeMap<String, i128>,
    /// Principal → account (`open_account`).
    pub accounts: BTreeMap<String, u64>,
}

fn err<T>(code: &str) -> Result<T, String> {
    Err(code.to_owned())
}

fn better_or_equal(side: Side, a: u64, b: u64) -> bool {
    match side {
        Side::Buy => a >= b,
        Side::Sell => a <= b,
    }
}

impl Model {
    /// Applies `cmd` as command number `seq`; on refusal nothing changes
    /// and the error code is returned.
    pub fn apply(&mut self, seq: u64, cmd: &Command) -> Result<Response, String> {
        let mut next = self.clone();
        let out = next.apply_inner(seq, cmd)?;
        *self = next;
        Ok(out)
    }

    fn bal(&mut self, user: u64, asset: &str) -> &mut Balance {
        self.balances.entry((user, asset.to_owned())).or_default()
    }

    fn apply_inner(&mut self, seq: u64, cmd: &Command) -> Result<Response, String> {
        match cmd {
            Command::CreateMarket(c) => {
                let ok_name = |s: &str| {
                    !s.is_empty()
                        && s.len() <= 32
                        && s.chars()
                            .all(|ch| ch.is_ascii_alphanumeric() || "_.-".contains(ch))
                };
                if !ok_name(&c.base) || !ok_name(&c.quote) {
                    return err("bad-asset");
                }
                if c.base == c.quote
                    || c.tick_size == 0
                    || c.lot_size == 0
                    || c.min_size == 0
                    || c.min_size % c.lot_size != 0
                {
                    return err("invalid-argument");
                }
                if self.markets.contains_key(&c.market) {
                    return err("market-exists");
                }
                let m = Market {
                    base: c.base.clone(),
                    quote: c.quote.clone(),
                    tick_size: c.tick_size,
                    lot_size: c.lot_size,
                    min_size: c.min_size,
                };
                self.markets.insert(c.market, m);
                Ok(Response::Market(MarketView {
                    market: c.market,
                    base: c.base.clone(),
                    quote: c.quote.clone(),
                    tick_size: c.tick_size,
                    lot_size: c.lot_size,
                    min_size: c.min_size,
                }))
            }
            Command::Deposit(t) | Command::Withdraw(t) => {
                if t.asset.is_empty()
                    || t.asset.len() > 32
                    || !t
                        .asset
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || "_.-".contains(ch))
                {
                    return err("bad-asset");
                }
                if t.amount == 0 {
                    return err("invalid-argument");
                }
                let deposit = matches!(cmd, Command::Deposit(_));
                let b = self.bal(t.user, &t.asset);
                if deposit {
                    b.available = b.available.checked_add(t.amount).ok_or("overflow")?;
                } else {
                    if b.available < t.amount {
                        return err("insufficient-balance");
                    }
                    b.available -= t.amount;
                }
                let b = *b;
                let delta = i128::try_from(t.amount).unwrap();
                *self.net.entry(t.asset.clone()).or_default() +=
                    if deposit { delta } else { -delta };
                Ok(Response::Balance(BalanceView {
                    user: t.user,
                    asset: t.asset.clone(),
                    available: b.available,
                    frozen: b.frozen,
                }))
            }
            Command::Cancel(c) => {
                let Some(rec) = self.orders.get(&c.order).cloned() else {
                    return err("not-found");
                };
                if rec.user != c.user {
                    return err("not-owner");
                }
                if !matches!(rec.status, Status::Open | Status::PartiallyFilled) {
                    return err("not-open");
                }
                self.cancel_resting(rec.market, rec.side, c.order);
                Ok(Response::Canceled(Canceled {
                    canceled: vec![c.order],
                }))
            }
            Command::CancelAll(c) => {
                if !self.markets.contains_key(&c.market) {
                    return err("unknown-market");
                }
                let mut ids: Vec<(u64, Side)> = Vec::new();
                for side in [Side::Buy, Side::Sell] {
                    for r in self.books.get(&(c.market, side)).into_iter().flatten() {
                        if r.user == c.user {
                            ids.push((r.id, side));
                        }
                    }
                }
                ids.sort();
                for (id, side) in &ids {
                    self.cancel_resting(c.market, *side, *id);
                }
                Ok(Response::Canceled(Canceled {
                    canceled: ids.into_iter().map(|(id, _)| id).collect(),
                }))
            }
            Command::Place(p) => self.place(seq, p).map(Response::Placed),
            Command::OpenAccount(o) => {
                if o.principal.is_empty()
                    || o.principal.len() > 128
                    || o.principal.chars().any(char::is_control)
                {
                    return err("invalid-argument");
                }
                if self.accounts.contains_key(&o.principal) {
                    return err("account-exists");
                }
                if self.accounts.values().any(|&u| u == o.user) {
                    return err("account-taken");
                }
                self.accounts.insert(o.principal.clone(), o.user);
                Ok(Response::Account(AccountView {
                    principal: o.principal.clone(),
                    user: o.user,
                }))
            }
        }
    }

    /// Removes a resting order, releases its funds and marks it canceled.
    fn cancel_resting(&mut self, market: u32, side: Side, id: u64) {
        let book = self.books.get_mut(&(market, side)).unwrap();
        let pos = book.iter().position(|r| r.id == id).unwrap();
        let r = book.remove(pos);
        let m = self.markets[&market].clone();
        let (asset, amount) = match side {
            Side::Buy => (m.quote, u128::from(r.price) * u128::from(r.remaining)),
            Side::Sell => (m.base, u128::from(r.remaining)),
        };
        let b = self.bal(r.user, &asset);
        b.frozen -= amount;
        b.available += amount;
        let rec = self.orders.get_mut(&id).unwrap();
        rec.status = Status::Canceled;
        rec.filled = rec.qty - r.remaining;
    }

    fn place(&mut self, seq: u64, p: &keel_plugin_spot::api::Place) -> Result<Placed, String> {
        let Some(m) = self.markets.get(&p.market).cloned() else {
            return err("unknown-market");
        };
        if p.qty == 0 {
            return err("invalid-argument");
        }
        if !p.qty.is_multiple_of(m.lot_size) {
            return err("bad-lot");
        }
        if p.qty < m.min_size {
            return err("below-minimum");
        }
        let limit = match (p.kind, p.price) {
            (OrderKind::Market, None) => None,
            (OrderKind::Market, Some(_)) | (_, None) | (_, Some(0)) => {
                return err("invalid-argument");
            }
            (_, Some(x)) if x % m.tick_size != 0 => return err("bad-tick"),
            (_, Some(x)) => Some(x),
        };
        let acceptable = |price: u64| match (limit, p.side) {
            (None, _) => true,
            (Some(l), Side::Buy) => price <= l,
            (Some(l), Side::Sell) => price >= l,
        };
        let opp = match p.side {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        };
        let opp_book = self
            .books
            .get(&(p.market, opp))
            .cloned()
            .unwrap_or_default();
        if p.kind == OrderKind::PostOnly && opp_book.first().is_some_and(|r| acceptable(r.price)) {
            return err("would-cross");
        }
        if p.kind == OrderKind::Fok {
            let total: u64 = opp_book
                .iter()
                .filter(|r| acceptable(r.price) && r.user != p.user)
                .map(|r| r.remaining)
                .sum();
            if total < p.qty {
                return err("would-not-fill");
            }
        }
        let mut remaining = p.qty;
        let mut fills = Vec::new();
        let mut stp = Vec::new();
        let mut spent: u128 = 0;
        let mut received: u128 = 0;
        let mut matched = 0;
        loop {
            if remaining == 0 {
                break;
            }
            let Some(r) = self
                .books
                .get(&(p.market, opp))
                .and_then(|b| b.first())
                .cloned()
            else {
                break;
            };
            if !acceptable(r.price) {
                break;
            }
            if matched == 5000 {
                return err("too-many-matches");
            }
            matched += 1;
            if r.user == p.user {
                self.cancel_resting(p.market, opp, r.id);
                stp.push(r.id);
                continue;
            }
            let q = remaining.min(r.remaining);
            assert!(q <= remaining && q <= r.remaining);
            let notional = u128::from(r.price) * u128::from(q);
            match p.side {
                Side::Buy => {
                    let b = self.bal(r.user, &m.base);
                    b.frozen -= u128::from(q);
                    self.bal(r.user, &m.quote).available += notional;
                    spent += notional;
                    received += u128::from(q);
                }
                Side::Sell => {
                    self.bal(r.user, &m.quote).frozen -= notional;
                    self.bal(r.user, &m.base).available += u128::from(q);
                    spent += u128::from(q);
                    received += notional;
                }
            }
            remaining -= q;
            let book = self.books.get_mut(&(p.market, opp)).unwrap();
            if q == r.remaining {
                book.remove(0);
            } else {
                book[0].remaining -= q;
            }
            let maker = self.orders.get_mut(&r.id).unwrap();
            maker.filled += q;
            maker.status = if maker.filled == maker.qty {
                Status::Filled
            } else {
                Status::PartiallyFilled
            };
            fills.push(FillView {
                maker_order: r.id,
                maker_user: r.user,
                price: r.price,
                qty: q,
            });
        }
        let filled = p.qty - remaining;
        if p.kind == OrderKind::Market && filled == 0 {
            return err("no-liquidity");
        }
        let rests = matches!(p.kind, OrderKind::Limit | OrderKind::PostOnly) && remaining > 0;
        let resting = if rests { remaining } else { 0 };
        let (spend, receive) = match p.side {
            Side::Buy => (m.quote.clone(), m.base.clone()),
            Side::Sell => (m.base.clone(), m.quote.clone()),
        };
        let freeze = match p.side {
            Side::Buy => u128::from(limit.unwrap_or(0)) * u128::from(resting),
            Side::Sell => u128::from(resting),
        };
        let b = self.bal(p.user, &spend);
        if b.available < spent + freeze {
            return err("insufficient-balance");
        }
        b.available -= spent + freeze;
        b.frozen += freeze;
        self.bal(p.user, &receive).available += received;
        let open_orders = self
            .books
            .values()
            .flatten()
            .filter(|r| r.user == p.user)
            .count();
        if rests && open_orders >= 1000 {
            return err("too-many-open-orders");
        }
        let status = if rests {
            if filled == 0 {
                Status::Open
            } else {
                Status::PartiallyFilled
            }
        } else if filled == p.qty {
            Status::Filled
        } else {
            Status::Canceled
        };
        self.orders.insert(
            seq,
            Rec {
                user: p.user,
                market: p.market,
                side: p.side,
                price: limit.unwrap_or(0),
                qty: p.qty,
                filled,
                status,
            },
        );
        if rests {
            let price = limit.unwrap();
            let book = self.books.entry((p.market, p.side)).or_default();
            // Behind every order at an equal or better price (FIFO), ahead of worse ones.
            let pos = book
                .iter()
                .position(|r| !better_or_equal(p.side, r.price, price))
                .unwrap_or(book.len());
            book.insert(
                pos,
                Rest {
                    id: seq,
                    user: p.user,
                    price,
                    remaining: resting,
                },
            );
        }
        Ok(Placed {
            order: seq,
            status,
            filled,
            resting,
            fills,
            self_trade_canceled: stp,
        })
    }

    /// The book of a market in the plugin's dump format.
    pub fn book(&self, market: u32) -> BookDump {
        let side = |s: Side| {
            let mut out: Vec<Queue> = Vec::new();
            for r in self.books.get(&(market, s)).into_iter().flatten() {
                let q = QueuedOrder {
                    id: r.id,
                    user: r.user,
                    remaining: r.remaining,
                };
                match out.last_mut() {
                    Some(level) if level.price == r.price => level.orders.push(q),
                    _ => out.push(Queue {
                        price: r.price,
                        orders: vec![q],
                    }),
                }
            }
            out
        };
        BookDump {
            market,
            bids: side(Side::Buy),
            asks: side(Side::Sell),
            next: None,
        }
    }

    /// A user's non-zero balances.
    pub fn balances(&self, user: u64) -> BTreeMap<String, Balance> {
        self.balances
            .iter()
            .filter(|((u, _), b)| *u == user && **b != Balance::default())
            .map(|((_, a), b)| (a.clone(), *b))
            .collect()
    }

    /// Sum of available + frozen of an asset over all users.
    pub fn held(&self, asset: &str) -> u128 {
        self.balances
            .iter()
            .filter(|((_, a), _)| a == asset)
            .map(|(_, b)| b.available + b.frozen)
            .sum()
    }

    /// Whether some market's best bid is at or above its best ask.
    pub fn crossed(&self) -> bool {
        self.markets.keys().any(|m| {
            let bid = self.books.get(&(*m, Side::Buy)).and_then(|b| b.first());
            let ask = self.books.get(&(*m, Side::Sell)).and_then(|b| b.first());
            matches!((bid, ask), (Some(b), Some(a)) if b.price >= a.price)
        })
    }
}

/// Test fixtures shared by the native and component property tests.
pub mod streams {
    use keel_plugin_spot::api::{
        Cancel, CancelAll, Command, CreateMarket, OrderKind, Place, Side, Transfer,
    };

    pub const USERS: u64 = 3;
    pub const ASSETS: [&str; 3] = ["AAA", "BBB", "USD"];

    /// Two markets: 1 = AAA/USD (tick 1, lot 1, min 1), 2 = BBB/USD (tick 5, lot 10, min 20).
    pub fn setup() -> Vec<Command> {
        let mut out = vec![
            Command::CreateMarket(CreateMarket {
                market: 1,
                base: "AAA".into(),
                quote: "USD".into(),
                tick_size: 1,
                lot_size: 1,
                min_size: 1,
            }),
            Command::CreateMarket(CreateMarket {
                market: 2,
                base: "BBB".into(),
                quote: "USD".into(),
                tick_size: 5,
                lot_size: 10,
                min_size: 20,
            }),
        ];
        for user in 1..=USERS {
            for (asset, amount) in [("AAA", 200), ("BBB", 2_000), ("USD", 5_000)] {
                out.push(Command::Deposit(Transfer {
                    user,
                    asset: asset.into(),
                    amount,
                }));
            }
        }
        out
    }

    /// One random step: `None` means "restart here" (component level; a
    /// no-op natively). `last_seq` bounds the order ids a cancel picks.
    pub fn command(op: (u8, u8, u8, u8, u8, u8), last_seq: u64) -> Option<Command> {
        let (what, user, market, side, price, qty) = op;
        let user = u64::from(user) % USERS + 1;
        let market = u32::from(market % 2) + 1;
        let side = if side % 2 == 0 { Side::Buy } else { Side::Sell };
        let (tick, lot) = if market == 1 { (1u64, 1u64) } else { (5, 10) };
        // Prices around a mid of 10 ticks.
        let mut price = tick * (4 + u64::from(price % 13));
        let mut qty = lot * (1 + u64::from(qty % 8));
        let kind = match what % 20 {
            0..=9 => OrderKind::Limit,
            10 => OrderKind::Market,
            11 => OrderKind::Ioc,
            12 => OrderKind::Fok,
            13 => OrderKind::PostOnly,
            14 | 15 => {
                let order = u64::from(op.4) * 7 + u64::from(op.5);
                return Some(Command::Cancel(Cancel {
                    user,
                    order: if last_seq == 0 {
                        1
                    } else {
                        order % (last_seq + 2)
                    },
                }));
            }
            16 => return Some(Command::CancelAll(CancelAll { user, market })),
            17 => {
                let asset = ASSETS[usize::from(op.3) % 3];
                let amount = u128::from(op.5) * 10;
                return Some(if op.4.is_multiple_of(2) {
                    Command::Deposit(Transfer {
                        user,
                        asset: asset.into(),
                        amount,
                    })
                } else {
                    Command::Withdraw(Transfer {
                        user,
                        asset: asset.into(),
                        amount,
                    })
                });
            }
            18 => {
                // Occasionally hostile numbers: zero, off-lot, off-tick.
                match op.5 % 3 {
                    0 => qty = 0,
                    1 => qty += 1,
                    _ => price += 1,
                }
                OrderKind::Limit
            }
            _ => return None,
        };
        Some(Command::Place(Place {
            user,
            market,
            side,
            kind,
            price: (kind != OrderKind::Market).then_some(price),
            qty,
        }))
    }
}
