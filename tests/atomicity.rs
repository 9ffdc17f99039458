//! Invariant 1: a command's writes are applied all-or-nothing. A command
//! that returns an error, traps, runs out of fuel or memory, or overflows
//! its stack leaves no trace in state, and the plugin keeps serving.

use keel_tests::{TestHost, plugins};
use serde_json::json;

fn host() -> TestHost {
    let t = TestHost::with_config(|c| {
        c.limits.fuel_per_call = 50_000_000;
        c.limits.memory_bytes_max = 32 << 20;
    });
    t.deploy_file(plugins::MISBEHAVE);
    t.call("misbehave", json!({"write": {"key": "kept", "value": "v"}}))
        .unwrap();
    t
}

fn assert_no_trace(t: &TestHost, command: serde_json::Value, expected_code: &str) {
    let before_hash = t.state_hash("misbehave");
    let before_tables = t.tables("misbehave");
    let before_seq = t.status("misbehave").last_sequence;
    let err = t.call("misbehave", command.clone()).unwrap_err();
    assert_eq!(err.code(), expected_code, "{command}: {err}");
    assert_eq!(
        err.sequence(),
        Some(before_seq + 1),
        "a failed command is still journaled"
    );
    assert_eq!(
        t.state_hash("misbehave"),
        before_hash,
        "{command} changed the state hash"
    );
    assert_eq!(
        t.tables("misbehave"),
        before_tables,
        "{command} changed the tables"
    );
    // The plugin keeps serving, on a fresh instance if the old one trapped.
    t.call(
        "misbehave",
        json!({"write": {"key": "after", "value": "ok"}}),
    )
    .unwrap();
    let rows = t.query("misbehave", json!("rows")).unwrap();
    assert!(rows.to_string().contains("after"), "{rows}");
    t.call(
        "misbehave",
        json!({"remove_raw": {"table": "rows", "key": [97,102,116,101,114,0,0]}}),
    )
    .unwrap();
}

#[test]
fn error_after_write_leaves_no_trace() {
    assert_no_trace(
        &host(),
        json!({"write_then_error": {"key": "x"}}),
        "deliberate",
    );
}

#[test]
fn trap_after_write_leaves_no_trace() {
    assert_no_trace(&host(), json!({"write_then_trap": {"key": "x"}}), "trap");
}

#[test]
fn out_of_fuel_leaves_no_trace() {
    assert_no_trace(
        &host(),
        json!({"write_then_spin": {"key": "x"}}),
        "out-of-fuel",
    );
}

#[test]
fn out_of_memory_leaves_no_trace() {
    assert_no_trace(
        &host(),
        json!({"write_then_alloc": {"key": "x"}}),
        "out-of-memory",
    );
}

#[test]
fn stack_overflow_leaves_no_trace() {
    assert_no_trace(
        &host(),
        json!({"write_then_recurse": {"key": "x"}}),
        "stack-overflow",
    );
}

#[test]
fn deadline_stops_a_spinning_command_when_fuel_is_plentiful() {
    let t = TestHost::with_config(|c| {
        c.limits.fuel_per_call = u64::MAX / 2;
        c.limits.deadline_ms = 200;
    });
    t.deploy_file(plugins::MISBEHAVE);
    let before = t.state_hash("misbehave");
    let err = t
        .call("misbehave", json!({"write_then_spin": {"key": "x"}}))
        .unwrap_err();
    assert_eq!(err.code(), "deadline-exceeded", "{err}");
    assert_eq!(t.state_hash("misbehave"), before);
}

#[test]
fn failures_inside_a_batch_do_not_disturb_their_neighbours() {
    let t = host();
    let host = t.host();
    let mut pending = Vec::new();
    for i in 0..50 {
        let cmd = if i % 5 == 0 {
            json!({"write_then_trap": {"key": format!("bad{i}")}})
        } else if i % 5 == 1 {
            json!({"write_then_error": {"key": format!("bad{i}")}})
        } else {
            json!({"write": {"key": format!("good{i}"), "value": "v"}})
        };
        pending.push((
            i,
            host.submit_pipelined("misbehave", cmd.to_string().as_bytes())
                .unwrap(),
        ));
    }
    for (i, rx) in pending {
        let result = rx.blocking_recv().unwrap();
        assert_eq!(result.is_ok(), i % 5 >= 2, "command {i}: {result:?}");
    }
    let rows = t.query("misbehave", json!("rows")).unwrap().to_string();
    for i in 0..50 {
        assert_eq!(
            rows.contains(&format!("\"good{i}\"")),
            i % 5 >= 2,
            "row {i} in {rows}"
        );
        assert!(
            !rows.contains(&format!("\"bad{i}\"")),
            "row bad{i} in {rows}"
        );
    }
    assert!(t.verify_replay().iter().all(|v| v.ok()));
}

#[test]
fn a_query_cannot_write() {
    let t = host();
    let err = t.query("misbehave", json!("write_in_query")).unwrap_err();
    assert_eq!(err.code(), "read-only", "{err}");
}

#[test]
fn oversized_keys_and_values_are_refused_and_nothing_is_kept() {
    let t = TestHost::with_config(|c| {
        c.limits.key_bytes_max = 16;
        c.limits.value_bytes_max = 64;
    });
    t.deploy_file(plugins::MISBEHAVE);
    let before = t.tables("misbehave");
    let long_key = vec![7u8; 40];
    let refusals = [
        (
            json!({"put_raw": {"table": "raw", "key": long_key, "value": [1]}}),
            "key-too-large",
        ),
        (
            json!({"put_raw": {"table": "raw", "key": [1], "value": vec![2u8; 200]}}),
            "value-too-large",
        ),
        (
            json!({"remove_raw": {"table": "raw", "key": long_key}}),
            "key-too-large",
        ),
    ];
    for (command, code) in refusals {
        let err = t.call("misbehave", command.clone()).unwrap_err();
        assert_eq!(err.code(), code, "{command}: {err}");
        assert!(
            err.to_string()
                .contains(if code == "key-too-large" { "16" } else { "64" }),
            "{err}"
        );
    }
    let err = t
        .query(
            "misbehave",
            json!({"get_raw": {"table": "raw", "key": long_key}}),
        )
        .unwrap_err();
    assert_eq!(err.code(), "key-too-large", "{err}");
    assert_eq!(t.tables("misbehave"), before, "a refused write left a row");
    // Within the limits, the same calls go through.
    t.call(
        "misbehave",
        json!({"put_raw": {"table": "raw", "key": [1], "value": [2, 3]}}),
    )
    .unwrap();
    let got = t
        .query(
            "misbehave",
            json!({"get_raw": {"table": "raw", "key": [1]}}),
        )
        .unwrap();
    assert_eq!(got, json!([2, 3]));
    t.call(
        "misbehave",
        json!({"remove_raw": {"table": "raw", "key": [1]}}),
    )
    .unwrap();
    assert_eq!(t.tables("misbehave"), before);
}
