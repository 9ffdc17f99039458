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
//! | `meta` | `"archived.<plugin id>"` | last journal sequence moved to the archive (u64 LE, see [`archive`]) |
//!
//! Table names never contain `00`, so the prefix `plugin id ‖ table ‖ 00`
//! is unique per (plugin, table): a plugin cannot form another plugin's key.

pub mod archive;
pub mod batch;
mod checkpoint;
pub mod journal;
mod journal_tail;
pub(crate) mod keys;
mod memtable;
pub mod read;
mod recovery;
pub(crate) mod row_bytes;
mod rows;
pub mod wal;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

pub use archive::{ArchivePolicy, Segment};
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

impl From<StorageError> for std::io::Error {
    /// For row visitors that write files: a failed read of cold rows ends
    /// the write like a failed write would.
    fn from(e: StorageError) -> Self {
        std::io::Error::other(e)
    }
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

/// Decodes a plugin record.
pub(crate) fn decode_record(bytes: &[u8]) -> Result<PluginRecord, StorageError> {
    decode("plugin record", bytes)
}

/// The database: state, journal, plugin records and modules in one redb
/// file; each plugin's state resident in memory (see [`memtable`]), its
/// changes made durable by the write-ahead log and written to redb by the
/// background checkpointer (see [`checkpoint`]).
#[derive(Clone)]
pub struct Db {
    inner: Arc<DbInner>,
}

pub(crate) struct DbInner {
    db: redb::Database,
    durability: Durability,
    poisoned: AtomicBool,
    /// The write-ahead log, with immediate durability.
    wal: Option<wal::Wal>,
    /// Log records brought back at open (replayed or applied).
    recovered: u64,
    /// Each plugin's resident state, by plugin id, loaded on first use.
    states: Mutex<HashMap<u32, Arc<memtable::PluginState>>>,
    /// The newest redb snapshot (what the last checkpoint wrote).
    base: Mutex<Arc<read::Base>>,
    /// How far the write-ahead log is known durable (group commit).
    synced: Mutex<Synced>,
    synced_changed: Condvar,
    schedule: Arc<checkpoint::Schedule>,
    /// Where journal archive segments live (`<data_dir>/archive/`).
    archive_root: std::path::PathBuf,
    /// One archive round at a time.
    archiving: Mutex<()>,
}

/// How long a reader waits for a batch's own fsync before it runs one.
const READER_SYNC_WAIT: std::time::Duration = std::time::Duration::from_millis(5);

/// The write-ahead log's durable point, shared by everyone waiting for it.
#[derive(Default)]
struct Synced {
    /// Every record up to this one is on disk.
    upto: u64,
    /// Someone is running an fsync now; the others wait for it.
    syncing: bool,
}

impl DbInner {
    /// Raises the durable point to `upto` (after an fsync or a rotation).
    pub(crate) fn mark_synced(&self, upto: u64) {
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        synced.upto = synced.upto.max(upto);
        drop(synced);
        self.synced_changed.notify_all();
    }

    /// Waits until log record `record` is durable; the first waiter runs
    /// one fsync for every record written so far (group commit), the
    /// others wait for it. Record 0 (nothing logged) is durable at once.
    pub(crate) fn wait_durable(&self, record: u64) -> Result<(), StorageError> {
        let Some(wal) = &self.wal else { return Ok(()) };
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(settled) = self.settled(&synced, record) {
                return settled;
            }
            if synced.syncing {
                synced = self
                    .synced_changed
                    .wait(synced)
                    .unwrap_or_else(|p| p.into_inner());
                continue;
            }
            synced.syncing = true;
            drop(synced);
            let result = wal.flush().and_then(|(segment, upto)| match &segment {
                Some((file, path)) => {
                    file.sync_data()
                        .map(|()| upto)
                        .map_err(|source| StorageError::Log {
                            op: "sync log",
                            path: path.display().to_string(),
                            source,
                        })
                }
                // Rotated away: the rotation fsynced it.
                None => Ok(upto),
            });
            synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
            synced.syncing = false;
            match result {
                Ok(upto) => synced.upto = synced.upto.max(upto),
                Err(e) => {
                    self.poisoned.store(true, Ordering::Release);
                    drop(synced);
                    self.synced_changed.notify_all();
                    return Err(e);
                }
            }
            self.synced_changed.notify_all();
        }
    }

