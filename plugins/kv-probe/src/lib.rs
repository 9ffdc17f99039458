//! A test-only plugin written against the standard key-value interface
//! (`wasi:keyvalue@0.2.0-draft2`: `store`, `atomics`, `batch`) instead of
//! `keel:plugin/tables`: it targets the world `kv-plugin` of `wit/keel.wit`.
//!
//! **Exception to the SDK rule.** Keel plugins normally never call
//! `wit_bindgen::generate!` (the guest SDK is the one site), but the SDK
//! only speaks `tables`. This crate therefore generates its own bindings for
//! `kv-plugin` and exports `guest` with wit-bindgen's `export!`, exactly as
//! third-party code written for the standard interface would. It does not
//! depend on `keel-guest`.
//!
//! # Requests
//!
//! Commands and queries are the same JSON object:
//!
//! ```json
//! {"ops": [{"set": {"bucket": "b", "key": "k", "value": "v"}},
//!          {"get": {"bucket": "b", "key": "k"}}],
//!  "strict": false, "then": "ok"}
//! ```
//!
//! Each op's outcome is `{"ok": ...}` or `{"err": {"code", "message"}}`,
//! and the response is the list of outcomes. With `"strict": true` the
//! first failing op fails the whole call with its error. `"then"` decides
//! how the call ends after the ops: `"ok"` (default), `"error"` (returns the
//! error `deliberate`) or `"trap"` (panics, which traps the component).
//!
//! Ops (see [`Op`]): `open`, `get`, `set`, `set_sized`, `delete`, `exists`,
//! `list_page`, `list_all`, `fill`, `increment`, `cas`, `get_many`,
//! `set_many`, `delete_many`.

use serde::Deserialize;
use serde_json::{Value, json};

/// The generated bindings of world `kv-plugin` (wit-bindgen's glue is
/// `unsafe` code, which the workspace denies elsewhere).
#[allow(unsafe_code, missing_docs)]
mod bindings {
    wit_bindgen::generate!({
        world: "kv-plugin",
        path: "../../wit",
        generate_all,
        pub_export_macro: true,
    });
}

use bindings::exports::keel::plugin::guest::{Error as GuestError, Guest, PluginInfo};
use bindings::wasi::keyvalue::{atomics, batch, store};

/// One operation on a bucket.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// Opens `bucket` and answers `null`.
    Open { bucket: String },
    /// The value of `key` (a string if UTF-8, else an array of bytes), or `null`.
    Get { bucket: String, key: String },
    /// Stores `value` (UTF-8) under `key`.
    Set {
        bucket: String,
        key: String,
        value: String,
    },
    /// Stores `size` bytes (`x`) under `key`.
    SetSized {
        bucket: String,
        key: String,
        size: usize,
    },
    /// Deletes `key`.
    Delete { bucket: String, key: String },
    /// Whether `key` exists.
    Exists { bucket: String, key: String },
    /// One page of `list-keys`: `{"keys": [...], "cursor": ...}`.
    ListPage {
        bucket: String,
        cursor: Option<String>,
    },
    /// Follows the cursor to the end: `{"pages": [[...], ...]}`.
    ListAll { bucket: String },
    /// Stores `count` keys `{prefix}{i:06}` (value `"v"`), in descending
    /// order of `i`, one `set` each.
    Fill {
        bucket: String,
        prefix: String,
        count: u32,
    },
    /// `atomics.increment`; answers the new value.
    Increment {
        bucket: String,
        key: String,
        delta: i64,
    },
    /// A compare-and-swap of `key` to `value`. With `interfere`, the key is
    /// set to that value between `cas.new` and `swap` (so the swap fails),
    /// and the swap is retried once on the handle `cas-failed` returns.
    /// Answers `{"seen", "swapped", "retry_seen", "retried"}`.
    Cas {
        bucket: String,
        key: String,
        value: String,
        interfere: Option<String>,
    },
    /// `batch.get-many`: a list of `[key, value]` or `null`.
    GetMany { bucket: String, keys: Vec<String> },
    /// `batch.set-many`.
    SetMany {
        bucket: String,
        entries: Vec<(String, String)>,
    },
    /// `batch.delete-many`.
    DeleteMany { bucket: String, keys: Vec<String> },
}

/// How a call ends after its ops.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Then {
    /// Returns the outcomes.
    #[default]
    Ok,
    /// Returns the error `deliberate` (its writes are discarded).
    Error,
    /// Panics (the component traps; its writes are discarded).
    Trap,
}

/// A command or query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The operations, run in order.
    pub ops: Vec<Op>,
    /// Fail the call with the first op error.
    #[serde(default)]
    pub strict: bool,
    /// How the call ends.
    #[serde(default)]
    pub then: Then,
}

fn guest_error(code: &str, message: impl Into<String>) -> GuestError {
    GuestError {
        code: code.into(),
        message: message.into(),
    }
}

/// Maps a key-value error to a guest error: the WIT case as the code, the
/// host's message (which starts with its own code) as the message.
fn kv_error(e: store::Error) -> GuestError {
    match e {
        store::Error::NoSuchStore => guest_error("no-such-store", "no such bucket"),
        store::Error::AccessDenied => guest_error("access-denied", "access denied"),
        store::Error::Other(m) => guest_error("other", m),
    }
}

fn bytes_json(v: Vec<u8>) -> Value {
    match String::from_utf8(v) {
        Ok(s) => Value::String(s),
        Err(e) => json!(e.into_bytes()),
    }
}

fn open(bucket: &str) -> Result<store::Bucket, GuestError> {
    store::open(bucket).map_err(kv_error)
}

