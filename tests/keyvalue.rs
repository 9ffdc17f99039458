//! `wasi:keyvalue@0.2.0-draft2` served on Keel's tables: the same
//! guarantees as the native `tables` interface (atomicity, isolation
//! between plugins, limits, replay), proved through the standard interface
//! with the `kv-probe` component (world `kv-plugin`).

use keel_tests::{TestHost, plugins};
use serde_json::{Value, json};

const PROBE: &str = "kv-probe";

fn probe_host() -> TestHost {
    let t = TestHost::new();
    t.deploy_file(plugins::KV_PROBE);
    t
}

/// Runs `ops` as one command and returns the per-op outcomes.
fn call_ops(t: &TestHost, ops: Value) -> Vec<Value> {
    let answer = t
        .call(PROBE, json!({ "ops": ops }))
        .unwrap_or_else(|e| panic!("command {ops} failed: {e}"));
    answer.as_array().cloned().expect("a list of outcomes")
}

/// Runs `ops` as one query and returns the per-op outcomes.
fn query_ops(t: &TestHost, ops: Value) -> Vec<Value> {
    let answer = t
        .query(PROBE, json!({ "ops": ops }))
        .unwrap_or_else(|e| panic!("query {ops} failed: {e}"));
    answer.as_array().cloned().expect("a list of outcomes")
}

fn ok(outcome: &Value) -> &Value {
    outcome
        .get("ok")
        .unwrap_or_else(|| panic!("expected ok, got {outcome}"))
}

/// The (code, message) of a failed op.
fn err(outcome: &Value) -> (String, String) {
    let e = outcome
        .get("err")
        .unwrap_or_else(|| panic!("expected an error, got {outcome}"));
    (
        e["code"].as_str().unwrap().to_owned(),
        e["message"].as_str().unwrap().to_owned(),
    )
}

fn get(t: &TestHost, bucket: &str, key: &str) -> Value {
    let out = query_ops(t, json!([{"get": {"bucket": bucket, "key": key}}]));
    ok(&out[0]).clone()
}

fn row(bucket: &str, key: &str) -> (String, Vec<u8>) {
    (bucket.to_owned(), key.as_bytes().to_vec())
}

/// A plugin with some committed state to protect.
fn seeded() -> TestHost {
    let t = probe_host();
    call_ops(
        &t,
        json!([
            {"set": {"bucket": "b", "key": "kept", "value": "v"}},
            {"increment": {"bucket": "n", "key": "count", "delta": 7}},
        ]),
    );
    t
}

/// Every kind of write the interface has, on keys old and new.
fn every_write() -> Value {
    json!([
        {"set": {"bucket": "b", "key": "new", "value": "x"}},
        {"set": {"bucket": "b", "key": "kept", "value": "overwritten"}},
        {"delete": {"bucket": "b", "key": "kept"}},
        {"increment": {"bucket": "n", "key": "count", "delta": 100}},
        {"cas": {"bucket": "b", "key": "cas", "value": "swapped"}},
        {"set_many": {"bucket": "m", "entries": [["a", "1"], ["b", "2"]]}},
        {"delete_many": {"bucket": "n", "keys": ["count"]}},
        {"fill": {"bucket": "f", "prefix": "k", "count": 50}},
    ])
}

fn assert_no_trace(t: &TestHost, command: Value, expected_code: &str) {
    let hash = t.state_hash(PROBE);
    let tables = t.tables(PROBE);
    let seq = t.status(PROBE).last_sequence;
    let e = t.call(PROBE, command.clone()).unwrap_err();
    assert_eq!(e.code(), expected_code, "{command}: {e}");
    assert_eq!(e.sequence(), Some(seq + 1), "a failed command is journaled");
    assert_eq!(
        t.state_hash(PROBE),
        hash,
        "{command} changed the state hash"
    );
    assert_eq!(t.tables(PROBE), tables, "{command} changed the tables");
    // The plugin keeps serving.
    call_ops(
        t,
        json!([{"set": {"bucket": "b", "key": "after", "value": "ok"}}]),
    );
    assert_eq!(get(t, "b", "after"), json!("ok"));
    call_ops(t, json!([{"delete": {"bucket": "b", "key": "after"}}]));
}

