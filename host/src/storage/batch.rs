//! A group commit: one plugin's batch of commands, executed against its
//! resident in-memory state (see [`super::memtable`]), made durable by one
//! write-ahead log record and handed back.
//!
//! Each command runs with an undo log: every write records the value it
//! replaced, and a failed command (error, trap, out of fuel or memory) is
//! rolled back by restoring those values in reverse.
//! Committed state therefore only ever holds the effects of commands that
//! succeeded. The undo log also gives the state hash: once per batch, each
//! key the kept commands wrote leaves the hash with its value before the
//! batch and enters it with its value after (a key written a hundred times
//! is hashed twice, a key written back to its old value not at all). redb
//! is not touched: the checkpointer writes the changed rows to it later,
//! in the background.
//!
//! With immediate durability the batch keeps a redo record of every row it
//! writes (truncated with the undo log) and [`Batch::commit`] appends it,
//! with the batch's journal entries and plugin record, to the write-ahead
//! log with one fsync before anything is acknowledged.

use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;

use super::journal::{JournalEntry, encode_entry};
use super::keys::{split_state_key, state_row_key};
use super::memtable::{PluginState, Resident, TOUCHED_MAX};
use super::read::{ScanChunk, ScanState, scan_chunk_in};
use super::row_bytes::RowBytes;
use super::rows::Rows;
use super::wal::Redo;
use super::{Db, PluginRecord, StorageError, encode};
use crate::state_hash::StateHash;

/// One undo record: the full state key and the value before the write.
struct Undo {
    full_key: RowBytes,
    before: Option<RowBytes>,
}

/// One plugin's group commit, with per-command rollback.
pub struct Batch {
    db: Db,
    state: Arc<PluginState>,
    /// The plugin's resident state, lent by `state` until commit or abort.
    resident: Option<Resident>,
    /// `resident.written`'s length at the batch's start and at the
    /// current command's start (an undone command's writes are cut off).
    written_at_start: usize,
    written_at_command_start: usize,
    /// Every write of the batch, oldest first; the current command's start
    /// at `command_start`.
    undo: Vec<Undo>,
    command_start: usize,
    /// The plugin's state hash before the batch (see [`Batch::state_hash`]).
    hash_at_start: StateHash,
    written_bytes: u64,
    batch_bytes: u64,
    journal: Vec<(u64, Bytes)>,
    record: Option<Bytes>,
    /// The redo record for the write-ahead log, when there is one.
    redo: Option<Redo>,
    redo_at_command_start: usize,
}

impl Batch {
    pub(crate) fn new(db: Db, state: Arc<PluginState>, logged: bool) -> Self {
        let resident = state.take();
        Self {
            db,
            state,
            written_at_start: resident.written.len(),
            written_at_command_start: resident.written.len(),
            resident: Some(resident),
            undo: Vec::new(),
            command_start: 0,
            hash_at_start: StateHash::EMPTY,
            written_bytes: 0,
            batch_bytes: 0,
            journal: Vec::new(),
            record: None,
            redo: logged.then(Redo::default),
            redo_at_command_start: 0,
        }
    }

    fn resident(&mut self) -> &mut Resident {
        self.resident
            .as_mut()
            .expect("the resident state is lent until commit")
    }

    /// The resident rows, as this batch's writes left them.
    fn hot_rows(&self) -> &Rows {
        self.resident
            .as_ref()
            .expect("the resident state is lent until commit")
            .rows
            .hot()
    }

    fn mark_command_start(&mut self) {
        self.command_start = self.undo.len();
        self.written_at_command_start = self.resident().written.len();
        if let Some(redo) = &self.redo {
            self.redo_at_command_start = redo.mark();
        }
    }

    /// Sets the state hash before the batch (the plugin's committed hash).
    pub fn set_state_hash(&mut self, hash: StateHash) {
        self.hash_at_start = hash;
    }

