//! A group commit: one redb write transaction holding a batch of commands'
//! effects and their journal entries.
//!
//! Each command runs inside the batch with an undo log: every write records
//! the old value, and a failed command (error, trap, out of fuel or memory)
//! is rolled back by restoring those values in reverse. Committed state
//! therefore only ever holds the effects of commands that succeeded.
//!
//! With immediate durability the batch also keeps a redo record of every
//! row it writes (truncated with the undo log) and is made durable by the
//! write-ahead log (see [`super::wal`]): one append + fsync per batch, then
//! a redb commit without fsync — or, when a checkpoint is due or the batch
//! stores a component, a durable redb commit instead.

use std::ops::Bound;

use redb::{ReadableTable, WriteTransaction};

use super::journal::{JournalEntry, encode_entry};
use super::keys::state_key;
use super::read::{ScanState, get_in, scan_chunk_in};
use super::wal::{APPLIED_KEY, Redo};
use super::{
    Db, JOURNAL, META, MODULES, PLUGINS, PluginRecord, STATE, StorageError, encode, redb_err,
};
use crate::state_hash::StateHash;

type StateTable<'txn> = redb::Table<'txn, &'static [u8], &'static [u8]>;

self_cell::self_cell!(
    struct TxnCell {
        owner: WriteTransaction,
        #[not_covariant]
        dependent: StateTable,
    }
);

/// One undo record: the full state key, the plugin table and key, and the
/// value before the write.
struct Undo {
    full_key: Vec<u8>,
    old: Option<Vec<u8>>,
}

/// A write transaction for one group commit, with per-command rollback.
pub struct Batch {
    cell: TxnCell,
    db: Db,
    undo: Vec<Undo>,
    /// State hash of the plugin being run, kept up to date on every write.
    hash: StateHash,
    hash_at_command_start: StateHash,
    written_bytes: u64,
    journal: Vec<((u32, u64), Vec<u8>)>,
    /// The redo record for the write-ahead log, when there is one.
    redo: Option<Redo>,
    redo_at_command_start: usize,
    /// Set when the batch must commit durably in redb: it stores a
    /// component, or it is an explicit checkpoint.
    durable_commit: bool,
}

impl Batch {
    pub(crate) fn new(txn: WriteTransaction, db: Db, logged: bool) -> Result<Self, StorageError> {
        let cell =
            TxnCell::try_new(txn, |txn| txn.open_table(STATE)).map_err(redb_err("open state"))?;
        Ok(Self {
            cell,
            db,
            undo: Vec::new(),
            hash: StateHash::EMPTY,
            hash_at_command_start: StateHash::EMPTY,
            written_bytes: 0,
            journal: Vec::new(),
            redo: logged.then(Redo::default),
            redo_at_command_start: 0,
            durable_commit: false,
        })
    }

    fn mark_command_start(&mut self) {
        self.hash_at_command_start = self.hash;
        if let Some(redo) = &self.redo {
            self.redo_at_command_start = redo.mark();
        }
    }

    /// Sets the state hash that writes update (the plugin's committed hash).
    pub fn set_state_hash(&mut self, hash: StateHash) {
        self.hash = hash;
        self.hash_at_command_start = hash;
    }

    /// The state hash including every write so far.
    pub fn state_hash(&self) -> StateHash {
        self.hash
    }

    /// Marks the start of a command: later writes can be undone as one.
    pub fn begin_command(&mut self) {
        self.undo.clear();
        self.mark_command_start();
        self.written_bytes = 0;
    }

    /// Keeps the current command's writes.
    pub fn keep_command(&mut self) {
        self.undo.clear();
        self.mark_command_start();
    }

    /// Undoes every write of the current command. An error here means the
    /// batch cannot be trusted: the caller must abandon the whole batch.
    pub fn undo_command(&mut self) -> Result<(), StorageError> {
        let undo = std::mem::take(&mut self.undo);
        self.cell
            .with_dependent_mut(|_, table| -> Result<(), StorageError> {
                for u in undo.into_iter().rev() {
                    match u.old {
                        Some(old) => {
                            table
                                .insert(u.full_key.as_slice(), old.as_slice())
                                .map_err(redb_err("undo"))?;
                        }
                        None => {
                            table
                                .remove(u.full_key.as_slice())
                                .map_err(redb_err("undo"))?;
                        }
                    }
                }
                Ok(())
            })?;
        self.hash = self.hash_at_command_start;
        if let Some(redo) = &mut self.redo {
            redo.truncate(self.redo_at_command_start);
        }
        Ok(())
    }

    /// Bytes (keys + values) written by the current command.
    pub fn command_written_bytes(&self) -> u64 {
        self.written_bytes
    }

