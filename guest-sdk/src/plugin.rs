//! The [`Plugin`] trait a plugin implements, and the adapter that turns it
//! into the component's exported `guest` interface.
//!
//! # Reserved queries: a plugin's rows as JSON
//!
//! Two queries are answered by the SDK itself, for every plugin, before the
//! plugin's own [`Plugin::Query`] type is parsed (so no plugin sees them):
//! the host uses them to export a plugin's state readably (`keel export`)
//! and to import it back. They read and write nothing: they convert rows
//! handed to them with the [`TableCodec`]s the plugin lists in
//! [`Plugin::tables`].
//!
//! A query is reserved if and only if it is a JSON object with exactly one
//! member, named `"keel.decode_rows"` or `"keel.encode_rows"` (written
//! literally: only a request whose first non-whitespace bytes are `{` and
//! then, after optional whitespace, `"keel.` is parsed for it, so ordinary
//! queries cost one prefix check). A reserved query that is malformed —
//! its member is not an array of objects with the fields below, or a
//! base64 string does not decode — is refused with the code `bad-query`.
//! Base64 is the standard alphabet with padding (RFC 4648 §4). Fields other
//! than those below are ignored.
//!
//! `keel.decode_rows` takes stored rows and answers, for each, in order,
//! its key and value as JSON, or `null` when the table is not declared in
//! [`Plugin::tables`] or the row does not decode as its types (trailing
//! bytes included):
//!
//! ```text
//! {"keel.decode_rows": [{"table": "counts", "key": "YXBwbGVzAAA=", "value": "Bg=="},
//!                       {"table": "nope", "key": "", "value": ""}]}
//! → [{"key":"apples","value":3},null]
//! ```
//!
//! `keel.encode_rows` takes rows as JSON (`key` and `value` required, any
//! JSON, `null` included) and answers, for each, in order, the bytes to
//! store, base64, or `{"error": "<why>"}` when the table is not declared or
//! the JSON does not fit its types:
//!
//! ```text
//! {"keel.encode_rows": [{"table": "counts", "key": "apples", "value": 3},
//!                       {"table": "counts", "key": "apples", "value": "3"}]}
//! → [{"key":"YXBwbGVzAAA=","value":"Bg=="},{"error":"table counts: value does not fit the value type: ..."}]
//! ```
//!
//! A table name declared twice uses its first declaration.

use std::marker::PhantomData;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::bindings::exports::keel::plugin::guest as wit;
use crate::error::Error;
use crate::table::TableCodec;

/// A Keel plugin: typed commands in, typed responses out.
///
/// A plugin holds no state of its own: everything it keeps lives in its
/// [`crate::Table`]s, so that its behaviour is a deterministic function of
/// (stored state, command) and the journal replays it exactly. Commands,
/// queries and responses cross the host boundary as JSON.
pub trait Plugin {
    /// Short name, `[a-z0-9_-]`, unique within a host.
    const NAME: &'static str;
    /// Human version string.
    const VERSION: &'static str;
    /// Storage schema number; raise it when the stored layout changes and
    /// handle the old one in [`Plugin::migrate`].
    const SCHEMA: u32;

    /// Operator configuration given to [`Plugin::init`].
    type Config: DeserializeOwned;
    /// A state-changing command.
    type Command: DeserializeOwned;
    /// What a command returns.
    type Response: Serialize;
    /// A read-only request.
    type Query: DeserializeOwned;
    /// What a query returns.
    type QueryResponse: Serialize;

    /// Called once when the plugin is first deployed. Default: nothing.
    fn init(_config: Self::Config) -> Result<(), Error> {
        Ok(())
    }

    /// Applies a command. On `Err`, every write it made is discarded.
    fn handle(command: Self::Command) -> Result<Self::Response, Error>;

    /// Answers a read-only request from committed state.
    fn query(request: Self::Query) -> Result<Self::QueryResponse, Error>;

