//! The audit: every conservation and consistency invariant of the state,
//! checked whole (`"audit"`) or in bounded pages (`{"audit_page": …}`).
//!
//! The checks fall in three passes, and every check reads all it needs
//! within one pass's page, so a page never reports a problem that was not
//! real in the state it read, even while commands run between pages:
//!
//! 1. **totals** (the first page): per asset, available plus frozen
//!    balances equal deposits minus withdrawals; no market is crossed.
//!    One pass over the wallets and one book read per market and side.
//! 2. **wallets**, by user: each open order rests on the book under its
//!    owner, with something remaining, and agrees with its order row; each
//!    frozen balance equals what the owner's resting orders hold.
//! 3. **book**, in key order: each resting order is listed in its owner's
//!    open orders (no orphan holds funds nobody accounts for).
//!
//! Pages of passes 2 and 3 stop once `limit` wallets and orders were
//! checked (a user's open orders, at most 1000, are never split), so each page's cost is bounded
//! whatever the size of the state. What pages cannot promise while
//! commands run between them is completeness: a user or order that appears
//! or moves between pages may be checked twice or not at all.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::api::{AssetTotals, Audit, AuditBookKey, AuditCursor, AuditPage};
use crate::store::{BOOK, LEDGER, MARKETS, Market, ORDERS, OpenRef, Side, Stored, WALLETS, Wallet};

/// Default orders checked per audit page.
pub const AUDIT_ORDERS_DEFAULT: u32 = 2000;
/// Most orders checked per audit page (bounds a page's fuel).
pub const AUDIT_ORDERS_MAX: u32 = 10_000;

/// The whole audit in one answer: every pass, unbounded. Its cost grows
/// with the state (a very large book needs a larger query fuel limit, or
/// the pages of [`page`]).
pub fn whole() -> Audit {
    let (assets, mut problems) = totals();
    let markets = markets();
    wallets_after(None, usize::MAX, &markets, &mut problems);
    let (resting_orders, _) = book_after(None, usize::MAX, &mut problems);
    Audit {
        assets,
        resting_orders,
        problems,
    }
}

/// One page of the audit: the totals pass when `after` is `None`, else
/// up to `limit` orders of the pass and position `after` names.
pub fn page(after: Option<AuditCursor>, limit: Option<u32>) -> AuditPage {
    let limit = limit
        .unwrap_or(AUDIT_ORDERS_DEFAULT)
        .clamp(1, AUDIT_ORDERS_MAX) as usize;
    let mut problems = Vec::new();
    match after {
        None => {
            let (assets, problems) = totals();
            AuditPage {
                assets: Some(assets),
                users: 0,
                orders: 0,
                problems,
                next: Some(AuditCursor::Wallets { after: None }),
            }
        }
        Some(AuditCursor::Wallets { after }) => {
            let markets = markets();
            let (users, orders, last) = wallets_after(after, limit, &markets, &mut problems);
            let next = match last {
                Some(user) => AuditCursor::Wallets { after: Some(user) },
                None => AuditCursor::Book { after: None },
            };
            AuditPage {
                assets: None,
                users,
                orders,
                problems,
                next: Some(next),
            }
        }
        Some(AuditCursor::Book { after }) => {
            let (orders, last) = book_after(after, limit, &mut problems);
            AuditPage {
                assets: None,
                users: 0,
                orders,
                problems,
                next: last.map(|key| AuditCursor::Book { after: Some(key) }),
            }
        }
    }
}

fn markets() -> BTreeMap<u32, Market> {
    MARKETS.iter().collect()
}

/// Pass 1: conservation per asset and crossed markets.
fn totals() -> (BTreeMap<String, AssetTotals>, Vec<String>) {
    let mut problems = Vec::new();
    let mut assets: BTreeMap<String, AssetTotals> = BTreeMap::new();
    for (_, wallet) in WALLETS.iter() {
        for (asset, b) in wallet.assets {
            let t = assets.entry(asset).or_default();
            t.available = t.available.saturating_add(b.available);
            t.frozen = t.frozen.saturating_add(b.frozen);
        }
    }
    for (asset, l) in LEDGER.iter() {
        let t = assets.entry(asset).or_default();
        t.deposited = l.deposited;
        t.withdrawn = l.withdrawn;
    }
    for (asset, t) in &assets {
        let held = t.available.saturating_add(t.frozen);
        if Some(held) != t.deposited.checked_sub(t.withdrawn) {
            problems.push(format!(
                "{asset}: balances hold {held} but deposits minus withdrawals are {} - {}",
                t.deposited, t.withdrawn
            ));
        }
    }
    for (market, _) in MARKETS.iter() {
        let best = |side: Side| {
            BOOK.range((
                Bound::Included((market, side.code(), 0, 0)),
                Bound::Included((market, side.code(), u64::MAX, u64::MAX)),
            ))
            .with_chunk(1)
            .next()
            .map(|((_, _, pk, _), _)| side.price_from_key(pk))
        };
        if let (Some(bid), Some(ask)) = (best(Side::Buy), best(Side::Sell))
            && bid >= ask
        {
            problems.push(format!(
                "market {market} is crossed: bid {bid} >= ask {ask}"
            ));
        }
    }
    (assets, problems)
}

