//! The sealed WASI: a component built with Rust's wasm32-wasip2 std (it
//! imports WASI 0.2) runs, and sees nothing that could differ on replay —
//! clocks read the journaled timestamp, random is seeded from the plugin and
//! the sequence, the environment is empty, and there is no filesystem and
//! no network.

use keel_tests::{TestHost, plugins};
use serde_json::json;

#[test]
fn a_wasip2_component_sees_a_sealed_deterministic_world() {
    let t = TestHost::new();
    t.deploy_file(plugins::WASI_PROBE);
    let a = t.call("wasi-probe", json!("probe")).unwrap();
    let b = t.call("wasi-probe", json!("probe")).unwrap();
    for r in [&a, &b] {
        assert_eq!(
            r["wall_clock_ms"], r["journaled_ms"],
            "the wall clock is the journaled timestamp: {r}"
        );
        assert_eq!(
            r["monotonic_elapsed_ns"],
            json!(0),
            "the monotonic clock does not move during a command: {r}"
        );
        assert_eq!(
            r["after_sleep_ms"], r["journaled_ms"],
            "an hour's sleep returns at once and time does not pass: {r}"
        );
        assert_eq!(r["env_vars"], json!(0), "{r}");
        assert_eq!(r["args"], json!(0), "{r}");
        assert!(r["read_dir"].as_str().unwrap().starts_with("error"), "{r}");
        assert!(
            r["create_file"].as_str().unwrap().starts_with("error"),
            "{r}"
        );
        assert!(r["connect"].as_str().unwrap().starts_with("error"), "{r}");
        assert_eq!(r["random"].as_str().unwrap().len(), 32, "{r}");
    }
    assert_ne!(
        a["random"], b["random"],
        "each command gets its own random stream"
    );
    // Replay re-runs both commands and compares their responses byte for
    // byte: the random bytes and clock readings must come out identical.
    let verdicts = t.verify_replay();
    assert!(verdicts.iter().all(|v| v.ok()), "{verdicts:?}");
}