    /// The plugin's tables: declare every table here, e.g.
    /// `vec![ORDERS.codec(), USERS.codec()]`, so that `keel export` shows
    /// its rows as JSON (and an import takes them back). Rows of an
    /// undeclared table export as base64 bytes. A table name declared twice
    /// (two typed views of one table) uses its first declaration. Default:
    /// none.
    ///
    /// Called only by two reserved queries, which the SDK answers before
    /// the plugin's [`Plugin::Query`] type is parsed, and which read and
    /// write nothing: a JSON object whose one member (written literally,
    /// right after the `{`) is
    ///
    /// - `"keel.decode_rows"`: `[{"table", "key", "value"}, ...]` with key
    ///   and value bytes in base64 (standard alphabet, padded) → one answer
    ///   per row, in order: `{"key": <json>, "value": <json>}`, or `null`
    ///   when the table is not declared or the row does not decode;
    /// - `"keel.encode_rows"`: `[{"table", "key", "value"}, ...]` with key
    ///   and value as JSON → one answer per row, in order: `{"key":
    ///   <base64>, "value": <base64>}`, or `{"error": "<why>"}` when the
    ///   table is not declared or the JSON does not fit its types.
    ///
    /// A malformed reserved query (not such an array, bad base64) is
    /// refused with `bad-query`. For example, for a table
    /// `Table<String, i64>` named `counts`:
    ///
    /// ```text
    /// {"keel.decode_rows":[{"table":"counts","key":"YXBwbGVzAAA=","value":"Bg=="}]}
    ///   → [{"key":"apples","value":3}]
    /// {"keel.encode_rows":[{"table":"counts","key":"apples","value":3}]}
    ///   → [{"key":"YXBwbGVzAAA=","value":"Bg=="}]
    /// ```
    fn tables() -> Vec<TableCodec> {
        Vec::new()
    }

    /// Converts stored state written by schema `from_schema`. Default:
    /// accepts only the same schema.
    fn migrate(from_schema: u32) -> Result<(), Error> {
        if from_schema == Self::SCHEMA {
            Ok(())
        } else {
            Err(Error::new(
                "unsupported-migration",
                format!(
                    "{} schema {} cannot migrate from schema {from_schema}",
                    Self::NAME,
                    Self::SCHEMA
                ),
            ))
        }
    }
}

/// Decodes a JSON payload, naming what was wrong on failure.
pub fn decode_json<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::new(format!("bad-{what}"), format!("{what} does not parse: {e}")))
}

/// Encodes a response as JSON.
pub fn encode_json<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value)
        .map_err(|e| Error::new("bad-response", format!("response does not serialize: {e}")))
}

/// Answers a query as the component does: a reserved query (module docs)
/// by the SDK, any other by the plugin.
pub(crate) fn answer_query<P: Plugin>(request: &[u8]) -> Result<Vec<u8>, Error> {
    if let Some((kind, rows)) = reserved_query(request) {
        return answer_reserved(kind, rows, &P::tables());
    }
    encode_json(&P::query(decode_json("query", request)?)?)
}

const DECODE_ROWS: &str = "keel.decode_rows";
const ENCODE_ROWS: &str = "keel.encode_rows";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reserved {
    DecodeRows,
    EncodeRows,
}

/// Whether `request` starts like a reserved query: `{`, then `"keel.`,
/// each after optional JSON whitespace.
fn looks_reserved(request: &[u8]) -> bool {
    fn skip_whitespace(bytes: &[u8]) -> &[u8] {
        let n = bytes
            .iter()
            .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
            .count();
        &bytes[n..]
    }
    match skip_whitespace(request).strip_prefix(b"{") {
        Some(rest) => skip_whitespace(rest).starts_with(b"\"keel."),
        None => false,
    }
}

/// Every member of a JSON object, in order, duplicates included.
struct Members(Vec<(String, Json)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

/// The reserved query `request` is, with its member's value, if it is one.
fn reserved_query(request: &[u8]) -> Option<(Reserved, Json)> {
    if !looks_reserved(request) {
        return None;
    }
    let Members(mut members) = serde_json::from_slice(request).ok()?;
    if members.len() != 1 {
        return None;
    }
    let (name, rows) = members.pop()?;
    match name.as_str() {
        DECODE_ROWS => Some((Reserved::DecodeRows, rows)),
        ENCODE_ROWS => Some((Reserved::EncodeRows, rows)),
        _ => None,
    }
}

/// One stored row to decode.
#[derive(Deserialize)]
struct StoredRow {
    table: String,
    key: String,
    value: String,
}

/// One row given as JSON, to encode.
#[derive(Deserialize)]
struct JsonRow {
    table: String,
    key: Json,
    value: Json,
}

/// A decoded row.
#[derive(Serialize)]
struct Decoded {
    key: Json,
    value: Json,
}

/// An encoded row, or why not.
#[derive(Serialize)]
#[serde(untagged)]
enum Encoded {
    Row { key: String, value: String },
    Refused { error: String },
}

fn bad_reserved(name: &str, why: impl std::fmt::Display) -> Error {
    Error::new("bad-query", format!("{name}: {why}"))
}

fn find<'a>(tables: &'a [TableCodec], name: &str) -> Option<&'a TableCodec> {
    tables.iter().find(|t| t.name() == name)
}

