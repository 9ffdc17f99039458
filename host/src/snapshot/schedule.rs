//! The snapshot scheduler: a background thread that takes each plugin's
//! snapshot when [`SnapshotPolicy`] says so (time since the last one,
//! journal entries since the last one), then prunes by retention and
//! runs whatever the host hangs after a snapshot (journal archiving).
//! It runs a checkpoint and writes the state that checkpoint left in redb
//! ([`SnapshotStore::take_checkpointed`]), so commands never wait for it
//! and never copy their map's nodes because of it.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{SnapshotPolicy, SnapshotStore};
use crate::storage::{Db, PluginRecord};

/// How often the thread looks at the plugins, at most.
const TICK_MS_MAX: u64 = 200;

/// Called after each scheduled snapshot and prune, with the plugin's
/// record (the host archives its journal there).
pub type AfterSnapshot = Box<dyn Fn(&PluginRecord) + Send + Sync>;

/// The running scheduler; stopping it waits for a snapshot in progress.
pub struct Scheduler {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

struct Last {
    sequence: u64,
    at: Instant,
}

impl Scheduler {
    /// Starts the thread. With a policy that never fires, no thread runs.
    pub fn spawn(
        db: Db,
        store: Arc<SnapshotStore>,
        policy: SnapshotPolicy,
        after: AfterSnapshot,
    ) -> std::io::Result<Scheduler> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        if policy.interval_ms == 0 && policy.every_commands == 0 {
            return Ok(Scheduler { stop, thread: None });
        }
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("keel-snapshots".into())
            .spawn(move || {
                crate::priority::lower_this_thread();
                run(&db, &store, &policy, &after, &flag)
            })?;
        Ok(Scheduler {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it.
    pub fn stop(&mut self) {
        *self.stop.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.stop.1.notify_all();
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("the snapshot scheduler panicked");
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(
    db: &Db,
    store: &SnapshotStore,
    policy: &SnapshotPolicy,
    after: &AfterSnapshot,
    stop: &(Mutex<bool>, Condvar),
) {
    let tick = Duration::from_millis(match policy.interval_ms {
        0 => TICK_MS_MAX,
        ms => ms.clamp(1, TICK_MS_MAX),
    });
    let mut last: HashMap<u32, Last> = HashMap::new();
    loop {
        {
            let stopped = stop.0.lock().unwrap_or_else(|p| p.into_inner());
            let (stopped, _) = stop
                .1
                .wait_timeout_while(stopped, tick, |s| !*s)
                .unwrap_or_else(|p| p.into_inner());
            if *stopped {
                return;
            }
        }
        let records = match db.plugins() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "the snapshot scheduler cannot read the plugins");
                continue;
            }
        };
        for record in records {
            let entry = last.entry(record.id).or_insert_with(|| Last {
                sequence: store
                    .list(&record.name)
                    .ok()
                    .and_then(|l| l.last().map(|s| s.sequence))
                    .unwrap_or(0),
                at: Instant::now(),
            });
            let since = record.last_sequence.saturating_sub(entry.sequence);
            let due = since > 0
                && ((policy.interval_ms > 0
                    && entry.at.elapsed() >= Duration::from_millis(policy.interval_ms))
                    || (policy.every_commands > 0 && since >= policy.every_commands));
            if !due {
                continue;
            }
            match store.take_checkpointed(db, record.id, "scheduled") {
                Ok(info) => {
                    entry.sequence = info.sequence;
                    entry.at = Instant::now();
                    if let Err(e) = store.prune(&record.name, policy) {
                        tracing::warn!(plugin = %record.name, error = %e, "pruning snapshots failed");
                    }
                    after(&record);
                }
                Err(e) => {
                    // Try again at the next interval, not at every tick.
                    entry.at = Instant::now();
                    tracing::warn!(plugin = %record.name, error = %e, "a scheduled snapshot failed");
                }
            }
        }
    }
}
