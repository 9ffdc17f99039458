//! The sealed WASI: a component built with Rust's wasm32-wasip2 std (it
//! imports WASI 0.2) runs, and sees nothing that could differ on replay —
//! clocks read the journaled timestamp, random is seeded from the plugin and
//! the sequence, the environment is empty, and there is no filesystem and
//! no network; what it prints goes into the host's log.

use std::sync::{Arc, Mutex};

use keel_tests::{TestHost, plugins};
use serde_json::json;

/// Everything the host logs, as text.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_wasip2_component_sees_a_sealed_deterministic_world() {
    let log = Captured::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
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
