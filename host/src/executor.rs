//! Runs a plugin's calls against storage: a batch of commands in one write
//! transaction (each with its own undo log), journaled and committed
//! together; queries against a committed snapshot; upgrades (`migrate`) in
//! a transaction of their own. Used by the actor and by deployment/replay.

use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::caller::Caller;
use crate::config::{InstancePolicy, Limits};
use crate::error::HostError;
use crate::runtime::imports::StorageAccess;
use crate::runtime::instance::PluginInfo;
use crate::runtime::{CallError, LoadedComponent, PluginInstance};
use crate::storage::{
    Db, Deployment, EntryKind, JournalEntry, Outcome, PluginRecord, StorageError,
};

/// One call to journal and run inside a batch.
#[derive(Debug, Clone)]
pub enum Call {
    /// `handle(command)`.
    Command(Vec<u8>),
    /// A failed entry copied verbatim during replay (not executed: failed
    /// commands leave no trace in state).
    RecordedFailure(JournalEntry),
}

/// A call with the sequence and timestamp it must get (replay) or `None`
/// (the host assigns the next ones).
#[derive(Debug, Clone)]
pub struct Scheduled {
    /// The call.
    pub call: Call,
    /// Forced (sequence, timestamp) when replaying.
    pub forced: Option<(u64, u64)>,
    /// Who sent it (journaled with it; the journaled one when replaying).
    pub caller: Option<Arc<Caller>>,
}

/// What one call produced once its batch committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Its sequence number.
    pub sequence: u64,
    /// Its outcome.
    pub outcome: Outcome,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One plugin's instance, record and database.
pub struct Executor {
    db: Db,
    engine: wasmtime::Engine,
    instance: PluginInstance,
    record: PluginRecord,
    limits: Limits,
    policy: InstancePolicy,
    /// The record as of the last commit, shared with status readers.
    published: Arc<RwLock<PluginRecord>>,
}

impl Executor {
    /// An executor for an existing (or just created) plugin record.
    pub fn new(
        db: Db,
        engine: wasmtime::Engine,
        component: LoadedComponent,
        record: PluginRecord,
        limits: Limits,
        policy: InstancePolicy,
    ) -> Self {
        let name: Arc<str> = record.name.as_str().into();
        let instance = PluginInstance::new(&engine, component, name, record.id, limits, policy);
        let published = Arc::new(RwLock::new(record.clone()));
        Self {
            db,
            engine,
            instance,
            record,
            limits,
            policy,
            published,
        }
    }

    /// The committed record, shared.
    pub fn published(&self) -> Arc<RwLock<PluginRecord>> {
        self.published.clone()
    }

    /// The committed record.
    pub fn record(&self) -> &PluginRecord {
        &self.record
    }

    /// Calls `info` on the current instance.
    pub fn info(&mut self) -> Result<PluginInfo, CallError> {
        self.instance.info()
    }

