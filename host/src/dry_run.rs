//! Dry run of an upgrade: what a candidate version would have done with
//! the traffic the plugin actually had, before it is deployed.
//!
//! The plugin's state at a sequence S (its newest snapshot, the state
//! `last` commands ago, or its state now) goes into a scratch database
//! twice: one copy keeps the live version, the other runs the candidate's
//! `migrate`. Every journaled command after S is then run on both, one
//! batch per command with its journaled sequence, timestamp and caller,
//! and compared: outcome (ok or the error code), response bytes, and the
//! rows each wrote (keys one wrote and the other did not, keys with other
//! values — shown decoded as JSON where the components can). Failed
//! commands run too: a candidate may accept what the live version refused.
//! The window ends at the first later deployment or restore in the
//! journal. Nothing live changes; the live plugin keeps serving (the dry
//! run competes with it only for CPU).

use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::config::InstancePolicy;
use crate::error::HostError;
use crate::executor::{Call, Executor, Restored, Scheduled, Writes};
use crate::export::RowCodec;
use crate::host::Host;
use crate::replay::Source;
use crate::runtime::LoadedComponent;
use crate::state_hash::hex;
use crate::storage::{Db, Durability, EntryKind, Outcome};

/// Journal entries read per step.
const CHUNK_ENTRIES: u64 = 1024;
/// Differences shown in full by default.
pub const DIFFERENCES_SHOWN: usize = 10;
/// Differing sequences listed in a report.
pub const SEQUENCES_LISTED: usize = 10_000;
/// Commands replayed when the plugin has no snapshot and no count is given.
pub const DEFAULT_COMMANDS: u64 = 10_000;

/// Where a dry run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DryRunFrom {
    /// The newest snapshot before the last command (or the last
    /// [`DEFAULT_COMMANDS`] commands when there is none).
    NewestSnapshot,
    /// The state this many journal entries ago.
    Last(u64),
}

/// One command's outcome, as a report shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Shown {
    /// It succeeded with this response (JSON text).
    Ok(String),
    /// It failed with this code and message.
    Err {
        /// Error code.
        code: String,
        /// Message.
        message: String,
    },
}

impl From<&Outcome> for Shown {
    fn from(o: &Outcome) -> Self {
        match o {
            Outcome::Ok(bytes) => Shown::Ok(String::from_utf8_lossy(bytes).into_owned()),
            Outcome::Err { code, message } => Shown::Err {
                code: code.clone(),
                message: message.clone(),
            },
        }
    }
}

/// A row the two versions left differently.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RowDifference {
    /// The table.
    pub table: String,
    /// The key (JSON where decodable, else `{"base64": …}`).
    pub key: Value,
    /// What the live version wrote (`null`: removed or not written).
    pub live: Value,
    /// What the candidate wrote.
    pub candidate: Value,
}

/// A command whose outcome, response or writes differ.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Difference {
    /// Its journal sequence.
    pub sequence: u64,
    /// The command (JSON text).
    pub command: String,
    /// What the live version did.
    pub live: Shown,
    /// What the candidate did.
    pub candidate: Shown,
    /// Rows written differently.
    pub rows: Vec<RowDifference>,
}

/// What a dry run found.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DryRunReport {
    /// The plugin.
    pub plugin: String,
    /// The live module (hex) and the candidate (hex).
    pub live_module: String,
    /// The candidate's module hash (hex).
    pub candidate_module: String,
    /// The sequence whose state both started from.
    pub from_sequence: u64,
    /// Commands replayed.
    pub replayed: u64,
    /// Commands both handled identically.
    pub identical: u64,
    /// Commands handled differently.
    pub different: u64,
    /// Their sequences (the first [`SEQUENCES_LISTED`]).
    pub different_sequences: Vec<u64>,
    /// Commands where the live copy did not reproduce the journal (a
    /// wall-clock deadline, or a plugin that is not deterministic).
    pub live_diverged_from_journal: u64,
    /// Rows the candidate's `migrate` wrote.
    pub migrate_rows_written: u64,
    /// The first differences, in full.
    pub first_differences: Vec<Difference>,
    /// Why the window ended before the journal's end, if it did.
    pub stopped_at: Option<String>,
    /// Wall time, in milliseconds.
    pub millis: u64,
}