    /// The state hash including every kept write so far: the hash before
    /// the batch, and for each key written since, its value before the
    /// batch (its first undo record's) out and its value now (its last
    /// write's) in. Both come from the batch's own lists (its undo records
    /// and the writes beside them, one each per write), so no row is
    /// looked up in the map.
    pub fn state_hash(&self) -> StateHash {
        let resident = self
            .resident
            .as_ref()
            .expect("the resident state is lent until commit");
        let written = &resident.written[self.written_at_start..];
        debug_assert_eq!(written.len(), self.undo.len(), "one undo record per write");
        let mut order: Vec<usize> = (0..self.undo.len()).collect();
        // Stable: of one key's writes, the oldest stays first.
        order.sort_by(|&a, &b| self.undo[a].full_key.cmp(&self.undo[b].full_key));
        let mut hash = self.hash_at_start;
        for same_key in order.chunk_by(|&a, &b| self.undo[a].full_key == self.undo[b].full_key) {
            let first = &self.undo[same_key[0]];
            let now = written[same_key[same_key.len() - 1]].1.as_deref();
            if first.before.as_deref() == now {
                continue;
            }
            let (table, key) = split_state_key(&first.full_key)
                .expect("a state key written through Batch::write has a table");
            if let Some(before) = &first.before {
                hash.remove(table, key, before);
            }
            if let Some(now) = now {
                hash.add(table, key, now);
            }
        }
        hash
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
        let resident = self.resident.as_mut().expect("lent until commit");
        for u in undo.into_iter().rev() {
            resident.rows.restore(u.full_key, u.before, resident.epoch);
        }
    }

    /// Undoes every write of the current command.
    pub fn undo_command(&mut self) -> Result<(), StorageError> {
        self.undo_to(self.command_start);
        let mark = self.written_at_command_start;
        self.resident().written.truncate(mark);
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
        self.get_row(state_row_key(plugin_id, table, key))
    }

    /// [`Batch::get`] by full state key (`keys::state_row_key`).
    pub(crate) fn get_row(&mut self, full_key: RowBytes) -> Result<Option<Vec<u8>>, StorageError> {
        let resident = self.resident.as_mut().expect("lent until commit");
        if resident.rows.is_complete() {
            return Ok(resident.rows.hot().get(&full_key).map(|v| v.to_vec()));
        }
        let value = resident.rows.get_and_keep(&full_key)?;
        if value.is_some() && resident.touched.len() < TOUCHED_MAX {
            resident.touched.push(full_key);
        }
        Ok(value.map(|v| v.to_vec()))
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
        self.write_row(
            state_row_key(plugin_id, table, key),
            key.len(),
            value.map(RowBytes::copy_from_slice),
        )
    }

    /// [`Batch::write`] by full state key (`keys::state_row_key`);
    /// `key_len` is the length of the plugin's own key, which is what
    /// [`Batch::command_written_bytes`] counts.
    pub(crate) fn write_row(
        &mut self,
        full_key: RowBytes,
        key_len: usize,
        new_value: Option<RowBytes>,
    ) -> Result<bool, StorageError> {
        let value_len = new_value.as_ref().map_or(0, |v| v.len());
        let resident = self.resident.as_mut().expect("lent until commit");
        let old = match &new_value {
            Some(v) => resident.rows.insert(full_key.clone(), v.clone())?,
            None => resident.rows.remove(full_key.as_ref(), resident.epoch)?,
        };
        if let Some(redo) = &mut self.redo {
            redo.state(&full_key, new_value.as_deref());
        }
        resident.written.push((full_key.clone(), new_value));
        self.written_bytes += (key_len + value_len) as u64;
        self.batch_bytes += (full_key.len() + value_len) as u64;
        let existed = old.is_some();
        self.undo.push(Undo {
            full_key,
            before: old,
        });
        Ok(existed)
    }

