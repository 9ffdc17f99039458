//! Invariant 6: bad input gets a clear error and nothing is lost. Each
//! refusal names what was wrong, and the host keeps serving. Driven over
//! HTTP against a real `keel serve` process.

use keel_tests::server::Server;
use serde_json::{Value, json};

fn error_of(result: Result<impl std::fmt::Debug, (u16, Value)>) -> (u16, String, String) {
    let (status, body) = result.expect_err("the request should be refused");
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (status, code, message)
}

#[test]
fn bad_requests_are_refused_clearly_and_the_host_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[("counter", None)]);
    let ok = || {
        server
            .call("counter", &json!({"add": {"name": "alive", "amount": 1}}))
            .expect("the host still serves")
    };
    ok();
    let before = server.plugin_status("counter");

    // Malformed JSON: refused before it is journaled.
    let (status, code, message) = error_of(server.call_raw("counter", b"{\"add\": {"));
    assert_eq!((status, code.as_str()), (400, "bad-json"), "{message}");
    assert!(message.contains("line 1"), "{message}");

    // Well-formed JSON the plugin does not understand: the plugin names the field.
    let (status, code, message) = error_of(server.call(
        "counter",
        &json!({"add": {"name": "x", "amount": 1, "bogus": 2}}),
    ));
    assert_eq!((status, code.as_str()), (422, "bad-command"), "{message}");
    assert!(message.contains("bogus"), "{message}");

    // Numbers out of range for the plugin's types.
    let (status, code, message) = error_of(server.call_raw(
        "counter",
        b"{\"add\":{\"name\":\"x\",\"amount\":99999999999999999999999}}",
    ));
    assert_eq!((status, code.as_str()), (422, "bad-command"), "{message}");

    // Unknown plugin.
    let (status, code, message) = error_of(server.call("nope", &json!({})));
    assert_eq!(
        (status, code.as_str()),
        (404, "unknown-plugin"),
        "{message}"
    );
    assert!(message.contains("nope"), "{message}");

    // Oversized command.
    let huge = format!(
        "{{\"add\":{{\"name\":\"{}\",\"amount\":1}}}}",
        "x".repeat(2 << 20)
    );
    let (status, code, message) = error_of(server.call_raw("counter", huge.as_bytes()));
    assert_eq!((status, code.as_str()), (413, "too-large"), "{message}");

    // Not wasm at all.
    let (status, code, message) =
        error_of(server.post_raw("/v1/plugins", b"#!/bin/sh\necho hello\n"));
    assert_eq!((status, code.as_str()), (400, "bad-component"), "{message}");
    assert!(message.contains("not a WebAssembly component"), "{message}");

    // A core module, not a component.
    let (status, code, message) = error_of(server.post_raw("/v1/plugins", b"\0asm\x01\0\0\0"));
    assert_eq!((status, code.as_str()), (400, "bad-component"), "{message}");
    assert!(message.contains("core WebAssembly module"), "{message}");

    // A valid component of another world (it exports nothing).
    let (status, code, message) = error_of(server.post_raw("/v1/plugins", b"\0asm\x0d\0\x01\0"));
    assert_eq!((status, code.as_str()), (400, "bad-component"), "{message}");
    assert!(message.contains("keel:plugin/guest"), "{message}");

    // Truncated component bytes.
    let (status, code, message) =
        error_of(server.post_raw("/v1/plugins", b"\0asm\x0d\0\x01\0\x07\xff"));
    assert_eq!((status, code.as_str()), (400, "bad-component"), "{message}");

    // Bad JSON in a query.
    let (status, code, _) = error_of(server.query("counter", &json!({"nope": 1})));
    assert_eq!((status, code.as_str()), (422, "bad-query"));

    // Nothing above changed state except the journaled plugin refusals.
    let after = server.plugin_status("counter");
    assert_eq!(after["state_hash"], before["state_hash"]);
    ok();
}

#[test]
fn the_api_token_is_enforced_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_with(
        dir.path(),
        &[("counter", None)],
        &keel_tests::server::principal_toml("alice", "s3cret", &["client"], None),
    );
    server.set_token(Some("s3cret"));
    server
        .call("counter", &json!({"add": {"name": "a", "amount": 1}}))
        .unwrap();
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut resp = agent
        .post(format!("{}/v1/plugins/counter/commands", server.base_url()))
        .header("Authorization", "Bearer wrong")
        .send(b"{\"add\":{\"name\":\"a\",\"amount\":1}}".as_slice())
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let body: Value = resp.body_mut().read_json().unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
}

#[test]
fn relaxed_durability_is_named_in_every_status_output() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &[("counter", None)], "durability = \"relaxed\"");
    let status = server.get("/v1/status").unwrap();
    assert!(
        status["durability"].as_str().unwrap().contains("relaxed"),
        "{status}"
    );
    let metrics = server.get("/metrics").unwrap();
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("keel_durability_immediate 0"),
        "{metrics}"
    );
}