    /// Runs `calls` as one group commit. Returns one result per call, or a
    /// storage error when nothing was committed (then no call is
    /// acknowledged).
    pub fn run_batch(&mut self, calls: Vec<Scheduled>) -> Result<Vec<Committed>, StorageError> {
        let mut batch = self.db.begin_batch()?;
        batch.set_state_hash(self.record.state_hash);
        self.instance.set_storage(StorageAccess::Batch(batch));
        let mut record = self.record.clone();
        let mut results = Vec::with_capacity(calls.len());
        let module_hash = self.instance.component().hash;
        for scheduled in calls {
            let (sequence, timestamp_ms) = scheduled.forced.unwrap_or_else(|| {
                (
                    record.last_sequence + 1,
                    now_ms().max(record.last_timestamp_ms),
                )
            });
            let entry = match scheduled.call {
                Call::RecordedFailure(entry) => entry,
                call => {
                    self.instance.set_context(sequence, timestamp_ms);
                    self.instance.set_caller(scheduled.caller.clone());
                    self.batch().begin_command();
                    let (kind, result) = match call {
                        Call::Command(bytes) => {
                            let r = self.instance.handle(&bytes);
                            (EntryKind::Command { bytes }, r)
                        }
                        Call::RecordedFailure(_) => unreachable!("handled above"),
                    };
                    let outcome = match result {
                        Ok(response) => {
                            self.batch().keep_command();
                            Outcome::Ok(response)
                        }
                        Err(CallError::Fault(e)) => return Err(self.abandon(e)),
                        Err(e) => {
                            if let Err(fault) = self.batch().undo_command() {
                                return Err(self.abandon(fault));
                            }
                            Outcome::Err {
                                code: e.code().to_owned(),
                                message: e.message(),
                            }
                        }
                    };
                    JournalEntry {
                        sequence,
                        timestamp_ms,
                        module_hash,
                        kind,
                        outcome,
                        caller: scheduled.caller,
                    }
                }
            };
            record.last_sequence = entry.sequence;
            record.last_timestamp_ms = entry.timestamp_ms;
            results.push(Committed {
                sequence: entry.sequence,
                outcome: entry.outcome.clone(),
            });
            self.batch().append_journal(record.id, &entry);
        }
        let StorageAccess::Batch(mut batch) = self.instance.take_storage() else {
            unreachable!("the batch was lent above")
        };
        record.state_hash = batch.state_hash();
        batch.put_plugin(&record)?;
        batch.commit()?;
        self.publish(record);
        Ok(results)
    }

    fn batch(&mut self) -> &mut crate::storage::Batch {
        self.instance
            .batch_mut()
            .expect("a batch is lent during run_batch")
    }

    /// Drops the open batch after a storage fault.
    fn abandon(&mut self, err: StorageError) -> StorageError {
        if let StorageAccess::Batch(batch) = self.instance.take_storage() {
            batch.abort();
        }
        err
    }

    fn publish(&mut self, record: PluginRecord) {
        *self.published.write().unwrap_or_else(|p| p.into_inner()) = record.clone();
        self.record = record;
    }

    /// Answers a query from the committed state, as `caller`.
    pub fn query(
        &mut self,
        request: &[u8],
        caller: Option<Arc<Caller>>,
    ) -> Result<Vec<u8>, HostError> {
        let view = self.db.read()?;
        self.instance.set_storage(StorageAccess::Read(view));
        self.instance.set_context(0, now_ms());
        self.instance.set_caller(caller);
        let result = self.instance.query(request);
        self.instance.take_storage();
        result.map_err(|e| match e {
            CallError::Fault(e) => HostError::from(e),
            e => HostError::QueryFailed {
                code: e.code().to_owned(),
                message: e.message(),
            },
        })
    }

    /// Deploys a plugin for the first time: in one transaction, runs
    /// `init(config)`, journals it as sequence 1, stores the component and
    /// the plugin record. Nothing is written if `init` fails.
    pub fn create(
        db: Db,
        engine: wasmtime::Engine,
        component: LoadedComponent,
        id: u32,
        info: &PluginInfo,
        config: Vec<u8>,
        forced_timestamp_ms: Option<u64>,
        limits: Limits,
        policy: InstancePolicy,
    ) -> Result<Executor, HostError> {
        let timestamp_ms = forced_timestamp_ms.unwrap_or_else(now_ms);
        let record = PluginRecord {
            id,
            name: info.name.clone(),
            deployments: vec![Deployment {
                module_hash: component.hash,
                version: info.version.clone(),
                schema: info.schema,
                sequence: 1,
            }],
            last_sequence: 0,
            last_timestamp_ms: 0,
            state_hash: crate::state_hash::StateHash::EMPTY,
        };
        let mut exec = Executor::new(db, engine, component, record, limits, policy);
        let mut batch = exec.db.begin_batch()?;
        batch.begin_command();
        exec.instance.set_storage(StorageAccess::Batch(batch));
        exec.instance.set_context(1, timestamp_ms);
        exec.instance.set_caller(None);
        let result = exec.instance.init(&config);
        let StorageAccess::Batch(mut batch) = exec.instance.take_storage() else {
            unreachable!("the batch was lent above")
        };
        if let Err(e) = result {
            batch.abort();
            return Err(HostError::Deploy(format!(
                "init of {} failed: {e}",
                info.name
            )));
        }
        let mut record = exec.record.clone();
        record.last_sequence = 1;
        record.last_timestamp_ms = timestamp_ms;
        record.state_hash = batch.state_hash();
        let hash = exec.instance.component().hash;
        batch.append_journal(
            id,
            &JournalEntry {
                sequence: 1,
                timestamp_ms,
                module_hash: hash,
                kind: EntryKind::Init { config },
                outcome: Outcome::Ok(b"null".to_vec()),
                caller: None,
            },
        );
        let bytes = exec.instance.component().bytes.clone();
        batch.put_module(&hash, &bytes)?;
        batch.put_plugin(&record)?;
        batch.commit()?;
        exec.publish(record);
        Ok(exec)
    }

