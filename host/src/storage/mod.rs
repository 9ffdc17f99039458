//! The only module that touches redb.
//!
//! Layout of the database file (all tables are redb tables):
//!
//! | table | key | value |
//! |---|---|---|
//! | `state` | `plugin id (u32 BE) ‖ table name ‖ 00 ‖ plugin key` | plugin value |
//! | `journal` | `(plugin id, sequence)` | [`JournalEntry`] (see [`journal`]) |
//! | `plugins` | plugin name | [`PluginRecord`] (bincode) |
//! | `modules` | BLAKE3 of the component bytes | the component bytes |
//! | `meta` | `"format"` | format version (u32 LE) |
//! | `meta` | `"wal_applied"` | last write-ahead log record held (u64 LE) |
//!
//! Table names never contain `00`, so the prefix `plugin id ‖ table ‖ 00`
//! is unique per (plugin, table): a plugin cannot form another plugin's key.

pub mod batch;
pub mod journal;
mod keys;
pub mod read;
pub mod wal;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

pub use batch::Batch;
pub use journal::{EntryKind, JournalEntry, Outcome};
pub use keys::validate_table_name;
pub use read::ReadView;
pub use wal::CheckpointPolicy;

use crate::state_hash::StateHash;

pub(crate) const STATE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("state");
pub(crate) const JOURNAL: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("journal");
pub(crate) const PLUGINS: TableDefinition<&str, &[u8]> = TableDefinition::new("plugins");
pub(crate) const MODULES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("modules");
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Version of the on-disk layout described above.
pub const FORMAT_VERSION: u32 = 1;

/// How commits reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Every group commit is fsynced before any of its commands is
    /// acknowledged (through the write-ahead log, see [`wal`]).
    #[default]
    Immediate,
    /// Command batches are not fsynced (deployments and the checkpoint at
    /// clean shutdown still are): a crash may lose acknowledged commands.
    /// Only by explicit configuration, and named in every status output.
    Relaxed,
}

impl Durability {
    /// The name shown in status output.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Immediate => "immediate",
            Durability::Relaxed => "relaxed (NOT crash-safe: acknowledged commands may be lost)",
        }
    }
}

/// A storage failure. After a failed commit the database refuses every
/// further write until it is reopened ([`StorageError::Poisoned`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// redb reported an error during `op`.
    #[error("storage {op} failed: {source}")]
    Redb {
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        source: redb::Error,
    },
    /// A record did not decode: the file is corrupt or from another version.
    #[error("corrupt {what}: {why}")]
    Corrupt {
        /// Which record.
        what: String,
        /// The decoder's complaint.
        why: String,
    },
    /// A previous commit failed; restart the host to recover.
    #[error(
        "storage refused the write: an earlier commit failed, restart the host to recover from the journal"
    )]
    Poisoned,
    /// The write-ahead log could not be written or read.
    #[error("write-ahead log {op} failed ({path}): {source}")]
    Log {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file was written by another layout version.
    #[error("database format {found} is not supported (this host reads format {FORMAT_VERSION})")]
    Format {
        /// The version found in the file.
        found: u32,
    },
}

pub(crate) fn redb_err<E: Into<redb::Error>>(op: &'static str) -> impl FnOnce(E) -> StorageError {
    move |e| StorageError::Redb {
        op,
        source: e.into(),
    }
}

/// One deployed version of a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// BLAKE3 of the component bytes (key into `modules`).
    pub module_hash: [u8; 32],
    /// The version string the component reported.
    pub version: String,
    /// The schema number the component reported.
    pub schema: u32,
    /// The journal sequence of its `init` or `migrate` entry.
    pub sequence: u64,
}

/// What the host keeps about one plugin, updated in every batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRecord {
    /// Host-assigned id, the prefix of all the plugin's keys.
    pub id: u32,
    /// The plugin's name.
    pub name: String,
    /// Every version ever deployed, oldest first; the last is active.
    pub deployments: Vec<Deployment>,
    /// Sequence of the last journaled command.
    pub last_sequence: u64,
    /// Timestamp of the last journaled command (timestamps never go back).
    pub last_timestamp_ms: u64,
    /// Multiset hash of the plugin's committed state.
    pub state_hash: StateHash,
}

