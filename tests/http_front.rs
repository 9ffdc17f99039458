//! The HTTP front under abuse, probed over loopback as an attacker would,
//! against a real `keel serve`: idle connections, a slow-loris request,
//! held half-sent uploads, SIGTERM during a half-sent request, malformed
//! requests, and a u128 that must come back exact. Counts and waits are
//! bounded; what is asserted is the server's behaviour (served or cut,
//! file descriptors and resident memory measured), not its speed.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use keel_tests::server::{Server, principal_toml};
use serde_json::Value;

const CLIENT: &str = "client-token-4f3e2d1c0b0a99887766554433221100";

/// Sends `request` on a new connection and reads the answer until the
/// server closes it; returns (status, parsed JSON body or the text).
fn raw(addr: SocketAddr, request: &[u8]) -> (u16, Value, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = serde_json::from_str(body).unwrap_or(Value::String(body.to_owned()));
    (status, body, head.to_owned())
}

fn get(path: &str, extra_headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: keel\r\nConnection: close\r\n{extra_headers}\r\n")
        .into_bytes()
}

fn config(http: &str) -> String {
    format!(
        "[http]\n{http}\n{}",
        principal_toml("c", CLIENT, &["client", "operator"], None)
    )
}

#[test]
fn idle_connections_beyond_the_cap_do_not_stop_service() {
    const CAP: usize = 200;
    const IDLE: usize = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        &[("counter", None)],
        &config(&format!(
            "connections_max = {CAP}\nheader_timeout_ms = 2000"
        )),
    );
    let base_fds = server.open_fds();
    // Connections that never send a byte: no token can help here.
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(server.addr()).unwrap());
    }
    std::thread::sleep(Duration::from_millis(500));
    let fds = server.open_fds();
    eprintln!(
        "{IDLE} idle connections: the server holds {} more descriptors",
        fds - base_fds
    );
    assert!(
        fds <= base_fds + CAP + 8,
        "{IDLE} idle connections hold {} descriptors in the server (cap {CAP})",
        fds - base_fds
    );
    // A new client is served (at the latest once the idle ones time out).
    let started = Instant::now();
    let mut served = false;
    while !served && started.elapsed() < Duration::from_secs(30) {
        let (status, body, _) = raw(
            server.addr(),
            &get("/v1/status", &format!("Authorization: Bearer {CLIENT}\r\n")),
        );
        served = status == 200 && body["plugins"].is_array();
        if !served {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert!(
        served,
        "a new request was not served with {IDLE} idle connections open"
    );
    // The idle connections were closed by the server (header timeout, or
    // at once beyond the cap): each reads end-of-file.
    let mut closed = 0;
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 64];
        if matches!(s.read(&mut buf), Ok(0) | Err(_)) {
            closed += 1;
        }
    }
    assert_eq!(closed, IDLE);
    assert!(server.open_fds() <= base_fds + 8);
}

#[test]
fn a_slow_loris_request_is_cut_off_by_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        &[("counter", None)],
        &config("header_timeout_ms = 1000"),
    );
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    stream
        .write_all(b"GET /v1/status HTTP/1.1\r\nHost: keel\r\nX-Slow: ")
        .unwrap();
    // One byte every 100 ms, for at most 20 s (200 bytes).
    let mut sent = 0;
    let cut = loop {
        if sent == 200 {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
        if stream.write_all(b"a").is_err() {
            break true;
        }
        sent += 1;
        let mut buf = [0u8; 256];
        match stream.read(&mut buf) {
            Ok(_) => break true, // end of file, or an error answer
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break true,
        }
    };
    eprintln!("the slow request was cut after {sent} bytes, one per 100 ms");
    assert!(
        cut,
        "a request trickling its headers was still open after {sent} bytes"
    );
    assert!(sent < 100, "cut only after {sent} bytes (10 s)");
    // The server still serves.
    let (status, _, _) = raw(
        server.addr(),
        &get("/v1/status", &format!("Authorization: Bearer {CLIENT}\r\n")),
    );
    assert_eq!(status, 200);
}

/// Opens `n` connections that each send the headers of a command of
/// `declared` bytes with `token`, then `sent` bytes of it, and hold.
fn held_uploads(
    addr: SocketAddr,
    n: usize,
    token: Option<&str>,
    declared: usize,
    sent: usize,
) -> Vec<TcpStream> {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let chunk = vec![b' '; sent];
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(
                format!(
                    "POST /v1/plugins/counter/commands HTTP/1.1\r\nHost: keel\r\n{auth}\
                     Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
                )
                .as_bytes(),
            )
            .unwrap();
            // As much of the body as the sockets take without blocking.
            s.set_nonblocking(true).unwrap();
            let mut off = 0;
            while off < chunk.len() {
                match s.write(&chunk[off..]) {
                    Ok(k) => off += k,
                    Err(_) => break,
                }
            }
            s
        })
        .collect()
}