fn run(op: Op) -> Result<Value, GuestError> {
    match op {
        Op::Open { bucket } => open(&bucket).map(|_| Value::Null),
        Op::Get { bucket, key } => {
            let v = open(&bucket)?.get(&key).map_err(kv_error)?;
            Ok(v.map_or(Value::Null, bytes_json))
        }
        Op::Set { bucket, key, value } => {
            open(&bucket)?
                .set(&key, value.as_bytes())
                .map_err(kv_error)?;
            Ok(Value::Null)
        }
        Op::SetSized { bucket, key, size } => {
            open(&bucket)?
                .set(&key, &vec![b'x'; size])
                .map_err(kv_error)?;
            Ok(Value::Null)
        }
        Op::Delete { bucket, key } => {
            open(&bucket)?.delete(&key).map_err(kv_error)?;
            Ok(Value::Null)
        }
        Op::Exists { bucket, key } => Ok(json!(open(&bucket)?.exists(&key).map_err(kv_error)?)),
        Op::ListPage { bucket, cursor } => {
            let page = open(&bucket)?
                .list_keys(cursor.as_deref())
                .map_err(kv_error)?;
            Ok(json!({"keys": page.keys, "cursor": page.cursor}))
        }
        Op::ListAll { bucket } => {
            let b = open(&bucket)?;
            let mut pages = Vec::new();
            let mut cursor = None;
            loop {
                let page = b.list_keys(cursor.as_deref()).map_err(kv_error)?;
                pages.push(page.keys);
                match page.cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            Ok(json!({ "pages": pages }))
        }
        Op::Fill {
            bucket,
            prefix,
            count,
        } => {
            let b = open(&bucket)?;
            for i in (0..count).rev() {
                b.set(&format!("{prefix}{i:06}"), b"v").map_err(kv_error)?;
            }
            Ok(Value::Null)
        }
        Op::Increment { bucket, key, delta } => {
            let b = open(&bucket)?;
            Ok(json!(
                atomics::increment(&b, &key, delta).map_err(kv_error)?
            ))
        }
        Op::Cas {
            bucket,
            key,
            value,
            interfere,
        } => {
            let b = open(&bucket)?;
            let cas = atomics::Cas::new(&b, &key).map_err(kv_error)?;
            let seen = cas.current().map_err(kv_error)?.map(bytes_json);
            if let Some(other) = &interfere {
                b.set(&key, other.as_bytes()).map_err(kv_error)?;
            }
            match atomics::swap(cas, value.as_bytes()) {
                Ok(()) => Ok(json!({"seen": seen, "swapped": true})),
                Err(atomics::CasError::StoreError(e)) => Err(kv_error(e)),
                Err(atomics::CasError::CasFailed(fresh)) => {
                    let retry_seen = fresh.current().map_err(kv_error)?.map(bytes_json);
                    let retried = match atomics::swap(fresh, value.as_bytes()) {
                        Ok(()) => true,
                        Err(atomics::CasError::StoreError(e)) => return Err(kv_error(e)),
                        Err(atomics::CasError::CasFailed(_)) => false,
                    };
                    Ok(json!({
                        "seen": seen,
                        "swapped": false,
                        "retry_seen": retry_seen,
                        "retried": retried,
                    }))
                }
            }
        }
        Op::GetMany { bucket, keys } => {
            let got = batch::get_many(&open(&bucket)?, &keys).map_err(kv_error)?;
            Ok(Value::Array(
                got.into_iter()
                    .map(|e| e.map_or(Value::Null, |(k, v)| json!([k, bytes_json(v)])))
                    .collect(),
            ))
        }
        Op::SetMany { bucket, entries } => {
            let entries: Vec<(String, Vec<u8>)> = entries
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            batch::set_many(&open(&bucket)?, &entries).map_err(kv_error)?;
            Ok(Value::Null)
        }
        Op::DeleteMany { bucket, keys } => {
            batch::delete_many(&open(&bucket)?, &keys).map_err(kv_error)?;
            Ok(Value::Null)
        }
    }
}

fn serve(request: &[u8]) -> Result<Vec<u8>, GuestError> {
    let request: Request =
        serde_json::from_slice(request).map_err(|e| guest_error("bad-request", e.to_string()))?;
    let mut outcomes = Vec::with_capacity(request.ops.len());
    for op in request.ops {
        match run(op) {
            Ok(v) => outcomes.push(json!({ "ok": v })),
            Err(e) if request.strict => return Err(e),
            Err(e) => outcomes.push(json!({"err": {"code": e.code, "message": e.message}})),
        }
    }
    match request.then {
        Then::Ok => Ok(serde_json::to_vec(&outcomes).expect("JSON values serialize")),
        Then::Error => Err(guest_error(
            "deliberate",
            "failed on request, after the ops",
        )),
        Then::Trap => panic!("trapping on request, after the ops"),
    }
}

/// The exported `guest` interface.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct KvProbe;

impl Guest for KvProbe {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "kv-probe".into(),
            version: "0.1.0".into(),
            schema: 1,
        }
    }

    fn init(_config: Vec<u8>) -> Result<(), GuestError> {
        Ok(())
    }

    fn handle(command: Vec<u8>) -> Result<Vec<u8>, GuestError> {
        serve(&command)
    }

    fn query(request: Vec<u8>) -> Result<Vec<u8>, GuestError> {
        serve(&request)
    }

    fn migrate(_from_schema: u32) -> Result<(), GuestError> {
        Ok(())
    }
}

/// The component's exports (wit-bindgen's `unsafe` glue, allowed here only).
/// Only on wasm: a native build of the workspace would otherwise try to
/// export symbols named like `keel:plugin/guest@0.1.0#handle`.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod export {
    use super::{KvProbe, bindings};
    bindings::export!(KvProbe with_types_in bindings);
}
