//! Invariant 4: a plugin cannot read or write another plugin's tables,
//! whatever table name it passes. The host prefixes every key with the
//! calling plugin's id; names that could smuggle a separator are refused.

use keel_tests::{TestHost, plugins};
use proptest::prelude::*;
use serde_json::json;

fn two_plugins() -> TestHost {
    let t = TestHost::new();
    t.deploy_file(plugins::COUNTER);
    t.deploy_file(plugins::MISBEHAVE);
    t.call("counter", json!({"add": {"name": "apples", "amount": 5}}))
        .unwrap();
    t
}

#[test]
fn same_table_name_is_a_different_table() {
    let t = two_plugins();
    let counter_before = t.tables("counter");
    // "counts" is the counter's table; the misbehaving plugin asks for it by name.
    let seen = t
        .query(
            "misbehave",
            json!({"get_raw": {"table": "counts", "key": b"apples".to_vec()}}),
        )
        .unwrap();
    assert_eq!(seen, json!(null), "misbehave read the counter's row");
    let scanned = t
        .query("misbehave", json!({"scan_raw": {"table": "counts"}}))
        .unwrap();
    assert_eq!(scanned, json!([]));
    t.call(
        "misbehave",
        json!({"put_raw": {"table": "counts", "key": b"apples".to_vec(), "value": [1, 2, 3]}}),
    )
    .unwrap();
    t.call(
        "misbehave",
        json!({"remove_raw": {"table": "counts", "key": b"apples".to_vec()}}),
    )
    .unwrap();
    assert_eq!(
        t.tables("counter"),
        counter_before,
        "misbehave changed the counter's tables"
    );
    assert_eq!(
        t.query("counter", json!({"get": {"name": "apples"}}))
            .unwrap(),
        json!(5)
    );
}

#[test]
fn names_that_try_to_escape_are_refused() {
    let t = two_plugins();
    let counter_before = t.tables("counter");
    for name in [
        "",
        "../counts",
        "counter/counts",
        "counter:counts",
        "Counts",
        "counts\u{0}x",
        "é",
        &"x".repeat(65),
    ] {
        let err = t
            .call(
                "misbehave",
                json!({"put_raw": {"table": name, "key": [1], "value": [2]}}),
            )
            .unwrap_err();
        assert_eq!(err.code(), "invalid-table-name", "{name:?}: {err}");
        let err = t
            .query("misbehave", json!({"get_raw": {"table": name, "key": [1]}}))
            .unwrap_err();
        assert_eq!(err.code(), "invalid-table-name", "{name:?}: {err}");
    }
    assert_eq!(t.tables("counter"), counter_before);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Whatever table name and key a plugin uses, the other plugin's
    /// committed tables do not change and it never sees them.
    #[test]
    fn arbitrary_names_and_keys_stay_inside_the_plugin(
        name in "\\PC{0,70}",
        key in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let t = two_plugins();
        let counter_before = t.tables("counter");
        let _ = t.call("misbehave", json!({"put_raw": {"table": name, "key": key, "value": [9]}}));
        let seen = t.query("misbehave", json!({"scan_raw": {"table": name}}));
        if let Ok(entries) = seen {
            for entry in entries.as_array().unwrap() {
                prop_assert_eq!(&entry[1], &json!([9]), "saw a foreign value {}", entry);
            }
        }
        prop_assert_eq!(t.tables("counter"), counter_before);
    }
}