    /// Replaces the running version with `component`: in one transaction,
    /// runs `migrate(old schema)` on the new instance, journals it and
    /// records the deployment. On any failure the old version keeps running
    /// and state is untouched.
    pub fn upgrade(
        &mut self,
        component: LoadedComponent,
        forced: Option<(u64, u64)>,
    ) -> Result<Deployment, HostError> {
        let old = self.record.active().clone();
        let name: Arc<str> = self.record.name.as_str().into();
        let mut candidate = PluginInstance::new(
            &self.engine,
            component.clone(),
            name,
            self.record.id,
            self.limits,
            self.policy,
        );
        let info = candidate
            .info()
            .map_err(|e| HostError::Deploy(format!("the new component's info() failed: {e}")))?;
        if info.name != self.record.name {
            return Err(HostError::Deploy(format!(
                "the component calls itself {:?}, not {:?}",
                info.name, self.record.name
            )));
        }
        let (sequence, timestamp_ms) = forced.unwrap_or((
            self.record.last_sequence + 1,
            now_ms().max(self.record.last_timestamp_ms),
        ));
        let mut batch = self.db.begin_batch()?;
        batch.set_state_hash(self.record.state_hash);
        batch.begin_command();
        candidate.set_storage(StorageAccess::Batch(batch));
        candidate.set_context(sequence, timestamp_ms);
        candidate.set_caller(None);
        // A migration may rewrite the whole state: it gets its own budget.
        candidate.set_limits(self.limits.for_migrate());
        let migrated = candidate.migrate(old.schema);
        candidate.set_limits(self.limits);
        let StorageAccess::Batch(mut batch) = candidate.take_storage() else {
            unreachable!("the batch was lent above")
        };
        if let Err(e) = migrated {
            batch.abort();
            return Err(HostError::Deploy(format!(
                "migrate({}) failed, version {} keeps running: {e}",
                old.schema, old.version
            )));
        }
        let deployment = Deployment {
            module_hash: component.hash,
            version: info.version,
            schema: info.schema,
            sequence,
        };
        let mut record = self.record.clone();
        record.deployments.push(deployment.clone());
        record.last_sequence = sequence;
        record.last_timestamp_ms = timestamp_ms;
        record.state_hash = batch.state_hash();
        batch.append_journal(
            record.id,
            &JournalEntry {
                sequence,
                timestamp_ms,
                module_hash: component.hash,
                kind: EntryKind::Migrate {
                    from_module: old.module_hash,
                    from_schema: old.schema,
                },
                outcome: Outcome::Ok(b"null".to_vec()),
                caller: None,
            },
        );
        batch.put_module(&component.hash, &component.bytes)?;
        batch.put_plugin(&record)?;
        batch.commit()?;
        self.instance = candidate;
        self.publish(record);
        Ok(deployment)
    }
}
