//! A compact vocabulary of random operations shared by the native property
//! tests (this crate) and the component-level ones (`tests/perp.rs`), so
//! both drive exactly the same command sequences. Native builds only.

use crate::Command;

/// Users the simulations trade for.
pub const USERS: [&str; 3] = ["ann", "bob", "cat"];
/// Markets the simulations create, with their base mark price, initial and
/// maintenance margin (bps).
pub const MARKETS: [(&str, i64, u32, u32); 2] =
    [("BTC", 1_000, 1_000, 500), ("ETH", 200, 2_000, 1_000)];
/// A market nobody created.
pub const UNKNOWN_MARKET: &str = "NOPE";

/// One random operation: `(kind, user, market, x)`; see [`command`].
pub type Op = (u8, u8, u8, i64);
/// Range of `kind`.
pub const KINDS: u8 = 18;
/// Range of `market` (the last index is [`UNKNOWN_MARKET`]).
pub const MARKET_CHOICES: u8 = 9;
/// Range of `x` is `-X_MAX..=X_MAX`.
pub const X_MAX: i64 = 30;

/// Markets and deposits every simulation starts from.
pub fn setup() -> Vec<Command> {
    let mut out: Vec<Command> = MARKETS
        .iter()
        .map(|&(m, price, im, mm)| Command::CreateMarket {
            market: m.to_owned(),
            mark_price: price,
            initial_margin_bps: im,
            maintenance_margin_bps: mm,
        })
        .collect();
    for u in USERS {
        out.push(Command::Deposit {
            user: u.to_owned(),
            amount: 5_000,
        });
    }
    out
}

/// The market id for a `market` choice (one time in nine: an unknown market).
pub fn market_id(market: u8) -> &'static str {
    match market % MARKET_CHOICES {
        0..=3 => MARKETS[0].0,
        4..=7 => MARKETS[1].0,
        _ => UNKNOWN_MARKET,
    }
}

fn base_price(market: &str) -> i64 {
    MARKETS.iter().find(|m| m.0 == market).map_or(100, |m| m.1)
}

/// Maps an [`Op`] to a command. `x` (−30..=30) is a size, an amount, a
/// price move in percent of the base price, or a funding rate step.
pub fn command(op: Op) -> Command {
    let (kind, user, market, x) = op;
    let user = USERS[usize::from(user) % USERS.len()].to_owned();
    let m = market_id(market);
    let market = m.to_owned();
    match kind % KINDS {
        0 => Command::Deposit {
            user,
            amount: x.abs() * 100 + 1,
        },
        1 => Command::Withdraw {
            user,
            amount: x.abs() * 60,
        },
        2..=5 => Command::Trade {
            user,
            market,
            size: x,
            margin: None,
        },
        6 => Command::Open {
            user,
            market,
            size: x,
            margin: None,
        },
        7 => Command::Increase {
            user,
            market,
            amount: x.abs(),
            margin: None,
        },
        8 => Command::Reduce {
            user,
            market,
            amount: x.abs(),
        },
        9 => Command::Close { user, market },
        10..=12 => Command::SetMark {
            price: base_price(m) * (100 + x) / 100,
            market,
        },
        13 => Command::ApplyFunding {
            market,
            rate_ppm: x * 700,
        },
        14 => Command::AdjustMargin {
            user,
            market,
            amount: x * 25,
        },
        15 | 16 => Command::Liquidate { user, market },
        _ => Command::Trade {
            user,
            market,
            size: x,
            margin: Some(x.abs() * 40),
        },
    }
}
