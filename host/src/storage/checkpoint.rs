//! The checkpointer: writes the plugins' in-memory layers to redb in the
//! background and retires the write-ahead log they came from.
//!
//! A checkpoint
//! 1. cuts the log: `R` is the last record appended so far, and later
//!    records go to a new segment;
//! 2. pins every plugin (each waits at most until its batch in progress
//!    ends): the writes since the last checkpoint (each key with the value
//!    it was given), its journal entries and record not yet in redb (and,
//!    only for a plugin over its resident budget, an O(1) snapshot of its
//!    rows for eviction); every record up to `R` is in a pin, since a
//!    batch gives its state back only after its record is appended;
//! 3. writes each written key's last value (or removes it) — once, in
//!    key order, however often it was written — with the journal
//!    entries, plugin records and `meta.wal_applied = R`, in one durable
//!    redb commit, on this thread, while every plugin keeps executing;
//! 4. forgets the journal entries it wrote, moves each plugin's redb
//!    snapshot forward, and retires the log segments up to `R` (kept as
//!    spares for reuse, or deleted: see [`super::wal`]).
//!
//! A pin may also hold batches logged after `R`; recovery applies records
//! after `R` again, and since records hold absolute rows, applying them
//! over a state that already has some of them ends in the same state.
//!
//! It runs when [`CheckpointPolicy::log_bytes_max`] bytes were written,
//! or some bytes and [`CheckpointPolicy::interval_ms`] has passed, on
//! [`super::Db::checkpoint`], and at clean shutdown; one at a time, and the
//! background thread checks again that one is due once it is its turn (a
//! checkpoint asked for meanwhile may have written everything). A batch that finds
//! [`BACKLOG_FACTOR`] times the byte budget unwritten waits for the
//! checkpoint in progress (backpressure), so memory and recovery time stay
//! bounded by configuration when the disk is slower than the commands.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::ReadableTable;

use super::memtable::{Pinned, Write};
use super::read::Base;
use super::wal::{APPLIED_KEY, CheckpointPolicy};
use super::{DbInner, JOURNAL, META, PLUGINS, PluginRecord, STATE, StorageError, decode, redb_err};

/// Unwritten bytes this many times past `log_bytes_max` hold new batches
/// back.
pub(crate) const BACKLOG_FACTOR: u64 = 4;

