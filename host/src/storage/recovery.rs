//! Recovery at open: what the write-ahead log holds past redb's durable
//! point (`meta.wal_applied`) comes back.
//!
//! With a log to keep (immediate durability) the records are replayed
//! into memory: each plugin's rows, journal entries and record are set as
//! if its batches had just run, marked written since the last checkpoint,
//! and the segments stay until the next checkpoint writes them to redb (in
//! the background, once the host serves). Recovery then costs a read of
//! the log and a memory insert per row, not a redb insert per row and a
//! durable commit: its time is bounded by the log the checkpoint policy
//! lets accumulate ([`super::wal::CheckpointPolicy`]), at memory speed.
//! The segments are fsynced (and a torn end cut off) before anything is
//! served from them, since a process crash leaves records that were
//! written but never fsynced.
//!
//! Without one (relaxed durability) the records are applied to redb in
//! one durable commit and the segments deleted, as nothing would retire
//! them later.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::memtable::{PluginState, Resident};
use super::row_bytes::RowBytes;
use super::wal::{self, Op, Record};
use redb::ReadableDatabase;

use super::{Db, META, StorageError, decode_record, redb_err};

/// What the log holds past redb's durable point.
pub(crate) struct Pending {
    /// The number the next record gets.
    pub(crate) next_record: u64,
    /// The records to [`replay`] (none once applied to redb).
    pub(crate) records: Vec<Record>,
    /// How many records were brought back (replayed or applied).
    pub(crate) recovered: u64,
}

/// The log records redb lacks, read from `dir`. With `keep_log`, the
/// segments stay (made durable, a torn end cut off) and the records are
/// returned for [`replay`]; without, they are applied to redb durably and
/// the segments deleted.
pub(crate) fn read_pending(
    db: &redb::Database,
    dir: &Path,
    keep_log: bool,
) -> Result<Pending, StorageError> {
    let applied = {
        let txn = db.begin_read().map_err(redb_err("begin read"))?;
        let meta = txn.open_table(META).map_err(redb_err("open meta"))?;
        match meta.get(wal::APPLIED_KEY).map_err(redb_err("read meta"))? {
            None => 0,
            // Anything but 8 bytes is damage: reading it as 0 would re-apply
            // (or skip) log records against the wrong base.
            Some(v) => super::decode_applied(v.value())?,
        }
    };
    if !dir.exists() {
        return Ok(Pending {
            next_record: applied + 1,
            records: Vec::new(),
            recovered: 0,
        });
    }
    let (records, torn) = if keep_log {
        wal::recover_segments(dir)?
    } else {
        wal::read_all(dir)?
    };
    if torn > 0 {
        // Normal after a restart on a recycled segment: info, not a warning.
        tracing::info!(
            bytes = torn,
            "cut the bytes after the last record off the end of the write-ahead log (a torn record, never acknowledged, or records of the recycled file's earlier use)"
        );
    }
    let last = records.last().map_or(applied, |r| r.number.max(applied));
    let pending: Vec<Record> = records.into_iter().filter(|r| r.number > applied).collect();
    if let Some(first) = pending.first()
        && first.number != applied + 1
    {
        return Err(StorageError::Corrupt {
            what: format!("write-ahead log in {}", dir.display()),
            why: format!(
                "the database holds records up to {applied} but the log resumes at {}",
                first.number
            ),
        });
    }
    let recovered = pending.len() as u64;
    if keep_log {
        return Ok(Pending {
            next_record: last + 1,
            records: pending,
            recovered,
        });
    }
    if !pending.is_empty() {
        let txn = db.begin_write().map_err(redb_err("begin write"))?;
        for record in &pending {
            wal::apply(&txn, record.number, &record.payload)?;
        }
        txn.commit().map_err(redb_err("commit recovery"))?;
        tracing::info!(
            batches = pending.len(),
            last_record = last,
            "applied group commits from the write-ahead log to the database"
        );
    }
    // Everything the log held is durable in redb now.
    wal::delete_segments(dir)?;
    Ok(Pending {
        next_record: last + 1,
        records: Vec::new(),
        recovered,
    })
}

/// One plugin's state while records are replayed into it.
struct Replaying {
    state: Arc<PluginState>,
    resident: Resident,
    /// Its last journal sequence in the archive: entries up to it stay out.
    archived: u64,
}

/// Replays `records` (in order, as [`read_pending`] returned them) into the
/// plugins' in-memory state, marked written since the last checkpoint;
/// returns the bytes replayed (for the checkpoint schedule).
pub(crate) fn replay(db: &Db, records: &[Record]) -> Result<u64, StorageError> {
    let mut plugins: HashMap<u32, Replaying> = HashMap::new();
    let result = replay_into(db, records, &mut plugins);
    for (_, p) in plugins {
        p.state.give_back(p.resident);
    }
    if result.is_ok() && !records.is_empty() {
        tracing::info!(
            batches = records.len(),
            last_record = records.last().map_or(0, |r| r.number),
            "replayed group commits from the write-ahead log into memory"
        );
    }
    result
}

fn replay_into(
    db: &Db,
    records: &[Record],
    plugins: &mut HashMap<u32, Replaying>,
) -> Result<u64, StorageError> {
    let mut bytes = 0u64;
    for record in records {
        bytes += record.payload.len() as u64;
        for op in wal::decode_ops(record.number, &record.payload)? {
            let id = match &op {
                Op::Put { key, .. } | Op::Remove { key } => match key.first_chunk::<4>() {
                    Some(prefix) => u32::from_be_bytes(*prefix),
                    None => {
                        return Err(StorageError::Corrupt {
                            what: format!("write-ahead log record {}", record.number),
                            why: "state key without a plugin id".into(),
                        });
                    }
                },
                Op::Journal { plugin_id, .. } => *plugin_id,
                Op::Plugin { record: bytes, .. } => decode_record(bytes)?.id,
            };
            let p = match plugins.entry(id) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let state = db.plugin_state(id)?;
                    let archived = db.archived(id)?;
                    let resident = state.take();
                    e.insert(Replaying {
                        state,
                        resident,
                        archived,
                    })
                }
            };
            apply(p, op)?;
            p.resident.last_record = record.number;
        }
    }
    Ok(bytes)
}

/// One operation on a plugin's state, as its batch made it.
fn apply(p: &mut Replaying, op: Op<'_>) -> Result<(), StorageError> {
    let r = &mut p.resident;
    match op {
        Op::Put { key, value } => {
            let key = RowBytes::copy_from_slice(key);
            let value = RowBytes::copy_from_slice(value);
            r.rows.insert(key.clone(), value.clone())?;
            r.written.push((key, Some(value)));
        }
        Op::Remove { key } => {
            r.rows.remove(key, r.epoch)?;
            r.written.push((RowBytes::copy_from_slice(key), None));
        }
        Op::Journal {
            sequence, entry, ..
        } => {
            if sequence > p.archived {
                r.journal.insert(sequence, Bytes::copy_from_slice(entry));
            }
        }
        Op::Plugin { record, .. } => r.record = Some(Bytes::copy_from_slice(record)),
    }
    Ok(())
}