#[test]
fn buckets_are_the_plugins_tables() {
    let t = probe_host();
    let out = call_ops(
        &t,
        json!([
            {"set": {"bucket": "users", "key": "ada", "value": "lovelace"}},
            {"get": {"bucket": "users", "key": "ada"}},
            {"exists": {"bucket": "users", "key": "ada"}},
            {"exists": {"bucket": "users", "key": "bob"}},
            {"get": {"bucket": "users", "key": "bob"}},
            {"get": {"bucket": "other", "key": "ada"}},
            {"set": {"bucket": "users", "key": "é/ü", "value": ""}},
            {"delete": {"bucket": "users", "key": "nobody"}},
        ]),
    );
    assert_eq!(ok(&out[1]), &json!("lovelace"));
    assert_eq!(ok(&out[2]), &json!(true));
    assert_eq!(ok(&out[3]), &json!(false));
    assert_eq!(ok(&out[4]), &json!(null));
    assert_eq!(ok(&out[5]), &json!(null), "another bucket is another table");
    assert_eq!(ok(&out[7]), &json!(null), "deleting an absent key is fine");
    // Stored as rows of the table `users`, keyed by the key's UTF-8 bytes.
    let tables = t.tables(PROBE);
    assert_eq!(tables.len(), 2, "{tables:?}");
    assert_eq!(tables[&row("users", "ada")], b"lovelace");
    assert_eq!(tables[&row("users", "é/ü")], b"");
    call_ops(&t, json!([{"delete": {"bucket": "users", "key": "ada"}}]));
    assert_eq!(get(&t, "users", "ada"), json!(null));
    assert!(!t.tables(PROBE).contains_key(&row("users", "ada")));
}

#[test]
fn error_after_writes_leaves_no_trace() {
    let t = seeded();
    assert_no_trace(
        &t,
        json!({"ops": every_write(), "then": "error"}),
        "deliberate",
    );
}

#[test]
fn trap_after_writes_leaves_no_trace() {
    let t = seeded();
    assert_no_trace(&t, json!({"ops": every_write(), "then": "trap"}), "trap");
}

#[test]
fn failures_inside_one_pipelined_batch_do_not_disturb_their_neighbours() {
    let t = seeded();
    let host = t.host();
    let mut pending = Vec::new();
    for i in 0..40 {
        let then = match i % 4 {
            0 => "trap",
            1 => "error",
            _ => "ok",
        };
        let cmd = json!({
            "ops": [
                {"set": {"bucket": "p", "key": format!("k{i:02}"), "value": then}},
                {"increment": {"bucket": "p", "key": "total", "delta": 1}},
            ],
            "then": then,
        });
        let rx = host
            .submit_pipelined(PROBE, cmd.to_string().as_bytes())
            .unwrap();
        pending.push((i, rx));
    }
    for (i, rx) in pending {
        let result = rx.blocking_recv().unwrap();
        assert_eq!(result.is_ok(), i % 4 >= 2, "command {i}: {result:?}");
    }
    let keys = query_ops(&t, json!([{"list_all": {"bucket": "p"}}]));
    let expected: Vec<String> = (0..40)
        .filter(|i| i % 4 >= 2)
        .map(|i| format!("k{i:02}"))
        .chain(["total".to_owned()])
        .collect();
    assert_eq!(ok(&keys[0])["pages"], json!([expected]));
    assert_eq!(t.tables(PROBE)[&row("p", "total")], 20i64.to_le_bytes());
    assert!(t.verify_replay().iter().all(|v| v.ok()));
}

#[test]
fn a_store_error_the_plugin_returns_discards_earlier_writes() {
    let t = TestHost::with_config(|c| c.limits.value_bytes_max = 100);
    t.deploy_file(plugins::KV_PROBE);
    let hash = t.state_hash(PROBE);
    let e = t
        .call(
            PROBE,
            json!({"strict": true, "ops": [
                {"set": {"bucket": "b", "key": "small", "value": "fits"}},
                {"set_sized": {"bucket": "b", "key": "big", "size": 101}},
            ]}),
        )
        .unwrap_err();
    assert_eq!(e.code(), "other", "{e}");
    assert!(e.to_string().contains("value-too-large"), "{e}");
    assert!(e.to_string().contains("100"), "{e}");
    assert_eq!(t.state_hash(PROBE), hash);
    assert!(t.tables(PROBE).is_empty());
}

