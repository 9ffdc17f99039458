//! Per plugin, an actor thread that owns the plugin's [`Executor`] and
//! drains its queue in batches: every command waiting (up to the batch
//! size, after an optional commit window) runs as one group commit whose
//! record is appended to the write-ahead log; the plugin's acknowledger
//! thread answers each command once that record is durable, while the
//! actor already runs the next batch (fsync overlapped with execution). Queries go to
//! the plugin's query thread ([`crate::query`]) and never wait in this
//! queue. Upgrades run at a batch boundary; commands that arrive meanwhile
//! wait in the queue.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};
use tokio::sync::oneshot;

use crate::caller::Caller;
use crate::config::BatchConfig;
use crate::error::HostError;
use crate::executor::{Call, Committed, Executor, Restored, Scheduled};
use crate::limits::{BATCHES_AWAITING_FSYNC_MAX, QUEUE_COMMANDS_MAX};
use crate::query::{QueryRequest, QueryTarget, QueryWorker};
use crate::runtime::LoadedComponent;
use crate::storage::{Db, ReadView};
use crate::storage::{Deployment, EntryKind, Outcome, PluginRecord};

/// What a committed command returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The command's sequence number.
    pub sequence: u64,
    /// The plugin's response (JSON bytes).
    pub response: Vec<u8>,
}

type Reply<T> = oneshot::Sender<Result<T, HostError>>;

/// A message to an actor.
pub(crate) enum Request {
    Command {
        call: Scheduled,
        reply: Reply<Receipt>,
    },
    /// Replies with the new deployment and a view of the state just
    /// before it (for the before-deploy snapshot).
    Upgrade {
        component: LoadedComponent,
        forced: Option<(u64, u64)>,
        reply: Reply<(Deployment, Option<ReadView>)>,
    },
    /// Replace the state (at a batch boundary), journaled as `kind`;
    /// replies with the entry's sequence.
    Restore {
        restored: Box<Restored>,
        component: LoadedComponent,
        forced: Option<(u64, u64)>,
        kind: EntryKind,
        reply: Reply<u64>,
    },
    /// Run a function on the executor at a batch boundary (the plugin's
    /// other commands wait); it replies on its own.
    Exclusive(Box<dyn FnOnce(&mut Executor) + Send>),
}

/// The handle the host keeps for a running actor.
pub(crate) struct ActorHandle {
    tx: Option<Sender<Request>>,
    queries: QueryWorker,
    thread: Option<JoinHandle<()>>,
    acknowledger: Option<JoinHandle<()>>,
    pub(crate) record: Arc<RwLock<PluginRecord>>,
    #[cfg_attr(not(feature = "testkit"), allow(dead_code))]
    halt: Arc<AtomicBool>,
}

/// A batch whose answers wait for its log record to be durable.
struct Logged {
    record: u64,
    answers: Vec<(Reply<Receipt>, Result<Receipt, HostError>)>,
}

/// Answers each logged batch once its record is durable (one fsync covers
/// every batch written before it), in order; if the fsync fails, every
/// command of the batch gets the storage error instead.
fn acknowledge(db: &Db, logged: Receiver<Logged>) {
    for batch in logged {
        match db.wait_durable(batch.record) {
            Ok(()) => {
                for (reply, answer) in batch.answers {
                    let _ = reply.send(answer);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "the write-ahead log fsync failed; no command of the batch is acknowledged");
                let message = e.to_string();
                for (reply, _) in batch.answers {
                    let _ = reply.send(Err(HostError::Storage(message.clone())));
                }
            }
        }
    }
}

impl ActorHandle {
    /// Starts the actor thread for `executor`.
    pub(crate) fn spawn(executor: Executor, batch: BatchConfig) -> std::io::Result<ActorHandle> {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE_COMMANDS_MAX);
        let record = executor.published();
        let halt = Arc::new(AtomicBool::new(false));
        let name = executor.record().name.clone();
        let (limits, policy) = executor.limits();
        let queries = QueryWorker::spawn(QueryTarget {
            db: executor.db().clone(),
            plugin_id: executor.record().id,
            name: name.clone(),
            components: executor.components(),
            limits,
            policy,
        })?;
        let (logged_tx, logged_rx) = crossbeam_channel::bounded(BATCHES_AWAITING_FSYNC_MAX);
        let db = executor.db().clone();
        let acknowledger = std::thread::Builder::new()
            .name(format!("keel-{name}-acks"))
            .spawn(move || acknowledge(&db, logged_rx))?;
        let actor = Actor {
            executor,
            rx,
            batch,
            halt: halt.clone(),
            logged: logged_tx,
        };
        let thread = std::thread::Builder::new()
            .name(format!("keel-{name}"))
            .spawn(move || actor.run())?;
        Ok(ActorHandle {
            tx: Some(tx),
            acknowledger: Some(acknowledger),
            queries,
            thread: Some(thread),
            record,
            halt,
        })
    }

    /// Queues a request; refuses when the queue is full.
    pub(crate) fn send(&self, request: Request, plugin: &str) -> Result<(), HostError> {
        let tx = self.tx.as_ref().ok_or(HostError::Stopped)?;
        tx.try_send(request).map_err(|e| match e {
            TrySendError::Full(_) => HostError::Overloaded(plugin.to_owned()),
            TrySendError::Disconnected(_) => HostError::Stopped,
        })
    }

    /// Queues a query for the plugin's query thread.
    pub(crate) fn query(&self, request: QueryRequest, plugin: &str) -> Result<(), HostError> {
        self.queries.send(request, plugin)
    }

    /// Commands waiting in the queue.
    pub(crate) fn queue_len(&self) -> usize {
        self.tx.as_ref().map_or(0, Sender::len)
    }

    /// Stops after the queued work is done.
    pub(crate) fn stop(&mut self) {
        self.queries.stop();
        self.tx = None;
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("a plugin actor panicked while stopping");
        }
        // The actor is gone, so is its sender: the acknowledger answers
        // what is logged and ends.
        if let Some(t) = self.acknowledger.take()
            && t.join().is_err()
        {
            tracing::error!("a plugin's acknowledger panicked while stopping");
        }
    }

    /// Stops at once: the batch in progress is not committed and queued
    /// work is dropped unanswered, as in a crash.
    #[cfg(feature = "testkit")]
    pub(crate) fn halt(&mut self) {
        self.halt.store(true, Ordering::Release);
        self.stop();
    }
}