/// Pass 2: the wallets of users after `after`, until `limit` wallets and
/// open orders were checked. Returns (users checked, orders checked, the last user if
/// the pass is not finished).
fn wallets_after(
    after: Option<u64>,
    limit: usize,
    markets: &BTreeMap<u32, Market>,
    problems: &mut Vec<String>,
) -> (u64, u64, Option<u64>) {
    let start = after.map_or(Bound::Unbounded, Bound::Excluded);
    let (mut users, mut orders) = (0u64, 0u64);
    let mut last = None;
    for (user, wallet) in WALLETS.range((start, Bound::Unbounded)).with_chunk(64) {
        // A page counts wallets and orders, so many empty wallets bound it too.
        if (users + orders) as usize >= limit {
            return (users, orders, last);
        }
        check_wallet(user, &wallet, markets, problems);
        users += 1;
        orders += wallet.open.len() as u64;
        last = Some(user);
    }
    (users, orders, None)
}

/// One user's open orders against the book and their order rows, and
/// their frozen balances against what those orders hold.
fn check_wallet(
    user: u64,
    wallet: &Wallet,
    markets: &BTreeMap<u32, Market>,
    problems: &mut Vec<String>,
) {
    let mut held: BTreeMap<&str, u128> = BTreeMap::new();
    for o in &wallet.open {
        let id = o.id;
        let Some(m) = markets.get(&o.market) else {
            problems.push(format!(
                "user {user}'s open order {id} is in unknown market {}",
                o.market
            ));
            continue;
        };
        match BOOK.get(&(o.market, o.side.code(), o.side.price_key(o.price), id)) {
            None => problems.push(format!(
                "user {user}'s open order {id} in market {} is not on the book",
                o.market
            )),
            Some(rest) => {
                if rest.user != user {
                    problems.push(format!(
                        "user {user}'s open order {id} rests on the book as user {}'s",
                        rest.user
                    ));
                }
                if rest.remaining == 0 {
                    problems.push(format!("order {id} rests with nothing remaining"));
                }
                match ORDERS.get(&id) {
                    Some(row)
                        if row.state == Stored::Resting
                            && row.user == user
                            && row.market == o.market
                            && row.side == o.side
                            && row.price == o.price
                            && rest.remaining <= row.qty => {}
                    other => problems.push(format!(
                        "resting order {id} disagrees with its order row {other:?}"
                    )),
                }
                let (asset, amount) = match o.side {
                    Side::Buy => (
                        m.quote.as_str(),
                        u128::from(o.price) * u128::from(rest.remaining),
                    ),
                    Side::Sell => (m.base.as_str(), u128::from(rest.remaining)),
                };
                let slot = held.entry(asset).or_default();
                *slot = slot.saturating_add(amount);
            }
        }
    }
    for (asset, b) in &wallet.assets {
        let expected = held.remove(asset.as_str()).unwrap_or(0);
        if b.frozen != expected {
            problems.push(format!(
                "user {user} has {} {asset} frozen, resting orders hold {expected}",
                b.frozen
            ));
        }
    }
    for (asset, expected) in held {
        problems.push(format!(
            "user {user} has no {asset} balance, resting orders hold {expected}"
        ));
    }
}

/// Pass 3: book entries after `after`, until `limit` were checked.
/// Returns (entries checked, the last entry if the pass is not finished).
fn book_after(
    after: Option<AuditBookKey>,
    limit: usize,
    problems: &mut Vec<String>,
) -> (u64, Option<AuditBookKey>) {
    let start = after.map_or(Bound::Unbounded, |k| {
        Bound::Excluded((k.market, k.side.code(), k.side.price_key(k.price), k.id))
    });
    let mut owners: BTreeMap<u64, Option<Wallet>> = BTreeMap::new();
    let mut checked = 0usize;
    let mut last = None;
    for ((market, side_code, pk, id), rest) in
        BOOK.range((start, Bound::Unbounded)).with_chunk(1024)
    {
        if checked == limit {
            return (checked as u64, last);
        }
        let side = if side_code == 0 {
            Side::Buy
        } else {
            Side::Sell
        };
        let price = side.price_from_key(pk);
        let expected = OpenRef {
            market,
            id,
            side,
            price,
        };
        let owner = owners
            .entry(rest.user)
            .or_insert_with(|| WALLETS.get(&rest.user));
        let listed = owner.as_ref().is_some_and(|w| {
            w.open
                .binary_search_by(|o| (o.market, o.id).cmp(&(market, id)))
                .is_ok_and(|i| w.open[i] == expected)
        });
        if !listed {
            problems.push(format!(
                "resting order {id} is missing from its owner's open orders"
            ));
        }
        checked += 1;
        last = Some(AuditBookKey {
            market,
            side,
            price,
            id,
        });
    }
    (checked as u64, None)
}