#[test]
fn other_plugins_tables_are_unreachable() {
    let t = TestHost::new();
    t.deploy_file(plugins::COUNTER);
    t.deploy_file(plugins::MISBEHAVE);
    t.deploy_file(plugins::KV_PROBE);
    t.call("counter", json!({"add": {"name": "apples", "amount": 5}}))
        .unwrap();
    t.call(
        "misbehave",
        json!({"put_raw": {"table": "shared", "key": b"k".to_vec(), "value": [1, 2, 3]}}),
    )
    .unwrap();
    let counter_before = t.tables("counter");
    let misbehave_before = t.tables("misbehave");
    let counter_hash = t.state_hash("counter");
    let misbehave_hash = t.state_hash("misbehave");

    // The counter's table `counts` and misbehave's `shared`, by name: empty.
    let seen = query_ops(
        &t,
        json!([
            {"list_all": {"bucket": "counts"}},
            {"list_all": {"bucket": "shared"}},
            {"get": {"bucket": "shared", "key": "k"}},
            {"get_many": {"bucket": "counts", "keys": ["apples"]}},
        ]),
    );
    assert_eq!(ok(&seen[0]), &json!({"pages": [[]]}));
    assert_eq!(ok(&seen[1]), &json!({"pages": [[]]}));
    assert_eq!(ok(&seen[2]), &json!(null));
    assert_eq!(ok(&seen[3]), &json!([null]));

    // Writing and deleting under the same names touches only the probe's own tables.
    call_ops(
        &t,
        json!([
            {"set": {"bucket": "shared", "key": "k", "value": "mine"}},
            {"increment": {"bucket": "counts", "key": "apples", "delta": 1000}},
            {"delete_many": {"bucket": "counts", "keys": ["apples", "pears"]}},
            {"set": {"bucket": "counts", "key": "apples", "value": "mine too"}},
            {"delete": {"bucket": "shared", "key": "other"}},
        ]),
    );
    assert_eq!(t.tables("counter"), counter_before);
    assert_eq!(t.tables("misbehave"), misbehave_before);
    assert_eq!(t.state_hash("counter"), counter_hash);
    assert_eq!(t.state_hash("misbehave"), misbehave_hash);
    assert_eq!(
        t.query("counter", json!({"get": {"name": "apples"}}))
            .unwrap(),
        json!(5)
    );
    assert_eq!(
        t.query(
            "misbehave",
            json!({"get_raw": {"table": "shared", "key": b"k".to_vec()}})
        )
        .unwrap(),
        json!([1, 2, 3])
    );
    // The same table names are different tables in each plugin.
    let mine = t.tables(PROBE);
    assert_eq!(mine.len(), 2, "{mine:?}");
    assert_eq!(mine[&row("shared", "k")], b"mine");
    assert_eq!(mine[&row("counts", "apples")], b"mine too");

    // Bucket names that could smuggle a separator or reach elsewhere are
    // refused as `no-such-store`, with nothing written.
    let hash = t.state_hash(PROBE);
    let too_long = "x".repeat(65);
    for name in [
        "",
        "Counts",
        "counts\u{0}x",
        "../counts",
        "a/b",
        "sp ace",
        too_long.as_str(),
    ] {
        let out = call_ops(
            &t,
            json!([
                {"open": {"bucket": name}},
                {"set": {"bucket": name, "key": "k", "value": "v"}},
            ]),
        );
        assert_eq!(err(&out[0]).0, "no-such-store", "{name:?}");
        assert_eq!(err(&out[1]).0, "no-such-store", "{name:?}");
    }
    assert_eq!(t.state_hash(PROBE), hash);
    let longest = "x".repeat(64);
    let out = call_ops(&t, json!([{"open": {"bucket": longest}}]));
    assert_eq!(ok(&out[0]), &json!(null), "64 bytes is a valid name");
}

