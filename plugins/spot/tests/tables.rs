//! The spot plugin declares every table it writes (`Plugin::tables`), and
//! every stored row converts to JSON and back through the SDK's reserved
//! queries (`keel.decode_rows`, `keel.encode_rows`), as `keel export` and
//! import use them.

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use keel_guest::Plugin;
use keel_guest::testing::Harness;
use keel_plugin_spot::Spot;
use serde_json::{Value, json};

/// Two markets, an account, deposits, a withdrawal, a trade, resting
/// orders on both sides and a cancel: a row in every table.
fn busy() -> Harness<Spot> {
    let mut h = Harness::<Spot>::new();
    let commands = [
        json!({"create_market": {"market": 1, "base": "BTC", "quote": "USD", "tick_size": 1, "lot_size": 1, "min_size": 1}}),
        json!({"create_market": {"market": 2, "base": "ETH", "quote": "USD", "tick_size": 5, "lot_size": 1, "min_size": 1}}),
        json!({"open_account": {"principal": "alice", "user": 1}}),
        json!({"deposit": {"user": 1, "asset": "BTC", "amount": 1000}}),
        json!({"deposit": {"user": 2, "asset": "USD", "amount": 1_000_000}}),
        json!({"withdraw": {"user": 2, "asset": "USD", "amount": 10}}),
        json!({"place": {"user": 1, "market": 1, "side": "sell", "price": 100, "qty": 10}}),
        json!({"place": {"user": 2, "market": 1, "side": "buy", "price": 100, "qty": 4}}),
        json!({"place": {"user": 2, "market": 1, "side": "buy", "price": 90, "qty": 5}}),
        json!({"place": {"user": 2, "market": 1, "side": "buy", "price": 80, "qty": 5}}),
        // Order ids are sequence numbers: this is the buy at 80.
        json!({"cancel": {"user": 2, "order": 10}}),
    ];
    for command in commands {
        h.handle_json(&command.to_string())
            .unwrap_or_else(|e| panic!("{command}: {e}"));
    }
    h
}

/// Every stored row: (table, key bytes, value bytes).
fn rows(h: &Harness<Spot>) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    h.dump()
        .into_iter()
        .flat_map(|(t, rows)| rows.into_iter().map(move |(k, v)| (t.clone(), k, v)))
        .collect()
}

/// The answer of `keel.decode_rows` for `rows`.
fn decode(h: &Harness<Spot>, rows: &[(String, Vec<u8>, Vec<u8>)]) -> Vec<Value> {
    let request = json!({"keel.decode_rows": rows
        .iter()
        .map(|(t, k, v)| json!({"table": t, "key": BASE64.encode(k), "value": BASE64.encode(v)}))
        .collect::<Vec<_>>()});
    serde_json::from_slice(&h.query_bytes(request.to_string().as_bytes()).unwrap()).unwrap()
}

#[test]
fn every_table_the_plugin_writes_is_declared_once() {
    let h = busy();
    let written: BTreeSet<String> = h.dump().into_keys().collect();
    let declared: BTreeSet<String> = Spot::tables().iter().map(|t| t.name().to_owned()).collect();
    assert_eq!(
        declared.len(),
        Spot::tables().len(),
        "a table declared twice"
    );
    // The commands above write every declared table (so this test sees
    // them all), and nothing else.
    assert_eq!(written, declared);
}

#[test]
fn every_row_decodes_and_encodes_back_through_the_reserved_queries() {
    let h = busy();
    let dump = h.dump();
    let rows = rows(&h);
    assert!(rows.len() >= 12, "{}", rows.len());
    let decoded = decode(&h, &rows);
    assert_eq!(decoded.len(), rows.len());
    for answer in &decoded {
        assert_eq!(answer.as_object().map(|o| o.len()), Some(2), "{answer}");
    }

    // The JSON names what the plugin stores.
    let market = rows.iter().position(|(t, ..)| t == "markets").unwrap();
    assert_eq!(
        decoded[market],
        json!({"key": 1, "value": {"base": "BTC", "quote": "USD", "tick_size": 1, "lot_size": 1, "min_size": 1}})
    );

    let request = json!({"keel.encode_rows": rows
        .iter()
        .zip(&decoded)
        .map(|((table, ..), answer)| json!({"table": table, "key": answer["key"], "value": answer["value"]}))
        .collect::<Vec<_>>()});
    let encoded: Vec<Value> =
        serde_json::from_slice(&h.query_bytes(request.to_string().as_bytes()).unwrap()).unwrap();
    assert_eq!(encoded.len(), rows.len());
    for ((table, key, value), answer) in rows.iter().zip(&encoded) {
        assert_eq!(
            answer,
            &json!({"key": BASE64.encode(key), "value": BASE64.encode(value)}),
            "{table}"
        );
    }
    // Queries write nothing.
    assert_eq!(h.dump(), dump);
}

/// JSON numbers here stop at 64 bits: a row holding a larger `u128` (a
/// balance, a ledger total) does not convert and comes back `null`, which
/// the host exports as bytes.
#[test]
fn rows_with_integers_beyond_64_bits_decode_to_null() {
    let mut h = busy();
    h.handle_json(r#"{"deposit": {"user": 3, "asset": "USD", "amount": 1000000000000000000000}}"#)
        .unwrap();
    let rows = rows(&h);
    let nulls: Vec<(&str, &[u8])> = rows
        .iter()
        .zip(decode(&h, &rows))
        .filter(|(_, answer)| answer.is_null())
        .map(|((table, key, _), _)| (table.as_str(), key.as_slice()))
        .collect();
    assert_eq!(
        nulls,
        [
            ("ledger", b"USD\0\0".as_slice()),
            ("wallets", 3u64.to_be_bytes().as_slice())
        ]
    );
    assert!(h.check_declared_tables().unwrap_err().contains("ledger"));
}

#[test]
fn every_row_round_trips_through_the_codecs() {
    let h = busy();
    let rows = h.check_declared_tables().unwrap();
    assert_eq!(rows, h.dump().values().map(|t| t.len()).sum::<usize>());
    // The plugin's own queries are unaffected.
    assert_eq!(
        h.query_json(r#"{"balances": {"user": 1}}"#).unwrap()["USD"]["available"],
        400
    );
}
