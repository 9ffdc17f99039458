//! A group commit: one plugin's batch of commands, executed against its
//! in-memory active layer (see [`super::memtable`]), made durable by one
//! write-ahead log record and handed back to the layers.
//!
//! Each command runs with an undo log: every write records what the active
//! layer held for the key before, and a failed command (error, trap, out of
//! fuel or memory) is rolled back by restoring those entries in reverse.
//! Committed state therefore only ever holds the effects of commands that
//! succeeded. redb is not touched: the checkpointer writes the layers to
//! it later, in the background.
//!
//! With immediate durability the batch keeps a redo record of every row it
//! writes (truncated with the undo log) and [`Batch::commit`] appends it,
//! with the batch's journal entries and plugin record, to the write-ahead
//! log with one fsync before anything is acknowledged.

use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;

use super::journal::{JournalEntry, encode_entry};
use super::keys::state_key;
use super::layer::{Layer, Slot};
use super::memtable::PluginLayers;
use super::read::{ReadView, ScanState, scan_chunk_in};
use super::wal::Redo;
use super::{Db, PluginRecord, StorageError, encode};
use crate::state_hash::StateHash;

/// One undo record: the full state key and what the active layer held for
/// it before the write (`None`: nothing).
struct Undo {
    full_key: Vec<u8>,
    before: Option<Slot>,
}

/// One plugin's group commit, with per-command rollback.
pub struct Batch {
    db: Db,
    layers: Arc<PluginLayers>,
    /// The active layer, lent by `layers` until commit or abort.
    active: Option<Layer>,
    /// Everything below the active layer, as of the batch's start.
    below: ReadView,
    /// Every write of the batch, oldest first; the current command's start
    /// at `command_start`.
    undo: Vec<Undo>,
    command_start: usize,
    /// State hash of the plugin, kept up to date on every write.
    hash: StateHash,
    hash_at_command_start: StateHash,
    written_bytes: u64,
    batch_bytes: u64,
    journal: Vec<(u64, Bytes)>,
    record: Option<Bytes>,
    /// The redo record for the write-ahead log, when there is one.
    redo: Option<Redo>,
    redo_at_command_start: usize,
}

impl Batch {
    pub(crate) fn new(db: Db, layers: Arc<PluginLayers>, logged: bool) -> Self {
        let (active, below) = layers.take_active();
        Self {
            db,
            layers,
            active: Some(active),
            below,
            undo: Vec::new(),
            command_start: 0,
            hash: StateHash::EMPTY,
            hash_at_command_start: StateHash::EMPTY,
            written_bytes: 0,
            batch_bytes: 0,
            journal: Vec::new(),
            record: None,
            redo: logged.then(Redo::default),
            redo_at_command_start: 0,
        }
    }

    fn active(&mut self) -> &mut Layer {
        self.active
            .as_mut()
            .expect("the active layer is lent until commit")
    }

    fn mark_command_start(&mut self) {
        self.command_start = self.undo.len();
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
        self.mark_command_start();
        self.written_bytes = 0;
    }

    /// Keeps the current command's writes.
    pub fn keep_command(&mut self) {
        self.mark_command_start();
    }

    /// Undoes every write since `mark` (newest first).
    fn undo_to(&mut self, mark: usize) {
        let undo = self.undo.split_off(mark);
        let active = self.active.as_mut().expect("lent until commit");
        for u in undo.into_iter().rev() {
            active.restore_row(u.full_key, u.before);
        }
    }

    /// Undoes every write of the current command.
    pub fn undo_command(&mut self) -> Result<(), StorageError> {
        self.undo_to(self.command_start);
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

    fn get_full(&self, full_key: &[u8]) -> Result<Option<Bytes>, StorageError> {
        match self.active.as_ref().and_then(|a| a.rows.get(full_key)) {
            Some(slot) => Ok(slot.clone()),
            None => self.below.get_full(full_key),
        }
    }

    /// Reads a plugin key, seeing this batch's writes.
    pub fn get(
        &mut self,
        plugin_id: u32,
        table: &str,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .get_full(&state_key(plugin_id, table, key))?
            .map(|v| v.to_vec()))
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
        let old = self.get_full(&full_key)?;
        if let Some(old) = &old {
            self.hash.remove(table, key, old);
        }
        if let Some(v) = value {
            self.hash.add(table, key, v);
            self.written_bytes += (key.len() + v.len()) as u64;
        } else {
            self.written_bytes += key.len() as u64;
        }
        self.batch_bytes += (full_key.len() + value.map_or(0, <[u8]>::len)) as u64;
        if let Some(redo) = &mut self.redo {
            redo.state(&full_key, value);
        }
        let before = self
            .active()
            .put_row(full_key.clone(), value.map(Bytes::copy_from_slice));
        self.undo.push(Undo { full_key, before });
        Ok(old.is_some())
    }

    /// The next chunk of a scan, seeing this batch's writes.
    pub fn scan_chunk(
        &mut self,
        plugin_id: u32,
        scan: &mut ScanState,
        max_entries: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StorageError> {
        scan_chunk_in(
            self.active.as_ref(),
            &self.below,
            plugin_id,
            scan,
            max_entries,
        )
    }

    /// Queues a journal entry; it is written with the batch.
    pub fn append_journal(&mut self, plugin_id: u32, entry: &JournalEntry) {
        let bytes = Bytes::from(encode_entry(entry));
        self.batch_bytes += bytes.len() as u64;
        if let Some(redo) = &mut self.redo {
            redo.journal(plugin_id, entry.sequence, &bytes);
        }
        self.journal.push((entry.sequence, bytes));
    }

    /// Stores the plugin record (once, at the end of the batch).
    pub fn put_plugin(&mut self, record: &PluginRecord) -> Result<(), StorageError> {
        let bytes = Bytes::from(encode(record));
        if let Some(redo) = &mut self.redo {
            redo.plugin(&record.name, &bytes);
        }
        self.record = Some(bytes);
        Ok(())
    }

    /// Makes the batch durable — one write-ahead log record and one fsync
    /// with immediate durability — and hands its layer back. On failure
    /// the batch's writes are undone and the database refuses further
    /// writes.
    pub fn commit(mut self) -> Result<(), StorageError> {
        let logged = match self.redo.take() {
            Some(redo) => self.db.log(redo.as_bytes()),
            None => Ok(()),
        };
        if let Err(e) = logged {
            self.db.poison();
            self.abort();
            return Err(e);
        }
        let journal = std::mem::take(&mut self.journal);
        let record = self.record.take();
        let active = self.active();
        for (sequence, entry) in journal {
            active.journal.insert(sequence, entry);
        }
        if record.is_some() {
            active.record = record;
        }
        let layer = self.active.take().expect("lent until commit");
        self.layers.return_active(layer);
        self.db.written(self.batch_bytes);
        Ok(())
    }

    /// Discards everything in the batch.
    pub fn abort(mut self) {
        self.undo_to(0);
        if let Some(layer) = self.active.take() {
            self.layers.return_active(layer);
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        // A batch dropped without commit or abort (a panic unwinding, a
        // halted actor) still returns the layer, with its writes undone,
        // so that readers and the checkpointer are not left waiting.
        if self.active.is_some() {
            self.undo_to(0);
            if let Some(layer) = self.active.take() {
                self.layers.return_active(layer);
            }
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