#[test]
fn limits_are_errors_and_keep_nothing() {
    let t = TestHost::with_config(|c| {
        c.limits.key_bytes_max = 16;
        c.limits.value_bytes_max = 64;
        c.limits.write_set_bytes_max = 1000;
    });
    t.deploy_file(plugins::KV_PROBE);
    let long_key = "k".repeat(17);
    let out = call_ops(
        &t,
        json!([
            {"set": {"bucket": "b", "key": long_key, "value": "v"}},
            {"get": {"bucket": "b", "key": long_key}},
            {"exists": {"bucket": "b", "key": long_key}},
            {"delete": {"bucket": "b", "key": long_key}},
            {"increment": {"bucket": "b", "key": long_key, "delta": 1}},
            {"get_many": {"bucket": "b", "keys": ["ok", long_key]}},
            {"set_many": {"bucket": "b", "entries": [["ok", "v"], [long_key, "v"]]}},
            {"set_sized": {"bucket": "b", "key": "v", "size": 65}},
            {"set_many": {"bucket": "b", "entries": [["ok", "v"], ["big", "x".repeat(65)]]}},
            {"list_page": {"bucket": "b", "cursor": long_key}},
        ]),
    );
    for (i, o) in out.iter().enumerate().take(7) {
        let (code, message) = err(o);
        assert_eq!(code, "other", "op {i}");
        assert!(
            message.starts_with("key-too-large") && message.contains("16"),
            "op {i}: {message}"
        );
    }
    for o in &out[7..9] {
        let (_, message) = err(o);
        assert!(
            message.starts_with("value-too-large") && message.contains("64"),
            "{message}"
        );
    }
    assert!(err(&out[9]).1.starts_with("cursor-too-large"));
    assert!(
        t.tables(PROBE).is_empty(),
        "a refused batch op writes nothing"
    );

    // Exactly at the limits is fine.
    let at_limit = "k".repeat(16);
    let out = call_ops(
        &t,
        json!([{"set_sized": {"bucket": "b", "key": at_limit, "size": 64}}]),
    );
    assert_eq!(ok(&out[0]), &json!(null));

    // The write set: 20 sets of 16 + 64 bytes = 1600 > 1000. The refusal is
    // a value the plugin sees; what it wrote before stays in its command
    // unless the command fails.
    let ops: Vec<Value> = (0..20)
        .map(|i| json!({"set_sized": {"bucket": "w", "key": format!("{i:016}"), "size": 64}}))
        .collect();
    let out = call_ops(&t, json!(ops.clone()));
    let first_refused = out.iter().position(|o| o.get("err").is_some()).unwrap();
    assert_eq!(first_refused, 12, "12 × 80 = 960 fit, 13 × 80 do not");
    let (_, message) = err(&out[first_refused]);
    assert!(
        message.starts_with("write-set-too-large") && message.contains("1000"),
        "{message}"
    );
    // A command that fails on it (strict) keeps nothing.
    call_ops(
        &t,
        json!([{"delete_many": {"bucket": "w", "keys": (0..20).map(|i| format!("{i:016}")).collect::<Vec<_>>()}}]),
    );
    assert_no_trace(&t, json!({"ops": ops, "strict": true}), "other");
    // A batch set over the write set writes none of its entries.
    let entries: Vec<Value> = (0..13)
        .map(|i| json!([format!("{i:016}"), "x".repeat(64)]))
        .collect();
    let out = call_ops(
        &t,
        json!([{"set_many": {"bucket": "w", "entries": entries}}]),
    );
    assert!(err(&out[0]).1.starts_with("write-set-too-large"));
    let w = query_ops(&t, json!([{"list_all": {"bucket": "w"}}]));
    assert_eq!(ok(&w[0]), &json!({"pages": [[]]}));
}

