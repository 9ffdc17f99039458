//! Runs a plugin's commands against storage: a batch of commands in one
//! group commit (each with its own undo log), journaled and committed
//! together; first deploys (`init`) and upgrades (`migrate`) in a batch of
//! their own. Used by the actor and by deployment/replay. Queries run
//! elsewhere, on read views ([`crate::query`]).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::caller::Caller;
use crate::config::{InstancePolicy, Limits};
use crate::error::HostError;
use crate::runtime::imports::StorageAccess;
use crate::runtime::instance::PluginInfo;
use crate::runtime::{CallError, LoadedComponent, PluginInstance};
use crate::storage::{
    Batch, Db, Deployment, EntryKind, JournalEntry, Outcome, PluginRecord, StorageError,
};

/// Every component a plugin has run, by hash: the query worker picks the
/// one that matches the state it reads (an upgrade adds the new one before
/// its `migrate` commits).
pub(crate) type Components = Arc<RwLock<HashMap<[u8; 32], LoadedComponent>>>;

/// Lends `batch` to `instance` as its storage for `f`, and takes it back.
fn with_batch<T>(
    instance: &mut PluginInstance,
    batch: Batch,
    f: impl FnOnce(&mut PluginInstance) -> T,
) -> (Batch, T) {
    instance.set_storage(StorageAccess::Batch(batch));
    let out = f(instance);
    match instance.take_storage() {
        StorageAccess::Batch(batch) => (batch, out),
        // Only this function lends a batch, and calls never replace it.
        _ => unreachable!("the lent batch is still the instance's storage"),
    }
}

/// Journals a deployment's `init`/`migrate` entry and the new record, and
/// commits the batch. The component is stored first, in its own durable
/// commit, so the journal never names a module the database lacks.
fn commit_deployment(
    db: &Db,
    mut batch: Batch,
    record: &PluginRecord,
    entry: &JournalEntry,
    component: &LoadedComponent,
) -> Result<(), StorageError> {
    if let Err(e) = db.store_module(&component.hash, &component.bytes) {
        batch.abort();
        return Err(e);
    }
    batch.append_journal(record.id, entry);
    batch.put_plugin(record)?;
    batch.commit_durable()
}

/// A plugin state to install: the rows a plugin had at one sequence and
/// its record then (from a snapshot, a replay to that sequence or an
/// import).
#[derive(Debug, Clone)]
pub struct Restored {
    /// The record as of `record.last_sequence`; its active deployment is
    /// the module that state belongs to, its state hash the rows' hash.
    pub record: PluginRecord,
    /// Ascending `(table ‖ 00 ‖ key, value)` pairs, as in a snapshot.
    pub rows: crate::snapshot::SnapshotRows,
    /// The snapshot the state was built from.
    pub from_snapshot: u64,
}

/// Rows a batch wrote: `table ‖ 00 ‖ key` → value now (`None`: removed).
pub type Writes = std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>>;

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
    /// When replaying, whether the call ran on a new instance (the
    /// journaled [`JournalEntry::new_instance`]), which replay follows;
    /// `None` live, where the batch decides (see [`Executor::run_batch`]).
    pub new_instance: Option<bool>,
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
    instance: PluginInstance,
    record: PluginRecord,
    limits: Limits,
    policy: InstancePolicy,
    /// The record as of the last commit, shared with status readers.
    published: Arc<RwLock<PluginRecord>>,
    components: Components,
}