    /// Whether waiting for `record` is over: it is durable, or the
    /// database is poisoned and it never will be.
    fn settled(&self, synced: &Synced, record: u64) -> Option<Result<(), StorageError>> {
        if synced.upto >= record {
            return Some(Ok(()));
        }
        if self.poisoned.load(Ordering::Acquire) {
            return Some(Err(StorageError::Poisoned));
        }
        None
    }

    /// [`DbInner::wait_durable`] for a reader (a query, a view): waits for
    /// the fsync that the batch's own acknowledger runs, and runs one
    /// itself only after [`READER_SYNC_WAIT`]. Readers run at a lower
    /// priority (`crate::priority`); an fsync they ran would hold every
    /// acknowledgement behind their scheduling.
    pub(crate) fn wait_durable_as_reader(&self, record: u64) -> Result<(), StorageError> {
        if self.wal.is_none() {
            return Ok(());
        }
        let deadline = std::time::Instant::now() + READER_SYNC_WAIT;
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(settled) = self.settled(&synced, record) {
                return settled;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                drop(synced);
                return self.wait_durable(record);
            }
            synced = self
                .synced_changed
                .wait_timeout(synced, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The newest redb snapshot.
    fn current_base(&self) -> Arc<read::Base> {
        self.base.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Every loaded plugin state.
    fn all_states(&self) -> Vec<Arc<memtable::PluginState>> {
        self.states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

impl Drop for DbInner {
    fn drop(&mut self) {
        self.schedule.stop();
    }
}

impl Db {
    /// Opens (or creates) the database file at `path` with the default
    /// checkpoint policy.
    pub fn open(path: &Path, durability: Durability) -> Result<Db, StorageError> {
        Self::open_with(path, durability, CheckpointPolicy::default())
    }

    /// Opens (or creates) the database file at `path`; first brings back
    /// what the write-ahead log beside it (`<file>.wal/`) holds past redb's
    /// durable point, whatever the durability asked for now (see
    /// [`recovery`]: replayed into memory with immediate durability, applied
    /// to redb with relaxed). Starts the background checkpointer.
    pub fn open_with(
        path: &Path,
        durability: Durability,
        policy: CheckpointPolicy,
    ) -> Result<Db, StorageError> {
        let db = redb::Database::builder()
            .set_cache_size(policy.read_cache_bytes as usize)
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
        let keep_log = durability == Durability::Immediate;
        let pending = recovery::read_pending(&db, &wal_dir, keep_log)?;
        let next_record = pending.next_record;
        let wal = match durability {
            Durability::Immediate => Some(wal::Wal::open(&wal_dir, next_record)?),
            Durability::Relaxed => None,
        };
        let base = read::Base::open(&db)?;
        let inner = Arc::new(DbInner {
            db,
            durability,
            poisoned: AtomicBool::new(false),
            wal,
            recovered: pending.recovered,
            states: Mutex::new(HashMap::new()),
            base: Mutex::new(base),
            synced: Mutex::new(Synced {
                upto: next_record - 1,
                syncing: false,
            }),
            synced_changed: Condvar::new(),
            schedule: Arc::new(checkpoint::Schedule::new(policy)),
            archive_root: path.parent().unwrap_or(Path::new(".")).join("archive"),
            archiving: Mutex::new(()),
        });
        let db = Db { inner };
        let replayed = recovery::replay(&db, &pending.records)?;
        db.inner.schedule.add_pending(replayed);
        let inner = db.inner;
        checkpoint::spawn(&inner).map_err(|source| StorageError::Log {
            op: "start the checkpointer",
            path: path.display().to_string(),
            source,
        })?;
        Ok(Db { inner })
    }

    /// How many group commits the write-ahead log brought back at open
    /// (redb had lost them in a crash).
    pub fn recovered_batches(&self) -> u64 {
        self.inner.recovered
    }

    /// Checkpoints (durable redb commits of the rows written in memory, retiring
    /// the write-ahead log) since the database was opened.
    pub fn checkpoints(&self) -> u64 {
        self.inner.schedule.completed()
    }

    /// Resident rows evicted (to be read through from redb) since the
    /// database was opened: nonzero only for plugins whose rows outgrew
    /// `[checkpoint] resident_bytes_max`.
    pub fn evicted_rows(&self) -> u64 {
        self.inner.schedule.evicted()
    }

    /// Writes every plugin's changed rows to redb in one durable commit
    /// and deletes the write-ahead log before it (also done in the
    /// background by policy). Call on clean shutdown so that the next start
    /// has nothing to recover.
    pub fn checkpoint(&self) -> Result<(), StorageError> {
        checkpoint::run(&self.inner)
    }

    /// Stops the background checkpointer and waits for a checkpoint in
    /// progress to finish. Call before closing (or crash-imaging) the files.
    pub fn stop_background(&self) {
        self.inner.schedule.stop_and_join();
    }

    /// Stops the background checkpointer the way a power cut would: the
    /// database is poisoned (it refuses writes from then on), and a
    /// checkpoint in progress, which looks between rows, abandons its
    /// redb commit, so the files hold the last committed checkpoint and
    /// the log. For crash simulation (`Host::crash`): a killed process
    /// does not wait for its checkpoint either.
    #[cfg(any(test, feature = "testkit"))]
    pub fn abandon_background(&self) {
        self.inner.poisoned.store(true, Ordering::Release);
        self.inner.schedule.stop_and_join();
    }

    /// The configured durability.
    pub fn durability(&self) -> Durability {
        self.inner.durability
    }

    /// The resident state of `plugin_id`, loaded from redb on first use.
    fn plugin_state(&self, plugin_id: u32) -> Result<Arc<memtable::PluginState>, StorageError> {
        let mut states = self.inner.states.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = states.get(&plugin_id) {
            return Ok(state.clone());
        }
        let state = Arc::new(memtable::PluginState::load(
            plugin_id,
            self.inner.current_base(),
            self.inner.schedule.policy.resident_bytes_max,
        )?);
        states.insert(plugin_id, state.clone());
        Ok(state)
    }

    /// Starts one group commit of `plugin_id` (waits while another batch of
    /// the same plugin is open; never for another plugin).
    pub fn begin_batch(&self, plugin_id: u32) -> Result<Batch, StorageError> {
        if self.inner.poisoned.load(Ordering::Acquire) {
            return Err(StorageError::Poisoned);
        }
        Ok(Batch::new(
            self.clone(),
            self.plugin_state(plugin_id)?,
            self.inner.wal.is_some(),
        ))
    }

    /// Appends one redo record to the write-ahead log without waiting for
    /// the disk; returns its number (0 without a log), for
    /// [`Db::wait_durable`].
    pub(crate) fn append(&self, redo: Vec<u8>) -> Result<u64, StorageError> {
        if self.inner.poisoned.load(Ordering::Acquire) {
            return Err(StorageError::Poisoned);
        }
        Ok(match &self.inner.wal {
            Some(wal) => wal.append(redo),
            None => 0,
        })
    }

    /// Waits until log record `record` is durable (one fsync covers every
    /// record written before it, from any plugin). A failed fsync poisons
    /// the database: every later wait fails.
    pub fn wait_durable(&self, record: u64) -> Result<(), StorageError> {
        self.inner.wait_durable(record)
    }

    /// Counts bytes a batch added to memory; wakes the checkpointer when a
    /// checkpoint falls due and holds the caller back while the changes are
    /// far past the policy (the checkpointer is behind).
    pub(crate) fn written(&self, bytes: u64) {
        self.inner
            .schedule
            .written(bytes, || self.inner.poisoned.load(Ordering::Acquire));
    }

    pub(crate) fn poison(&self) {
        self.inner.poisoned.store(true, Ordering::Release);
    }

    /// A consistent read-only view of one plugin's committed state (waits
    /// for the plugin's batch in progress, if any).
    pub fn view(&self, plugin_id: u32) -> Result<ReadView, StorageError> {
        let (view, last_record) = self.plugin_state(plugin_id)?.view();
        // Confirmed reads: nothing is answered from a batch that is not
        // durable yet.
        self.inner.wait_durable_as_reader(last_record)?;
        Ok(view)
    }

    /// A view of `plugin_id`'s state as the last checkpoint left it in
    /// redb (its rows and record at the sequence that checkpoint
    /// reached), read from redb alone: unlike [`Db::view`], it never
    /// shares the plugin's live map, so the batches that run while it is
    /// read copy nothing. `None` if no checkpoint has written the plugin
    /// yet. Durable by construction.
    pub fn checkpointed_view(&self, plugin_id: u32) -> Result<Option<ReadView>, StorageError> {
        let base = self.inner.current_base();
        if !base.records()?.contains_key(&plugin_id) {
            return Ok(None);
        }
        let start = plugin_id.to_be_bytes();
        let rows = rows::RowSet::from_base(base, &start, &keys::plugin_end(plugin_id))?;
        Ok(Some(ReadView::new(
            plugin_id,
            rows,
            memtable::Journal::new(),
            None,
        )))
    }

    /// Every plugin record, by name, as of the last committed batch.
    pub fn plugins(&self) -> Result<Vec<PluginRecord>, StorageError> {
        // Each loaded plugin is read through one view (its record in memory
        // or the redb snapshot beside it), so that a checkpoint finishing
        // meanwhile cannot make an older record win.
        let mut by_id: BTreeMap<u32, PluginRecord> = BTreeMap::new();
        for state in self.inner.all_states() {
            let (view, last_record) = state.view();
            self.wait_durable(last_record)?;
            if let Some(record) = view.record()? {
                by_id.insert(record.id, record);
            }
        }
        for (id, record) in self.inner.current_base().records()? {
            by_id.entry(id).or_insert(record);
        }
        Ok(by_id.into_values().collect())
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

    /// Stores component bytes under their hash in a durable redb commit of
    /// their own (idempotent; too large and too rare for the log). Done
    /// before the journal entry that names the module is logged.
    pub fn store_module(&self, hash: &[u8; 32], bytes: &[u8]) -> Result<(), StorageError> {
        if self.inner.poisoned.load(Ordering::Acquire) {
            return Err(StorageError::Poisoned);
        }
        let txn = self
            .inner
            .db
            .begin_write()
            .map_err(redb_err("begin write"))?;
        {
            let mut table = txn.open_table(MODULES).map_err(redb_err("open modules"))?;
            if table
                .get(hash.as_slice())
                .map_err(redb_err("get module"))?
                .is_none()
            {
                table
                    .insert(hash.as_slice(), bytes)
                    .map_err(redb_err("put module"))?;
            }
        }
        txn.commit().map_err(redb_err("commit module"))
    }

    /// Journal entries of `plugin_id` with sequence in `from..=to`, in
    /// order: from the archive up to its mark, then from the database.
    /// Entries whose archive segment was deleted by policy are missing
    /// (the caller sees the gap).
    pub fn journal(
        &self,
        plugin_id: u32,
        from: u64,
        to: u64,
    ) -> Result<Vec<JournalEntry>, StorageError> {
        let view = self.view(plugin_id)?;
        // Read after the view: a round that raised the mark meanwhile
        // wrote its segment first.
        let mark = self.archived(plugin_id)?;
        let mut out = Vec::new();
        if from <= mark
            && let Some(record) = view.record()?
        {
            let upto = to.min(mark);
            for segment in archive::segments(&self.inner.archive_root.join(&record.name))? {
                if segment.last < from || segment.first > upto {
                    continue;
                }
                for (sequence, bytes) in archive::read(&segment.path, segment.first, segment.last)?
                {
                    if (from..=upto).contains(&sequence) {
                        out.push(journal::decode_entry(sequence, &bytes)?);
                    }
                }
            }
        }
        out.extend(view.journal(from.max(mark + 1), to)?);
        Ok(out)
    }

    /// For recovery into a new database (no plugin running): sets
    /// `plugin_id`'s archive mark to `mark` and writes `entries` (the
    /// retained journal the new state did not re-create) into the journal,
    /// in one durable commit.
    pub fn adopt_history(
        &self,
        plugin_id: u32,
        mark: u64,
        entries: &[JournalEntry],
    ) -> Result<(), StorageError> {
        let txn = self
            .inner
            .db
            .begin_write()
            .map_err(redb_err("begin write"))?;
        {
            let mut journal = txn.open_table(JOURNAL).map_err(redb_err("open journal"))?;
            for entry in entries {
                journal
                    .insert(
                        (plugin_id, entry.sequence),
                        journal::encode_entry(entry).as_slice(),
                    )
                    .map_err(redb_err("write journal"))?;
            }
            let mut meta = txn.open_table(META).map_err(redb_err("open meta"))?;
            meta.insert(
                archive::mark_key(plugin_id).as_str(),
                mark.to_le_bytes().as_slice(),
            )
            .map_err(redb_err("write meta"))?;
        }
        txn.commit().map_err(redb_err("commit history"))
    }

    /// The last journal sequence of `plugin_id` moved to the archive (0: none).
    pub fn archived(&self, plugin_id: u32) -> Result<u64, StorageError> {
        let txn = self.inner.db.begin_read().map_err(redb_err("begin read"))?;
        let meta = txn.open_table(META).map_err(redb_err("open meta"))?;
        archive_mark(&meta, plugin_id)
    }

    /// The archive segments of the plugin called `name`, oldest first.
    pub fn archive_segments(&self, name: &str) -> Result<Vec<Segment>, StorageError> {
        archive::segments(&self.inner.archive_root.join(name))
    }

    /// The archive directory of the plugin called `name`.
    pub fn archive_dir(&self, name: &str) -> std::path::PathBuf {
        self.inner.archive_root.join(name)
    }

    /// Moves `plugin_id`'s journal entries up to `upto` that the database
    /// holds (checkpointed) into an archive segment, deletes them from the
    /// database in one durable commit, and applies `policy` to the
    /// plugin's segments. Returns the new segment, if any.
    pub fn archive_journal(
        &self,
        plugin_id: u32,
        name: &str,
        upto: u64,
        policy: &ArchivePolicy,
    ) -> Result<Option<Segment>, StorageError> {
        let _one = self
            .inner
            .archiving
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if self.inner.poisoned.load(Ordering::Acquire) {
            return Err(StorageError::Poisoned);
        }
        let dir = self.inner.archive_root.join(name);
        let mark = self.archived(plugin_id)?;
        // Segments above the mark are what a crashed round left.
        archive::prune(&dir, mark, policy)?;
        if upto <= mark {
            return Ok(None);
        }
        let mut entries = Vec::new();
        {
            let txn = self.inner.db.begin_read().map_err(redb_err("begin read"))?;
            let journal = txn.open_table(JOURNAL).map_err(redb_err("open journal"))?;
            for row in journal
                .range((plugin_id, mark + 1)..=(plugin_id, upto))
                .map_err(redb_err("scan journal"))?
            {
                let (key, value) = row.map_err(redb_err("scan journal"))?;
                let sequence = key.value().1;
                if sequence != mark + 1 + entries.len() as u64 {
                    break;
                }
                entries.push((sequence, bytes::Bytes::copy_from_slice(value.value())));
            }
        }
        let Some(&(last, _)) = entries.last() else {
            return Ok(None);
        };
        let segment = archive::write(&dir, &entries)?;
        let txn = self
            .inner
            .db
            .begin_write()
            .map_err(redb_err("begin archive"))?;
        {
            let mut journal = txn.open_table(JOURNAL).map_err(redb_err("open journal"))?;
            for (sequence, _) in &entries {
                journal
                    .remove((plugin_id, *sequence))
                    .map_err(redb_err("archive journal"))?;
            }
            let mut meta = txn.open_table(META).map_err(redb_err("open meta"))?;
            meta.insert(
                archive::mark_key(plugin_id).as_str(),
                last.to_le_bytes().as_slice(),
            )
            .map_err(redb_err("write meta"))?;
        }
        txn.commit().map_err(redb_err("commit archive"))?;
        archive::prune(&dir, last, policy)?;
        Ok(Some(segment))
    }

    /// Every (table, key) → value of a plugin, for tests and dumps.
    pub fn dump_plugin(
        &self,
        plugin_id: u32,
    ) -> Result<BTreeMap<(String, Vec<u8>), Vec<u8>>, StorageError> {
        self.view(plugin_id)?.dump()
    }
}

/// Whether the database file at `path` passes redb's integrity check
/// (the file must not be open elsewhere). An error is a file redb cannot
/// even open.
pub fn check_integrity(path: &Path) -> Result<bool, StorageError> {
    let mut db = redb::Database::open(path).map_err(redb_err("open"))?;
    db.check_integrity().map_err(redb_err("check integrity"))
}

/// The archive directory of the plugin called `name` in the host whose
/// database is `db_path` (`<data_dir>/archive/<name>`).
pub fn archive_dir(db_path: &Path, name: &str) -> std::path::PathBuf {
    db_path
        .parent()
        .unwrap_or(Path::new("."))
        .join("archive")
        .join(name)
}

/// The archive mark of `plugin_id` in `meta` (0: nothing archived).
pub(crate) fn archive_mark(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    plugin_id: u32,
) -> Result<u64, StorageError> {
    let key = archive::mark_key(plugin_id);
    match meta.get(key.as_str()).map_err(redb_err("read meta"))? {
        None => Ok(0),
        Some(v) => {
            v.value()
                .try_into()
                .map(u64::from_le_bytes)
                .map_err(|_| StorageError::Corrupt {
                    what: format!("meta.{key}"),
                    why: format!("{} bytes where a u64 (8 bytes) belongs", v.value().len()),
                })
        }
    }
}

/// Decodes `meta.wal_applied` (u64 LE), refusing anything else.
pub(crate) fn decode_applied(bytes: &[u8]) -> Result<u64, StorageError> {
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| StorageError::Corrupt {
        what: format!("meta.{}", wal::APPLIED_KEY),
        why: format!("{} bytes where a u64 (8 bytes) belongs", bytes.len()),
    })?;
    Ok(u64::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Commits one batch of `plugin` writing `key` = `value`, durably.
    fn put(db: &Db, plugin: u32, key: &[u8], value: &[u8]) {
        let mut batch = db.begin_batch(plugin).unwrap();
        batch.begin_command();
        batch.write(plugin, "t", key, Some(value)).unwrap();
        batch.keep_command();
        batch.commit_durable().unwrap();
    }

    /// Log segments (not spares) beside the database at `path`.
    fn segments(path: &Path) -> usize {
        std::fs::read_dir(wal::dir_for(path))
            .map(|d| {
                d.filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".wal"))
                })
                .count()
            })
            .unwrap_or(0)
    }

    #[test]
    fn recovery_replays_into_memory_and_the_next_checkpoint_retires_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keel.redb");
        let policy = CheckpointPolicy {
            interval_ms: 3_600_000,
            ..CheckpointPolicy::default()
        };
        let db = Db::open_with(&path, Durability::Immediate, policy).unwrap();
        put(&db, 7, b"a", b"1");
        put(&db, 7, b"b", b"2");
        db.abandon_background(); // a power cut: nothing checkpointed
        drop(db);

        let db = Db::open_with(&path, Durability::Immediate, policy).unwrap();
        assert_eq!(db.recovered_batches(), 2);
        assert_eq!(
            db.view(7).unwrap().get(7, "t", b"b").unwrap(),
            Some(b"2".to_vec())
        );
        // The replayed records are still only in the log (and memory).
        assert!(segments(&path) > 0);
        put(&db, 7, b"c", b"3");
        db.abandon_background(); // a second cut before any checkpoint
        drop(db);

        let db = Db::open_with(&path, Durability::Immediate, policy).unwrap();
        assert_eq!(
            db.recovered_batches(),
            3,
            "the log kept the first replay's records"
        );
        db.checkpoint().unwrap();
        assert_eq!(
            segments(&path),
            0,
            "the checkpoint wrote them to redb and retired the log"
        );
        db.abandon_background();
        drop(db);

        let db = Db::open_with(&path, Durability::Immediate, policy).unwrap();
        assert_eq!(db.recovered_batches(), 0);
        let view = db.view(7).unwrap();
        for (k, v) in [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")] {
            assert_eq!(view.get(7, "t", k).unwrap(), Some(v.to_vec()));
        }
    }

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
