//! [`Host`]: the in-process API. The CLI, the HTTP server, the test kit and
//! the benchmarks all drive Keel through it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use anyhow::Context as _;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::actor::{self, ActorHandle, Receipt, Request};
use crate::caller::Caller;
use crate::config::{DeployGate, HostConfig, PluginSpec};
use crate::dry_run::{DryRunFrom, DryRunReport};
use crate::error::HostError;
use crate::executor::{Executor, Restored, Scheduled};
use crate::export::{RowCodec, TransferSummary};
use crate::limits::PLUGIN_NAME_SIZE_BYTES_MAX;
use crate::restore::{RestoreReport, RestoreTarget};
use crate::runtime::{LoadedComponent, Runtime};
use crate::snapshot::schedule::Scheduler;
use crate::snapshot::{SnapshotInfo, SnapshotStore};
use crate::state_hash::hex;
use crate::storage::{Db, Deployment, Durability, PluginRecord};
use crate::undo::UndoReport;

/// A plugin's status, as listed by the API.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PluginStatus {
    /// Host-assigned id (the prefix of the plugin's keys in storage).
    pub id: u32,
    /// Name.
    pub name: String,
    /// Active version string.
    pub version: String,
    /// Active schema.
    pub schema: u32,
    /// BLAKE3 of the active component (hex).
    pub module_hash: String,
    /// Sequence of the last committed command.
    pub last_sequence: u64,
    /// State hash after the last committed command (hex).
    pub state_hash: String,
    /// Commands waiting in the queue.
    pub queued: usize,
    /// How its calls get their instance (`batch` by default; `fresh` or
    /// `reuse` where the configuration says so). Replay is exact for any
    /// component under each: it follows the journaled instance boundaries.
    pub instances: crate::config::InstancePolicy,
    /// Every deployed version, oldest first.
    pub deployments: Vec<DeploymentStatus>,
}

/// One deployed version.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeploymentStatus {
    /// BLAKE3 of the component (hex).
    pub module_hash: String,
    /// Version string.
    pub version: String,
    /// Schema.
    pub schema: u32,
    /// Sequence at which it became active.
    pub sequence: u64,
}

impl From<&Deployment> for DeploymentStatus {
    fn from(d: &Deployment) -> Self {
        Self {
            module_hash: hex(&d.module_hash),
            version: d.version.clone(),
            schema: d.schema,
            sequence: d.sequence,
        }
    }
}

impl PluginStatus {
    fn from_record(
        record: &PluginRecord,
        queued: usize,
        instances: crate::config::InstancePolicy,
    ) -> Self {
        let active = record.active();
        Self {
            id: record.id,
            name: record.name.clone(),
            version: active.version.clone(),
            schema: active.schema,
            module_hash: hex(&active.module_hash),
            last_sequence: record.last_sequence,
            state_hash: record.state_hash.to_hex(),
            queued,
            instances,
            deployments: record
                .deployments
                .iter()
                .map(DeploymentStatus::from)
                .collect(),
        }
    }
}

/// The host's status.
#[derive(Debug, Clone, Serialize)]
pub struct HostStatus {
    /// Durability mode, named in full (relaxed mode says it is not crash-safe).
    pub durability: &'static str,
    /// Group-commit batch size.
    pub batch_max_commands: usize,
    /// Group commits that redb had lost at start-up (a crash) and the
    /// write-ahead log brought back.
    pub recovered_batches: u64,
    /// Every plugin.
    pub plugins: Vec<PluginStatus>,
}

struct PluginSlot {
    actor: ActorHandle,
}

/// A running host: a database, a runtime and one actor per plugin.
pub struct Host {
    db: Db,
    runtime: Arc<Runtime>,
    config: HostConfig,
    plugins: RwLock<BTreeMap<String, PluginSlot>>,
    /// Serialises deployments (first deploy and upgrades).
    deploy_lock: std::sync::Mutex<()>,
    /// The plugins' snapshot files.
    snapshots: Arc<SnapshotStore>,
    /// Takes snapshots by policy (stopped first at shutdown).
    scheduler: std::sync::Mutex<Option<Scheduler>>,
}