impl Executor {
    /// An executor for an existing (or just created) plugin record.
    pub fn new(
        db: Db,
        component: LoadedComponent,
        record: PluginRecord,
        limits: Limits,
        policy: InstancePolicy,
    ) -> Self {
        let name: Arc<str> = record.name.as_str().into();
        let components: Components = Arc::new(RwLock::new(HashMap::from([(
            component.hash,
            component.clone(),
        )])));
        let instance = PluginInstance::new(component, name, record.id, limits, policy);
        let published = Arc::new(RwLock::new(record.clone()));
        Self {
            db,
            instance,
            record,
            limits,
            policy,
            published,
            components,
        }
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The components this plugin has run, shared with its query worker.
    pub(crate) fn components(&self) -> Components {
        self.components.clone()
    }

    /// The limits and instance policy its calls run under.
    pub fn limits(&self) -> (Limits, InstancePolicy) {
        (self.limits, self.policy)
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

    /// Runs `calls` as one group commit. Under [`InstancePolicy::Batch`]
    /// the first live call gets a new instance; replayed calls get one
    /// exactly where their journal entry says; a trapped call's instance
    /// is never used again. Returns one result per call and
    /// the write-ahead log record that holds them — no call may be
    /// acknowledged before [`Db::wait_durable`] of it returns — or a
    /// storage error when nothing was committed.
    pub fn run_batch(
        &mut self,
        calls: Vec<Scheduled>,
    ) -> Result<(Vec<Committed>, u64), StorageError> {
        self.run_batch_capturing(calls, false)
            .map(|(results, record, _)| (results, record))
    }

    /// Runs one call as a batch of its own and returns its result with
    /// the rows it wrote (see [`Batch::net_writes`]): for dry runs, which
    /// compare two versions write by write.
    pub fn run_one_with_writes(
        &mut self,
        call: Scheduled,
    ) -> Result<(Committed, Writes), StorageError> {
        let (mut results, _, writes) = self.run_batch_capturing(vec![call], true)?;
        Ok((results.remove(0), writes))
    }

    fn run_batch_capturing(
        &mut self,
        calls: Vec<Scheduled>,
        capture: bool,
    ) -> Result<(Vec<Committed>, u64, Writes), StorageError> {
        let mut batch = self.db.begin_batch(self.record.id)?;
        batch.set_state_hash(self.record.state_hash);
        let mut record = self.record.clone();
        let module_hash = self.instance.component().hash;
        let renews_per_batch = self.policy == InstancePolicy::Batch;
        let (mut batch, entries) = with_batch(&mut self.instance, batch, |instance| {
            let mut entries = Vec::with_capacity(calls.len());
            let mut first_live = true;
            for scheduled in calls {
                // Replay: exactly where the journaled call got a new
                // instance. Live: each batch starts on a new one.
                let renew = match scheduled.new_instance {
                    Some(recorded) => recorded,
                    None => std::mem::take(&mut first_live) && renews_per_batch,
                };
                if renew {
                    instance.renew();
                }
                let (sequence, timestamp_ms) = scheduled.forced.unwrap_or_else(|| {
                    (
                        record.last_sequence + 1,
                        now_ms().max(record.last_timestamp_ms),
                    )
                });
                let entry = match scheduled.call {
                    Call::RecordedFailure(entry) => entry,
                    Call::Command(bytes) => {
                        let (outcome, refused) = run_command(
                            instance,
                            &bytes,
                            sequence,
                            timestamp_ms,
                            &scheduled.caller,
                        )?;
                        JournalEntry {
                            sequence,
                            timestamp_ms,
                            module_hash,
                            kind: EntryKind::Command { bytes },
                            outcome,
                            caller: scheduled.caller,
                            new_instance: instance.ran_on_new_instance(),
                            failed_on_kept_instance: refused,
                        }
                    }
                };
                record.last_sequence = entry.sequence;
                record.last_timestamp_ms = entry.timestamp_ms;
                entries.push(entry);
            }
            Ok::<_, StorageError>(entries)
        });
        let entries = match entries {
            Ok(r) => r,
            Err(e) => {
                batch.abort();
                return Err(e);
            }
        };
        for entry in &entries {
            batch.append_journal(record.id, entry);
        }
        let results = entries
            .into_iter()
            .map(|entry| Committed {
                sequence: entry.sequence,
                outcome: entry.outcome,
            })
            .collect();
        record.state_hash = batch.state_hash();
        let writes = if capture {
            batch.net_writes()
        } else {
            Writes::new()
        };
        batch.put_plugin(&record)?;
        let logged = batch.commit()?;
        self.publish(record);
        Ok((results, logged, writes))
    }

    fn publish(&mut self, record: PluginRecord) {
        *self.published.write().unwrap_or_else(|p| p.into_inner()) = record.clone();
        self.record = record;
    }

    /// Deploys a plugin for the first time: in one batch, runs
    /// `init(config)`, journals it as sequence 1 and stores the plugin
    /// record (the component is stored just before). Nothing is written if
    /// `init` fails.
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        db: Db,
        component: LoadedComponent,
        id: u32,
        info: &PluginInfo,
        config: Vec<u8>,
        forced_timestamp_ms: Option<u64>,
        limits: Limits,
        policy: InstancePolicy,
    ) -> Result<Executor, HostError> {
        let timestamp_ms = forced_timestamp_ms.unwrap_or_else(now_ms);
        let hash = component.hash;
        let record = PluginRecord {
            id,
            name: info.name.clone(),
            deployments: vec![Deployment {
                module_hash: hash,
                version: info.version.clone(),
                schema: info.schema,
                sequence: 1,
            }],
            last_sequence: 0,
            last_timestamp_ms: 0,
            state_hash: crate::state_hash::StateHash::EMPTY,
        };
        let mut exec = Executor::new(db, component.clone(), record, limits, policy);
        let mut batch = exec.db.begin_batch(id)?;
        batch.begin_command();
        let (batch, result) = with_batch(&mut exec.instance, batch, |instance| {
            instance.set_context(1, timestamp_ms);
            instance.set_caller(None);
            instance.init(&config)
        });
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
        let entry = JournalEntry {
            sequence: 1,
            timestamp_ms,
            module_hash: hash,
            kind: EntryKind::Init { config },
            outcome: Outcome::Ok(b"null".to_vec()),
            caller: None,
            new_instance: true,
            failed_on_kept_instance: false,
        };
        commit_deployment(&exec.db, batch, &record, &entry, &component)?;
        exec.publish(record);
        Ok(exec)
    }

    /// Replaces the running version with `component`: in one batch, runs
    /// `migrate(old schema)` on the new instance, journals it and records
    /// the deployment. On any failure the old version keeps running and
    /// state is untouched.
    pub fn upgrade(
        &mut self,
        component: LoadedComponent,
        forced: Option<(u64, u64)>,
    ) -> Result<Deployment, HostError> {
        let old = self.record.active().clone();
        let name: Arc<str> = self.record.name.as_str().into();
        let mut candidate = PluginInstance::new(
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
        let (sequence, timestamp_ms) = self.next_position(forced);
        let batch = self.begin_single()?;
        // A migration may rewrite the whole state: it gets its own budget.
        let limits = self.limits;
        let (batch, migrated) = with_batch(&mut candidate, batch, |instance| {
            instance.set_context(sequence, timestamp_ms);
            instance.set_caller(None);
            instance.set_limits(limits.for_migrate());
            let migrated = instance.migrate(old.schema);
            instance.set_limits(limits);
            migrated
        });
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
        let entry = JournalEntry {
            sequence,
            timestamp_ms,
            module_hash: component.hash,
            kind: EntryKind::Migrate {
                from_module: old.module_hash,
                from_schema: old.schema,
            },
            outcome: Outcome::Ok(b"null".to_vec()),
            caller: None,
            new_instance: true,
            failed_on_kept_instance: false,
        };
        // Queries that read the migrated state must find its component.
        self.know_component(&component);
        commit_deployment(&self.db, batch, &record, &entry, &component)?;
        self.instance = candidate;
        self.publish(record);
        Ok(deployment)
    }
}

impl Executor {
    /// Replaces the plugin's state with `restored` in one batch, journaled
    /// as a `Restore` entry: rows the target lacks are removed, differing
    /// rows written; the result must hash to the target's state hash, or
    /// nothing changes. When the target's module is not the active one,
    /// it becomes active again (a deployment at this sequence).
    pub fn restore(
        &mut self,
        restored: &Restored,
        component: LoadedComponent,
        forced: Option<(u64, u64)>,
    ) -> Result<u64, HostError> {
        let kind = EntryKind::Restore {
            to_sequence: restored.record.last_sequence,
            from_snapshot: restored.from_snapshot,
        };
        self.install(restored, component, forced, kind)
    }

    /// Installs `restored` as the plugin's state in one batch journaled as
    /// `kind` (a restore, an undone upgrade); see [`Executor::restore`].
    pub fn install(
        &mut self,
        restored: &Restored,
        component: LoadedComponent,
        forced: Option<(u64, u64)>,
        kind: EntryKind,
    ) -> Result<u64, HostError> {
        let target = restored.record.active().clone();
        if component.hash != target.module_hash {
            return Err(HostError::Deploy(
                "the component given for a restore is not the state's module".into(),
            ));
        }
        let (sequence, timestamp_ms) = self.next_position(forced);
        let batch = install_rows(self.begin_single()?, self.record.id, restored)?;
        let mut record = self.record.clone();
        let switch = record.active().module_hash != target.module_hash;
        if switch {
            record.deployments.push(Deployment {
                sequence,
                ..target.clone()
            });
        }
        record.last_sequence = sequence;
        record.last_timestamp_ms = timestamp_ms;
        record.state_hash = restored.record.state_hash;
        let response = serde_json::json!({
            "restored_to": restored.record.last_sequence,
            "from_snapshot": restored.from_snapshot,
            "state_hash": restored.record.state_hash.to_hex(),
        });
        let entry = JournalEntry {
            sequence,
            timestamp_ms,
            module_hash: target.module_hash,
            kind,
            outcome: Outcome::Ok(response.to_string().into_bytes()),
            caller: None,
            new_instance: true,
            failed_on_kept_instance: false,
        };
        self.know_component(&component);
        commit_deployment(&self.db, batch, &record, &entry, &component)?;
        if switch {
            let name: Arc<str> = record.name.as_str().into();
            self.instance =
                PluginInstance::new(component, name, record.id, self.limits, self.policy);
        }
        self.publish(record);
        Ok(sequence)
    }

    /// A new plugin (id `id`) that starts from `restored`'s rows and
    /// record (an import, or a scratch copy for a restore or a dry run):
    /// the rows are written in one batch, checked against the record's
    /// state hash, and the journal continues after its last sequence.
    pub fn seed(
        db: Db,
        component: LoadedComponent,
        id: u32,
        restored: &Restored,
        limits: Limits,
        policy: InstancePolicy,
    ) -> Result<Executor, HostError> {
        let mut record = restored.record.clone();
        record.id = id;
        if component.hash != record.active().module_hash {
            return Err(HostError::Deploy(
                "the component given is not the module of the state".into(),
            ));
        }
        let exec = Executor::new(db, component.clone(), record.clone(), limits, policy);
        let mut batch = exec.db.begin_batch(id)?;
        batch.begin_command();
        let mut batch = install_rows(batch, id, restored)?;
        if let Err(e) = exec.db.store_module(&component.hash, &component.bytes) {
            batch.abort();
            return Err(e.into());
        }
        batch.put_plugin(&record)?;
        batch.commit_durable()?;
        Ok(exec)
    }
}

impl Executor {
    /// The (sequence, timestamp) of the next journal entry: `forced` when
    /// replaying, else the next sequence at a timestamp that never goes back.
    fn next_position(&self, forced: Option<(u64, u64)>) -> (u64, u64) {
        forced.unwrap_or((
            self.record.last_sequence + 1,
            now_ms().max(self.record.last_timestamp_ms),
        ))
    }

    /// Lets queries that read state made by `component` find it (added
    /// before the batch that makes such state commits).
    fn know_component(&self, component: &LoadedComponent) {
        self.components
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(component.hash, component.clone());
    }

    /// A batch for one entry of its own (a migration, a restore).
    fn begin_single(&self) -> Result<Batch, StorageError> {
        let mut batch = self.db.begin_batch(self.record.id)?;
        batch.set_state_hash(self.record.state_hash);
        batch.begin_command();
        Ok(batch)
    }
}

/// Makes `batch`'s rows exactly `restored`'s and checks that they hash to
/// its record's state hash; on any failure the batch is aborted.
fn install_rows(mut batch: Batch, plugin_id: u32, restored: &Restored) -> Result<Batch, HostError> {
    if let Err(e) = batch.replace_rows(plugin_id, &restored.rows) {
        batch.abort();
        return Err(e.into());
    }
    if batch.state_hash() != restored.record.state_hash {
        let found = batch.state_hash().to_hex();
        batch.abort();
        return Err(HostError::Deploy(format!(
            "the rows hash to {found}, not the {} recorded at sequence {}; nothing changed",
            restored.record.state_hash.to_hex(),
            restored.record.last_sequence
        )));
    }
    Ok(batch)
}

/// Runs one command on `instance` (whose storage is the batch): its writes
/// are kept when it succeeds and undone when it fails. A storage fault
/// ends the batch. Returns its outcome and whether the plugin refused it
/// (a failure that keeps the instance, unlike a trap).
fn run_command(
    instance: &mut PluginInstance,
    bytes: &[u8],
    sequence: u64,
    timestamp_ms: u64,
    caller: &Option<Arc<Caller>>,
) -> Result<(Outcome, bool), StorageError> {
    instance.set_context(sequence, timestamp_ms);
    instance.set_caller(caller.clone());
    lent_batch(instance).begin_command();
    match instance.handle(bytes) {
        Ok(response) => {
            lent_batch(instance).keep_command();
            Ok((Outcome::Ok(response), false))
        }
        Err(CallError::Fault(e)) => Err(e),
        Err(e) => {
            lent_batch(instance).undo_command()?;
            let refused = matches!(e, CallError::Guest { .. });
            Ok((
                Outcome::Err {
                    code: e.code().to_owned(),
                    message: e.message(),
                },
                refused,
            ))
        }
    }
}

fn lent_batch(instance: &mut PluginInstance) -> &mut Batch {
    instance
        .batch_mut()
        .expect("a batch is lent while commands run")
}