#[test]
fn held_half_sent_uploads_do_not_grow_memory_beyond_the_bound() {
    const UPLOADS: usize = 16;
    const HELD: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        &[("counter", None)],
        &config(&format!("uploads_max = {UPLOADS}\nbody_timeout_ms = 20000")),
    );
    let limit = 1 << 20; // limits.command_bytes_max
    let before = server.rss_kib();
    // Unauthenticated uploads are refused from their headers alone...
    let anonymous = held_uploads(server.addr(), HELD, None, limit, limit - 1024);
    // ...and authenticated ones are read at most `uploads_max` at a time.
    let held = held_uploads(server.addr(), HELD, Some(CLIENT), limit, limit - 1024);
    let mut peak = 0;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        peak = peak.max(server.rss_kib());
    }
    let grown_mib = peak.saturating_sub(before) / 1024;
    eprintln!(
        "{} held uploads: resident {before} KiB before, {peak} KiB at peak",
        2 * HELD
    );
    // uploads_max buffers of the command limit, hyper's read buffer per
    // connection (64 KiB), and room for the allocator.
    let bound_mib = (UPLOADS * limit / (1 << 20)) + 2 * HELD * 64 / 1024 + 32;
    assert!(
        grown_mib <= bound_mib as u64,
        "{} held uploads grew the server by {grown_mib} MiB (bound {bound_mib} MiB)",
        2 * HELD
    );
    drop(anonymous);
    drop(held);
    // It still serves.
    let body = br#"{"add": {"name": "after", "amount": 1}}"#;
    let mut request = format!(
        "POST /v1/plugins/counter/commands HTTP/1.1\r\nHost: keel\r\nConnection: close\r\n\
         Authorization: Bearer {CLIENT}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    let (status, answer, _) = raw(server.addr(), &request);
    assert_eq!(status, 200, "{answer}");
}

#[test]
fn sigterm_with_a_half_sent_request_exits_within_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_with(
        dir.path(),
        &[("counter", None)],
        &config("shutdown_grace_ms = 1000"),
    );
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream
        .write_all(
            format!(
                "POST /v1/plugins/counter/commands HTTP/1.1\r\nHost: keel\r\n\
                 Authorization: Bearer {CLIENT}\r\nContent-Length: 100\r\n\r\n{{\"add\""
            )
            .as_bytes(),
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let status = server.terminate(Duration::from_secs(20));
    let status = status.expect("keel serve still running 20 s after SIGTERM");
    assert!(status.success(), "{status:?}");
    drop(stream);
}

#[test]
fn malformed_requests_get_the_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &[("counter", None)], &config(""));
    let auth = format!("Authorization: Bearer {CLIENT}\r\n");
    let cases: Vec<(Vec<u8>, u16, &str)> =
        vec![
        (get("/nope", &auth), 404, "not-found"),
        (get("/v1/plugins/counter/commands", &auth), 405, "method-not-allowed"),
        (
            b"DELETE /v1/plugins HTTP/1.1\r\nHost: keel\r\nConnection: close\r\n\r\n".to_vec(),
            405,
            "method-not-allowed",
        ),
        (get("/v1/plugins/%FF", &auth), 400, "bad-request"),
        (get("/v1/plugins/nope", &auth), 404, "unknown-plugin"),
        (
            get(&format!("/v1/status?{}", "a".repeat(10 << 10)), &auth),
            414,
            "uri-too-long",
        ),
        (
            get("/v1/status", &format!("{auth}X-Big: {}\r\n", "b".repeat(20 << 10))),
            431,
            "headers-too-large",
        ),
        (
            format!(
                "POST /v1/plugins?config=%7B HTTP/1.1\r\nHost: keel\r\nConnection: close\r\n\
                 Content-Length: 2000000000\r\n{auth}\r\n"
            )
            .into_bytes(),
            403,
            "forbidden",
        ),
        (
            format!(
                "POST /v1/plugins/counter/commands HTTP/1.1\r\nHost: keel\r\nConnection: close\r\n\
                 Content-Length: 2000000000\r\n{auth}\r\n"
            )
            .into_bytes(),
            413,
            "too-large",
        ),
    ];
    for (request, status, code) in cases {
        let (got, body, head) = raw(server.addr(), &request);
        let line = String::from_utf8_lossy(&request[..request.len().min(60)]).into_owned();
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{line}: {head}\n{body}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{line}: {head}"
        );
    }
}

#[test]
fn a_u128_comes_back_exact() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &[("spot", None)], &config(""));
    let max = u128::MAX.to_string();
    let above_u64 = (u128::from(u64::MAX) + 2).to_string();
    // The raw answer text, not a parsed Value (which would itself round).
    let answer = |path: &str, body: String| {
        let mut s = TcpStream::connect(server.addr()).unwrap();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: keel\r\nConnection: close\r\n\
             Authorization: Bearer {CLIENT}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(request.as_bytes()).unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    };
    let text = answer(
        "/v1/plugins/spot/commands",
        format!(r#"{{"deposit": {{"user": 7, "asset": "USD", "amount": {above_u64}}}}}"#),
    );
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains(&format!("\"available\":{above_u64}")),
        "{text}"
    );
    let text = answer(
        "/v1/plugins/spot/commands",
        format!(r#"{{"deposit": {{"user": 8, "asset": "BTC", "amount": {max}}}}}"#),
    );
    assert!(text.contains(&format!("\"available\":{max}")), "{text}");
    let text = answer(
        "/v1/plugins/spot/queries",
        r#"{"balances": {"user": 8}}"#.to_owned(),
    );
    assert!(text.contains(&max), "{text}");
    assert!(!text.contains("e+"), "{text}");
}