impl PluginRecord {
    /// The active deployment.
    pub fn active(&self) -> &Deployment {
        self.deployments
            .last()
            .expect("a plugin record always has a deployment")
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .expect("encoding to a Vec cannot fail")
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(
    what: &str,
    bytes: &[u8],
) -> Result<T, StorageError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| StorageError::Corrupt {
            what: what.to_owned(),
            why: e.to_string(),
        })
}

/// The database: state, journal, plugin records and modules in one redb file.
#[derive(Clone)]
pub struct Db {
    inner: Arc<DbInner>,
}

struct DbInner {
    db: redb::Database,
    durability: Durability,
    poisoned: AtomicBool,
    /// The write-ahead log, with immediate durability.
    wal: Option<Mutex<wal::Wal>>,
    /// Log records applied at open.
    recovered: u64,
}

impl Db {
    /// Opens (or creates) the database file at `path` with the default
    /// checkpoint policy.
    pub fn open(path: &Path, durability: Durability) -> Result<Db, StorageError> {
        Self::open_with(path, durability, CheckpointPolicy::default())
    }

    /// Opens (or creates) the database file at `path`; first applies what
    /// the write-ahead log beside it (`<file>.wal/`) holds past redb's
    /// durable point, whatever the durability asked for now.
    pub fn open_with(
        path: &Path,
        durability: Durability,
        checkpoint: CheckpointPolicy,
    ) -> Result<Db, StorageError> {
        let db = redb::Database::builder()
            .set_cache_size(256 << 20)
            .create(path)
            .map_err(redb_err("open"))?;
        let txn = db.begin_write().map_err(redb_err("begin"))?;
        {
            let mut meta = txn.open_table(META).map_err(redb_err("open meta"))?;
            let found = meta
                .get("format")
                .map_err(redb_err("read meta"))?
                .map(|v| u32::from_le_bytes(v.value().try_into().unwrap_or([0; 4])));
            match found {
                None => {
                    meta.insert("format", FORMAT_VERSION.to_le_bytes().as_slice())
                        .map_err(redb_err("write meta"))?;
                }
                Some(FORMAT_VERSION) => {}
                Some(found) => return Err(StorageError::Format { found }),
            }
            txn.open_table(STATE).map_err(redb_err("open state"))?;
            txn.open_table(JOURNAL).map_err(redb_err("open journal"))?;
            txn.open_table(PLUGINS).map_err(redb_err("open plugins"))?;
            txn.open_table(MODULES).map_err(redb_err("open modules"))?;
        }
        txn.commit().map_err(redb_err("commit"))?;
        let wal_dir = wal::dir_for(path);
        let (next_record, recovered) = recover(&db, &wal_dir)?;
        let wal = match durability {
            Durability::Immediate => Some(Mutex::new(wal::Wal::open(
                &wal_dir,
                next_record,
                checkpoint,
            )?)),
            Durability::Relaxed => None,
        };
        Ok(Db {
            inner: Arc::new(DbInner {
                db,
                durability,
                poisoned: AtomicBool::new(false),
                wal,
                recovered,
            }),
        })
    }

    /// How many group commits the write-ahead log brought back at open
    /// (redb had lost them in a crash).
    pub fn recovered_batches(&self) -> u64 {
        self.inner.recovered
    }

    /// Checkpoints (durable redb commits retiring the write-ahead log)
    /// since the database was opened.
    pub fn checkpoints(&self) -> u64 {
        self.wal().map_or(0, |w| w.checkpoints())
    }

