//! Helpers shared by the integration tests: the bundled components, a
//! throwaway in-process host (the host crate's test kit) and a real
//! `keel serve` process ([`server::Server`]).

pub mod bench;
pub mod foreign;
pub mod server;

pub use keel_host::testkit::TestHost;
pub use keel_plugins as plugins;

/// Exports `plugin` from `t`, imports the file into a fresh host (the
/// component stored there first) and asserts that the new plugin has the
/// same state hash, rows and last sequence. Returns the export file and
/// how many of its rows were shown decoded as JSON.
pub fn assert_export_round_trip(t: &TestHost, plugin: &str, wasm: &str) -> (Vec<u8>, u64) {
    let mut file = Vec::new();
    let summary = t
        .host()
        .export(plugin, &mut file, &mut |_, _| {})
        .unwrap_or_else(|e| panic!("exporting {plugin}: {e}"));
    assert_eq!(summary.state_hash, t.state_hash(plugin));
    let to = TestHost::new();
    to.host().store_module(&component(wasm)).unwrap();
    let imported = to
        .host()
        .import(&file[..], false, &mut |_, _| {})
        .unwrap_or_else(|e| panic!("importing {plugin}: {e}"));
    assert_eq!(imported.state_hash, t.state_hash(plugin), "{plugin}");
    assert_eq!(to.tables(plugin), t.tables(plugin), "{plugin}");
    assert_eq!(
        to.status(plugin).last_sequence,
        t.status(plugin).last_sequence
    );
    // Every domain plugin declares its tables: its rows read as JSON.
    assert!(
        summary.decoded_rows > 0,
        "no row of {plugin} was decoded ({} rows)",
        summary.rows
    );
    (file, summary.decoded_rows)
}

/// Opens the stopped host's database in `data_dir` and replays it (from
/// the first entry, or from the oldest snapshot where the journal was
/// archived away) into a scratch host; returns the verdicts.
pub fn verify_data_dir(data_dir: &std::path::Path) -> Vec<keel_host::replay::Verification> {
    let db = keel_host::storage::Db::open(
        &data_dir.join("keel.redb"),
        keel_host::storage::Durability::Immediate,
    )
    .expect("opening the database");
    let store = keel_host::snapshot::SnapshotStore::new(data_dir);
    let scratch = tempfile::tempdir().expect("a scratch directory");
    keel_host::replay::verify(
        &db,
        Some(&store),
        scratch.path(),
        &std::env::temp_dir().join("keel-test-component-cache"),
        |_, _, _| {},
    )
    .expect("replaying")
}

/// Reads a bundled component's bytes.
pub fn component(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}