/// When checkpoints run, and the background thread that runs them.
pub(crate) struct Schedule {
    pub(crate) policy: CheckpointPolicy,
    state: Mutex<State>,
    wake: Condvar,
    done: Condvar,
    /// One checkpoint at a time.
    running: Mutex<()>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct State {
    /// Bytes written in memory since the last checkpoint began.
    pending: u64,
    last: Instant,
    stop: bool,
    completed: u64,
    /// Resident rows evicted after checkpoints.
    evicted: u64,
}

impl Schedule {
    pub(crate) fn new(policy: CheckpointPolicy) -> Self {
        Self {
            policy,
            state: Mutex::new(State {
                pending: 0,
                last: Instant::now(),
                stop: false,
                completed: 0,
                evicted: 0,
            }),
            wake: Condvar::new(),
            done: Condvar::new(),
            running: Mutex::new(()),
            thread: Mutex::new(None),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checkpoints completed.
    pub(crate) fn completed(&self) -> u64 {
        self.state().completed
    }

    /// Resident rows evicted since start.
    pub(crate) fn evicted(&self) -> u64 {
        self.state().evicted
    }

    /// Holds other checkpoints off until dropped.
    fn one_at_a_time(&self) -> MutexGuard<'_, ()> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn due(&self, state: &State) -> bool {
        state.pending >= self.policy.log_bytes_max
            || (state.pending > 0
                && state.last.elapsed() >= Duration::from_millis(self.policy.interval_ms))
    }

    /// Counts bytes a batch added; wakes the thread when a checkpoint is
    /// due, and waits while the backlog is past [`BACKLOG_FACTOR`] times
    /// the budget (unless `poisoned` or stopping).
    pub(crate) fn written(&self, bytes: u64, poisoned: impl Fn() -> bool) {
        let mut state = self.state();
        state.pending += bytes;
        if state.pending >= self.policy.log_bytes_max {
            self.wake.notify_one();
        }
        let backlog = self.policy.log_bytes_max.saturating_mul(BACKLOG_FACTOR);
        while state.pending > backlog && !state.stop && !poisoned() {
            state = self
                .done
                .wait_timeout(state, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Counts bytes put in memory without a batch (the log replayed at
    /// open), never waiting.
    pub(crate) fn add_pending(&self, bytes: u64) {
        self.state().pending += bytes;
    }

    /// Asks the thread to stop (does not wait).
    pub(crate) fn stop(&self) {
        self.state().stop = true;
        self.wake.notify_all();
        self.done.notify_all();
    }

    /// Stops the thread and waits for it (and any checkpoint it runs).
    pub(crate) fn stop_and_join(&self) {
        self.stop();
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle
            && handle.thread().id() != std::thread::current().id()
            && handle.join().is_err()
        {
            tracing::error!("the checkpointer panicked");
        }
    }
}

/// Starts the background checkpointer of `db`. It holds the database only
/// while a checkpoint runs.
pub(crate) fn spawn(db: &Arc<DbInner>) -> std::io::Result<()> {
    let weak: Weak<DbInner> = Arc::downgrade(db);
    let schedule = db.schedule.clone();
    let thread_schedule = schedule.clone();
    let handle = std::thread::Builder::new()
        .name("keel-checkpoint".into())
        .spawn(move || background(&thread_schedule, &weak))?;
    *schedule.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
    Ok(())
}

fn background(schedule: &Schedule, db: &Weak<DbInner>) {
    loop {
        {
            let mut state = schedule.state();
            loop {
                if state.stop {
                    return;
                }
                if schedule.due(&state) {
                    break;
                }
                let interval = Duration::from_millis(schedule.policy.interval_ms);
                let wait = interval
                    .saturating_sub(state.last.elapsed())
                    .clamp(Duration::from_millis(1), Duration::from_secs(1));
                state = schedule
                    .wake
                    .wait_timeout(state, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
        let Some(db) = db.upgrade() else { return };
        if let Err(e) = run_if_due(&db) {
            if matches!(e, StorageError::Poisoned) {
                // Poisoned by whoever failed (or by a simulated crash):
                // they reported it.
                return;
            }
            tracing::error!(error = %e, "a checkpoint failed; the database refuses writes until restarted");
            // Poisoned: nothing more to write until a restart.
            return;
        }
    }
}

/// Runs one checkpoint now (see the module docs).
pub(crate) fn run(db: &DbInner) -> Result<(), StorageError> {
    let _one = db.schedule.one_at_a_time();
    run_locked(db)
}

/// Runs one checkpoint if one is still due once it is this thread's turn:
/// a checkpoint asked for meanwhile ([`run`]) may have written everything.
fn run_if_due(db: &DbInner) -> Result<(), StorageError> {
    let _one = db.schedule.one_at_a_time();
    if !db.schedule.due(&db.schedule.state()) {
        return Ok(());
    }
    run_locked(db)
}

fn run_locked(db: &DbInner) -> Result<(), StorageError> {
    if db.poisoned.load(std::sync::atomic::Ordering::Acquire) {
        return Err(StorageError::Poisoned);
    }
    let started = {
        let mut state = db.schedule.state();
        let pending = state.pending;
        state.last = Instant::now();
        pending
    };
    // 1. Cut the log.
    let cut = match &db.wal {
        Some(wal) => {
            let cut = match wal.begin_checkpoint() {
                Ok(cut) => cut,
                Err(e) => {
                    db.poisoned
                        .store(true, std::sync::atomic::Ordering::Release);
                    return Err(e);
                }
            };
            // The rotation wrote and fsynced everything appended so far.
            db.mark_synced(cut);
            Some(cut)
        }
        None => None,
    };
    // Phase timings, for the debug log.
    let t0 = Instant::now();
    // 2. Pin.
    let states = db.all_states();
    let budget = db.schedule.policy.resident_bytes_max;
    let pinned: Vec<Pinned> = states.iter().map(|p| p.pin(budget)).collect();
    // 3. Write — only what is durable in the log (a pin may hold batches
    // logged after the cut whose fsync is still running).
    let t1 = Instant::now();
    let last_record = pinned.iter().map(|p| p.last_record).max().unwrap_or(0);
    let written = db
        .wait_durable(last_record)
        .and_then(|()| write(db, &pinned, cut))
        .and_then(|()| Base::open(&db.db));
    let base = match written {
        Ok(base) => base,
        Err(e) => {
            db.poisoned
                .store(true, std::sync::atomic::Ordering::Release);
            for (state, pin) in states.iter().zip(pinned) {
                state.unpin(pin);
            }
            db.schedule.done.notify_all();
            return Err(e);
        }
    };
    let t2 = Instant::now();
    // 4. Forget what redb holds now, retire the log.
    *db.base.lock().unwrap_or_else(|p| p.into_inner()) = base.clone();
    for (state, pin) in states.iter().zip(&pinned) {
        state.checkpointed(pin, base.clone());
    }
    let t3 = Instant::now();
    // 5. Make room: evict clean rows of plugins over their budget.
    let mut evicted = 0;
    for (state, pin) in states.iter().zip(&pinned) {
        evicted += state.evict(pin, budget);
    }
    if let Some(wal) = &db.wal {
        wal.end_checkpoint();
    }
    tracing::debug!(
        pin_us = (t1 - t0).as_micros() as u64,
        write_us = (t2 - t1).as_micros() as u64,
        forget_us = (t3 - t2).as_micros() as u64,
        evict_and_retire_log_us = t3.elapsed().as_micros() as u64,
        writes = pinned.iter().map(|p| p.writes.len()).sum::<usize>(),
        journal_entries = pinned.iter().map(|p| p.journal.len()).sum::<usize>(),
        "checkpoint"
    );
    let mut state = db.schedule.state();
    state.pending = state.pending.saturating_sub(started);
    state.completed += 1;
    state.evicted += evicted;
    drop(state);
    db.schedule.done.notify_all();
    Ok(())
}

/// Each key of `writes` (oldest first) once, in key order, with the value
/// of its last write (`None`: removed).
fn last_write_per_key(writes: &[Write]) -> Vec<(&[u8], Option<&[u8]>)> {
    let mut order: Vec<(&[u8], Option<&[u8]>)> = writes
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_deref()))
        .collect();
    // Stable: a key's writes stay oldest first.
    order.sort_by(|a, b| a.0.cmp(b.0));
    let mut out: Vec<(&[u8], Option<&[u8]>)> = Vec::with_capacity(order.len());
    for write in order {
        match out.last_mut() {
            Some(last) if last.0 == write.0 => *last = write,
            _ => out.push(write),
        }
    }
    out
}

/// Rows written between two looks at whether the database was poisoned
/// meanwhile (a failed log write, or a simulated crash:
/// [`super::Db::abandon_background`]); if so the checkpoint is abandoned
/// before its commit.
const ABANDON_CHECK_ROWS: usize = 1024;

fn write(db: &DbInner, pinned: &[Pinned], cut: Option<u64>) -> Result<(), StorageError> {
    let abandoned = || db.poisoned.load(std::sync::atomic::Ordering::Acquire);
    let txn = db.db.begin_write().map_err(redb_err("begin checkpoint"))?;
    {
        let mut state = txn.open_table(STATE).map_err(redb_err("open state"))?;
        let mut journal = txn.open_table(JOURNAL).map_err(redb_err("open journal"))?;
        let mut plugins = txn.open_table(PLUGINS).map_err(redb_err("open plugins"))?;
        let meta = txn.open_table(META).map_err(redb_err("open meta"))?;
        for pin in pinned {
            // Each key once, with its last write, in key order.
            for (i, (k, v)) in last_write_per_key(&pin.writes).into_iter().enumerate() {
                if i % ABANDON_CHECK_ROWS == 0 && abandoned() {
                    return Err(StorageError::Poisoned);
                }
                match v {
                    Some(v) => {
                        state.insert(k, v).map_err(redb_err("checkpoint put"))?;
                    }
                    None => {
                        state.remove(k).map_err(redb_err("checkpoint remove"))?;
                    }
                }
            }
            // Entries already moved to the archive never come back.
            let archived = super::archive_mark(&meta, pin.plugin_id)?;
            for (sequence, entry) in pin.journal.range(archived + 1..=u64::MAX) {
                journal
                    .insert((pin.plugin_id, *sequence), entry.as_ref())
                    .map_err(redb_err("checkpoint journal"))?;
            }
            if let Some(bytes) = &pin.record {
                let record: PluginRecord = decode("plugin record", bytes)?;
                plugins
                    .insert(record.name.as_str(), bytes.as_ref())
                    .map_err(redb_err("checkpoint plugin"))?;
            }
        }
        drop(meta);
        if let Some(r) = cut {
            let mut meta = txn.open_table(META).map_err(redb_err("open meta"))?;
            meta.insert(APPLIED_KEY, r.to_le_bytes().as_slice())
                .map_err(redb_err("write meta"))?;
            // Read back what was written: a damaged marker must fail here,
            // not at the next start.
            let back = meta
                .get(APPLIED_KEY)
                .map_err(redb_err("read meta"))?
                .map(|v| super::decode_applied(v.value()))
                .transpose()?;
            assert_eq!(back, Some(r), "meta.wal_applied reads back as written");
        }
    }
    if abandoned() {
        // Dropped uncommitted: redb keeps its last commit.
        return Err(StorageError::Poisoned);
    }
    txn.commit().map_err(redb_err("commit checkpoint"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_fall_due_by_bytes_and_by_time() {
        let by_bytes = Schedule::new(CheckpointPolicy {
            interval_ms: 3_600_000,
            log_bytes_max: 100,
            ..CheckpointPolicy::default()
        });
        assert!(!by_bytes.due(&by_bytes.state()), "nothing written");
        by_bytes.written(10, || false);
        assert!(!by_bytes.due(&by_bytes.state()));
        by_bytes.written(100, || false);
        assert!(by_bytes.due(&by_bytes.state()), "over the byte budget");
        let by_time = Schedule::new(CheckpointPolicy {
            interval_ms: 0,
            log_bytes_max: u64::MAX,
            ..CheckpointPolicy::default()
        });
        assert!(
            !by_time.due(&by_time.state()),
            "an idle log needs no checkpoint"
        );
        by_time.add_pending(1);
        assert!(by_time.due(&by_time.state()));
    }
}