#[test]
fn list_keys_pages_in_key_order() {
    let t = probe_host();
    // Empty bucket: one empty page, no cursor.
    let out = query_ops(&t, json!([{"list_page": {"bucket": "k", "cursor": null}}]));
    assert_eq!(ok(&out[0]), &json!({"keys": [], "cursor": null}));

    // Exactly one full page (1024 keys): no cursor.
    call_ops(
        &t,
        json!([{"fill": {"bucket": "one", "prefix": "", "count": 1024}}]),
    );
    let out = query_ops(
        &t,
        json!([{"list_page": {"bucket": "one", "cursor": null}}]),
    );
    assert_eq!(ok(&out[0])["keys"].as_array().unwrap().len(), 1024);
    assert_eq!(ok(&out[0])["cursor"], json!(null));

    // 2500 keys, inserted in descending order: three pages, ascending.
    call_ops(
        &t,
        json!([{"fill": {"bucket": "k", "prefix": "key-", "count": 2500}}]),
    );
    let out = query_ops(&t, json!([{"list_all": {"bucket": "k"}}]));
    let pages = ok(&out[0])["pages"].as_array().unwrap().clone();
    let sizes: Vec<usize> = pages.iter().map(|p| p.as_array().unwrap().len()).collect();
    assert_eq!(sizes, [1024, 1024, 452]);
    let all: Vec<String> = pages
        .iter()
        .flat_map(|p| p.as_array().unwrap().iter())
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (0..2500).map(|i| format!("key-{i:06}")).collect();
    assert_eq!(all, expected);

    // The cursor is the last key of the page; the next page starts after it.
    let first = query_ops(&t, json!([{"list_page": {"bucket": "k", "cursor": null}}]));
    let cursor = ok(&first[0])["cursor"].as_str().unwrap().to_owned();
    assert_eq!(cursor, "key-001023");
    // Writes between pages: a key before the cursor is not seen again, a
    // key after it is, and a deleted key is not.
    call_ops(
        &t,
        json!([
            {"set": {"bucket": "k", "key": "a-before", "value": "v"}},
            {"set": {"bucket": "k", "key": "key-001023x", "value": "v"}},
            {"delete": {"bucket": "k", "key": "key-001024"}},
        ]),
    );
    let second = query_ops(
        &t,
        json!([{"list_page": {"bucket": "k", "cursor": cursor}}]),
    );
    let keys = ok(&second[0])["keys"].as_array().unwrap();
    assert_eq!(keys[0], json!("key-001023x"));
    assert_eq!(keys[1], json!("key-001025"));
    // Any string is a cursor: "the keys after this one".
    let out = query_ops(
        &t,
        json!([{"list_page": {"bucket": "k", "cursor": "key-002497z"}}]),
    );
    assert_eq!(
        ok(&out[0]),
        &json!({"keys": ["key-002498", "key-002499"], "cursor": null})
    );
    // Inside a command, paging sees the command's own writes.
    let out = call_ops(
        &t,
        json!([
            {"delete_many": {"bucket": "k", "keys": (0..2500).map(|i| format!("key-{i:06}")).collect::<Vec<_>>()}},
            {"set": {"bucket": "k", "key": "zz-new", "value": "v"}},
            {"list_all": {"bucket": "k"}},
        ]),
    );
    assert_eq!(
        ok(&out[2]),
        &json!({"pages": [["a-before", "key-001023x", "zz-new"]]})
    );
}

#[test]
fn increment_stores_eight_little_endian_bytes() {
    let t = probe_host();
    let out = call_ops(
        &t,
        json!([
            {"increment": {"bucket": "c", "key": "n", "delta": 5}},
            {"increment": {"bucket": "c", "key": "n", "delta": -12}},
            {"increment": {"bucket": "c", "key": "n", "delta": 0}},
        ]),
    );
    let values: Vec<&Value> = out.iter().map(ok).collect();
    assert_eq!(values, [&json!(5), &json!(-7), &json!(-7)]);
    assert_eq!(t.tables(PROBE)[&row("c", "n")], (-7i64).to_le_bytes());

    // A value that is not 8 bytes is an error, not a trap; nothing changes.
    let out = call_ops(
        &t,
        json!([
            {"set": {"bucket": "c", "key": "text", "value": "five"}},
            {"increment": {"bucket": "c", "key": "text", "delta": 1}},
            {"increment": {"bucket": "c", "key": "big", "delta": i64::MAX}},
            {"increment": {"bucket": "c", "key": "big", "delta": 1}},
        ]),
    );
    let (code, message) = err(&out[1]);
    assert_eq!(code, "other");
    assert!(message.starts_with("not-an-integer"), "{message}");
    assert_eq!(ok(&out[2]), &json!(i64::MAX));
    assert!(err(&out[3]).1.starts_with("overflow"), "{:?}", err(&out[3]));
    let tables = t.tables(PROBE);
    assert_eq!(tables[&row("c", "text")], b"five");
    assert_eq!(tables[&row("c", "big")], i64::MAX.to_le_bytes());
}

