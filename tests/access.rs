//! Who may call what, over real HTTP against a real `keel serve`: every
//! route refuses a missing or wrong token (401), a token without the role
//! or for a plugin it may not use (403), and nothing changes; an
//! unauthenticated host says so and stays on loopback; the CLI takes its
//! token from the environment or a file, never from an argument.

use std::io::Write as _;
use std::process::{Command, Stdio};

use keel_tests::server::{Server, keel_bin, principal_toml};
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-5c1b2e0f4a7d48e6b3f0c9a1d2e3f4a5";
const ALICE: &str = "alice-token-0a1b2c3d4e5f60718293a4b5c6d7e8f9";
const BOB: &str = "bob-token-99aa88bb77cc66dd55ee44ff33001122";

fn principals() -> String {
    [
        principal_toml("root", ADMIN, &["admin"], None),
        principal_toml("alice", ALICE, &["client"], Some(&["counter"])),
        // An operator too: spot deposits (custody) are operator-only.
        principal_toml("bob", BOB, &["client", "operator"], None),
    ]
    .concat()
}

/// One request: method, path, body.
type Route = (&'static str, String, Vec<u8>);

fn send(server: &Server, token: Option<&str>, (method, path, body): &Route) -> (u16, Value) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let url = format!("{}{path}", server.base_url());
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut resp = if *method == "GET" {
        let mut req = agent.get(&url);
        if let Some(a) = &auth {
            req = req.header("Authorization", a);
        }
        req.call().unwrap()
    } else {
        let mut req = agent.post(&url);
        if let Some(a) = &auth {
            req = req.header("Authorization", a);
        }
        req.send(&body[..]).unwrap()
    };
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[test]
fn every_route_refuses_wrong_credentials_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_with(
        dir.path(),
        &[("counter", None), ("spot", None)],
        &principals(),
    );
    server.set_token(Some(ALICE));
    server
        .call("counter", &json!({"add": {"name": "a", "amount": 1}}))
        .unwrap();
    // A second version of counter, so that a rollback would change it.
    server.set_token(Some(ADMIN));
    let v1 = server.plugin_status("counter")["module_hash"]
        .as_str()
        .unwrap()
        .to_owned();
    let v2_bytes = std::fs::read(keel_plugins::path("counter-v2").unwrap()).unwrap();
    server.post_raw("/v1/plugins", &v2_bytes).unwrap();
    let misbehave = std::fs::read(keel_plugins::path("misbehave").unwrap()).unwrap();
    let before = server.get("/v1/plugins").unwrap();

    let command = br#"{"add": {"name": "a", "amount": 1}}"#.to_vec();
    let query = br#"{"get": {"name": "a"}}"#.to_vec();
    let spot_command = br#"{"deposit": {"user": 1, "asset": "USD", "amount": 5}}"#.to_vec();
    let every_route: Vec<Route> = vec![
        ("GET", "/v1/status".into(), vec![]),
        ("GET", "/v1/plugins".into(), vec![]),
        ("GET", "/v1/plugins/counter".into(), vec![]),
        (
            "POST",
            "/v1/plugins/counter/commands".into(),
            command.clone(),
        ),
        ("POST", "/v1/plugins/counter/queries".into(), query.clone()),
        ("POST", "/v1/plugins".into(), misbehave.clone()),
        ("POST", format!("/v1/plugins/counter/rollback/{v1}"), vec![]),
    ];
    let admin_routes = &every_route[5..];
    let client_routes = &every_route[3..5];
    let not_alices: Vec<Route> = vec![
        ("GET", "/v1/plugins/spot".into(), vec![]),
        ("POST", "/v1/plugins/spot/commands".into(), spot_command),
        (
            "POST",
            "/v1/plugins/spot/queries".into(),
            br#""markets""#.to_vec(),
        ),
    ];

    let mut attempts = 0;
    let mut expect = |token: Option<&str>, routes: &[Route], status: u16, code: &str| {
        for route in routes {
            let (got, body) = send(&server, token, route);
            attempts += 1;
            assert_eq!(
                (got, body["error"]["code"].as_str()),
                (status, Some(code)),
                "{} {} with {token:?}: {body}",
                route.0,
                route.1
            );
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "{body}"
            );
        }
    };
    expect(None, &every_route, 401, "unauthorized");
    expect(Some("not-a-token"), &every_route, 401, "unauthorized");
    // Same length as a real token, one character off.
    let mut near = ALICE.to_owned();
    near.replace_range(..1, "b");
    expect(Some(&near), &every_route, 401, "unauthorized");
    expect(Some(BOB), admin_routes, 403, "forbidden");
    expect(Some(ALICE), admin_routes, 403, "forbidden");
    expect(Some(ADMIN), client_routes, 403, "forbidden");
    expect(Some(ALICE), &not_alices, 403, "forbidden");
    assert_eq!(attempts, 3 * 7 + 2 + 2 + 2 + 3);

    // Nothing changed: versions, sequences, state hashes, deployments.
    assert_eq!(server.get("/v1/plugins").unwrap(), before);

    // The same routes with the right credentials succeed.
    for (token, route) in [
        (ALICE, &every_route[0]),
        (BOB, &every_route[2]),
        (BOB, &not_alices[1]),
        (ALICE, &every_route[3]),
        (ADMIN, &every_route[6]),
    ] {
        let (status, body) = send(&server, Some(token), route);
        assert_eq!(status, 200, "{} {}: {body}", route.0, route.1);
    }
    assert_eq!(server.plugin_status("counter")["module_hash"], v1.as_str());
}