fn validate_plugin_name(name: &str) -> Result<(), HostError> {
    let ok = !name.is_empty()
        && name.len() <= PLUGIN_NAME_SIZE_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(HostError::Deploy(format!(
            "plugin name {name:?} must be 1..={PLUGIN_NAME_SIZE_BYTES_MAX} bytes of [a-z0-9_-]"
        )))
    }
}

fn check_json(what: &'static str, bytes: &[u8], limit: usize) -> Result<(), HostError> {
    if bytes.len() > limit {
        return Err(HostError::TooLarge {
            what,
            size: bytes.len(),
            limit,
        });
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).map_err(|e| HostError::BadJson {
        what,
        why: e.to_string(),
    })?;
    Ok(())
}

impl Host {
    /// Opens the data directory, restarts every plugin deployed there, then
    /// deploys (or upgrades to) the plugins the configuration names.
    pub fn open(config: HostConfig) -> anyhow::Result<Host> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
        let db = Db::open_with(
            &config.data_dir.join("keel.redb"),
            config.durability,
            config.checkpoint,
        )
        .with_context(|| format!("opening the database in {}", config.data_dir.display()))?;
        let cache_dir = config
            .cache_dir
            .clone()
            .unwrap_or_else(|| config.data_dir.join("cache"));
        let runtime = Arc::new(Runtime::new(&cache_dir)?);
        if config.durability == Durability::Relaxed {
            tracing::warn!(
                "durability is RELAXED: commits are not fsynced, a crash may lose acknowledged commands"
            );
        }
        let snapshots = Arc::new(SnapshotStore::new(&config.data_dir));
        let host = Host {
            db,
            runtime,
            config,
            plugins: RwLock::new(BTreeMap::new()),
            deploy_lock: std::sync::Mutex::new(()),
            snapshots,
            scheduler: std::sync::Mutex::new(None),
        };
        for record in host.db.plugins()? {
            let hash = record.active().module_hash;
            let bytes = host.db.module(&hash)?.with_context(|| {
                format!("module {} of plugin {} is missing", hex(&hash), record.name)
            })?;
            let component = host
                .runtime
                .load(&bytes)
                .with_context(|| format!("loading plugin {}", record.name))?;
            tracing::info!(plugin = %record.name, last_sequence = record.last_sequence, "plugin restored");
            host.start(record, component)?;
        }
        for spec in host.config.plugins.clone() {
            let (bytes, config) = read_spec(&spec)?;
            host.deploy(&bytes, config.as_deref())
                .map_err(|e| anyhow::anyhow!("deploying {}: {e}", spec_label(&spec)))?;
        }
        let (db, store, archive) = (host.db.clone(), host.snapshots.clone(), host.config.archive);
        let scheduler = Scheduler::spawn(
            host.db.clone(),
            host.snapshots.clone(),
            host.config.snapshots,
            Box::new(move |record| {
                crate::snapshot::retire_journal(&db, &store, &archive, record.id, &record.name)
            }),
        )
        .context("starting the snapshot scheduler")?;
        *host.scheduler.lock().unwrap_or_else(|p| p.into_inner()) = Some(scheduler);
        Ok(host)
    }

    fn stop_scheduler(&self) {
        let scheduler = self
            .scheduler
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(mut scheduler) = scheduler {
            scheduler.stop();
        }
    }

    /// The plugins' snapshot files.
    pub fn snapshot_store(&self) -> &SnapshotStore {
        &self.snapshots
    }

    /// Takes a snapshot of `plugin` now (commands keep running; see
    /// [`crate::snapshot`]) and applies the retention policy.
    pub fn snapshot(&self, plugin: &str) -> Result<SnapshotInfo, HostError> {
        let id = self.plugin(plugin)?.id;
        let info = self.snapshots.take(&self.db, id, "on-demand")?;
        self.snapshots.prune(plugin, &self.config.snapshots)?;
        crate::snapshot::retire_journal(
            &self.db,
            &self.snapshots,
            &self.config.archive,
            id,
            plugin,
        );
        Ok(info)
    }

    /// Restores `plugin` to a snapshot or a past sequence while every
    /// other plugin keeps serving (see [`crate::restore`]).
    pub fn restore(&self, plugin: &str, target: RestoreTarget) -> Result<RestoreReport, HostError> {
        crate::restore::restore(self, plugin, target)
    }

    /// Installs `restored` as `plugin`'s state at its next batch boundary,
    /// journaled as a `Restore` entry (at `forced`, when replaying);
    /// returns the entry's sequence.
    pub(crate) fn install_restored(
        &self,
        plugin: &str,
        restored: Restored,
        component: LoadedComponent,
        forced: Option<(u64, u64)>,
        kind: crate::storage::EntryKind,
    ) -> Result<u64, HostError> {
        let (reply, rx) = oneshot::channel();
        self.send(
            plugin,
            Request::Restore {
                restored: Box::new(restored),
                component,
                forced,
                kind,
                reply,
            },
        )?;
        rx.blocking_recv().map_err(|_| HostError::Stopped)?
    }

    /// Runs `f` on `plugin`'s executor at its next batch boundary (its
    /// other commands wait meanwhile) and returns what `f` returns.
    pub(crate) fn at_batch_boundary<T: Send + 'static>(
        &self,
        plugin: &str,
        f: impl FnOnce(&mut Executor) -> Result<T, HostError> + Send + 'static,
    ) -> Result<T, HostError> {
        let (reply, rx) = oneshot::channel();
        self.send(
            plugin,
            Request::Exclusive(Box::new(move |exec| {
                let _ = reply.send(f(exec));
            })),
        )?;
        rx.blocking_recv().map_err(|_| HostError::Stopped)?
    }

    /// Undoes an upgrade of `plugin` (the one at sequence `upgrade`, or
    /// the active version) as if it had never happened (see
    /// [`crate::undo`]).
    pub fn undo_upgrade(
        &self,
        plugin: &str,
        upgrade: Option<u64>,
    ) -> Result<UndoReport, HostError> {
        crate::undo::undo_upgrade(self, plugin, upgrade)
    }

    /// Creates a new plugin whose state starts as `restored` (rows and
    /// record; the journal continues after its last sequence). Refused if
    /// a plugin of that name exists.
    pub fn seed_plugin(
        &self,
        component: LoadedComponent,
        restored: &Restored,
    ) -> Result<PluginStatus, HostError> {
        let _guard = self.deploy_lock.lock().unwrap_or_else(|p| p.into_inner());
        let name = restored.record.name.clone();
        validate_plugin_name(&name)?;
        if self
            .plugins
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&name)
        {
            return Err(HostError::Deploy(format!("a plugin named {name} exists")));
        }
        let id = self.next_plugin_id()?;
        let executor = Executor::seed(
            self.db.clone(),
            component,
            id,
            restored,
            self.config.limits,
            self.config.runtime.instance_policy(&name),
        )?;
        self.spawn(executor)
            .map_err(|e| HostError::Deploy(format!("{e:#}")))?;
        self.plugin(&name)
    }

    /// `plugin`'s record as of its last committed batch.
    pub fn record(&self, plugin: &str) -> Result<PluginRecord, HostError> {
        self.with_actor(plugin, |actor| {
            Ok(actor
                .record
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone())
        })
    }

    /// Where compiled components are cached.
    pub fn cache_dir(&self) -> std::path::PathBuf {
        self.config
            .cache_dir
            .clone()
            .unwrap_or_else(|| self.config.data_dir.join("cache"))
    }

    /// Writes `plugin`'s committed state (one consistent view; commands
    /// keep running) to `out` as an export file (see [`crate::export`]);
    /// `progress` gets (rows written, rows).
    pub fn export(
        &self,
        plugin: &str,
        out: &mut dyn std::io::Write,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<TransferSummary, HostError> {
        let id = self.plugin(plugin)?.id;
        let view = self.db.view(id)?;
        let record = view
            .record()?
            .ok_or_else(|| HostError::UnknownPlugin(plugin.to_owned()))?;
        let component = self.stored_component(&record.active().module_hash)?;
        let mut codec = RowCodec::new(component, self.config.limits);
        crate::export::write_export(
            &record,
            view.row_count() as u64,
            |f| view.for_each_row(f),
            &mut codec,
            out,
            progress,
        )
    }

    /// Creates a plugin from an export file (see [`crate::export`]); its
    /// module must be on this host (deployed before, or stored with
    /// [`Host::store_module`]). The rows must hash to the export's state
    /// hash unless `accept_changes`. A snapshot is taken at once.
    pub fn import(
        &self,
        input: impl std::io::BufRead,
        accept_changes: bool,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<TransferSummary, HostError> {
        let parsed = crate::export::parse_export(input)?;
        let active = parsed
            .header
            .deployments
            .last()
            .ok_or_else(|| HostError::BadJson {
                what: "export",
                why: "the header lists no deployment".into(),
            })?;
        let component = self.stored_component(&parse_hash(&active.module_hash)?)?;
        let mut codec = RowCodec::new(component.clone(), self.config.limits);
        let restored = parsed.into_restored(&mut codec, accept_changes, progress)?;
        let status = self.seed_plugin(component, &restored)?;
        self.snapshots.take(&self.db, status.id, "import")?;
        Ok(TransferSummary {
            plugin: status.name,
            sequence: status.last_sequence,
            rows: restored.rows.len() as u64,
            decoded_rows: 0,
            state_hash: status.state_hash,
        })
    }

    /// Stores a component on this host without deploying it (checked by
    /// compiling it); returns its hash (hex). For imports and restores.
    pub fn store_module(&self, bytes: &[u8]) -> Result<String, HostError> {
        let component = self.runtime.load(bytes)?;
        self.db.store_module(&component.hash, bytes)?;
        Ok(hex(&component.hash))
    }

    /// The component stored under `hash` (database, else the snapshots'
    /// module copies), loaded.
    pub(crate) fn stored_component(&self, hash: &[u8; 32]) -> Result<LoadedComponent, HostError> {
        let bytes = match self.db.module(hash)? {
            Some(bytes) => bytes,
            None => self.snapshots.module(hash)?.ok_or_else(|| {
                HostError::Deploy(format!(
                    "module {} is not on this host; store it first (POST /v1/modules, or `keel import --component`)",
                    hex(hash)
                ))
            })?,
        };
        Ok(self.runtime.load(&bytes)?)
    }

    /// What `candidate` (component bytes of a new version of a running plugin)
    /// would have done with the plugin's recorded traffic, compared command
    /// by command with the live version, in a scratch database (see
    /// [`crate::dry_run`]). Nothing live changes.
    pub fn dry_run(
        &self,
        candidate: &[u8],
        from: DryRunFrom,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<DryRunReport, HostError> {
        let component = self.runtime.load(candidate)?;
        let plugin = self.component_info(&component)?.name;
        crate::dry_run::dry_run(
            self,
            &plugin,
            component,
            from,
            crate::dry_run::DIFFERENCES_SHOWN,
            progress,
        )
    }

    /// Writes `plugin`'s journal `from..=to` as a test fixture (see
    /// [`crate::fixture`]).
    pub fn write_fixture(
        &self,
        plugin: &str,
        from: u64,
        to: u64,
        out: &mut dyn std::io::Write,
    ) -> anyhow::Result<crate::fixture::FixtureSummary> {
        let record = self.record(plugin)?;
        let source = crate::replay::Source {
            db: Some(&self.db),
            archive_root: self.db.archive_dir(""),
            snapshots: Some(&self.snapshots),
            cache_dir: self.cache_dir(),
        };
        crate::fixture::write_fixture(&source, &record, from, to, out)
    }

    /// `plugin`'s snapshots, oldest first.
    pub fn snapshots(&self, plugin: &str) -> Result<Vec<SnapshotInfo>, HostError> {
        self.plugin(plugin)?;
        Ok(self.snapshots.list(plugin)?)
    }

    fn start(&self, record: PluginRecord, component: LoadedComponent) -> anyhow::Result<()> {
        let policy = self.config.runtime.instance_policy(&record.name);
        let executor = Executor::new(
            self.db.clone(),
            component,
            record,
            self.config.limits,
            policy,
        );
        self.spawn(executor)
    }

    fn spawn(&self, executor: Executor) -> anyhow::Result<()> {
        let name = executor.record().name.clone();
        let actor =
            ActorHandle::spawn(executor, self.config.batch).context("starting a plugin thread")?;
        self.plugins
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, PluginSlot { actor });
        Ok(())
    }

    /// The configuration in force.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// The database (for tests, dumps and replay).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Validates and compiles a component without deploying it.
    pub fn load_component(&self, bytes: &[u8]) -> Result<LoadedComponent, HostError> {
        Ok(self.runtime.load(bytes)?)
    }

    /// Deploys a component: a new plugin runs `init(config)` (JSON, `{}` by
    /// default); a new version of a running plugin hot-swaps it (pause at a
    /// batch boundary, `migrate`, commit or keep the old version). Deploying
    /// the active version again changes nothing.
    pub fn deploy(&self, bytes: &[u8], config: Option<&[u8]>) -> Result<PluginStatus, HostError> {
        self.deploy_gated(bytes, config, false)
    }

    /// [`Host::deploy`] under the `[deploy] dry_run` gate: a new version of
    /// a running plugin is first dry-run against its last
    /// `dry_run_commands` commands; any difference is logged (`warn`) or
    /// refuses the deployment (`refuse`) unless `force`.
    pub fn deploy_gated(
        &self,
        bytes: &[u8],
        config: Option<&[u8]>,
        force: bool,
    ) -> Result<PluginStatus, HostError> {
        let component = self.runtime.load(bytes)?;
        let gate = self.config.deploy.dry_run;
        if gate != DeployGate::Off && !force {
            let name = self.component_info(&component)?.name;
            let upgrade = self
                .plugin(&name)
                .is_ok_and(|p| p.module_hash != hex(&component.hash));
            if upgrade {
                let report = crate::dry_run::dry_run(
                    self,
                    &name,
                    component.clone(),
                    DryRunFrom::Last(self.config.deploy.dry_run_commands),
                    1,
                    &mut |_, _| {},
                )?;
                if !report.identical() {
                    let first = report.first_differences.first().map_or(0, |d| d.sequence);
                    let summary = format!(
                        "the dry run found {} of {} recorded commands handled differently (first: sequence {first})",
                        report.different, report.replayed
                    );
                    if gate == DeployGate::Refuse {
                        return Err(HostError::Deploy(format!(
                            "{summary}; deploy with force to override, or look with a dry run"
                        )));
                    }
                    tracing::warn!(plugin = %name, "{summary}; deploying anyway ([deploy] dry_run = \"warn\")");
                }
            }
        }
        self.deploy_loaded(component, config, None)
    }

    /// What a component says about itself (`info` on a fresh instance).
    pub(crate) fn component_info(
        &self,
        component: &LoadedComponent,
    ) -> Result<crate::runtime::instance::PluginInfo, HostError> {
        let mut probe = crate::runtime::PluginInstance::new(
            component.clone(),
            "deploying".into(),
            u32::MAX,
            self.config.limits,
            crate::config::InstancePolicy::Fresh,
        );
        probe
            .info()
            .map_err(|e| HostError::Deploy(format!("the component's info() failed: {e}")))
    }

    pub(crate) fn deploy_loaded(
        &self,
        component: LoadedComponent,
        config: Option<&[u8]>,
        forced: Option<(u64, u64)>,
    ) -> Result<PluginStatus, HostError> {
        let _guard = self.deploy_lock.lock().unwrap_or_else(|p| p.into_inner());
        let info = self.component_info(&component)?;
        validate_plugin_name(&info.name)?;
        let running = self
            .plugins
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&info.name);
        if running {
            let active = self.plugin(&info.name)?;
            if active.module_hash == hex(&component.hash) {
                return Ok(active);
            }
            let (reply, rx) = oneshot::channel();
            self.send(
                &info.name,
                Request::Upgrade {
                    component,
                    forced,
                    reply,
                },
            )?;
            let (_, before) = rx.blocking_recv().map_err(|_| HostError::Stopped)??;
            if let (None, Some(view)) = (forced, before) {
                // Every upgrade leaves a snapshot of the state it started
                // from: the base of `--undo-upgrade` (and of dry runs) even
                // after the journal before it is archived and pruned.
                if let Err(e) = self.snapshots.take_view(&self.db, &view, "before-deploy") {
                    tracing::warn!(plugin = %info.name, error = %e, "the snapshot before the upgrade failed");
                }
            }
            tracing::info!(plugin = %info.name, version = %info.version, "plugin upgraded");
            return self.plugin(&info.name);
        }
        let config = config.unwrap_or(b"{}").to_vec();
        check_json("config", &config, self.config.limits.command_bytes_max)?;
        let id = self.next_plugin_id()?;
        let executor = Executor::create(
            self.db.clone(),
            component,
            id,
            &info,
            config,
            forced.map(|(_, ts)| ts),
            self.config.limits,
            self.config.runtime.instance_policy(&info.name),
        )?;
        self.spawn(executor)
            .map_err(|e| HostError::Deploy(format!("{e:#}")))?;
        tracing::info!(plugin = %info.name, version = %info.version, "plugin deployed");
        self.plugin(&info.name)
    }

    fn next_plugin_id(&self) -> Result<u32, HostError> {
        let max = self.db.plugins()?.iter().map(|r| r.id).max().unwrap_or(0);
        max.checked_add(1)
            .ok_or_else(|| HostError::Deploy("no plugin ids left".into()))
    }

    /// Makes an earlier deployed version (by module hash, hex) active again,
    /// through the same hot-swap path.
    pub fn rollback(&self, plugin: &str, module_hash_hex: &str) -> Result<PluginStatus, HostError> {
        let status = self.plugin(plugin)?;
        let known = status
            .deployments
            .iter()
            .any(|d| d.module_hash == module_hash_hex);
        if !known {
            return Err(HostError::Deploy(format!(
                "plugin {plugin} never ran a module with hash {module_hash_hex}"
            )));
        }
        let hash = parse_hash(module_hash_hex)?;
        let bytes = self.db.module(&hash)?.ok_or_else(|| {
            HostError::Deploy(format!(
                "module {module_hash_hex} is missing from the database"
            ))
        })?;
        self.deploy(&bytes, None)
    }

    /// Runs `f` on the actor of `plugin`.
    fn with_actor<T>(
        &self,
        plugin: &str,
        f: impl FnOnce(&ActorHandle) -> Result<T, HostError>,
    ) -> Result<T, HostError> {
        let plugins = self.plugins.read().unwrap_or_else(|p| p.into_inner());
        let slot = plugins
            .get(plugin)
            .ok_or_else(|| HostError::UnknownPlugin(plugin.to_owned()))?;
        f(&slot.actor)
    }

    fn send(&self, plugin: &str, request: Request) -> Result<(), HostError> {
        self.with_actor(plugin, |actor| actor.send(request, plugin))
    }

    fn enqueue_command(
        &self,
        plugin: &str,
        call: Scheduled,
    ) -> Result<oneshot::Receiver<Result<Receipt, HostError>>, HostError> {
        let (reply, rx) = oneshot::channel();
        self.send(plugin, Request::Command { call, reply })?;
        Ok(rx)
    }

    fn enqueue(
        &self,
        plugin: &str,
        command: &[u8],
        caller: Option<Caller>,
    ) -> Result<oneshot::Receiver<Result<Receipt, HostError>>, HostError> {
        check_json("command", command, self.config.limits.command_bytes_max)?;
        let call = actor::command(command.to_vec(), caller.map(Arc::new));
        self.enqueue_command(plugin, call)
    }

    /// Submits a command and waits until it is durably committed (or
    /// refused). Blocking: not for use inside an async runtime. The plugin
    /// sees no caller (see [`Host::submit_as`]).
    pub fn submit(&self, plugin: &str, command: &[u8]) -> Result<Receipt, HostError> {
        self.submit_as(plugin, command, None)
    }

    /// Submits a command on behalf of `caller` (what the plugin's
    /// `context.caller` returns; journaled with the command, so replay
    /// sees it too) and waits until it is durably committed. Blocking.
    pub fn submit_as(
        &self,
        plugin: &str,
        command: &[u8],
        caller: Option<Caller>,
    ) -> Result<Receipt, HostError> {
        self.enqueue(plugin, command, caller)?
            .blocking_recv()
            .map_err(|_| HostError::Stopped)?
    }

    /// Submits a command and waits for its commit, asynchronously.
    pub async fn submit_async(&self, plugin: &str, command: &[u8]) -> Result<Receipt, HostError> {
        self.submit_async_as(plugin, command, None).await
    }

    /// Submits a command on behalf of `caller` and waits for its commit,
    /// asynchronously.
    pub async fn submit_async_as(
        &self,
        plugin: &str,
        command: &[u8],
        caller: Option<Caller>,
    ) -> Result<Receipt, HostError> {
        self.enqueue(plugin, command, caller)?
            .await
            .map_err(|_| HostError::Stopped)?
    }

    /// Submits a command without waiting; the receiver yields the outcome
    /// once committed. Lets one client keep many commands in flight.
    pub fn submit_pipelined(
        &self,
        plugin: &str,
        command: &[u8],
    ) -> Result<oneshot::Receiver<Result<Receipt, HostError>>, HostError> {
        self.enqueue(plugin, command, None)
    }

    /// [`Host::submit_pipelined`] on behalf of `caller`.
    pub fn submit_pipelined_as(
        &self,
        plugin: &str,
        command: &[u8],
        caller: Option<Caller>,
    ) -> Result<oneshot::Receiver<Result<Receipt, HostError>>, HostError> {
        self.enqueue(plugin, command, caller)
    }

    pub(crate) fn enqueue_scheduled(
        &self,
        plugin: &str,
        call: Scheduled,
    ) -> Result<oneshot::Receiver<Result<Receipt, HostError>>, HostError> {
        self.enqueue_command(plugin, call)
    }

    fn enqueue_query(
        &self,
        plugin: &str,
        request: &[u8],
        caller: Option<Caller>,
    ) -> Result<oneshot::Receiver<Result<Vec<u8>, HostError>>, HostError> {
        check_json("query", request, self.config.limits.command_bytes_max)?;
        let (reply, rx) = oneshot::channel();
        let request = crate::query::QueryRequest {
            bytes: request.to_vec(),
            caller: caller.map(Arc::new),
            reply,
        };
        self.with_actor(plugin, |actor| actor.query(request, plugin))?;
        Ok(rx)
    }

    /// Runs a read-only query against committed state. Blocking. The plugin
    /// sees no caller (see [`Host::query_as`]).
    pub fn query(&self, plugin: &str, request: &[u8]) -> Result<Vec<u8>, HostError> {
        self.query_as(plugin, request, None)
    }

    /// Runs a read-only query on behalf of `caller` (what the plugin's
    /// `context.caller` returns). Blocking.
    pub fn query_as(
        &self,
        plugin: &str,
        request: &[u8],
        caller: Option<Caller>,
    ) -> Result<Vec<u8>, HostError> {
        self.enqueue_query(plugin, request, caller)?
            .blocking_recv()
            .map_err(|_| HostError::Stopped)?
    }

    /// Runs a read-only query, asynchronously.
    pub async fn query_async(&self, plugin: &str, request: &[u8]) -> Result<Vec<u8>, HostError> {
        self.query_async_as(plugin, request, None).await
    }

    /// Runs a read-only query on behalf of `caller`, asynchronously.
    pub async fn query_async_as(
        &self,
        plugin: &str,
        request: &[u8],
        caller: Option<Caller>,
    ) -> Result<Vec<u8>, HostError> {
        self.enqueue_query(plugin, request, caller)?
            .await
            .map_err(|_| HostError::Stopped)?
    }

    /// One plugin's status.
    pub fn plugin(&self, name: &str) -> Result<PluginStatus, HostError> {
        let plugins = self.plugins.read().unwrap_or_else(|p| p.into_inner());
        let slot = plugins
            .get(name)
            .ok_or_else(|| HostError::UnknownPlugin(name.to_owned()))?;
        let record = slot.actor.record.read().unwrap_or_else(|p| p.into_inner());
        Ok(PluginStatus::from_record(
            &record,
            slot.actor.queue_len(),
            self.config.runtime.instance_policy(&record.name),
        ))
    }

    /// Every plugin's status, by name.
    pub fn plugins(&self) -> Vec<PluginStatus> {
        let plugins = self.plugins.read().unwrap_or_else(|p| p.into_inner());
        plugins
            .values()
            .map(|slot| {
                let record = slot.actor.record.read().unwrap_or_else(|p| p.into_inner());
                PluginStatus::from_record(
                    &record,
                    slot.actor.queue_len(),
                    self.config.runtime.instance_policy(&record.name),
                )
            })
            .collect()
    }

    /// The host's status.
    pub fn status(&self) -> HostStatus {
        HostStatus {
            durability: self.config.durability.as_str(),
            batch_max_commands: self.config.batch.max_commands,
            recovered_batches: self.db.recovered_batches(),
            plugins: self.plugins(),
        }
    }

    /// Stops cleanly: every queued command is committed and answered, and
    /// a checkpoint leaves nothing in the write-ahead log to recover.
    pub fn shutdown(self) {
        self.stop_scheduler();
        let mut plugins = self.plugins.write().unwrap_or_else(|p| p.into_inner());
        for slot in plugins.values_mut() {
            slot.actor.stop();
        }
        self.db.stop_background();
        if let Err(e) = self.db.checkpoint() {
            tracing::error!(error = %e, "the checkpoint at shutdown failed; the next start recovers from the write-ahead log");
        }
    }

    /// Stops as a crash would: the batch in progress is not committed,
    /// queued commands are never answered, and the files are left as the
    /// disk held them at that moment (redb's commits since its last durable
    /// one are lost, as in a power cut; the write-ahead log must bring them
    /// back). For tests of recovery (feature `testkit`).
    #[cfg(feature = "testkit")]
    pub fn crash(self) {
        self.stop_scheduler();
        {
            let mut plugins = self.plugins.write().unwrap_or_else(|p| p.into_inner());
            for slot in plugins.values_mut() {
                slot.actor.halt();
            }
        }
        // redb only ever receives durable commits (checkpoints), so once
        // the checkpointer has stopped — abandoning a checkpoint in
        // progress before its commit, as a power cut would — the files are
        // exactly what a power cut would leave: the last checkpoint plus
        // the fsynced log.
        self.db.abandon_background();
        drop(self);
    }
}