#[test]
fn compare_and_swap() {
    let t = probe_host();
    let out = call_ops(
        &t,
        json!([
            {"cas": {"bucket": "c", "key": "k", "value": "first"}},
            {"cas": {"bucket": "c", "key": "k", "value": "second"}},
            {"cas": {"bucket": "c", "key": "k", "value": "fourth", "interfere": "third"}},
        ]),
    );
    assert_eq!(ok(&out[0]), &json!({"seen": null, "swapped": true}));
    assert_eq!(ok(&out[1]), &json!({"seen": "first", "swapped": true}));
    assert_eq!(
        ok(&out[2]),
        &json!({"seen": "second", "swapped": false, "retry_seen": "third", "retried": true})
    );
    assert_eq!(get(&t, "c", "k"), json!("fourth"));
}

#[test]
fn batch_operations() {
    let t = probe_host();
    let out = call_ops(
        &t,
        json!([
            {"set_many": {"bucket": "b", "entries": [["x", "1"], ["y", "2"], ["z", "3"]]}},
            {"get_many": {"bucket": "b", "keys": ["z", "missing", "x"]}},
            {"delete_many": {"bucket": "b", "keys": ["x", "missing", "z"]}},
            {"get_many": {"bucket": "b", "keys": ["x", "y", "z"]}},
            {"get_many": {"bucket": "b", "keys": []}},
        ]),
    );
    assert_eq!(ok(&out[1]), &json!([["z", "3"], null, ["x", "1"]]));
    assert_eq!(ok(&out[3]), &json!([null, ["y", "2"], null]));
    assert_eq!(ok(&out[4]), &json!([]));
    let tables = t.tables(PROBE);
    assert_eq!(tables.len(), 1);
    assert_eq!(tables[&row("b", "y")], b"2");
}

#[test]
fn queries_read_and_cannot_write() {
    let t = seeded();
    let hash = t.state_hash(PROBE);
    let out = query_ops(
        &t,
        json!([
            {"get": {"bucket": "b", "key": "kept"}},
            {"exists": {"bucket": "b", "key": "kept"}},
            {"get_many": {"bucket": "n", "keys": ["count"]}},
            {"list_all": {"bucket": "b"}},
            {"set": {"bucket": "b", "key": "q", "value": "v"}},
            {"delete": {"bucket": "b", "key": "kept"}},
            {"increment": {"bucket": "n", "key": "count", "delta": 1}},
            {"set_many": {"bucket": "b", "entries": [["q", "v"]]}},
            {"delete_many": {"bucket": "b", "keys": ["kept"]}},
            {"cas": {"bucket": "b", "key": "kept", "value": "w"}},
        ]),
    );
    assert_eq!(ok(&out[0]), &json!("v"));
    assert_eq!(ok(&out[1]), &json!(true));
    assert_eq!(ok(&out[3]), &json!({"pages": [["kept"]]}));
    for o in &out[4..] {
        let (code, message) = err(o);
        assert_eq!(code, "other");
        assert!(message.starts_with("read-only"), "{message}");
    }
    assert_eq!(t.state_hash(PROBE), hash);
    assert_eq!(get(&t, "b", "kept"), json!("v"));
}

#[test]
fn replay_after_a_crash_reproduces_the_state() {
    let mut t = seeded();
    for i in 0..10 {
        let then = if i % 3 == 0 { "trap" } else { "ok" };
        let _ = t.call(
            PROBE,
            json!({"ops": [
                {"set": {"bucket": "r", "key": format!("k{i}"), "value": "v"}},
                {"increment": {"bucket": "r", "key": "n", "delta": i}},
                {"cas": {"bucket": "r", "key": "last", "value": format!("{i}")}},
                {"set_many": {"bucket": "s", "entries": [[format!("a{i}"), "1"], [format!("b{i}"), "2"]]}},
                {"delete_many": {"bucket": "s", "keys": [format!("a{}", i / 2)]}},
            ], "then": then}),
        );
    }
    let hash = t.state_hash(PROBE);
    let tables = t.tables(PROBE);
    t.crash_and_restart();
    assert_eq!(t.state_hash(PROBE), hash);
    assert_eq!(t.tables(PROBE), tables);
    assert_eq!(get(&t, "r", "last"), json!("8"));
    // 1+2+4+5+7+8: the trapped commands (0, 3, 6, 9) left nothing.
    assert_eq!(tables[&row("r", "n")], 27i64.to_le_bytes());
    let verifications = t.verify_replay();
    assert!(
        verifications
            .iter()
            .any(|v| v.plugin == PROBE && v.entries > 10),
        "{verifications:?}"
    );
    assert!(verifications.iter().all(|v| v.ok()), "{verifications:?}");
}