#[test]
fn an_unauthenticated_host_says_so_and_stays_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[("counter", None)]);
    let status = server.get("/v1/status").unwrap();
    let auth = status["authentication"].as_str().unwrap();
    assert!(auth.starts_with("unauthenticated"), "{status}");

    // `keel status` shows it too.
    let out = Command::new(keel_bin())
        .args(["status"])
        .env("KEEL_ADDR", server.base_url())
        .env_remove("KEEL_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("unauthenticated"));

    // Asked to listen beyond loopback without principals, it refuses.
    let other = tempfile::tempdir().unwrap();
    let out = Command::new(keel_bin())
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(other.path())
        .env("KEEL_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("without authentication"), "{stderr}");
    assert!(stderr.contains("0.0.0.0"), "{stderr}");
}

#[test]
fn the_cli_takes_its_token_from_the_environment_or_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &[("counter", None)], &principals());
    let keel = |args: &[&str], token_env: Option<&str>| {
        let mut cmd = Command::new(keel_bin());
        cmd.args(args).env("KEEL_ADDR", server.base_url());
        match token_env {
            Some(t) => cmd.env("KEEL_TOKEN", t),
            None => cmd.env_remove("KEEL_TOKEN"),
        };
        cmd.output().unwrap()
    };
    let add = r#"{"add": {"name": "cli", "amount": 2}}"#;

    let out = keel(&["call", "counter", add], Some(ALICE));
    assert!(out.status.success(), "{out:?}");

    let file = dir.path().join("token");
    std::fs::write(&file, format!("{BOB}\n")).unwrap();
    let file_arg = file.display().to_string();
    let out = keel(&["call", "counter", add, "--token-file", &file_arg], None);
    assert!(out.status.success(), "{out:?}");
    let out = keel(
        &[
            "query",
            "counter",
            r#"{"get": {"name": "cli"}}"#,
            "--token-file",
            &file_arg,
        ],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains('4'),
        "{out:?}"
    );

    // Without a token: refused with the 401 shown.
    let out = keel(&["call", "counter", add], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unauthorized"));
    // A client token cannot deploy.
    let v2 = keel_plugins::path("counter-v2").unwrap();
    let out = keel(&["deploy", v2], Some(ALICE));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("forbidden"));
    // There is no argument that takes the token itself.
    let out = keel(&["call", "counter", add, "--token", ALICE], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token"));

    // `keel hash-token` prints the hash the configuration holds.
    let mut child = Command::new(keel_bin())
        .arg("hash-token")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{ADMIN}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        keel_host::auth::hash_hex(&keel_host::auth::hash_token(ADMIN))
    );
}
