//! Queries, off the command path: each plugin has a query thread with its
//! own instance that answers from a read view of the committed state (its
//! frozen layers over a redb snapshot). A query waits at most for the
//! plugin's batch in progress to end (to see every acknowledged command);
//! a heavy query delays other queries of the same plugin, never a command.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tokio::sync::oneshot;

use crate::caller::Caller;
use crate::config::{InstancePolicy, Limits};
use crate::error::HostError;
use crate::executor::{Components, now_ms};
use crate::limits::QUEUE_COMMANDS_MAX;
use crate::runtime::imports::StorageAccess;
use crate::runtime::{CallError, PluginInstance};
use crate::storage::{Db, PluginRecord, StorageError};

/// One query to answer.
pub(crate) struct QueryRequest {
    pub(crate) bytes: Vec<u8>,
    pub(crate) caller: Option<Arc<Caller>>,
    pub(crate) reply: oneshot::Sender<Result<Vec<u8>, HostError>>,
}

/// A plugin's query thread.
pub(crate) struct QueryWorker {
    tx: Option<Sender<QueryRequest>>,
    thread: Option<JoinHandle<()>>,
}

/// What the query thread needs to know about its plugin.
pub(crate) struct QueryTarget {
    pub(crate) db: Db,
    pub(crate) plugin_id: u32,
    pub(crate) name: String,
    pub(crate) components: Components,
    pub(crate) limits: Limits,
    pub(crate) policy: InstancePolicy,
}

impl QueryWorker {
    /// Starts the query thread of `target`.
    pub(crate) fn spawn(target: QueryTarget) -> std::io::Result<QueryWorker> {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE_COMMANDS_MAX);
        let thread = std::thread::Builder::new()
            .name(format!("keel-{}-queries", target.name))
            .spawn(move || {
                crate::priority::lower_this_thread();
                serve(target, rx)
            })?;
        Ok(QueryWorker {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues a query; refuses when the queue is full.
    pub(crate) fn send(&self, request: QueryRequest, plugin: &str) -> Result<(), HostError> {
        let tx = self.tx.as_ref().ok_or(HostError::Stopped)?;
        tx.try_send(request).map_err(|e| match e {
            TrySendError::Full(_) => HostError::Overloaded(plugin.to_owned()),
            TrySendError::Disconnected(_) => HostError::Stopped,
        })
    }

    /// Stops after the queued queries are answered.
    pub(crate) fn stop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("a query thread panicked while stopping");
        }
    }
}

fn serve(target: QueryTarget, rx: Receiver<QueryRequest>) {
    let span = tracing::info_span!("queries", plugin = %target.name);
    let _enter = span.enter();
    let mut instance: Option<PluginInstance> = None;
    while let Ok(request) = rx.recv() {
        let answer = answer(&target, &mut instance, &request.bytes, request.caller);
        let _ = request.reply.send(answer);
    }
}

/// The active module's hash as the view's plugin record names it.
fn active_module(
    target: &QueryTarget,
    view: &crate::storage::ReadView,
) -> Result<[u8; 32], StorageError> {
    let bytes = view
        .record_bytes(&target.name)?
        .ok_or_else(|| StorageError::Corrupt {
            what: format!("plugin record {}", target.name),
            why: "missing".into(),
        })?;
    let record: PluginRecord = crate::storage::decode_record(&bytes)?;
    Ok(record.active().module_hash)
}

fn answer(
    target: &QueryTarget,
    instance: &mut Option<PluginInstance>,
    request: &[u8],
    caller: Option<Arc<Caller>>,
) -> Result<Vec<u8>, HostError> {
    let view = target.db.view(target.plugin_id)?;
    let module = active_module(target, &view)?;
    if instance
        .as_ref()
        .is_none_or(|i| i.component().hash != module)
    {
        let component = target
            .components
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&module)
            .cloned()
            .ok_or_else(|| {
                HostError::Storage(format!(
                    "the component of plugin {} that wrote its state is not loaded",
                    target.name
                ))
            })?;
        *instance = Some(PluginInstance::new(
            component,
            target.name.as_str().into(),
            target.plugin_id,
            target.limits,
            target.policy.for_queries(),
        ));
    }
    let instance = instance.as_mut().expect("set above");
    instance.set_storage(StorageAccess::Read(view));
    instance.set_context(0, now_ms());
    instance.set_caller(caller);
    let result = instance.query(request);
    instance.take_storage();
    result.map_err(|e| match e {
        CallError::Fault(e) => HostError::from(e),
        e => HostError::QueryFailed {
            code: e.code().to_owned(),
            message: e.message(),
        },
    })
}
