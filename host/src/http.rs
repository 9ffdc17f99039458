//! The HTTP/JSON API (axum on hyper). Every route calls the in-process
//! [`Host`] API.
//!
//! | method | path | role | body | answer |
//! |---|---|---|---|---|
//! | GET | `/v1/status` | any | | durability (named in full), authentication, batch size, plugins |
//! | GET | `/v1/plugins` | any | | every plugin: version, schema, last sequence, state hash |
//! | GET | `/v1/plugins/{name}` | any (allowed the plugin) | | one plugin |
//! | POST | `/v1/plugins/{name}/commands` | `client` or `operator` (allowed the plugin) | command JSON | `{"sequence": n, "response": ...}` once durable |
//! | POST | `/v1/plugins/{name}/queries` | `client` or `operator` (allowed the plugin) | query JSON | `{"response": ...}` |
//! | POST | `/v1/plugins` | `admin` | component bytes (`?config=<json>`; `?force=true` past the `[deploy] dry_run` gate; `?dry_run=true[&last=<n>]`: only the dry-run report, nothing deployed) | deploy or hot-swap |
//! | POST | `/v1/plugins/{name}/rollback/{module_hash}` | `admin` | | make an earlier version active |
//! | GET | `/v1/plugins/{name}/snapshots` | any (allowed the plugin) | | the plugin's snapshots, oldest first |
//! | POST | `/v1/plugins/{name}/snapshots` | `admin` | | take a snapshot now |
//! | GET | `/v1/plugins/{name}/export` | `admin` | | the plugin's state as an export file (JSON lines, streamed; see [`crate::export`]) |
//! | POST | `/v1/modules` | `admin` | component bytes | store a component without deploying it: `{"module_hash": ...}` |
//! | POST | `/v1/import` | `admin` | an export file (`?accept_changes=true` for an edited one) | create the plugin it holds |
//! | POST | `/v1/plugins/{name}/undo-upgrade` | `admin` | | undo the active upgrade (`?upgrade=<sequence>`: that one) as if it never happened; the report lists changed responses |
//! | POST | `/v1/plugins/{name}/restore` | `admin` | | back to the newest snapshot, `?snapshot=<sequence>` or `?to_sequence=<n>` (the plugin's other commands wait; other plugins serve) |
//! | GET | `/metrics` | none (open) | | Prometheus text |
//!
//! **Authentication** ([`crate::auth`]): with principals configured, every
//! route but `/metrics` requires `Authorization: Bearer <token>`; the token
//! is checked from the headers before a byte of the body is read. `/metrics`
//! stays open so that a scraper needs no secret: it shows only per-plugin
//! sequence numbers and queue lengths, the durability mode and counters.
//! With no principals the host is unauthenticated, serves only on a
//! loopback address, and `/v1/status` says so. The authenticated principal
//! is put in the request's extensions as `auth::Principal`.
//!
//! A plugin's response is embedded byte for byte (`response` is the
//! plugin's JSON, never re-parsed, so a u128 stays exact).
//!
//! **Errors**: always `{"error": {"code": "...", "message": "...",
//! "sequence": n?}}`, with
//!
//! | status | code | when |
//! |---|---|---|
//! | 400 | `bad-json`, `bad-component`, `bad-request` | bad payload, component, query string or path |
//! | 401 | `unauthorized` | no credential, a malformed one, or an unknown token |
//! | 403 | `forbidden` | a valid credential without the role, or for a plugin it may not use |
//! | 404 | `unknown-plugin`, `not-found` | no such plugin, no such route |
//! | 405 | `method-not-allowed` | the route exists, not with this method |
//! | 408 | `body-timeout` | the body did not arrive within `http.body_timeout_ms` |
//! | 413 | `too-large` | body over the limit (command size, component size) |
//! | 414 | `uri-too-long` | URI over [`HTTP_URI_BYTES_MAX`] |
//! | 422 | plugin code, trap kind | refused by the plugin or trapped |
//! | 431 | `headers-too-large` | headers over [`HTTP_HEADERS_BYTES_MAX`] |
//! | 503 | `overloaded`, `stopped` | queue full, shutting down |
//! | 500 | `storage-failure` | storage |
//!
//! A request line and headers larger than hyper's read buffer
//! ([`HTTP_READ_BUFFER_BYTES_MAX`]) or unparsable as HTTP/1.1 are answered
//! by hyper itself, with a bare 431 or 400 and the connection closed.
//!
//! **Abuse bounds** (`[http]` in the configuration, defaults in
//! [`crate::limits`]): at most `connections_max` open connections (the
//! next is accepted and closed at once); `header_timeout_ms` to send a
//! request's headers, counted from the connection's opening or the last
//! response (so idle keep-alive connections close too); `body_timeout_ms`
//! to send a body; at most `uploads_max` command or query bodies and
//! [`HTTP_DEPLOY_UPLOADS_MAX`] component bodies read at once, each into a
//! buffer no larger than its limit; on shutdown, requests in flight get
//! `shutdown_grace_ms`, then their connections are closed.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody as _};
use axum::extract::{FromRequestParts as _, Path, Query, RawPathParams, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use http_body_util::BodyExt as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;
use tokio::sync::Semaphore;

use crate::auth::{Access, Denied, Need};
use crate::dry_run::DryRunFrom;
use crate::error::HostError;
use crate::host::{Host, HostStatus};
use crate::limits::{
    BODY_DRAIN_BYTES_MAX, COMPONENT_SIZE_BYTES_MAX, HTTP_DEPLOY_UPLOADS_MAX,
    HTTP_HEADERS_BYTES_MAX, HTTP_READ_BUFFER_BYTES_MAX, HTTP_URI_BYTES_MAX, IMPORT_SIZE_BYTES_MAX,
};
use crate::restore::RestoreTarget;

#[derive(Clone)]
struct AppState {
    host: Arc<Host>,
    access: Arc<Access>,
    /// Permits to read a command or query body (`http.uploads_max`).
    uploads: Arc<Semaphore>,
    /// Time to read a whole body (`http.body_timeout_ms`).
    body_timeout: Duration,
}

/// A JSON error answer that no [`HostError`] describes (routing, HTTP).
fn plain_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(
        status,
        json!({"error": {"code": code, "message": message}}).to_string(),
    )
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn error_response(err: &HostError) -> Response {
    let status =
        StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut body = json!({"code": err.code(), "message": err.to_string()});
    if let Some(seq) = err.sequence() {
        body["sequence"] = json!(seq);
    }
    json_response(status, json!({ "error": body }).to_string())
}

/// Embeds plugin response bytes; a plugin that returned non-JSON bytes is
/// reported as an error rather than producing a broken document.
fn raw_json(bytes: &[u8]) -> Result<&RawValue, Response> {
    serde_json::from_slice::<&RawValue>(bytes).map_err(|e| {
        error_response(&HostError::QueryFailed {
            code: "bad-response".into(),
            message: format!("the plugin's response is not JSON: {e}"),
        })
    })
}

/// Reads a request body of at most `limit` bytes within the body timeout,
/// holding one of the `uploads` permits (a command or query) while it
/// buffers. A larger body is drained without being kept (up to
/// [`BODY_DRAIN_BYTES_MAX`], and at once refused when its declared length
/// is over that) so that the client, which is still sending, receives a
/// clean 413 naming the limit instead of a reset connection.
async fn read_body(
    app: &AppState,
    body: Body,
    what: &'static str,
    limit: usize,
) -> Result<Bytes, Response> {
    let timeout = app.body_timeout;
    // Components and export files are bounded by their routes' own
    // concurrency limits, not by the command upload permits.
    let uploads = (what != "component" && what != "export file").then(|| app.uploads.clone());
    match tokio::time::timeout(timeout, read_body_within(uploads, body, what, limit)).await {
        Ok(result) => result,
        Err(_) => Err(plain_error(
            StatusCode::REQUEST_TIMEOUT,
            "body-timeout",
            &format!(
                "the {what} body did not arrive within {} ms",
                timeout.as_millis()
            ),
        )),
    }
}

async fn read_body_within(
    uploads: Option<Arc<Semaphore>>,
    body: Body,
    what: &'static str,
    limit: usize,
) -> Result<Bytes, Response> {
    let too_large = |size: usize| error_response(&HostError::TooLarge { what, size, limit });
    let declared = body.size_hint().exact().map(|n| n as usize);
    if let Some(n) = declared
        && n > BODY_DRAIN_BYTES_MAX
    {
        return Err(too_large(n));
    }
    let _permit = match (&uploads, declared) {
        (Some(sem), d) if d.is_none_or(|n| n <= limit) => Some(
            sem.acquire()
                .await
                .map_err(|_| error_response(&HostError::Stopped))?,
        ),
        _ => None,
    };
    let mut body = body;
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(limit));
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            json_response(
                StatusCode::BAD_REQUEST,
                json!({"error": {"code": "bad-request", "message": format!("reading the request body: {e}")}}).to_string(),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            total += data.len();
            if total <= limit {
                buf.extend_from_slice(&data);
            } else if total > BODY_DRAIN_BYTES_MAX {
                break;
            } else if !buf.is_empty() {
                buf = Vec::new();
            }
        }
    }
    if total > limit {
        return Err(too_large(total));
    }
    Ok(Bytes::from(buf))
}

