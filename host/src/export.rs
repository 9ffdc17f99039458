//! Export and import: one plugin's state as a JSON-lines file a person
//! can read, and back into a new plugin on another host.
//!
//! The file (format 1), one JSON object per line:
//!
//! 1. the header:
//!    `{"keel_export": 1, "plugin": "spot", "sequence": 1234,
//!    "timestamp_ms": …, "created_ms": …, "state_hash": "<hex>",
//!    "rows": 42, "deployments": [{"module_hash": "<hex>", "version":
//!    "1.0.0", "schema": 1, "sequence": 1}, …]}` — the last deployment is
//!    the module that produced the state;
//! 2. one line per row, in key order, either decoded —
//!    `{"table": "orders", "key": <JSON>, "value": <JSON>}` — when the
//!    component can decode its rows (plugins built with the guest SDK
//!    that declare their tables: the SDK answers the reserved
//!    `keel.decode_rows` query), or raw —
//!    `{"table": "orders", "key_base64": "…", "value_base64": "…"}`
//!    (standard base64 with padding);
//! 3. the trailer: `{"keel_export_end": {"rows": 42}}` (a file cut short
//!    has none and is refused).
//!
//! Import reads the file, turns decoded rows back into bytes through the
//! same component (`keel.encode_rows`), checks that the rows hash to the
//! header's state hash (so export → import reproduces the state exactly;
//! an edited file is refused unless the caller accepts the change), and
//! creates the plugin from them at the header's sequence; its journal
//! continues after it. A snapshot is taken at once, so that the new
//! host can restore and verify from it.

use std::io::{BufRead, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{InstancePolicy, Limits};
use crate::error::HostError;
use crate::executor::{Restored, now_ms};
use crate::host::parse_hash;
use crate::runtime::imports::StorageAccess;
use crate::runtime::{LoadedComponent, PluginInstance};
use crate::snapshot::SnapshotRows;
use crate::snapshot::format::split_key;
use crate::state_hash::{StateHash, hex};
use crate::storage::{Deployment, PluginRecord};

/// The export format this host writes and reads.
pub const EXPORT_FORMAT: u32 = 1;
/// Rows sent to the component per decode or encode call.
const CODEC_ROWS_PER_CALL: usize = 256;

/// The first line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportHeader {
    /// The format, [`EXPORT_FORMAT`].
    pub keel_export: u32,
    /// The plugin.
    pub plugin: String,
    /// The sequence whose state this is.
    pub sequence: u64,
    /// The timestamp of that sequence's journal entry.
    pub timestamp_ms: u64,
    /// When the export was written.
    pub created_ms: u64,
    /// The state hash (hex).
    pub state_hash: String,
    /// Rows in the file.
    pub rows: u64,
    /// Every deployment, oldest first; the last produced this state.
    pub deployments: Vec<ExportDeployment>,
}

/// A deployment, as the export shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportDeployment {
    /// BLAKE3 of the component (hex).
    pub module_hash: String,
    /// Version string.
    pub version: String,
    /// Schema.
    pub schema: u32,
    /// Sequence at which it became active.
    pub sequence: u64,
}

