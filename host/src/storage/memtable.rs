//! One plugin's state in memory: every row of the plugin in an ordered
//! persistent map (`imbl::OrdMap`: a B-tree whose clones share structure,
//! so a snapshot costs O(1) and the next write copies only the nodes on
//! its path), the keys written since the last checkpoint, and the journal
//! entries and plugin record not yet in redb.
//!
//! Who touches it, and how long they wait:
//! - the plugin's batch takes the resident state at its start and returns
//!   it at its end ([`PluginState::take`], [`PluginState::give_back`]):
//!   writes go straight into the map (a removal removes — no tombstones
//!   for scans to skip), with an undo log;
//! - a reader (a query, a journal read) waits at most for the batch in
//!   progress, then clones the map (O(1)) and reads without any lock;
//! - the checkpointer does the same, takes the written keys, writes their
//!   values from its snapshot to redb, and then forgets the journal
//!   entries it wrote.
//!
//! No lock is held while plugin code runs, and no plugin waits for
//! another plugin's batch. The whole state of a plugin lives in memory
//! (loaded from redb when the plugin is first used); redb is its durable
//! copy.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use bytes::Bytes;

use super::read::{Base, ReadView};
use super::{StorageError, keys::plugin_end};

/// A plugin's rows: full state key → value.
/// Keys are `Bytes` so that the node copies after a snapshot clone them
/// by reference count, not by allocation.
pub(crate) type Rows = imbl::OrdMap<Bytes, Bytes>;

/// Journal entries by sequence (encoded, see [`super::journal`]).
pub(crate) type Journal = imbl::OrdMap<u64, Bytes>;

/// The state a batch works on.
pub(crate) struct Resident {
    /// Every row of the plugin.
    pub(crate) rows: Rows,
    /// Keys written since the last checkpoint took them (duplicates and
    /// keys whose write was undone are harmless: the checkpoint writes the
    /// current value).
    pub(crate) written: Vec<Bytes>,
    /// Journal entries not yet in redb.
    pub(crate) journal: Journal,
    /// The plugin record (bincode), if changed since redb got it.
    pub(crate) record: Option<Bytes>,
    /// The write-ahead log record of the last batch given back (0: none):
    /// what is visible here is durable once that record is.
    pub(crate) last_record: u64,
}

/// What a checkpoint writes of one plugin.
pub(crate) struct Pinned {
    pub(crate) plugin_id: u32,
    pub(crate) rows: Rows,
    pub(crate) keys: Vec<Bytes>,
    pub(crate) journal: Journal,
    pub(crate) record: Option<Bytes>,
    /// Durable once this log record is.
    pub(crate) last_record: u64,
}

/// One plugin's resident state.
pub(crate) struct PluginState {
    id: u32,
    inner: Mutex<Inner>,
    returned: Condvar,
}

struct Inner {
    /// `None` while a batch holds it.
    resident: Option<Resident>,
    /// The redb snapshot the journal and record fall back to.
    base: Arc<Base>,
}

impl PluginState {
    /// Loads the plugin's rows from `base` (redb's checkpointed state,
    /// after recovery).
    pub(crate) fn load(id: u32, base: Arc<Base>) -> Result<Self, StorageError> {
        let start = id.to_be_bytes().to_vec();
        let rows: Rows = base
            .rows_between(&start, &plugin_end(id))?
            .into_iter()
            .collect();
        Ok(Self {
            id,
            inner: Mutex::new(Inner {
                resident: Some(Resident {
                    rows,
                    written: Vec::new(),
                    journal: Journal::new(),
                    record: None,
                    last_record: 0,
                }),
                base,
            }),
            returned: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until no batch holds the resident state.
    fn lock_idle(&self) -> MutexGuard<'_, Inner> {
        let mut inner = self.lock();
        while inner.resident.is_none() {
            inner = self.returned.wait(inner).unwrap_or_else(|p| p.into_inner());
        }
        inner
    }

    /// Lends the resident state to a batch.
    pub(crate) fn take(&self) -> Resident {
        self.lock_idle().resident.take().expect("idle")
    }

    /// Takes the resident state back from a batch.
    pub(crate) fn give_back(&self, resident: Resident) {
        let mut inner = self.lock();
        debug_assert!(inner.resident.is_none(), "one batch at a time");
        inner.resident = Some(resident);
        drop(inner);
        self.returned.notify_all();
    }

    /// A consistent view of everything executed (waits for the batch in
    /// progress, if any), and the log record that makes it durable.
    pub(crate) fn view(&self) -> (ReadView, u64) {
        let inner = self.lock_idle();
        let r = inner.resident.as_ref().expect("idle");
        let view = ReadView::new(
            self.id,
            r.rows.clone(),
            r.journal.clone(),
            r.record.clone(),
            inner.base.clone(),
        );
        (view, r.last_record)
    }

    /// Takes what a checkpoint must write: a snapshot of the rows, the
    /// keys written since the last checkpoint, the journal entries and the
    /// record not yet in redb.
    pub(crate) fn pin(&self) -> Pinned {
        let mut inner = self.lock_idle();
        let r = inner.resident.as_mut().expect("idle");
        Pinned {
            plugin_id: self.id,
            rows: r.rows.clone(),
            keys: std::mem::take(&mut r.written),
            journal: r.journal.clone(),
            record: r.record.clone(),
            last_record: r.last_record,
        }
    }

    /// After a checkpoint's durable commit: forgets the journal entries and
    /// the record it wrote (redb at `base` holds them now).
    pub(crate) fn checkpointed(&self, pinned: &Pinned, base: Arc<Base>) {
        let mut inner = self.lock();
        inner.base = base;
        if let Some(r) = inner.resident.as_mut() {
            forget(r, pinned);
        } else {
            // A batch holds it: it is given back with the pinned entries
            // still in; forgetting them later is as good (they are in redb
            // and identical). Readers and the next checkpoint see them in
            // memory, which is consistent.
        }
    }

    /// After a failed checkpoint: the keys it took are written next time.
    pub(crate) fn unpin(&self, pinned: Pinned) {
        let mut inner = self.lock_idle();
        let r = inner.resident.as_mut().expect("idle");
        r.written.extend(pinned.keys);
    }
}

/// Drops from `r` the journal entries and record `pinned` wrote.
fn forget(r: &mut Resident, pinned: &Pinned) {
    if let Some((last, _)) = pinned.journal.get_max() {
        r.journal = r.journal.split(last).1;
    }
    if r.record == pinned.record {
        r.record = None;
    }
}