/// A command's answer. `response` is a [`RawValue`] serialized by
/// `serde_json::to_string`, which writes it verbatim (`json!` would parse
/// it into a `Value` and turn integers above u64::MAX into floats).
#[derive(Serialize)]
struct CommandAnswer<'a> {
    sequence: u64,
    response: &'a RawValue,
}

/// A query's answer; `response` verbatim, as in [`CommandAnswer`].
#[derive(Serialize)]
struct QueryAnswer<'a> {
    response: &'a RawValue,
}

fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// The plugin's caller: the authenticated principal, if any.
type CallerExt = Option<axum::Extension<crate::auth::Principal>>;

fn caller_of(principal: CallerExt) -> Option<crate::caller::Caller> {
    principal.map(|axum::Extension(p)| crate::caller::Caller::from(&p))
}

async fn command(
    State(app): State<AppState>,
    Path(plugin): Path<String>,
    principal: CallerExt,
    body: Body,
) -> Response {
    let limit = app.host.config().limits.command_bytes_max;
    let body = match read_body(&app, body, "command", limit).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let caller = caller_of(principal);
    match app.host.submit_async_as(&plugin, &body, caller).await {
        Ok(receipt) => match raw_json(&receipt.response) {
            Ok(raw) => json_response(
                StatusCode::OK,
                to_json(&CommandAnswer {
                    sequence: receipt.sequence,
                    response: raw,
                }),
            ),
            Err(r) => r,
        },
        Err(e) => error_response(&e),
    }
}