impl DryRunReport {
    /// Whether the candidate behaved exactly like the live version.
    pub fn identical(&self) -> bool {
        self.different == 0
    }
}

fn deploy_err(e: impl std::fmt::Display) -> HostError {
    HostError::Deploy(format!("dry run: {e}"))
}

/// Runs a dry run of `candidate` against `plugin` of `host` (see the
/// module docs). `progress` gets (commands done, commands to replay).
pub(crate) fn dry_run(
    host: &Host,
    plugin: &str,
    candidate: LoadedComponent,
    from: DryRunFrom,
    shown: usize,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<DryRunReport, HostError> {
    let started = Instant::now();
    let record = host.record(plugin)?;
    let last = record.last_sequence;
    let live_hash = record.active().module_hash;
    let source = Source {
        db: Some(host.db()),
        archive_root: host.db().archive_dir(""),
        snapshots: Some(host.snapshot_store()),
        cache_dir: host.cache_dir(),
    };
    let start = match from {
        DryRunFrom::Last(n) => last.saturating_sub(n).max(1),
        // A snapshot at the last sequence would leave nothing to replay.
        DryRunFrom::NewestSnapshot => {
            match host
                .snapshot_store()
                .newest_at_or_before(plugin, last.saturating_sub(1))?
            {
                Some(s) => s,
                None => last.saturating_sub(DEFAULT_COMMANDS).max(1),
            }
        }
    };
    let state: Restored = if start == last {
        crate::replay::capture(host, plugin).map_err(deploy_err)?
    } else {
        source.state_at(&record, start).map_err(deploy_err)?.0
    };
    let live_component = host.stored_component(&state.record.active().module_hash)?;
    let limits = host.config().limits;
    let scratch_dir = tempfile::tempdir().map_err(deploy_err)?;
    let db = Db::open(
        &scratch_dir.path().join("dry-run.redb"),
        Durability::Relaxed,
    )?;
    let mut live = Executor::seed(
        db.clone(),
        live_component.clone(),
        1,
        &state,
        limits,
        // Replayed calls follow their journaled instance boundaries.
        InstancePolicy::Batch,
    )?;
    let mut cand = Executor::seed(
        db.clone(),
        live_component.clone(),
        2,
        &state,
        limits,
        InstancePolicy::Batch,
    )?;
    let before = db.dump_plugin(2)?;
    cand.upgrade(
        candidate.clone(),
        Some((start, state.record.last_timestamp_ms)),
    )?;
    let migrate_rows_written = count_changed(&before, &db.dump_plugin(2)?);
    let mut live_codec = RowCodec::new(live_component, limits);
    let mut cand_codec = RowCodec::new(candidate.clone(), limits);
    let mut report = DryRunReport {
        plugin: plugin.to_owned(),
        live_module: hex(&live_hash),
        candidate_module: hex(&candidate.hash),
        from_sequence: start,
        replayed: 0,
        identical: 0,
        different: 0,
        different_sequences: Vec::new(),
        live_diverged_from_journal: 0,
        migrate_rows_written,
        first_differences: Vec::new(),
        stopped_at: None,
        millis: 0,
    };
    let total = last - start;
    let mut next = start + 1;
    'window: while next <= last {
        let to = (next + CHUNK_ENTRIES - 1).min(last);
        for entry in source.journal(&record, next, to).map_err(deploy_err)? {
            let bytes = match &entry.kind {
                EntryKind::Command { bytes } => bytes.clone(),
                other => {
                    let what = match other {
                        EntryKind::Migrate { .. } => "a deployment",
                        EntryKind::Restore { .. } => "a restore",
                        EntryKind::UndoUpgrade { .. } => "an undone upgrade",
                        _ => "an init",
                    };
                    report.stopped_at = Some(format!(
                        "sequence {}: {what} (the window ends there)",
                        entry.sequence
                    ));
                    break 'window;
                }
            };
            let scheduled = Scheduled {
                call: Call::Command(bytes.clone()),
                forced: Some((entry.sequence, entry.timestamp_ms)),
                caller: entry.caller.clone(),
                new_instance: Some(entry.new_instance),
            };
            let (live_done, live_writes) = live.run_one_with_writes(scheduled.clone())?;
            let (cand_done, cand_writes) = cand.run_one_with_writes(scheduled)?;
            report.replayed += 1;
            if !same_outcome(&live_done.outcome, &entry.outcome) {
                report.live_diverged_from_journal += 1;
            }
            let rows =
                row_differences(&live_writes, &cand_writes, &mut live_codec, &mut cand_codec);
            if live_done.outcome == cand_done.outcome && rows.is_empty() {
                report.identical += 1;
            } else {
                report.different += 1;
                if report.different_sequences.len() < SEQUENCES_LISTED {
                    report.different_sequences.push(entry.sequence);
                }
                if report.first_differences.len() < shown {
                    report.first_differences.push(Difference {
                        sequence: entry.sequence,
                        command: String::from_utf8_lossy(&bytes).into_owned(),
                        live: Shown::from(&live_done.outcome),
                        candidate: Shown::from(&cand_done.outcome),
                        rows,
                    });
                }
            }
        }
        progress(to - start, total);
        next = to + 1;
    }
    db.stop_background();
    report.millis = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// A replayed outcome against the journaled one: the same result, the
/// same error code (messages may carry wall-clock details).
fn same_outcome(got: &Outcome, journaled: &Outcome) -> bool {
    match (got, journaled) {
        (Outcome::Ok(a), Outcome::Ok(b)) => a == b,
        (Outcome::Err { code: a, .. }, Outcome::Err { code: b, .. }) => a == b,
        _ => false,
    }
}

fn count_changed(
    before: &std::collections::BTreeMap<(String, Vec<u8>), Vec<u8>>,
    after: &std::collections::BTreeMap<(String, Vec<u8>), Vec<u8>>,
) -> u64 {
    let changed = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .count();
    let removed = before.keys().filter(|k| !after.contains_key(*k)).count();
    (changed + removed) as u64
}

/// Rows the two wrote differently, decoded where each side's component can.
fn row_differences(
    live: &Writes,
    cand: &Writes,
    live_codec: &mut RowCodec,
    cand_codec: &mut RowCodec,
) -> Vec<RowDifference> {
    let mut keys: Vec<&Vec<u8>> = live.keys().chain(cand.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out = Vec::new();
    for key in keys {
        let (l, c) = (live.get(key), cand.get(key));
        if l == c {
            continue;
        }
        let show =
            |codec: &mut RowCodec, side: Option<&Option<Vec<u8>>>| -> (Option<Value>, Value) {
                match side {
                    None => (None, Value::String("not written".into())),
                    Some(None) => (None, Value::String("removed".into())),
                    Some(Some(value)) => match codec.decode_one(key, value) {
                        Some((k, v)) => (Some(k), v),
                        None => (None, serde_json::json!({ "base64": BASE64.encode(value) })),
                    },
                }
            };
        let (lk, lv) = show(live_codec, l);
        let (ck, cv) = show(cand_codec, c);
        let (table, raw_key) = crate::snapshot::format::split_key(key).unwrap_or(("", key));
        // A key removed on both sides decodes only with a value: a unit
        // value (a set-like table) is empty.
        let key_only = || cand_codec.decode_one(key, &[]).map(|(k, _)| k);
        out.push(RowDifference {
            table: table.to_owned(),
            key: lk
                .or(ck)
                .or_else(key_only)
                .unwrap_or_else(|| serde_json::json!({ "base64": BASE64.encode(raw_key) })),
            live: lv,
            candidate: cv,
        });
    }
    out
}
