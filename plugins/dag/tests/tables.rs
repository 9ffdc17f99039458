//! The dag plugin declares every table it writes (`Plugin::tables`: one
//! codec per table name, with the full value type where several typed views
//! share a table), and every stored row converts to JSON and back (the
//! SDK's reserved queries `keel.decode_rows`/`keel.encode_rows`, behind
//! `keel export`).

mod model;

use std::collections::BTreeSet;

use keel_guest::Plugin;
use keel_guest::testing::Harness;
use keel_plugin_dag::{Bytes, Command, Config, Dag, NewBatch, Response};

#[test]
fn every_table_written_is_declared_and_every_row_round_trips() {
    // Inserts, insert_many, batches, commits and prunes.
    let (m, script) = model::script(4, 20, 4);
    let mut h =
        Harness::<Dag>::with_config(serde_json::from_value::<Config>(m.config()).unwrap()).unwrap();
    let mut m = m;
    for (command, want) in &script {
        assert_eq!(h.handle(command.clone()).as_ref(), Ok(want));
        m.apply_command(command).unwrap();
    }
    // A batch no certificate references yet.
    h.handle(Command::StoreBatch(NewBatch {
        author: m.names[1].clone(),
        payload: Bytes(b"spare".to_vec()),
        digest: None,
    }))
    .unwrap();
    // An equivocation, kept as evidence.
    let top = m.highest_round().unwrap();
    let below: Vec<_> = m.round(top - 1).iter().map(|(_, c)| c.digest).collect();
    let conflicting = m.make(top, 0, below[1..].to_vec(), vec![], 4242);
    let answer = h.handle(Command::Insert(conflicting)).unwrap();
    assert!(matches!(answer, Response::Equivocation(_)), "{answer:?}");

    let written: BTreeSet<String> = h.dump().into_keys().collect();
    let declared: BTreeSet<String> = Dag::tables().iter().map(|t| t.name().to_owned()).collect();
    assert_eq!(
        declared.len(),
        Dag::tables().len(),
        "a table declared twice"
    );
    assert_eq!(written, declared);
    let rows = h.check_declared_tables().unwrap();
    assert_eq!(rows, h.dump().values().map(|t| t.len()).sum::<usize>());

    // Digests read as hex in the JSON, as in the plugin's own answers.
    let certs = Dag::tables()
        .into_iter()
        .find(|t| t.name() == "certs")
        .unwrap();
    let dump = h.dump();
    let (key, value) = dump["certs"].iter().next_back().unwrap();
    let (key, value) = certs.decode(key, value).unwrap();
    assert_eq!(key[0], serde_json::json!(top));
    let digest = value["digest"].as_str().unwrap();
    assert_eq!(digest.len(), 64, "{value}");
}
