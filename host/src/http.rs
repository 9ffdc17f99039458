//! The HTTP/JSON API (axum). Every route calls the in-process [`Host`] API.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | `/v1/status` | | durability (named in full), batch size, plugins |
//! | GET | `/v1/plugins` | | every plugin: version, schema, last sequence, state hash |
//! | GET | `/v1/plugins/{name}` | | one plugin |
//! | POST | `/v1/plugins/{name}/commands` | command JSON | `{"sequence": n, "response": ...}` once durable |
//! | POST | `/v1/plugins/{name}/queries` | query JSON | `{"response": ...}` |
//! | POST | `/v1/plugins` | component bytes (`?config=<json>`) | deploy or hot-swap |
//! | POST | `/v1/plugins/{name}/rollback/{module_hash}` | | make an earlier version active |
//! | GET | `/metrics` | | Prometheus text |
//!
//! Errors: `{"error": {"code": "...", "message": "...", "sequence": n?}}`
//! with 400 (bad JSON, bad component), 401, 404 (unknown plugin), 413
//! (too large), 422 (refused by the plugin or trapped), 503 (overloaded),
//! 500 (storage). When a token is configured, every route but `/metrics`
//! requires `Authorization: Bearer <token>`.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt as _;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use crate::error::HostError;
use crate::host::Host;
use crate::limits::{BODY_DRAIN_BYTES_MAX, COMPONENT_SIZE_BYTES_MAX};

#[derive(Clone)]
struct AppState {
    host: Arc<Host>,
    token: Option<Arc<str>>,
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

/// Reads a request body of at most `limit` bytes. A larger body is
/// drained (up to [`BODY_DRAIN_BYTES_MAX`]) so that the client, which is
/// still sending, receives a clean 413 naming the limit instead of a reset
/// connection.
async fn read_body(body: Body, what: &'static str, limit: usize) -> Result<Bytes, Response> {
    let mut body = body;
    let mut buf = Vec::new();
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
            }
        }
    }
    if total > limit {
        return Err(error_response(&HostError::TooLarge {
            what,
            size: total,
            limit,
        }));
    }
    Ok(Bytes::from(buf))
}

async fn command(State(app): State<AppState>, Path(plugin): Path<String>, body: Body) -> Response {
    let limit = app.host.config().limits.command_bytes_max;
    let body = match read_body(body, "command", limit).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match app.host.submit_async(&plugin, &body).await {
        Ok(receipt) => match raw_json(&receipt.response) {
            Ok(raw) => json_response(
                StatusCode::OK,
                json!({"sequence": receipt.sequence, "response": raw}).to_string(),
            ),
            Err(r) => r,
        },
        Err(e) => error_response(&e),
    }
}

async fn query(State(app): State<AppState>, Path(plugin): Path<String>, body: Body) -> Response {
    let limit = app.host.config().limits.command_bytes_max;
    let body = match read_body(body, "command", limit).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match app.host.query_async(&plugin, &body).await {
        Ok(bytes) => match raw_json(&bytes) {
            Ok(raw) => json_response(StatusCode::OK, json!({ "response": raw }).to_string()),
            Err(r) => r,
        },
        Err(e) => error_response(&e),
    }
}

async fn status(State(app): State<AppState>) -> Response {
    json_response(
        StatusCode::OK,
        serde_json::to_string(&app.host.status()).unwrap_or_default(),
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
}

async fn deploy(
    State(app): State<AppState>,
    Query(params): Query<DeployParams>,
    body: Body,
) -> Response {
    let body = match read_body(body, "component", COMPONENT_SIZE_BYTES_MAX).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let host = app.host.clone();
    let result = tokio::task::spawn_blocking(move || {
        host.deploy(&body, params.config.as_deref().map(str::as_bytes))
    })
    .await;
    match result {
        Ok(Ok(status)) => json_response(
            StatusCode::OK,
            serde_json::to_string(&status).unwrap_or_default(),
        ),
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

async fn require_token(
    State(app): State<AppState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = &app.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(&**token) {
            return error_response(&HostError::Unauthorized);
        }
    }
    next.run(request).await
}

/// The API's router for `host`.
pub fn router(host: Arc<Host>) -> Router {
    let token = host.config().token.as_deref().map(Arc::from);
    let state = AppState { host, token };
    let api = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/plugins", get(plugins))
        .route("/v1/plugins", post(deploy))
        .route("/v1/plugins/{name}", get(plugin))
        .route("/v1/plugins/{name}/commands", post(command))
        .route("/v1/plugins/{name}/queries", post(query))
        .route("/v1/plugins/{name}/rollback/{hash}", post(rollback))
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/metrics", get(metrics))
        .merge(api)
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    host: Arc<Host>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(host))
        .with_graceful_shutdown(shutdown)
        .await
}