struct Actor {
    executor: Executor,
    rx: Receiver<Request>,
    batch: BatchConfig,
    halt: Arc<AtomicBool>,
    logged: Sender<Logged>,
}

impl Actor {
    fn run(mut self) {
        let plugin = self.executor.record().name.clone();
        let span = tracing::info_span!("plugin", plugin = %plugin);
        let _enter = span.enter();
        while let Ok(first) = self.rx.recv() {
            if self.halt.load(Ordering::Acquire) {
                return;
            }
            let requests = self.collect(first);
            self.process(requests);
        }
    }

    /// The first request plus whatever else is queued (up to the batch
    /// size), waiting up to the commit window for more.
    fn collect(&self, first: Request) -> Vec<Request> {
        let mut requests = vec![first];
        let window = Duration::from_micros(self.batch.commit_window_us);
        let deadline = Instant::now() + window;
        while requests.len() < self.batch.max_commands {
            match self.rx.try_recv() {
                Ok(r) => requests.push(r),
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    match self.rx.recv_timeout(deadline - now) {
                        Ok(r) => requests.push(r),
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
            }
        }
        requests
    }

    fn process(&mut self, requests: Vec<Request>) {
        let mut commands = Vec::new();
        for request in requests {
            match request {
                Request::Command { call, reply } => commands.push((call, reply)),
                Request::Upgrade {
                    component,
                    forced,
                    reply,
                } => {
                    // An upgrade is a batch boundary: commit what came before it.
                    self.commit(std::mem::take(&mut commands));
                    // The state the upgrade starts from, at this boundary
                    // (an O(1) view; the snapshot file is written by the
                    // caller, off this thread).
                    let id = self.executor.record().id;
                    let before = self.executor.db().view(id).ok();
                    let _ = reply.send(
                        self.executor
                            .upgrade(component, forced)
                            .map(|deployment| (deployment, before)),
                    );
                }
                Request::Restore {
                    restored,
                    component,
                    forced,
                    kind,
                    reply,
                } => {
                    self.commit(std::mem::take(&mut commands));
                    let _ = reply.send(self.executor.install(&restored, component, forced, kind));
                }
                Request::Exclusive(f) => {
                    self.commit(std::mem::take(&mut commands));
                    f(&mut self.executor);
                }
            }
        }
        self.commit(commands);
    }

    fn commit(&mut self, commands: Vec<(Scheduled, Reply<Receipt>)>) {
        if commands.is_empty() {
            return;
        }
        let (calls, replies): (Vec<_>, Vec<_>) = commands.into_iter().unzip();
        if self.halt.load(Ordering::Acquire) {
            return;
        }
        match self.executor.run_batch(calls) {
            Ok((results, record)) => {
                let answers = replies
                    .into_iter()
                    .zip(results)
                    .map(|(reply, Committed { sequence, outcome })| {
                        let answer = match outcome {
                            Outcome::Ok(response) => Ok(Receipt { sequence, response }),
                            Outcome::Err { code, message } => Err(HostError::Rejected {
                                sequence,
                                code,
                                message,
                            }),
                        };
                        (reply, answer)
                    })
                    .collect();
                // Waits only when that many batches already await their
                // fsync (bounds how far execution runs ahead of the disk).
                if self.logged.send(Logged { record, answers }).is_err() {
                    tracing::error!("the acknowledger is gone; a logged batch goes unanswered");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "group commit failed; no command of the batch is acknowledged");
                let message = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(HostError::Storage(message.clone())));
                }
            }
        }
    }
}

/// A command from `caller` to run now, with host-assigned sequence and
/// timestamp.
pub(crate) fn command(bytes: Vec<u8>, caller: Option<Arc<Caller>>) -> Scheduled {
    Scheduled {
        call: Call::Command(bytes),
        forced: None,
        caller,
        new_instance: None,
    }
}