async fn query(
    State(app): State<AppState>,
    Path(plugin): Path<String>,
    principal: CallerExt,
    body: Body,
) -> Response {
    let limit = app.host.config().limits.command_bytes_max;
    let body = match read_body(&app, body, "query", limit).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let caller = caller_of(principal);
    match app.host.query_async_as(&plugin, &body, caller).await {
        Ok(bytes) => match raw_json(&bytes) {
            Ok(raw) => json_response(StatusCode::OK, to_json(&QueryAnswer { response: raw })),
            Err(r) => r,
        },
        Err(e) => error_response(&e),
    }
}

/// `/v1/status`: the host's status and how it authenticates.
#[derive(Serialize)]
struct StatusAnswer {
    #[serde(flatten)]
    status: HostStatus,
    authentication: String,
}

async fn status(State(app): State<AppState>) -> Response {
    json_response(
        StatusCode::OK,
        to_json(&StatusAnswer {
            status: app.host.status(),
            authentication: app.access.describe(),
        }),
    )
}

async fn plugins(State(app): State<AppState>) -> Response {
    json_response(
        StatusCode::OK,
        serde_json::to_string(&app.host.plugins()).unwrap_or_default(),
    )
}

async fn plugin(State(app): State<AppState>, Path(name): Path<String>) -> Response {
    match app.host.plugin(&name) {
        Ok(p) => json_response(
            StatusCode::OK,
            serde_json::to_string(&p).unwrap_or_default(),
        ),
        Err(e) => error_response(&e),
    }
}

#[derive(Deserialize)]
struct DeployParams {
    config: Option<String>,
    /// Only report what the new version would have done (nothing deployed).
    #[serde(default)]
    dry_run: bool,
    /// Replay this many of the last commands (default: since the newest snapshot).
    last: Option<u64>,
    /// Deploy even if the `[deploy] dry_run` gate would refuse.
    #[serde(default)]
    force: bool,
}

