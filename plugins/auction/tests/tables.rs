//! The auction plugin declares every table it writes (`Plugin::tables`),
//! and every stored row converts to JSON and back (the SDK's reserved
//! queries `keel.decode_rows`/`keel.encode_rows`, behind `keel export`).

use std::collections::BTreeSet;

use keel_guest::testing::Harness;
use keel_guest::{Caller, Plugin};
use keel_plugin_auction::{Auction, Config};
use serde_json::json;

#[test]
fn every_table_written_is_declared_and_every_row_round_trips() {
    let mut h = Harness::<Auction>::with_config(Config::default()).unwrap();
    let ops = Caller::new("ops", ["client", "operator"]);
    let alice = Caller::new("alice", ["client"]);
    let bob = Caller::new("bob", ["client"]);
    let steps = [
        (
            &ops,
            json!({"add_route": {"id": "r1", "lane": "eu", "cost": 1, "latency_ms": 1}}),
        ),
        (
            &ops,
            json!({"add_route": {"id": "r2", "lane": "us", "cost": 3, "latency_ms": 9}}),
        ),
        (
            &alice,
            json!({"register_provider": {"id": "pa", "capacity": 100, "precisions": ["fp16", "fp32"], "price": 10, "lanes": ["eu", "us"]}}),
        ),
        (
            &bob,
            json!({"run_auction": {"job": {"id": "jb", "precision": "fp16", "units": 10, "max_price": 100, "preferred_lane": "eu"}}}),
        ),
        (
            &bob,
            json!({"run_auction": {"job": {"id": "jc", "precision": "fp32", "units": 5, "max_price": 100, "preferred_lane": "us"}, "priority": 2}}),
        ),
        (&alice, json!({"complete_job": {"id": "jb"}})),
    ];
    for (caller, command) in steps {
        h.as_caller(caller)
            .handle_json(&command.to_string())
            .unwrap_or_else(|e| panic!("{command}: {e}"));
    }
    let written: BTreeSet<String> = h.dump().into_keys().collect();
    let declared: BTreeSet<String> = Auction::tables()
        .iter()
        .map(|t| t.name().to_owned())
        .collect();
    assert_eq!(
        declared.len(),
        Auction::tables().len(),
        "a table declared twice"
    );
    assert_eq!(written, declared);
    let rows = h.check_declared_tables().unwrap();
    assert_eq!(rows, h.dump().values().map(|t| t.len()).sum::<usize>());
}
