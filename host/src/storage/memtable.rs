//! One plugin's state in memory: every row of the plugin in an ordered
//! persistent map (`imbl::OrdMap`: a B-tree whose clones share structure,
//! so a snapshot costs O(1) and the next write copies only the nodes on
//! its path), the writes (key and new value) since the last checkpoint,
//! and the journal entries and plugin record not yet in redb.
//!
//! Who touches it, and how long they wait:
//! - the plugin's batch takes the resident state at its start and returns
//!   it at its end ([`PluginState::take`], [`PluginState::give_back`]):
//!   writes go straight into the map (a removal removes — no tombstones
//!   for scans to skip), with an undo log;
//! - a reader (a query, a journal read) waits at most for the batch in
//!   progress, then clones the map (O(1)) and reads without any lock;
//! - the checkpointer waits the same way, takes the writes since the last
//!   checkpoint (each key with the value it was given), writes them to
//!   redb, and then forgets the journal entries it wrote. It does not
//!   snapshot the map — a snapshot would make the next write to every
//!   node copy that node — unless the plugin is over its resident budget
//!   and eviction needs one.
//!
//! - after a checkpoint, the checkpointer evicts clean rows while the
//!   resident rows exceed the plugin's budget ([`PluginState::evict`]),
//!   in short turns of the lock.
//!
//! No lock is held while plugin code runs, and no plugin waits for
//! another plugin's batch. A plugin's state lives in memory (loaded from
//! redb when the plugin is first used) as long as it fits its budget;
//! past that, rows not used lately are evicted and read through from redb
//! ([`super::rows`]).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use bytes::Bytes;

use super::read::{Base, ReadView};
use super::row_bytes::RowBytes;
use super::rows::RowSet;
use super::{StorageError, keys::plugin_end};

pub(crate) use super::journal_tail::JournalTail as Journal;

/// The state a batch works on.
pub(crate) struct Resident {
    /// The plugin's rows (resident, and cold ones read through).
    pub(crate) rows: RowSet,
    /// The number of the next checkpoint (removals are marked with it).
    pub(crate) epoch: u64,
    /// Resident keys read since the last eviction (kept only while rows
    /// are cold): eviction spares them.
    pub(crate) touched: Vec<RowBytes>,
    /// Writes since the last checkpoint took them, oldest first: each
    /// key with the value it was given (`None`: removed). A key's last
    /// write is its value now: the writes of an undone command are cut
    /// off ([`super::batch::Batch`] truncates this list with its undo log).
    pub(crate) written: Vec<Write>,
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
    /// A snapshot of the rows, taken only when the plugin is over its
    /// resident budget (eviction chooses from it).
    pub(crate) rows: Option<RowSet>,
    /// The checkpoint's number (see [`Resident::epoch`]).
    pub(crate) epoch: u64,
    /// The writes since the last checkpoint (see [`Resident::written`]).
    pub(crate) writes: Vec<Write>,
    pub(crate) journal: Journal,
    pub(crate) record: Option<Bytes>,
    /// Durable once this log record is.
    pub(crate) last_record: u64,
}

/// One write: a full state key and the value it was given (`None`:
/// removed).
pub(crate) type Write = (RowBytes, Option<RowBytes>);

/// One plugin's resident state.
pub(crate) struct PluginState {
    id: u32,
    inner: Mutex<Inner>,
    returned: Condvar,
}

struct Inner {
    /// `None` while a batch holds it.
    resident: Option<Resident>,
    /// Where the next eviction sweep starts (a full state key).
    evict_cursor: RowBytes,
}

/// Resident keys read that are remembered for the next eviction, at most.
pub(crate) const TOUCHED_MAX: usize = 1 << 20;

/// Rows evicted per turn of the lock.
const EVICT_TURN_ROWS: usize = 2048;