async fn deploy(
    State(app): State<AppState>,
    Query(params): Query<DeployParams>,
    body: Body,
) -> Response {
    let body = match read_body(&app, body, "component", COMPONENT_SIZE_BYTES_MAX).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let host = app.host.clone();
    let result = tokio::task::spawn_blocking(move || {
        if params.dry_run {
            let from = params
                .last
                .map_or(DryRunFrom::NewestSnapshot, DryRunFrom::Last);
            host.dry_run(&body, from, &mut |_, _| {})
                .map(|report| to_json(&report))
        } else {
            host.deploy_gated(
                &body,
                params.config.as_deref().map(str::as_bytes),
                params.force,
            )
            .map(|status| to_json(&status))
        }
    })
    .await;
    match result {
        Ok(Ok(answer)) => json_response(StatusCode::OK, answer),
        Ok(Err(e)) => error_response(&e),
        Err(e) => error_response(&HostError::Deploy(format!("deployment task failed: {e}"))),
    }
}

async fn rollback(
    State(app): State<AppState>,
    Path((plugin, hash)): Path<(String, String)>,
) -> Response {
    let host = app.host.clone();
    let result = tokio::task::spawn_blocking(move || host.rollback(&plugin, &hash)).await;
    match result {
        Ok(Ok(status)) => json_response(
            StatusCode::OK,
            serde_json::to_string(&status).unwrap_or_default(),
        ),
        Ok(Err(e)) => error_response(&e),
        Err(e) => error_response(&HostError::Deploy(format!("rollback task failed: {e}"))),
    }
}

async fn snapshots(State(app): State<AppState>, Path(name): Path<String>) -> Response {
    match app.host.snapshots(&name) {
        Ok(list) => json_response(StatusCode::OK, to_json(&list)),
        Err(e) => error_response(&e),
    }
}

async fn take_snapshot(State(app): State<AppState>, Path(name): Path<String>) -> Response {
    let host = app.host.clone();
    match tokio::task::spawn_blocking(move || host.snapshot(&name)).await {
        Ok(Ok(info)) => json_response(StatusCode::OK, to_json(&info)),
        Ok(Err(e)) => error_response(&e),
        Err(e) => error_response(&HostError::Storage(format!("snapshot task failed: {e}"))),
    }
}

#[derive(Deserialize)]
struct UndoParams {
    upgrade: Option<u64>,
}

async fn undo_upgrade(
    State(app): State<AppState>,
    Path(name): Path<String>,
    Query(params): Query<UndoParams>,
) -> Response {
    let host = app.host.clone();
    match tokio::task::spawn_blocking(move || host.undo_upgrade(&name, params.upgrade)).await {
        Ok(Ok(report)) => json_response(StatusCode::OK, to_json(&report)),
        Ok(Err(e)) => error_response(&e),
        Err(e) => error_response(&HostError::Deploy(format!("undo task failed: {e}"))),
    }
}

#[derive(Deserialize)]
struct RestoreParams {
    snapshot: Option<u64>,
    to_sequence: Option<u64>,
}

async fn restore(
    State(app): State<AppState>,
    Path(name): Path<String>,
    Query(params): Query<RestoreParams>,
) -> Response {
    let target = match (params.snapshot, params.to_sequence) {
        (None, None) => RestoreTarget::Newest,
        (Some(s), None) => RestoreTarget::Snapshot(s),
        (None, Some(n)) => RestoreTarget::Sequence(n),
        (Some(_), Some(_)) => {
            return plain_error(
                StatusCode::BAD_REQUEST,
                "bad-request",
                "give `snapshot` or `to_sequence`, not both",
            );
        }
    };
    let host = app.host.clone();
    match tokio::task::spawn_blocking(move || host.restore(&name, target)).await {
        Ok(Ok(report)) => json_response(StatusCode::OK, to_json(&report)),
        Ok(Err(e)) => error_response(&e),
        Err(e) => error_response(&HostError::Storage(format!("restore task failed: {e}"))),
    }
}

/// A response body fed by a blocking writer through a channel.
struct ChannelBody(tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|r| r.map(http_body::Frame::data)))
    }
}