    /// The write-ahead log, locked, if this database keeps one.
    pub(crate) fn wal(&self) -> Option<MutexGuard<'_, wal::Wal>> {
        self.inner
            .wal
            .as_ref()
            .map(|w| w.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Makes everything committed so far durable in redb itself and deletes
    /// the write-ahead log before it (also done by policy during batches).
    /// Call on clean shutdown so that the next start has nothing to recover.
    pub fn checkpoint(&self) -> Result<(), StorageError> {
        let mut batch = self.begin_batch()?;
        batch.require_durable_commit();
        batch.commit()
    }

    /// The configured durability.
    pub fn durability(&self) -> Durability {
        self.inner.durability
    }

    /// Starts a write transaction for one group commit.
    pub fn begin_batch(&self) -> Result<Batch, StorageError> {
        if self.inner.poisoned.load(Ordering::Acquire) {
            return Err(StorageError::Poisoned);
        }
        let mut txn = self
            .inner
            .db
            .begin_write()
            .map_err(redb_err("begin write"))?;
        // Immediate durability comes from the write-ahead log (or a
        // checkpoint, decided at commit); redb itself does not fsync.
        txn.set_durability(redb::Durability::None)
            .map_err(|e| StorageError::Corrupt {
                what: "durability".into(),
                why: e.to_string(),
            })?;
        Batch::new(txn, self.clone(), self.inner.wal.is_some())
    }

    pub(crate) fn poison(&self) {
        self.inner.poisoned.store(true, Ordering::Release);
    }

    /// A consistent read-only view of committed state.
    pub fn read(&self) -> Result<ReadView, StorageError> {
        ReadView::new(self.inner.db.begin_read().map_err(redb_err("begin read"))?)
    }

    /// Every plugin record, by name.
    pub fn plugins(&self) -> Result<Vec<PluginRecord>, StorageError> {
        let txn = self.inner.db.begin_read().map_err(redb_err("begin read"))?;
        let table = txn.open_table(PLUGINS).map_err(redb_err("open plugins"))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(redb_err("scan plugins"))? {
            let (name, value) = row.map_err(redb_err("scan plugins"))?;
            out.push(decode(
                &format!("plugin record {}", name.value()),
                value.value(),
            )?);
        }
        Ok(out)
    }

    /// The component bytes stored under `hash`.
    pub fn module(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, StorageError> {
        let txn = self.inner.db.begin_read().map_err(redb_err("begin read"))?;
        let table = txn.open_table(MODULES).map_err(redb_err("open modules"))?;
        Ok(table
            .get(hash.as_slice())
            .map_err(redb_err("read module"))?
            .map(|v| v.value().to_vec()))
    }

    /// Journal entries of `plugin_id` with sequence in `from..=to`, in order.
    pub fn journal(
        &self,
        plugin_id: u32,
        from: u64,
        to: u64,
    ) -> Result<Vec<JournalEntry>, StorageError> {
        let txn = self.inner.db.begin_read().map_err(redb_err("begin read"))?;
        let table = txn.open_table(JOURNAL).map_err(redb_err("open journal"))?;
        let mut out = Vec::new();
        for row in table
            .range((plugin_id, from)..=(plugin_id, to))
            .map_err(redb_err("scan journal"))?
        {
            let (key, value) = row.map_err(redb_err("scan journal"))?;
            out.push(journal::decode_entry(key.value().1, value.value())?);
        }
        Ok(out)
    }

    /// Every (table, key) → value of a plugin, for tests and dumps.
    pub fn dump_plugin(
        &self,
        plugin_id: u32,
    ) -> Result<BTreeMap<(String, Vec<u8>), Vec<u8>>, StorageError> {
        let view = self.read()?;
        view.dump_plugin(plugin_id)
    }
}

/// Decodes `meta.wal_applied` (u64 LE), refusing anything else.
fn decode_applied(bytes: &[u8]) -> Result<u64, StorageError> {
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| StorageError::Corrupt {
        what: format!("meta.{}", wal::APPLIED_KEY),
        why: format!("{} bytes where a u64 (8 bytes) belongs", bytes.len()),
    })?;
    Ok(u64::from_le_bytes(bytes))
}

/// Applies the write-ahead log records in `dir` that redb does not hold
/// yet, durably, and deletes the log. Returns the next record number and
/// how many records were applied.
fn recover(db: &redb::Database, dir: &Path) -> Result<(u64, u64), StorageError> {
    let applied = {
        let txn = db.begin_read().map_err(redb_err("begin read"))?;
        let meta = txn.open_table(META).map_err(redb_err("open meta"))?;
        match meta.get(wal::APPLIED_KEY).map_err(redb_err("read meta"))? {
            None => 0,
            // Anything but 8 bytes is damage: reading it as 0 would re-apply
            // (or skip) log records against the wrong base.
            Some(v) => decode_applied(v.value())?,
        }
    };
    if !dir.exists() {
        return Ok((applied + 1, 0));
    }
    let (records, torn) = wal::read_all(dir)?;
    if torn > 0 {
        tracing::warn!(
            bytes = torn,
            "cut a torn record off the end of the write-ahead log (never acknowledged)"
        );
    }
    let pending: Vec<&wal::Record> = records.iter().filter(|r| r.number > applied).collect();
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
    let last = records.last().map_or(applied, |r| r.number.max(applied));
    if !pending.is_empty() {
        let txn = db.begin_write().map_err(redb_err("begin write"))?;
        for record in &pending {
            wal::apply(&txn, record.number, &record.payload)?;
        }
        txn.commit().map_err(redb_err("commit recovery"))?;
        tracing::info!(
            batches = pending.len(),
            last_record = last,
            "recovered group commits from the write-ahead log"
        );
    }
    // Everything the log held is durable in redb now.
    wal::delete_segments(dir)?;
    Ok((last + 1, pending.len() as u64))
}

/// The database file and its write-ahead log as the disk holds them now,
/// copied aside, so that a simulated crash can put them back after the
/// process-level close (which makes redb's pending commits durable — a
/// power cut would not).
pub(crate) struct DiskImage {
    db_path: std::path::PathBuf,
    dir: tempfile::TempDir,
}

impl DiskImage {
    /// Copies `db_path` and its log directory. Call with no write in flight.
    pub(crate) fn capture(db_path: &Path) -> std::io::Result<DiskImage> {
        let parent = db_path.parent().unwrap_or(Path::new("."));
        let dir = tempfile::Builder::new()
            .prefix(".crash-image")
            .tempdir_in(parent)?;
        std::fs::copy(db_path, dir.path().join("db"))?;
        let wal_dir = wal::dir_for(db_path);
        let image_wal = dir.path().join("wal");
        std::fs::create_dir(&image_wal)?;
        if wal_dir.exists() {
            for entry in std::fs::read_dir(&wal_dir)? {
                let entry = entry?;
                std::fs::copy(entry.path(), image_wal.join(entry.file_name()))?;
            }
        }
        Ok(DiskImage {
            db_path: db_path.to_owned(),
            dir,
        })
    }

    /// Puts the captured files back in place (the database must be closed).
    pub(crate) fn restore(self) -> std::io::Result<()> {
        std::fs::rename(self.dir.path().join("db"), &self.db_path)?;
        let wal_dir = wal::dir_for(&self.db_path);
        if wal_dir.exists() {
            std::fs::remove_dir_all(&wal_dir)?;
        }
        std::fs::rename(self.dir.path().join("wal"), &wal_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_wal_applied_refuses_to_open_instead_of_reading_zero() {
        // It used to decode as 0, so recovery would have re-applied every
        // log record on top of a database that already held them.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keel.redb");
        drop(Db::open(&path, Durability::Immediate).unwrap());
        {
            let db = redb::Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(wal::APPLIED_KEY, [7u8, 0, 0].as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let err = Db::open(&path, Durability::Immediate)
            .err()
            .expect("a damaged wal_applied must refuse the open");
        let message = err.to_string();
        assert!(
            message.contains("wal_applied") && message.contains("3 bytes"),
            "{message}"
        );
    }
}
