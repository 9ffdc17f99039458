//! Helpers shared by the integration tests: the bundled components and a
//! throwaway host (re-exported from the host crate's test kit).

pub use keel_host::testkit::TestHost;
pub use keel_plugins as plugins;

/// Reads a bundled component's bytes.
pub fn component(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}