    /// Every row the batch has written so far that a kept command wrote,
    /// with its value now (`None`: removed): `table ‖ 00 ‖ key` → value.
    /// A key written back to its old value is still listed. For dry runs,
    /// which run one command per batch.
    pub fn net_writes(&self) -> std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        // Every key written is resident or marked removed.
        let rows = self.hot_rows();
        self.undo
            .iter()
            .map(|u| {
                (
                    u.full_key[4..].to_vec(),
                    rows.get(u.full_key.as_ref()).map(|v| v.to_vec()),
                )
            })
            .collect()
    }

    /// Makes the plugin's rows exactly `target` — ascending
    /// `(table ‖ 00 ‖ key, value)` pairs, as in a snapshot: removes every
    /// row `target` lacks and writes every row whose value differs, each
    /// through [`Batch::write`] (undo log, state hash, redo record).
    /// Returns (rows removed, rows written).
    pub fn replace_rows(
        &mut self,
        plugin_id: u32,
        target: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<(u64, u64), StorageError> {
        let corrupt = |why: &str| StorageError::Corrupt {
            what: "a row to restore".into(),
            why: why.into(),
        };
        let current = self.resident().rows.clone();
        let prefix = plugin_id.to_be_bytes();
        let end = super::keys::plugin_end(plugin_id);
        let mut present: Vec<RowBytes> = Vec::new();
        current.for_each_in(
            (
                Bound::Included(prefix.as_slice()),
                Bound::Excluded(end.as_slice()),
            ),
            true,
            |k, _| {
                present.push(k.clone());
                true
            },
        )?;
        let mut removed = 0;
        for full in &present {
            let Some(key) = full.strip_prefix(prefix.as_slice()) else {
                continue;
            };
            if target
                .binary_search_by(|(k, _)| k.as_slice().cmp(key))
                .is_err()
            {
                let (table, plugin_key) =
                    super::keys::split_state_key(full).ok_or_else(|| corrupt("no table"))?;
                self.write(plugin_id, table, plugin_key, None)?;
                removed += 1;
            }
        }
        let mut written = 0;
        for (key, value) in target {
            let mut full = prefix.to_vec();
            full.extend_from_slice(key);
            if current.get(full.as_slice())?.0.as_deref() == Some(value.as_slice()) {
                continue;
            }
            let nul = key
                .iter()
                .position(|&b| b == 0)
                .ok_or_else(|| corrupt("no table"))?;
            let table = std::str::from_utf8(&key[..nul]).map_err(|_| corrupt("table not UTF-8"))?;
            super::keys::validate_table_name(table).map_err(|_| corrupt("bad table name"))?;
            self.write(plugin_id, table, &key[nul + 1..], Some(value))?;
            written += 1;
        }
        Ok((removed, written))
    }

    /// The next chunk of a scan, seeing this batch's writes.
    pub fn scan_chunk(
        &mut self,
        plugin_id: u32,
        scan: &mut ScanState,
        max_entries: usize,
    ) -> Result<ScanChunk, StorageError> {
        scan_chunk_in(
            &self.resident.as_ref().expect("lent until commit").rows,
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

    /// Appends the batch's record to the write-ahead log (with immediate
    /// durability) and hands its state back; returns the record's number,
    /// for [`Db::wait_durable`]: nothing of the batch may be acknowledged
    /// before that returns. The next batch may run meanwhile (its record
    /// follows this one, and readers wait for durability too). On failure
    /// the batch's writes are undone and the database refuses further
    /// writes.
    pub fn commit(mut self) -> Result<u64, StorageError> {
        let logged = match self.redo.take() {
            Some(redo) => self.db.append(redo.into_bytes()),
            None => Ok(0),
        };
        let record = match logged {
            Ok(record) => record,
            Err(e) => {
                self.db.poison();
                self.abort();
                return Err(e);
            }
        };
        let journal = std::mem::take(&mut self.journal);
        let plugin_record = self.record.take();
        let resident = self.resident();
        for (sequence, entry) in journal {
            resident.journal.insert(sequence, entry);
        }
        if plugin_record.is_some() {
            resident.record = plugin_record;
        }
        if record > 0 {
            resident.last_record = record;
        }
        let resident = self.resident.take().expect("lent until commit");
        self.state.give_back(resident);
        self.db.written(self.batch_bytes);
        Ok(record)
    }

    /// [`Batch::commit`], then waits until the batch is durable.
    pub fn commit_durable(self) -> Result<(), StorageError> {
        let db = self.db.clone();
        let record = self.commit()?;
        db.wait_durable(record)
    }

    /// Discards everything in the batch.
    pub fn abort(mut self) {
        self.give_back_undone();
    }

    /// Undoes every write of the batch and gives the state back.
    fn give_back_undone(&mut self) {
        if self.resident.is_none() {
            return;
        }
        self.undo_to(0);
        let mut resident = self.resident.take().expect("checked above");
        resident.written.truncate(self.written_at_start);
        self.state.give_back(resident);
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        // A batch dropped without commit or abort (a panic unwinding, a
        // halted actor) still gives the state back, with its writes undone,
        // so that readers and the checkpointer are not left waiting.
        self.give_back_undone();
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
