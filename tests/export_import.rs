//! Export and import: a plugin's state leaves one host as a readable
//! JSON-lines file and arrives in another with the same state hash, for
//! every domain plugin; a cut or edited file is refused; the imported
//! plugin keeps working and verifies from its import snapshot.

use keel_tests::{TestHost, component, plugins};
use serde_json::{Value, json};

fn lines(file: &[u8]) -> Vec<Value> {
    file.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

#[test]
fn a_counter_round_trips_keeps_working_and_verifies_from_its_import_snapshot() {
    let t = TestHost::new();
    t.deploy_file(plugins::COUNTER);
    for i in 0..40 {
        t.call(
            "counter",
            json!({"add": {"name": format!("c{}", i % 9), "amount": i}}),
        )
        .unwrap();
    }
    let (file, _) = keel_tests::assert_export_round_trip(&t, "counter", plugins::COUNTER);
    let to = TestHost::new();
    to.host()
        .store_module(&component(plugins::COUNTER))
        .unwrap();
    to.host().import(&file[..], false, &mut |_, _| {}).unwrap();
    let lines = lines(&file);
    assert_eq!(lines[0]["plugin"], "counter");
    // The SDK decodes the rows: names and values as JSON, not bytes.
    let rows = &lines[1..lines.len() - 1];
    assert!(
        rows.iter()
            .all(|r| r["table"] == "counts" && r["key"].is_string() && r["value"].is_i64()),
        "{rows:?}"
    );
    assert_eq!(lines[0]["rows"], 9);
    assert_eq!(lines.len(), 1 + 9 + 1);
    assert!(lines.last().unwrap()["keel_export_end"]["rows"] == 9);
    // The imported plugin takes commands where the source stopped.
    let next = t.status("counter").last_sequence + 1;
    let (sequence, _) = to
        .call_raw("counter", br#"{"add": {"name": "c1", "amount": 5}}"#)
        .unwrap();
    assert_eq!(sequence, next);
    t.call("counter", json!({"add": {"name": "c1", "amount": 5}}))
        .unwrap();
    assert_eq!(to.state_hash("counter"), t.state_hash("counter"));
    // Its journal starts after the import: verify starts from the import snapshot.
    let verdicts = keel_host::replay::verify(
        to.host().db(),
        Some(to.host().snapshot_store()),
        tempfile::tempdir().unwrap().path(),
        &to.host().cache_dir(),
        |_, _, _| {},
    )
    .unwrap();
    assert!(verdicts.iter().all(|v| v.ok()), "{verdicts:?}");
    assert_eq!(verdicts[0].from_snapshot, next - 1);
}

#[test]
fn a_cut_or_edited_export_is_refused_and_nothing_is_created() {
    let t = TestHost::new();
    t.deploy_file(plugins::COUNTER);
    for i in 0..10 {
        t.call(
            "counter",
            json!({"add": {"name": format!("c{i}"), "amount": i}}),
        )
        .unwrap();
    }
    let mut file = Vec::new();
    t.host()
        .export("counter", &mut file, &mut |_, _| {})
        .unwrap();
    let to = TestHost::new();
    to.host()
        .store_module(&component(plugins::COUNTER))
        .unwrap();
    let text = String::from_utf8(file.clone()).unwrap();
    let mut all: Vec<&str> = text.lines().collect();
    // Cut: no trailer.
    let cut = all[..all.len() - 1].join("\n");
    let err = to
        .host()
        .import(cut.as_bytes(), false, &mut |_, _| {})
        .unwrap_err();
    assert!(err.to_string().contains("trailer"), "{err}");
    // One row dropped: counts disagree.
    let mut dropped = all.clone();
    dropped.remove(3);
    let err = to
        .host()
        .import(dropped.join("\n").as_bytes(), false, &mut |_, _| {})
        .unwrap_err();
    assert!(err.to_string().contains("rows read"), "{err}");
    // An edited row: the state hash tells, unless the change is accepted.
    let mut row: Value = serde_json::from_str(all[2]).unwrap();
    if row.get("value").is_some() {
        row["value"] = json!(1_000_000);
    } else {
        row["value_base64"] = json!("wJaxCA==");
    }
    let edited = row.to_string();
    all[2] = &edited;
    let err = to
        .host()
        .import(all.join("\n").as_bytes(), false, &mut |_, _| {})
        .unwrap_err();
    assert!(err.to_string().contains("hash to"), "{err}");
    assert!(to.host().plugins().is_empty());
    to.host()
        .import(all.join("\n").as_bytes(), true, &mut |_, _| {})
        .unwrap();
    assert_ne!(to.state_hash("counter"), t.state_hash("counter"));
    // A plugin of that name exists now: a second import is refused.
    let err = to
        .host()
        .import(&file[..], false, &mut |_, _| {})
        .unwrap_err();
    assert!(err.to_string().contains("exists"), "{err}");
}
