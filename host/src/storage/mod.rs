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
//!
//! Table names never contain `00`, so the prefix `plugin id ‖ table ‖ 00`
//! is unique per (plugin, table): a plugin cannot form another plugin's key.

pub mod batch;
pub mod journal;
mod keys;
pub mod read;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

pub use batch::Batch;
pub use journal::{EntryKind, JournalEntry, Outcome};
pub use keys::validate_table_name;
pub use read::ReadView;

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
    /// Every group commit is fsynced before any of its commands is acknowledged.
    #[default]
    Immediate,
    /// Commits are not fsynced: a crash may lose acknowledged commands.
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
}

impl Db {
    /// Opens (or creates) the database file at `path`.
    pub fn open(path: &Path, durability: Durability) -> Result<Db, StorageError> {
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
        Ok(Db {
            inner: Arc::new(DbInner {
                db,
                durability,
                poisoned: AtomicBool::new(false),
            }),
        })
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
        let durability = match self.inner.durability {
            Durability::Immediate => redb::Durability::Immediate,
            Durability::Relaxed => redb::Durability::None,
        };
        txn.set_durability(durability)
            .map_err(|e| StorageError::Corrupt {
                what: "durability".into(),
                why: e.to_string(),
            })?;
        Batch::new(txn, self.clone())
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