/// A blocking [`std::io::Write`] whose bytes go to a [`ChannelBody`] in
/// chunks of [`EXPORT_CHUNK_BYTES`].
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

const EXPORT_CHUNK_BYTES: usize = 64 << 10;

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= EXPORT_CHUNK_BYTES {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client left"))
    }
}

async fn export(State(app): State<AppState>, Path(name): Path<String>) -> Response {
    // Refuse an unknown plugin with a status, before the stream starts.
    if let Err(e) = app.host.plugin(&name) {
        return error_response(&e);
    }
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let host = app.host.clone();
    tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::new(),
        };
        let result = host.export(&name, &mut out, &mut |_, _| {});
        if let Err(e) = result {
            // The status is sent; a failure mid-stream cuts the body
            // short, and the missing trailer tells the client.
            tracing::warn!(plugin = %name, error = %e, "an export failed");
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::new(ChannelBody(rx)),
    )
        .into_response()
}

#[derive(Deserialize)]
struct ImportParams {
    #[serde(default)]
    accept_changes: bool,
}

async fn import(
    State(app): State<AppState>,
    Query(params): Query<ImportParams>,
    body: Body,
) -> Response {
    let body = match read_body(&app, body, "export file", IMPORT_SIZE_BYTES_MAX).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let host = app.host.clone();
    let result = tokio::task::spawn_blocking(move || {
        host.import(&body[..], params.accept_changes, &mut |_, _| {})
    })
    .await;
    match result {
        Ok(Ok(summary)) => json_response(StatusCode::OK, to_json(&summary)),
        Ok(Err(e)) => error_response(&e),
        Err(e) => error_response(&HostError::Deploy(format!("import task failed: {e}"))),
    }
}

async fn store_module(State(app): State<AppState>, body: Body) -> Response {
    let body = match read_body(&app, body, "component", COMPONENT_SIZE_BYTES_MAX).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let host = app.host.clone();
    match tokio::task::spawn_blocking(move || host.store_module(&body)).await {
        Ok(Ok(hash)) => json_response(StatusCode::OK, json!({ "module_hash": hash }).to_string()),
        Ok(Err(e)) => error_response(&e),
        Err(e) => error_response(&HostError::Deploy(format!("module task failed: {e}"))),
    }
}