impl PluginState {
    /// Loads the plugin's rows from `base` (redb's checkpointed state,
    /// after recovery), as many as `budget` bytes hold (see
    /// [`super::rows::row_bytes`]).
    pub(crate) fn load(id: u32, base: Arc<Base>, budget: u64) -> Result<Self, StorageError> {
        let start = id.to_be_bytes().to_vec();
        let rows = RowSet::load(base, &start, &plugin_end(id), budget)?;
        Ok(Self {
            id,
            inner: Mutex::new(Inner {
                resident: Some(Resident {
                    rows,
                    epoch: 1,
                    touched: Vec::new(),
                    written: Vec::new(),
                    journal: Journal::new(),
                    record: None,
                    last_record: 0,
                }),
                evict_cursor: RowBytes::EMPTY,
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
        let view = ReadView::new(self.id, r.rows.clone(), r.journal.clone(), r.record.clone());
        (view, r.last_record)
    }

    /// Takes what a checkpoint must write: the writes since the last
    /// checkpoint, the journal entries and the record not yet in redb;
    /// and a snapshot of the rows if they exceed `budget` bytes.
    pub(crate) fn pin(&self, budget: u64) -> Pinned {
        let mut inner = self.lock_idle();
        let r = inner.resident.as_mut().expect("idle");
        let epoch = r.epoch;
        r.epoch += 1;
        Pinned {
            plugin_id: self.id,
            rows: (r.rows.hot_bytes() > budget).then(|| r.rows.clone()),
            epoch,
            writes: std::mem::take(&mut r.written),
            journal: r.journal.clone(),
            record: r.record.clone(),
            last_record: r.last_record,
        }
    }

    /// After a checkpoint's durable commit: reads fall back to `base`
    /// (what it wrote) from now on, and the journal entries, record and
    /// removal marks it wrote are forgotten. Waits for the batch in
    /// progress.
    pub(crate) fn checkpointed(&self, pinned: &Pinned, base: Arc<Base>) {
        let mut inner = self.lock_idle();
        let r = inner.resident.as_mut().expect("idle");
        r.rows.checkpointed(base, pinned.epoch);
        forget(r, pinned);
    }

    /// After [`PluginState::checkpointed`]: while the resident rows exceed
    /// `budget` bytes, evicts rows that are clean (their value is the one
    /// `pinned` wrote) and not read or written lately, sweeping in key
    /// order from where the last eviction stopped, down to 90 % of the
    /// budget. The victims are chosen without the lock; they leave in
    /// turns of [`EVICT_TURN_ROWS`], so a batch waits for one turn at
    /// most. Returns how many rows left.
    pub(crate) fn evict(&self, pinned: &Pinned, budget: u64) -> u64 {
        let Some(pinned_rows) = &pinned.rows else {
            // Within its budget when pinned: the next checkpoint looks again.
            return 0;
        };
        let (over, touched, cursor) = {
            let mut inner = self.lock_idle();
            let cursor = inner.evict_cursor.clone();
            let r = inner.resident.as_mut().expect("idle");
            let hot = r.rows.hot_bytes();
            if hot <= budget {
                r.touched = Vec::new();
                return 0;
            }
            (
                hot - budget / 10 * 9,
                std::mem::take(&mut r.touched),
                cursor,
            )
        };
        // Spare what was read or written since the last eviction; if that
        // is not enough, take from it too (the budget is a bound).
        let recent: std::collections::HashSet<&[u8]> = touched
            .iter()
            .map(|k| k.as_ref())
            .chain(pinned.writes.iter().map(|(k, _)| k.as_ref()))
            .collect();
        let mut victims: Vec<(RowBytes, RowBytes)> = Vec::new();
        let mut freed = 0u64;
        for spare_recent in [true, false] {
            let hot = pinned_rows.hot();
            let after = hot.range::<_, [u8]>((
                std::ops::Bound::Excluded(cursor.as_ref()),
                std::ops::Bound::Unbounded,
            ));
            let before = hot.range::<_, [u8]>((
                std::ops::Bound::Unbounded,
                std::ops::Bound::Included(cursor.as_ref()),
            ));
            for (k, v) in after.chain(before) {
                if freed >= over {
                    break;
                }
                if spare_recent == recent.contains(k.as_ref()) {
                    continue;
                }
                freed += super::rows::row_bytes(k, v);
                victims.push((k.clone(), v.clone()));
            }
            if freed >= over {
                break;
            }
        }
        let mut evicted = 0;
        for turn in victims.chunks(EVICT_TURN_ROWS) {
            let mut inner = self.lock_idle();
            let r = inner.resident.as_mut().expect("idle");
            let epoch = r.epoch;
            for (k, clean) in turn {
                let dirty = r.written.iter().map(|(k, _)| k);
                if r.rows.evict_if_clean(k, clean, dirty, epoch) {
                    evicted += 1;
                }
            }
            if let Some((k, _)) = turn.last() {
                inner.evict_cursor = k.clone();
            }
        }
        evicted
    }

    /// After a failed checkpoint: the writes it took are written next
    /// time (before the writes made since, which are newer).
    pub(crate) fn unpin(&self, pinned: Pinned) {
        let mut inner = self.lock_idle();
        let r = inner.resident.as_mut().expect("idle");
        let newer = std::mem::replace(&mut r.written, pinned.writes);
        r.written.extend(newer);
    }
}

/// Drops from `r` the journal entries and record `pinned` wrote.
fn forget(r: &mut Resident, pinned: &Pinned) {
    if let Some(last) = pinned.journal.last_sequence() {
        r.journal.forget_through(last);
    }
    if r.record == pinned.record {
        r.record = None;
    }
}