/// One row line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
enum RowLine {
    Decoded {
        table: String,
        key: Value,
        value: Value,
    },
    Raw {
        table: String,
        key_base64: String,
        value_base64: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Trailer {
    keel_export_end: TrailerBody,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrailerBody {
    rows: u64,
}

/// What an export or import did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TransferSummary {
    /// The plugin.
    pub plugin: String,
    /// The sequence of the state.
    pub sequence: u64,
    /// Rows.
    pub rows: u64,
    /// Rows shown decoded (the rest as base64).
    pub decoded_rows: u64,
    /// The state hash (hex).
    pub state_hash: String,
}

/// Runs a component's reserved row codec queries on an instance of its
/// own (no storage: the codec only converts bytes).
pub(crate) struct RowCodec {
    instance: PluginInstance,
    /// False once the component showed it has no codec.
    available: bool,
}

impl RowCodec {
    pub(crate) fn new(component: LoadedComponent, limits: Limits) -> Self {
        // Converting rows is an operator's bulk job: the migrate budget.
        let instance = PluginInstance::new(
            component,
            "row-codec".into(),
            u32::MAX,
            limits.for_migrate(),
            InstancePolicy::Fresh,
        );
        Self {
            instance,
            available: true,
        }
    }

    /// Asks the component `name` for `rows`; a call that fails (a budget
    /// or size limit) is split in halves, down to single rows. A
    /// component that answers no single row has no codec: raw rows from
    /// then on.
    fn call(&mut self, name: &str, rows: Vec<Value>) -> Option<Vec<Value>> {
        if !self.available || rows.is_empty() {
            return (rows.is_empty()).then(Vec::new);
        }
        if let Some(answers) = self.call_once(name, &rows) {
            return Some(answers);
        }
        if rows.len() == 1 {
            self.available = false;
            return None;
        }
        let mut rows = rows;
        let second = rows.split_off(rows.len() / 2);
        let mut answers = self.call(name, rows)?;
        answers.extend(self.call(name, second)?);
        Some(answers)
    }

    fn call_once(&mut self, name: &str, rows: &[Value]) -> Option<Vec<Value>> {
        let request = serde_json::to_vec(&serde_json::json!({ name: rows })).ok()?;
        self.instance.set_storage(StorageAccess::None);
        self.instance.set_context(0, now_ms());
        self.instance.set_caller(None);
        let answer = self.instance.query(&request);
        self.instance.take_storage();
        answer
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Vec<Value>>(&bytes).ok())
            .filter(|v| v.len() == rows.len())
    }

    /// Decodes rows (`table ‖ 00 ‖ key`, value) to JSON where the
    /// component can.
    fn decode(&mut self, rows: &[(&[u8], &[u8])]) -> Vec<Option<(Value, Value)>> {
        let request: Vec<Value> = rows
            .iter()
            .map(|(k, v)| {
                let (table, key) = split_key(k).unwrap_or(("", k));
                serde_json::json!({
                    "table": table,
                    "key": BASE64.encode(key),
                    "value": BASE64.encode(v),
                })
            })
            .collect();
        match self.call("keel.decode_rows", request) {
            Some(answers) => answers
                .into_iter()
                .map(|a| match a {
                    Value::Object(mut o) => Some((o.remove("key")?, o.remove("value")?)),
                    _ => None,
                })
                .collect(),
            None => vec![None; rows.len()],
        }
    }

    /// Decodes one row (`table ‖ 00 ‖ key`, value), if the component can.
    pub(crate) fn decode_one(&mut self, key: &[u8], value: &[u8]) -> Option<(Value, Value)> {
        self.decode(&[(key, value)]).pop().flatten()
    }

    /// Encodes decoded rows back to bytes; an error names the first row
    /// that does not convert.
    fn encode(&mut self, rows: Vec<(String, Value, Value)>) -> Result<SnapshotRows, String> {
        let request: Vec<Value> = rows
            .iter()
            .map(|(t, k, v)| serde_json::json!({"table": t, "key": k, "value": v}))
            .collect();
        let answers = self.call("keel.encode_rows", request).ok_or_else(|| {
            "the component cannot encode decoded rows (it answers no keel.encode_rows query)"
                .to_owned()
        })?;
        answers
            .into_iter()
            .zip(&rows)
            .map(|(answer, (table, key, _))| {
                let field = |name: &str| {
                    answer
                        .get(name)
                        .and_then(Value::as_str)
                        .and_then(|s| BASE64.decode(s).ok())
                };
                match (field("key"), field("value")) {
                    (Some(k), Some(v)) => Ok((k, v)),
                    _ => Err(format!(
                        "the row of table {table} with key {key} does not convert: {answer}"
                    )),
                }
            })
            .collect()
    }
}

fn io_err(e: std::io::Error) -> HostError {
    HostError::Storage(format!("writing the export: {e}"))
}

/// Writes the export of `record`'s state (`rows`, ascending) to `out`,
/// decoding rows through `codec`; `progress` gets (rows done, rows).
pub(crate) fn write_export(
    record: &PluginRecord,
    row_count: u64,
    for_each_row: impl FnOnce(
        &mut dyn FnMut(&[u8], &[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<()>,
    codec: &mut RowCodec,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<TransferSummary, HostError> {
    let header = ExportHeader {
        keel_export: EXPORT_FORMAT,
        plugin: record.name.clone(),
        sequence: record.last_sequence,
        timestamp_ms: record.last_timestamp_ms,
        created_ms: now_ms(),
        state_hash: record.state_hash.to_hex(),
        rows: row_count,
        deployments: record
            .deployments
            .iter()
            .map(|d| ExportDeployment {
                module_hash: hex(&d.module_hash),
                version: d.version.clone(),
                schema: d.schema,
                sequence: d.sequence,
            })
            .collect(),
    };
    let mut line = serde_json::to_vec(&header).expect("a header serializes");
    line.push(b'\n');
    out.write_all(&line).map_err(io_err)?;
    let mut pending: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(CODEC_ROWS_PER_CALL);
    let (mut done, mut decoded) = (0u64, 0u64);
    let mut flush =
        |pending: &mut Vec<(Vec<u8>, Vec<u8>)>, out: &mut dyn Write| -> std::io::Result<()> {
            let refs: Vec<(&[u8], &[u8])> = pending
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_slice()))
                .collect();
            let answers = codec.decode(&refs);
            for ((k, v), answer) in pending.iter().zip(answers) {
                let (table, key) = split_key(k).unwrap_or(("", k));
                let row = match answer {
                    Some((key, value)) => {
                        decoded += 1;
                        RowLine::Decoded {
                            table: table.to_owned(),
                            key,
                            value,
                        }
                    }
                    None => RowLine::Raw {
                        table: table.to_owned(),
                        key_base64: BASE64.encode(key),
                        value_base64: BASE64.encode(v),
                    },
                };
                let mut line = serde_json::to_vec(&row).map_err(std::io::Error::other)?;
                line.push(b'\n');
                out.write_all(&line)?;
            }
            done += pending.len() as u64;
            progress(done, row_count);
            pending.clear();
            Ok(())
        };
    for_each_row(&mut |k, v| {
        pending.push((k.to_vec(), v.to_vec()));
        if pending.len() >= CODEC_ROWS_PER_CALL {
            flush(&mut pending, out)?;
        }
        Ok(())
    })
    .map_err(io_err)?;
    flush(&mut pending, out).map_err(io_err)?;
    let mut line = serde_json::to_vec(&Trailer {
        keel_export_end: TrailerBody { rows: done },
    })
    .expect("a trailer serializes");
    line.push(b'\n');
    out.write_all(&line).map_err(io_err)?;
    out.flush().map_err(io_err)?;
    Ok(TransferSummary {
        plugin: record.name.clone(),
        sequence: record.last_sequence,
        rows: done,
        decoded_rows: decoded,
        state_hash: record.state_hash.to_hex(),
    })
}

/// A parsed export: its header and its rows, still as written.
pub(crate) struct ParsedExport {
    pub(crate) header: ExportHeader,
    rows: Vec<RowLine>,
}

fn bad(line: usize, why: impl std::fmt::Display) -> HostError {
    HostError::BadJson {
        what: "export",
        why: format!("line {line}: {why}"),
    }
}

/// Reads an export: header, rows, trailer (checked).
pub(crate) fn parse_export(input: impl BufRead) -> Result<ParsedExport, HostError> {
    let mut lines = input.lines().enumerate();
    let mut next = |what: &str| -> Result<(usize, String), HostError> {
        match lines.next() {
            Some((i, Ok(line))) => Ok((i + 1, line)),
            Some((i, Err(e))) => Err(bad(i + 1, e)),
            None => Err(bad(0, format!("the file ends before {what}"))),
        }
    };
    let (n, first) = next("the header")?;
    let header: ExportHeader = serde_json::from_str(&first).map_err(|e| bad(n, e))?;
    if header.keel_export != EXPORT_FORMAT {
        return Err(bad(
            n,
            format!(
                "format {} (this host reads {EXPORT_FORMAT})",
                header.keel_export
            ),
        ));
    }
    let mut rows = Vec::with_capacity(header.rows.min(1 << 24) as usize);
    loop {
        let (n, line) = next("its trailer (keel_export_end): cut short?")?;
        if line.starts_with("{\"keel_export_end\"") {
            let trailer: Trailer = serde_json::from_str(&line).map_err(|e| bad(n, e))?;
            if trailer.keel_export_end.rows != rows.len() as u64 || header.rows != rows.len() as u64
            {
                return Err(bad(
                    n,
                    format!(
                        "{} rows read, the trailer says {}, the header {}",
                        rows.len(),
                        trailer.keel_export_end.rows,
                        header.rows
                    ),
                ));
            }
            break;
        }
        rows.push(serde_json::from_str::<RowLine>(&line).map_err(|e| bad(n, e))?);
    }
    Ok(ParsedExport { header, rows })
}

impl ParsedExport {
    /// The rows as bytes (decoded rows encoded through `codec`), sorted,
    /// and the plugin record they make; checks the state hash unless
    /// `accept_changes`.
    pub(crate) fn into_restored(
        self,
        codec: &mut RowCodec,
        accept_changes: bool,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Restored, HostError> {
        let total = self.rows.len() as u64;
        let mut rows: SnapshotRows = Vec::with_capacity(self.rows.len());
        let mut pending: Vec<(String, Value, Value)> = Vec::new();
        let full = |table: &str, key: &[u8]| {
            let mut k = table.as_bytes().to_vec();
            k.push(0);
            k.extend_from_slice(key);
            k
        };
        let mut encode = |pending: &mut Vec<(String, Value, Value)>, rows: &mut SnapshotRows| {
            let tables: Vec<String> = pending.iter().map(|(t, _, _)| t.clone()).collect();
            let encoded = codec
                .encode(std::mem::take(pending))
                .map_err(|e| HostError::Deploy(format!("importing: {e}")))?;
            for (table, (k, v)) in tables.iter().zip(encoded) {
                rows.push((full(table, &k), v));
            }
            Ok::<_, HostError>(())
        };
        for (i, row) in self.rows.into_iter().enumerate() {
            let table = match &row {
                RowLine::Decoded { table, .. } | RowLine::Raw { table, .. } => table.clone(),
            };
            crate::storage::validate_table_name(&table)
                .map_err(|t| bad(i + 2, format!("bad table name {t:?}")))?;
            match row {
                RowLine::Decoded { key, value, .. } => {
                    pending.push((table, key, value));
                    if pending.len() >= CODEC_ROWS_PER_CALL {
                        encode(&mut pending, &mut rows)?;
                        progress(rows.len() as u64, total);
                    }
                }
                RowLine::Raw {
                    key_base64,
                    value_base64,
                    ..
                } => {
                    let key = BASE64.decode(&key_base64).map_err(|e| bad(i + 2, e))?;
                    let value = BASE64.decode(&value_base64).map_err(|e| bad(i + 2, e))?;
                    rows.push((full(&table, &key), value));
                }
            }
        }
        encode(&mut pending, &mut rows)?;
        progress(rows.len() as u64, total);
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = rows.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(HostError::Deploy(format!(
                "importing: the key {} appears twice",
                String::from_utf8_lossy(&w[0].0)
            )));
        }
        let mut hash = StateHash::EMPTY;
        for (k, v) in &rows {
            let (table, key) = split_key(k).expect("built with a table above");
            hash.add(table, key, v);
        }
        let header = self.header;
        if hash.to_hex() != header.state_hash && !accept_changes {
            return Err(HostError::Deploy(format!(
                "importing: the rows hash to {}, the export says {} (the file was changed; accept the change explicitly to import it)",
                hash.to_hex(),
                header.state_hash
            )));
        }
        let deployments = header
            .deployments
            .iter()
            .map(|d| {
                Ok(Deployment {
                    module_hash: parse_hash(&d.module_hash)?,
                    version: d.version.clone(),
                    schema: d.schema,
                    sequence: d.sequence,
                })
            })
            .collect::<Result<Vec<_>, HostError>>()?;
        if deployments.is_empty() {
            return Err(bad(1, "no deployment"));
        }
        Ok(Restored {
            record: PluginRecord {
                id: 0,
                name: header.plugin,
                deployments,
                last_sequence: header.sequence,
                last_timestamp_ms: header.timestamp_ms,
                state_hash: hash,
            },
            rows,
            from_snapshot: 0,
        })
    }
}