async fn metrics(State(app): State<AppState>) -> Response {
    let status = app.host.status();
    let mut out = String::new();
    out.push_str("# HELP keel_plugin_last_sequence Sequence of the last committed command.\n");
    out.push_str("# TYPE keel_plugin_last_sequence counter\n");
    for p in &status.plugins {
        out.push_str(&format!(
            "keel_plugin_last_sequence{{plugin=\"{}\"}} {}\n",
            p.name, p.last_sequence
        ));
    }
    out.push_str("# HELP keel_plugin_queued_commands Commands waiting in the plugin's queue.\n");
    out.push_str("# TYPE keel_plugin_queued_commands gauge\n");
    for p in &status.plugins {
        out.push_str(&format!(
            "keel_plugin_queued_commands{{plugin=\"{}\"}} {}\n",
            p.name, p.queued
        ));
    }
    out.push_str(
        "# HELP keel_durability_immediate 1 when commits are fsynced before acknowledgement.\n",
    );
    out.push_str("# TYPE keel_durability_immediate gauge\n");
    let immediate = app.host.config().durability == crate::storage::Durability::Immediate;
    out.push_str(&format!(
        "keel_durability_immediate {}\n",
        u8::from(immediate)
    ));
    out.push_str("# HELP keel_checkpoints_total Durable redb commits that retired the write-ahead log since start.\n");
    out.push_str("# TYPE keel_checkpoints_total counter\n");
    out.push_str(&format!(
        "keel_checkpoints_total {}\n",
        app.host.db().checkpoints()
    ));
    out.push_str("# HELP keel_evicted_rows_total Resident rows evicted to be read through from redb (state past resident_bytes_max).\n");
    out.push_str("# TYPE keel_evicted_rows_total counter\n");
    out.push_str(&format!(
        "keel_evicted_rows_total {}\n",
        app.host.db().evicted_rows()
    ));
    out.push_str(
        "# HELP keel_recovered_batches Group commits the write-ahead log brought back at start.\n",
    );
    out.push_str("# TYPE keel_recovered_batches gauge\n");
    out.push_str(&format!(
        "keel_recovered_batches {}\n",
        status.recovered_batches
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// Checks the request's credential against the route's [`Need`] (from
/// its headers only, before the body is read) and puts the principal in
/// the request's extensions.
async fn guard(
    State((app, need)): State<(AppState, Need)>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let plugin = match need {
        Need::Client | Need::AnyForPlugin => {
            // Authenticate first: an anonymous caller learns nothing of the path.
            if let Err(denied) = app.access.check(&parts.headers, Need::Any, None) {
                return refuse(&app, body, denied).await;
            }
            match RawPathParams::from_request_parts(&mut parts, &()).await {
                Ok(params) => params
                    .iter()
                    .find(|(k, _)| *k == "name")
                    .map(|(_, v)| v.to_owned()),
                Err(e) => {
                    return plain_error(StatusCode::BAD_REQUEST, "bad-request", &e.body_text());
                }
            }
        }
        Need::Any | Need::Admin => None,
    };
    match app.access.check(&parts.headers, need, plugin.as_deref()) {
        Ok(principal) => {
            if let Some(principal) = principal {
                parts.extensions.insert(principal);
            }
            next.run(Request::from_parts(parts, body)).await
        }
        Err(denied) => refuse(&app, body, denied).await,
    }
}

/// Answers a refused request after reading and discarding its body, as a
/// lingering close does, so that a client still sending sees the answer
/// rather than a reset connection. Nothing is kept: memory stays at
/// hyper's read buffer. The discard stops past [`COMPONENT_SIZE_BYTES_MAX`]
/// or the body timeout.
async fn refuse(app: &AppState, body: Body, denied: Denied) -> Response {
    let declared = body.size_hint().exact().unwrap_or(0);
    if declared <= COMPONENT_SIZE_BYTES_MAX as u64 {
        let discard = async {
            let mut body = body;
            let mut total = 0usize;
            while let Some(Ok(frame)) = body.frame().await {
                total += frame.data_ref().map_or(0, Bytes::len);
                if total > COMPONENT_SIZE_BYTES_MAX {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(app.body_timeout, discard).await;
    }
    denied_response(denied)
}

fn denied_response(denied: Denied) -> Response {
    let mut response = error_response(&match denied {
        Denied::Unauthenticated(why) => HostError::Unauthorized(why),
        Denied::Forbidden(why) => HostError::Forbidden(why),
    });
    if response.status() == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"keel\""),
        );
    }
    response
}

/// `route` behind a [`guard`] requiring `need`.
fn guarded(route: MethodRouter<AppState>, app: &AppState, need: Need) -> MethodRouter<AppState> {
    route.route_layer(middleware::from_fn_with_state((app.clone(), need), guard))
}

/// Refuses a URI or headers over their limits with the JSON error (hyper
/// itself only refuses what overflows its read buffer, without a body).
async fn bound_head(request: Request, next: Next) -> Response {
    let uri = request.uri().to_string().len();
    if uri > HTTP_URI_BYTES_MAX {
        return plain_error(
            StatusCode::URI_TOO_LONG,
            "uri-too-long",
            &format!("the URI is {uri} bytes, over the {HTTP_URI_BYTES_MAX}-byte limit"),
        );
    }
    let headers: usize = request
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if headers > HTTP_HEADERS_BYTES_MAX {
        return plain_error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
            &format!(
                "the headers are {headers} bytes, over the {HTTP_HEADERS_BYTES_MAX}-byte limit"
            ),
        );
    }
    next.run(request).await
}

/// Turns any error answer that is not already the JSON error (a rejection
/// of a path or query string by an extractor, ...) into it.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let code = match status {
        StatusCode::NOT_FOUND => "not-found",
        StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too-large",
        StatusCode::URI_TOO_LONG => "uri-too-long",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers-too-large",
        StatusCode::REQUEST_TIMEOUT => "body-timeout",
        s if s.is_server_error() => "internal",
        _ => "bad-request",
    };
    let (parts, body) = response.into_parts();
    let text = match http_body_util::Limited::new(body, 4096).collect().await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        Err(_) => String::new(),
    };
    let message = if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text.trim().to_owned()
    };
    let mut mapped = plain_error(status, code, &message);
    for name in [header::ALLOW, header::WWW_AUTHENTICATE] {
        if let Some(v) = parts.headers.get(&name) {
            mapped.headers_mut().insert(name, v.clone());
        }
    }
    mapped
}