    /// Reads a plugin key, seeing this batch's writes.
    pub fn get(
        &mut self,
        plugin_id: u32,
        table: &str,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StorageError> {
        self.cell
            .with_dependent_mut(|_, state| get_in(&*state, plugin_id, table, key))
    }

    /// Writes (`Some`) or removes (`None`) a plugin key; returns whether a
    /// value was there.
    pub fn write(
        &mut self,
        plugin_id: u32,
        table: &str,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<bool, StorageError> {
        let full_key = state_key(plugin_id, table, key);
        let old =
            self.cell
                .with_dependent_mut(|_, state| -> Result<Option<Vec<u8>>, StorageError> {
                    let old = match value {
                        Some(v) => state
                            .insert(full_key.as_slice(), v)
                            .map_err(redb_err("put"))?,
                        None => state
                            .remove(full_key.as_slice())
                            .map_err(redb_err("remove"))?,
                    };
                    Ok(old.map(|g| g.value().to_vec()))
                })?;
        if let Some(old) = &old {
            self.hash.remove(table, key, old);
        }
        if let Some(v) = value {
            self.hash.add(table, key, v);
            self.written_bytes += (key.len() + v.len()) as u64;
        } else {
            self.written_bytes += key.len() as u64;
        }
        let existed = old.is_some();
        if let Some(redo) = &mut self.redo {
            redo.state(&full_key, value);
        }
        self.undo.push(Undo { full_key, old });
        Ok(existed)
    }

    /// The next chunk of a scan, seeing this batch's writes.
    pub fn scan_chunk(
        &mut self,
        plugin_id: u32,
        scan: &mut ScanState,
        max_entries: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StorageError> {
        self.cell
            .with_dependent_mut(|_, state| scan_chunk_in(&*state, plugin_id, scan, max_entries))
    }

    /// Queues a journal entry; it is written with the batch.
    pub fn append_journal(&mut self, plugin_id: u32, entry: &JournalEntry) {
        self.journal
            .push(((plugin_id, entry.sequence), encode_entry(entry)));
    }

    /// Stores a plugin record.
    pub fn put_plugin(&mut self, record: &PluginRecord) -> Result<(), StorageError> {
        let bytes = encode(record);
        if let Some(redo) = &mut self.redo {
            redo.plugin(&record.name, &bytes);
        }
        self.cell.with_dependent_mut(|txn, _| {
            let mut table = txn.open_table(PLUGINS).map_err(redb_err("open plugins"))?;
            table
                .insert(record.name.as_str(), bytes.as_slice())
                .map_err(redb_err("put plugin"))?;
            Ok(())
        })
    }

    /// Makes this batch commit durably in redb itself (a checkpoint), not
    /// through the write-ahead log.
    pub(crate) fn require_durable_commit(&mut self) {
        self.durable_commit = true;
    }

    /// Stores component bytes under their hash (idempotent); the batch then
    /// commits durably in redb (too large and too rare for the log).
    pub fn put_module(&mut self, hash: &[u8; 32], bytes: &[u8]) -> Result<(), StorageError> {
        self.require_durable_commit();
        self.cell.with_dependent_mut(|txn, _| {
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
            Ok(())
        })
    }

    /// Highest plugin id in use, for allocating the next.
    pub fn max_plugin_id(&mut self) -> Result<u32, StorageError> {
        let mut max = 0;
        self.cell
            .with_dependent_mut(|txn, _| -> Result<(), StorageError> {
                let table = txn.open_table(PLUGINS).map_err(redb_err("open plugins"))?;
                for row in table.iter().map_err(redb_err("scan plugins"))? {
                    let (name, value) = row.map_err(redb_err("scan plugins"))?;
                    let record: PluginRecord =
                        super::decode(&format!("plugin record {}", name.value()), value.value())?;
                    max = max.max(record.id);
                }
                Ok(())
            })?;
        Ok(max)
    }

    /// Writes the journal entries and commits: as a durable redb commit
    /// when a checkpoint is due or required (a component stored, an
    /// explicit checkpoint); otherwise through the write-ahead log (append +
    /// fsync, then a redb commit without fsync), or without any fsync
    /// (relaxed durability).
    /// On failure the database refuses further writes.
    pub fn commit(self) -> Result<(), StorageError> {
        let db = self.db.clone();
        let result = self.commit_inner();
        if result.is_err() {
            db.poison();
        }
        result
    }

    fn commit_inner(mut self) -> Result<(), StorageError> {
        let db = self.db.clone();
        let journal = std::mem::take(&mut self.journal);
        let mut wal = db.wal();
        let durable = self.durable_commit || wal.as_ref().is_some_and(|w| w.checkpoint_due());
        let logged_as = wal.as_ref().filter(|_| !durable).map(|w| w.next_record());
        let redo = &mut self.redo;
        self.cell
            .with_dependent_mut(|txn, _| -> Result<(), StorageError> {
                let mut table = txn.open_table(JOURNAL).map_err(redb_err("open journal"))?;
                for (key, value) in &journal {
                    table
                        .insert(*key, value.as_slice())
                        .map_err(redb_err("append journal"))?;
                    if let Some(redo) = redo.as_mut() {
                        redo.journal(key.0, key.1, value);
                    }
                }
                if let Some(number) = logged_as {
                    let mut meta = txn.open_table(META).map_err(redb_err("open meta"))?;
                    meta.insert(APPLIED_KEY, number.to_le_bytes().as_slice())
                        .map_err(redb_err("write meta"))?;
                }
                Ok(())
            })?;
        let redo = self.redo.take();
        let mut txn = self.cell.into_owner();
        if durable {
            // A checkpoint: redb's own durable commit, which also retires
            // the log written before it.
            txn.set_durability(redb::Durability::Immediate)
                .map_err(|e| StorageError::Corrupt {
                    what: "durability".into(),
                    why: e.to_string(),
                })?;
            if let Some(w) = wal.as_mut() {
                w.begin_checkpoint();
            }
        } else if let Some(w) = wal.as_mut() {
            let redo = redo.expect("a logged batch keeps a redo record");
            w.append(redo.as_bytes())?;
        }
        txn.commit().map_err(redb_err("commit"))?;
        if let Some(w) = wal.as_mut().filter(|_| durable) {
            w.end_checkpoint();
        }
        Ok(())
    }

    /// Discards everything in the batch.
    pub fn abort(self) {
        let txn = self.cell.into_owner();
        if let Err(e) = txn.abort() {
            tracing::warn!(error = %e, "aborting a batch failed");
        }
    }
}

/// Bounds for a scan over plugin keys `start <= k < end`.
pub fn scan_bounds(
    start: Option<Vec<u8>>,
    end: Option<Vec<u8>>,
) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    (
        start.map_or(Bound::Unbounded, Bound::Included),
        end.map_or(Bound::Unbounded, Bound::Excluded),
    )
}