fn answer_reserved(kind: Reserved, rows: Json, tables: &[TableCodec]) -> Result<Vec<u8>, Error> {
    match kind {
        Reserved::DecodeRows => {
            let rows: Vec<StoredRow> =
                serde_json::from_value(rows).map_err(|e| bad_reserved(DECODE_ROWS, e))?;
            let mut answer = Vec::with_capacity(rows.len());
            for (i, row) in rows.iter().enumerate() {
                let base64 = |field: &str, text: &str| {
                    BASE64.decode(text).map_err(|e| {
                        bad_reserved(DECODE_ROWS, format!("row {i}: {field} is not base64: {e}"))
                    })
                };
                let (key, value) = (base64("key", &row.key)?, base64("value", &row.value)?);
                answer.push(
                    find(tables, &row.table)
                        .and_then(|codec| codec.decode(&key, &value).ok())
                        .map(|(key, value)| Decoded { key, value }),
                );
            }
            encode_json(&answer)
        }
        Reserved::EncodeRows => {
            let rows: Vec<JsonRow> =
                serde_json::from_value(rows).map_err(|e| bad_reserved(ENCODE_ROWS, e))?;
            let answer: Vec<Encoded> = rows
                .iter()
                .map(|row| {
                    let Some(codec) = find(tables, &row.table) else {
                        return Encoded::Refused {
                            error: format!("table {} is not declared by the plugin", row.table),
                        };
                    };
                    match codec.encode(&row.key, &row.value) {
                        Ok((key, value)) => Encoded::Row {
                            key: BASE64.encode(key),
                            value: BASE64.encode(value),
                        },
                        Err(why) => Encoded::Refused {
                            error: format!("table {}: {why}", row.table),
                        },
                    }
                })
                .collect();
            encode_json(&answer)
        }
    }
}

/// Connects a [`Plugin`] to the generated bindings; used by [`crate::export!`].
pub struct Adapter<P>(PhantomData<P>);

impl From<Error> for wit::Error {
    fn from(e: Error) -> Self {
        wit::Error {
            code: e.code,
            message: e.message,
        }
    }
}

impl<P: Plugin> wit::Guest for Adapter<P> {
    fn info() -> wit::PluginInfo {
        wit::PluginInfo {
            name: P::NAME.to_owned(),
            version: P::VERSION.to_owned(),
            schema: P::SCHEMA,
        }
    }

    fn init(config: Vec<u8>) -> Result<(), wit::Error> {
        let config = if config.is_empty() {
            b"{}".as_slice()
        } else {
            &config
        };
        Ok(P::init(decode_json("config", config)?)?)
    }

    fn handle(command: Vec<u8>) -> Result<Vec<u8>, wit::Error> {
        let response = P::handle(decode_json("command", &command)?)?;
        Ok(encode_json(&response)?)
    }

    fn query(request: Vec<u8>) -> Result<Vec<u8>, wit::Error> {
        Ok(answer_query::<P>(&request)?)
    }