async fn not_found(request: Request) -> Response {
    plain_error(
        StatusCode::NOT_FOUND,
        "not-found",
        &format!("no route {} {}", request.method(), request.uri().path()),
    )
}

async fn method_not_allowed(request: Request) -> Response {
    plain_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        &format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

/// The API's router for `host`, with `access` deciding who may call what.
pub fn router(host: Arc<Host>, access: Arc<Access>) -> Router {
    let http = host.config().http;
    let app = AppState {
        host,
        access,
        uploads: Arc::new(Semaphore::new(http.uploads_max)),
        body_timeout: Duration::from_millis(http.body_timeout_ms),
    };
    let deploy_route = post(deploy).layer(tower::limit::ConcurrencyLimitLayer::new(
        HTTP_DEPLOY_UPLOADS_MAX,
    ));
    Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/status", guarded(get(status), &app, Need::Any))
        .route("/v1/plugins", guarded(get(plugins), &app, Need::Any))
        .route("/v1/plugins", guarded(deploy_route, &app, Need::Admin))
        .route(
            "/v1/plugins/{name}",
            guarded(get(plugin), &app, Need::AnyForPlugin),
        )
        .route(
            "/v1/plugins/{name}/commands",
            guarded(post(command), &app, Need::Client),
        )
        .route(
            "/v1/plugins/{name}/queries",
            guarded(post(query), &app, Need::Client),
        )
        .route(
            "/v1/plugins/{name}/snapshots",
            guarded(get(snapshots), &app, Need::AnyForPlugin).merge(guarded(
                post(take_snapshot),
                &app,
                Need::Admin,
            )),
        )
        .route(
            "/v1/plugins/{name}/export",
            guarded(get(export), &app, Need::Admin),
        )
        .route(
            "/v1/modules",
            guarded(
                post(store_module).layer(tower::limit::ConcurrencyLimitLayer::new(
                    HTTP_DEPLOY_UPLOADS_MAX,
                )),
                &app,
                Need::Admin,
            ),
        )
        .route(
            "/v1/import",
            guarded(
                post(import).layer(tower::limit::ConcurrencyLimitLayer::new(
                    HTTP_DEPLOY_UPLOADS_MAX,
                )),
                &app,
                Need::Admin,
            ),
        )
        .route(
            "/v1/plugins/{name}/undo-upgrade",
            guarded(post(undo_upgrade), &app, Need::Admin),
        )
        .route(
            "/v1/plugins/{name}/restore",
            guarded(post(restore), &app, Need::Admin),
        )
        .route(
            "/v1/plugins/{name}/rollback/{hash}",
            guarded(post(rollback), &app, Need::Admin),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(bound_head))
        .layer(middleware::from_fn(json_errors))
        .with_state(app)
}

/// Serves the API on `listener` until `shutdown` resolves, within the
/// `[http]` bounds (see the module documentation); then stops accepting,
/// lets requests in flight finish for `http.shutdown_grace_ms` and closes
/// whatever connection is still open (a half-sent request included).
pub async fn serve(
    host: Arc<Host>,
    access: Arc<Access>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = host.config().http;
    let service = TowerToHyperService::new(router(host, access));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_timeout_ms))
        .max_buf_size(HTTP_READ_BUFFER_BYTES_MAX);
    let slots = Arc::new(Semaphore::new(limits.connections_max));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    let mut connections = tokio::task::JoinSet::new();
    let mut refused = 0u64;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: pause, don't spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    refused,
                    limit = limits.connections_max,
                    "connection limit reached: closing new connections at once"
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = http.serve_connection(TokioIo::new(stream), service.clone());
        let mut stop = stop_rx.clone();
        connections.spawn(async move {
            let _slot = slot;
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stop.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    drop(listener);
    drop(stop_tx);
    let grace = Duration::from_millis(limits.shutdown_grace_ms);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    if !drained {
        tracing::warn!(
            open = connections.len(),
            grace_ms = limits.shutdown_grace_ms,
            "closing connections still busy after the shutdown grace period"
        );
        connections.shutdown().await;
    }
    Ok(())
}
