//! Helpers shared by the integration tests: the bundled components, a
//! throwaway in-process host (the host crate's test kit) and a real
//! `keel serve` process ([`server::Server`]).

pub mod bench;
pub mod foreign;
pub mod server;

pub use keel_host::testkit::TestHost;
pub use keel_plugins as plugins;

/// Reads a bundled component's bytes.
pub fn component(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}
