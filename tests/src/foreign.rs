//! Components built by the non-Rust plugins' own scripts
//! (`plugins/python-ledger/build.sh`, `plugins/js-ledger/build.sh`) into
//! `<target>/foreign-plugins/`, and checks their tests share.

use std::path::PathBuf;

use keel_host::HostError;
use keel_host::testkit::TestHost;
use serde_json::Value;

/// The target directory builds write to (`CARGO_TARGET_DIR`, relative to
/// the workspace, or the workspace's `target/`).
fn target_dir() -> PathBuf {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| {
            if t.is_absolute() {
                t
            } else {
                workspace.join(t)
            }
        })
        .unwrap_or_else(|| workspace.join("target"))
}

/// Where a foreign plugin's build script writes it:
/// `<target>/foreign-plugins/<name>.wasm`.
pub fn component_path(name: &str) -> PathBuf {
    target_dir().join(format!("foreign-plugins/{name}.wasm"))
}

/// The bytes of `<target>/foreign-plugins/<name>.wasm`, or `None` (after a
/// visible `SKIPPED` line naming `build_script` and what it `needs`) when
/// the component is absent — unless `KEEL_REQUIRE_FOREIGN_PLUGINS=1` (CI),
/// which makes an absent component a failure.
pub fn component(name: &str, build_script: &str, needs: &str) -> Option<Vec<u8>> {
    let path = component_path(name);
    match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(e) if std::env::var("KEEL_REQUIRE_FOREIGN_PLUGINS").as_deref() == Ok("1") => {
            panic!(
                "{} is required (KEEL_REQUIRE_FOREIGN_PLUGINS=1) but unreadable: {e}; \
                 run {build_script}",
                path.display()
            )
        }
        Err(_) => {
            eprintln!(
                "SKIPPED: {} is absent; run {build_script} to build it (needs {needs})",
                path.display()
            );
            None
        }
    }
}

/// The error code of a refused command or query.
pub fn code_of<T: std::fmt::Debug>(result: Result<T, HostError>) -> String {
    match result {
        Err(e) => e.code().to_owned(),
        Ok(v) => panic!("expected a refusal, got {v:?}"),
    }
}

/// Sends `command` to `plugin`, expects a refusal, and proves it left the
/// state hash and every table byte-identical. Returns the refusal's code.
pub fn refused_without_trace(t: &TestHost, plugin: &str, command: Value) -> String {
    let (hash, tables) = (t.state_hash(plugin), t.tables(plugin));
    let code = code_of(t.call(plugin, command.clone()));
    assert_eq!(
        t.state_hash(plugin),
        hash,
        "{command} changed the state hash"
    );
    assert_eq!(t.tables(plugin), tables, "{command} changed a table");
    code
}
