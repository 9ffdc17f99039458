//! The perp plugin declares every table it writes (`Plugin::tables`), and
//! every stored row converts to JSON and back (the SDK's reserved queries
//! `keel.decode_rows`/`keel.encode_rows`, behind `keel export`).

use std::collections::BTreeSet;

use keel_guest::Plugin;
use keel_guest::testing::Harness;
use keel_plugin_perp::{Command, Perp};

#[test]
fn every_table_written_is_declared_and_every_row_round_trips() {
    let mut h = Harness::<Perp>::new();
    let s = |v: &str| v.to_owned();
    let commands = [
        Command::CreateMarket {
            market: s("BTC"),
            mark_price: 1_000,
            initial_margin_bps: 1_000,
            maintenance_margin_bps: 500,
        },
        Command::Deposit {
            user: s("alice"),
            amount: 10_000,
        },
        Command::Deposit {
            user: s("bob"),
            amount: 10_000,
        },
        Command::Trade {
            user: s("alice"),
            market: s("BTC"),
            size: 3,
            margin: None,
        },
        Command::Trade {
            user: s("bob"),
            market: s("BTC"),
            size: -3,
            margin: None,
        },
        Command::SetMark {
            market: s("BTC"),
            price: 1_100,
        },
        Command::ApplyFunding {
            market: s("BTC"),
            rate_ppm: -250,
        },
    ];
    for command in commands {
        h.handle(command.clone())
            .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    }
    let written: BTreeSet<String> = h.dump().into_keys().collect();
    let declared: BTreeSet<String> = Perp::tables().iter().map(|t| t.name().to_owned()).collect();
    assert_eq!(
        declared.len(),
        Perp::tables().len(),
        "a table declared twice"
    );
    assert_eq!(written, declared);
    let rows = h.check_declared_tables().unwrap();
    assert_eq!(rows, 1 + 2 + 2 + 1);
    // The single ledger row, key 0.
    let ledger = &h.dump()["ledger"];
    assert_eq!(ledger.keys().collect::<Vec<_>>(), [&vec![0u8]]);
}