fn spec_label(spec: &PluginSpec) -> String {
    match (&spec.bundled, &spec.path) {
        (Some(name), _) => format!("bundled plugin {name}"),
        (_, Some(path)) => path.display().to_string(),
        _ => "plugin".into(),
    }
}

fn read_spec(spec: &PluginSpec) -> anyhow::Result<(Vec<u8>, Option<Vec<u8>>)> {
    let path = match (&spec.bundled, &spec.path) {
        (Some(name), _) => bundled_path(name)?,
        (_, Some(path)) => path.clone(),
        _ => anyhow::bail!("plugin entry names neither `bundled` nor `path`"),
    };
    let bytes =
        std::fs::read(&path).with_context(|| format!("reading component {}", path.display()))?;
    let config = spec
        .config
        .as_ref()
        .map(serde_json::to_vec)
        .transpose()
        .context("converting plugin config to JSON")?;
    Ok((bytes, config))
}

#[cfg(feature = "bundled-plugins")]
fn bundled_path(name: &str) -> anyhow::Result<std::path::PathBuf> {
    keel_plugins::path(name).map(Into::into).with_context(|| {
        let names: Vec<_> = keel_plugins::ALL.iter().map(|(n, _)| *n).collect();
        format!(
            "no bundled plugin named {name:?} (bundled: {})",
            names.join(", ")
        )
    })
}

#[cfg(not(feature = "bundled-plugins"))]
fn bundled_path(name: &str) -> anyhow::Result<std::path::PathBuf> {
    anyhow::bail!("this keel binary was built without bundled plugins; use `path` for {name:?}")
}

/// Parses a 64-hex-digit module hash.
pub fn parse_hash(text: &str) -> Result<[u8; 32], HostError> {
    let bad = || HostError::Deploy(format!("{text:?} is not a 64-hex-digit module hash"));
    // ASCII first: slicing a multi-byte character in half would panic.
    if text.len() != 64 || !text.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// Reads a component file from disk (a helper for the CLI and tests).
pub fn read_component(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading component {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::parse_hash;

    #[test]
    fn a_module_hash_with_multi_byte_characters_is_refused_not_a_panic() {
        // 64 bytes, but 'é' is two of them: slicing by byte pairs used to
        // cut it in half and panic.
        let text = format!("{}{}", "é".repeat(16), "0".repeat(32));
        assert_eq!(text.len(), 64);
        assert!(parse_hash(&text).is_err());
        assert!(parse_hash(&"ab".repeat(32)).is_ok());
        assert!(parse_hash(&"zz".repeat(32)).is_err());
    }
}