    fn migrate(from_schema: u32) -> Result<(), wit::Error> {
        Ok(P::migrate(from_schema)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Table;
    use crate::bindings::exports::keel::plugin::guest::Guest;
    use crate::testing::Harness;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Item {
        qty: u64,
        tags: Vec<String>,
    }

    const COUNTS: Table<String, i64> = Table::new("counts");
    const ITEMS: Table<(u32, String), Item> = Table::new("items");
    /// Written, but not declared in `tables()`.
    const HIDDEN: Table<u8, u8> = Table::new("hidden");

    /// Declares `counts` and `items`; its query type takes any JSON and
    /// says so, so that a query the SDK answers is told apart.
    struct Rows;

    #[derive(Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Command {
        Add { name: String, amount: i64 },
        Item { id: u32, name: String, item: Item },
        Hide { key: u8 },
    }

    impl Plugin for Rows {
        const NAME: &'static str = "rows";
        const VERSION: &'static str = "1";
        const SCHEMA: u32 = 1;
        type Config = ();
        type Command = Command;
        type Response = ();
        type Query = Json;
        type QueryResponse = Json;

        fn handle(command: Command) -> Result<(), Error> {
            match command {
                Command::Add { name, amount } => {
                    COUNTS.put(&name, &(COUNTS.get(&name).unwrap_or(0) + amount))
                }
                Command::Item { id, name, item } => ITEMS.put(&(id, name), &item),
                Command::Hide { key } => HIDDEN.put(&key, &key),
            }
            Ok(())
        }

        fn query(request: Json) -> Result<Json, Error> {
            Ok(serde_json::json!({ "plugin_saw": request }))
        }

        fn tables() -> Vec<TableCodec> {
            vec![COUNTS.codec(), ITEMS.codec()]
        }
    }

    /// A harness holding counts apples = 3, pears = -64, item (7, "b") and
    /// one row of the undeclared table.
    fn harness() -> Harness<Rows> {
        let mut h = Harness::<Rows>::new();
        for command in [
            r#"{"add": {"name": "apples", "amount": 3}}"#,
            r#"{"add": {"name": "pears", "amount": -64}}"#,
            r#"{"item": {"id": 7, "name": "b", "item": {"qty": 2, "tags": ["x"]}}}"#,
            r#"{"hide": {"key": 1}}"#,
        ] {
            h.handle_json(command).unwrap();
        }
        h
    }

    /// Through the adapter, as the component's export runs it.
    fn query(request: &str) -> Result<String, wit::Error> {
        <Adapter<Rows> as Guest>::query(request.as_bytes().to_vec())
            .map(|answer| String::from_utf8(answer).unwrap())
    }

    #[test]
    fn decode_rows_answers_each_row_as_json_or_null() {
        let h = harness();
        let before = h.dump();
        let request = r#"{"keel.decode_rows": [
            {"table": "counts", "key": "YXBwbGVzAAA=", "value": "Bg=="},
            {"table": "items", "key": "AAAAB2IAAA==", "value": "AgEBeA=="},
            {"table": "counts", "key": "cGVhcnMAAA==", "value": "fw=="},
            {"table": "hidden", "key": "AQ==", "value": "AQ=="},
            {"table": "counts", "key": "YXBwbGVzAAA=", "value": "BgA="},
            {"table": "counts", "key": "YXBwbGVzAAAA", "value": "Bg=="},
            {"table": "items", "key": "YXBwbGVzAAA=", "value": "Bg=="}
        ]}"#;
        let expected = concat!(
            r#"[{"key":"apples","value":3},"#,
            r#"{"key":[7,"b"],"value":{"qty":2,"tags":["x"]}},"#,
            r#"{"key":"pears","value":-64},"#,
            r#"null,null,null,null]"#
        );
        assert_eq!(query(request).unwrap(), expected);
        // The same through the harness, read-only; nothing was written.
        assert_eq!(
            h.query_bytes(request.as_bytes()).unwrap(),
            expected.as_bytes()
        );
        assert_eq!(h.dump(), before);
        // The rows given are the rows stored.
        let stored = &before["items"];
        assert_eq!(
            stored.iter().next().unwrap(),
            (&vec![0, 0, 0, 7, b'b', 0, 0], &vec![2, 1, 1, b'x'])
        );
        assert_eq!(before["counts"][b"pears\0\0".as_slice()], [0x7f]);
        assert_eq!(query(r#"{"keel.decode_rows": []}"#).unwrap(), "[]");
    }

    #[test]
    fn encode_rows_answers_each_row_as_base64_or_an_error() {
        let h = harness();
        let before = h.dump();
        let request = r#"{"keel.encode_rows": [
            {"table": "counts", "key": "apples", "value": 3},
            {"table": "items", "key": [7, "b"], "value": {"qty": 2, "tags": ["x"]}, "note": 1},
            {"table": "hidden", "key": 1, "value": 1},
            {"table": "counts", "key": "apples", "value": "3"},
            {"table": "items", "key": [7], "value": {"qty": 2, "tags": []}}
        ]}"#;
        let answer = query(request).unwrap();
        let answer: Vec<Json> = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer.len(), 5);
        assert_eq!(
            answer[..2].to_vec(),
            vec![
                serde_json::json!({"key": "YXBwbGVzAAA=", "value": "Bg=="}),
                serde_json::json!({"key": "AAAAB2IAAA==", "value": "AgEBeA=="}),
            ]
        );
        assert_eq!(
            answer[2]["error"],
            "table hidden is not declared by the plugin"
        );
        for refused in &answer[3..] {
            let why = refused["error"].as_str().unwrap();
            assert!(why.starts_with("table counts: value") || why.starts_with("table items: key"));
            assert_eq!(refused.as_object().unwrap().len(), 1);
        }
        // Byte for byte, and through the harness (read-only).
        let one = r#"{"keel.encode_rows":[{"table":"counts","key":"apples","value":3}]}"#;
        let expected = r#"[{"key":"YXBwbGVzAAA=","value":"Bg=="}]"#;
        assert_eq!(query(one).unwrap(), expected);
        assert_eq!(h.query_bytes(one.as_bytes()).unwrap(), expected.as_bytes());
        assert_eq!(h.dump(), before);
    }

    #[test]
    fn every_stored_row_round_trips_and_undeclared_tables_are_named() {
        let h = harness();
        let err = h.check_declared_tables().unwrap_err();
        assert!(err.contains("hidden"), "{err}");
        let mut h = Harness::<Rows>::new();
        h.handle_json(r#"{"add": {"name": "a\u0000b", "amount": -9000000000}}"#)
            .unwrap();
        h.handle_json(r#"{"item": {"id": 4294967295, "name": "", "item": {"qty": 18446744073709551615, "tags": ["", "é"]}}}"#)
            .unwrap();
        assert_eq!(h.check_declared_tables(), Ok(2));
    }

    #[test]
    fn other_queries_reach_the_plugin() {
        let _h = harness();
        for request in [
            r#""keel.decode_rows""#,
            r#"{"get": "apples"}"#,
            r#"{"keel.other": []}"#,
            r#"{"keel.decode_rows": [], "more": 1}"#,
            r#"{"keel.decode_rows": [], "keel.decode_rows": []}"#,
            r#"{"more": 1, "keel.decode_rows": []}"#,
            r#"[{"keel.decode_rows": []}]"#,
            r#"{"\u006beel.decode_rows": []}"#,
        ] {
            let seen: Json = serde_json::from_str(request).unwrap();
            let answer: Json = serde_json::from_str(&query(request).unwrap()).unwrap();
            assert_eq!(
                answer,
                serde_json::json!({ "plugin_saw": seen }),
                "{request}"
            );
        }
        // Whitespace before the member name does not hide a reserved query.
        assert_eq!(query(" \n{\t \"keel.decode_rows\" : [ ] } ").unwrap(), "[]");
        // A request that is not JSON is the plugin's parse error, as before.
        let err = query(r#"{"keel.decode_rows": ["#).unwrap_err();
        assert_eq!(err.code, "bad-query");
    }

    #[test]
    fn malformed_reserved_queries_are_bad_queries() {
        let h = harness();
        let before = h.dump();
        for request in [
            r#"{"keel.decode_rows": 5}"#,
            r#"{"keel.decode_rows": null}"#,
            r#"{"keel.decode_rows": {"table": "counts"}}"#,
            r#"{"keel.decode_rows": [5]}"#,
            r#"{"keel.decode_rows": [{"table": "counts", "key": "YQ=="}]}"#,
            r#"{"keel.decode_rows": [{"table": "counts", "key": 1, "value": "Bg=="}]}"#,
            r#"{"keel.decode_rows": [{"table": "counts", "key": "YQ", "value": "Bg=="}]}"#,
            r#"{"keel.decode_rows": [{"table": "counts", "key": "!!!!", "value": "Bg=="}]}"#,
            r#"{"keel.decode_rows": [{"key": "", "value": ""}]}"#,
            r#"{"keel.encode_rows": [{"table": "counts", "key": "a"}]}"#,
            r#"{"keel.encode_rows": [{"table": 1, "key": "a", "value": 1}]}"#,
            r#"{"keel.encode_rows": "x"}"#,
        ] {
            let err = query(request).unwrap_err();
            assert_eq!(err.code, "bad-query", "{request}");
            assert!(err.message.starts_with("keel."), "{}", err.message);
            assert_eq!(
                h.query_bytes(request.as_bytes()).unwrap_err().code,
                "bad-query"
            );
        }
        assert_eq!(h.dump(), before);
    }

    #[test]
    fn prefix_check() {
        assert!(looks_reserved(br#"{"keel."#));
        assert!(looks_reserved(b"\r\n\t {\r\n\t \"keel.x"));
        assert!(!looks_reserved(br#"{"keel"#));
        assert!(!looks_reserved(br#"{"Keel.decode_rows": []}"#));
        assert!(!looks_reserved(br#"x{"keel.decode_rows": []}"#));
        assert!(!looks_reserved(b""));
    }
}
