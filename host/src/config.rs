//! The host's configuration (`keel.toml`). Every field has a default, so an
//! empty file is a valid configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::limits;
use crate::storage::Durability;

/// Per-call limits applied to every plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Fuel (≈ wasm instructions) per command or query; deterministic.
    pub fuel_per_call: u64,
    /// Wall-clock backstop per call, in milliseconds.
    pub deadline_ms: u64,
    /// Linear memory cap per instance, in bytes.
    pub memory_bytes_max: usize,
    /// Largest command or query payload, in bytes.
    pub command_bytes_max: usize,
    /// Largest key, in bytes.
    pub key_bytes_max: usize,
    /// Largest value, in bytes.
    pub value_bytes_max: usize,
    /// Most bytes one command may write.
    pub write_set_bytes_max: u64,
    /// Fuel for one `migrate` call (it may rewrite the whole state).
    pub migrate_fuel: u64,
    /// Wall-clock backstop for one `migrate` call, in milliseconds.
    pub migrate_deadline_ms: u64,
    /// Most bytes one `migrate` call may write.
    pub migrate_write_set_bytes_max: u64,
}

impl Limits {
    /// The limits a `migrate` call runs under: these, with the migrate
    /// budgets in place of the per-command ones.
    pub fn for_migrate(&self) -> Limits {
        Limits {
            fuel_per_call: self.migrate_fuel,
            deadline_ms: self.migrate_deadline_ms,
            write_set_bytes_max: self.migrate_write_set_bytes_max,
            ..*self
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel_per_call: limits::FUEL_PER_COMMAND,
            deadline_ms: limits::CALL_DEADLINE_MS,
            memory_bytes_max: limits::INSTANCE_MEMORY_BYTES_MAX,
            command_bytes_max: limits::COMMAND_SIZE_BYTES_MAX,
            key_bytes_max: limits::KEY_SIZE_BYTES_MAX,
            value_bytes_max: limits::VALUE_SIZE_BYTES_MAX,
            write_set_bytes_max: limits::WRITE_SET_SIZE_BYTES_MAX,
            migrate_fuel: limits::MIGRATE_FUEL,
            migrate_deadline_ms: limits::MIGRATE_DEADLINE_MS,
            migrate_write_set_bytes_max: limits::MIGRATE_WRITE_SET_SIZE_BYTES_MAX,
        }
    }
}

/// Group-commit settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// Most commands per group commit.
    pub max_commands: usize,
    /// How long the first command of a batch may wait for company, in
    /// microseconds (0: commit whatever is queued at once).
    pub commit_window_us: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_commands: limits::BATCH_COMMANDS_MAX,
            commit_window_us: 0,
        }
    }
}

/// What a deployment of a new version does first (`[deploy] dry_run`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeployGate {
    /// Deploy at once.
    #[default]
    Off,
    /// Dry-run first; log the differences and deploy anyway.
    Warn,
    /// Dry-run first; refuse when any command is handled differently
    /// (`force` overrides).
    Refuse,
}

/// Deployment settings (`[deploy]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeployConfig {
    /// Whether and how a new version is dry-run against recorded traffic
    /// before it replaces the running one.
    pub dry_run: DeployGate,
    /// How many of the last journal entries that dry run replays.
    pub dry_run_commands: u64,
}

impl Default for DeployConfig {
    fn default() -> Self {
        Self {
            dry_run: DeployGate::Off,
            dry_run_commands: crate::dry_run::DEFAULT_COMMANDS,
        }
    }
}

/// How a plugin's calls get their WebAssembly instance.
///
/// Whatever the policy, every journal entry records whether its call ran
/// on a new instance, and replay follows that record, so replay reproduces
/// every response of any component — also one that keeps state in linear
/// memory (see `tests/fresh_instances.rs`). Queries always run on a new
/// instance each (except under `reuse`). Under every policy an instance
/// whose memory grew past half its cap is replaced before its next call,
/// so that what earlier calls left never makes a later one run out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstancePolicy {
    /// Each batch of commands starts on a new instance made from the
    /// component's initial memory image (pooled, copy-on-write), and so
    /// does the command after one that trapped; the other commands of the
    /// batch run on the instance of the command before. What a call leaves
    /// in linear memory can thus reach the later calls of its batch, never
    /// another batch. The default: a new instance costs about as much as a
    /// small command, and a batch holds up to hundreds.
    #[default]
    Batch,
    /// Every call (command, query, migrate) runs on a new instance: nothing
    /// a call leaves in linear memory reaches the next call, so a plugin's
    /// only state is its tables, whatever the load. For plugins named in
    /// `[runtime] fresh_instances`.
    Fresh,
    /// One instance serves call after call and is replaced only after a
    /// call that trapped: what a call leaves in linear memory reaches every
    /// later call until then. For plugins named in
    /// `[runtime] reuse_instances`.
    Reuse,
}

impl InstancePolicy {
    /// The policy of a plugin's queries: a new instance for each, except
    /// under `reuse` (queries are not journaled, so nothing replays them).
    pub fn for_queries(self) -> InstancePolicy {
        match self {
            InstancePolicy::Batch | InstancePolicy::Fresh => InstancePolicy::Fresh,
            InstancePolicy::Reuse => InstancePolicy::Reuse,
        }
    }
}

/// How plugins run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Names of the plugins that run under [`InstancePolicy::Reuse`].
    pub reuse_instances: Vec<String>,
    /// Names of the plugins that run under [`InstancePolicy::Fresh`] (a
    /// new instance for every call); every plugin in neither list runs
    /// under [`InstancePolicy::Batch`].
    pub fresh_instances: Vec<String>,
}

impl RuntimeConfig {
    /// The instance policy of the plugin called `plugin`.
    pub fn instance_policy(&self, plugin: &str) -> InstancePolicy {
        if self.reuse_instances.iter().any(|p| p == plugin) {
            InstancePolicy::Reuse
        } else if self.fresh_instances.iter().any(|p| p == plugin) {
            InstancePolicy::Fresh
        } else {
            InstancePolicy::Batch
        }
    }
}

/// Limits of the HTTP front (`[http]`): every connection and upload is
/// bounded in count and time before any credential is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Most open connections; one more is accepted and closed at once.
    pub connections_max: usize,
    /// Time a client has to send a request's headers, from the moment the
    /// connection opens or the previous response was sent (so it is also
    /// the idle keep-alive timeout), in milliseconds.
    pub header_timeout_ms: u64,
    /// Time a client has to send a whole request body, in milliseconds.
    pub body_timeout_ms: u64,
    /// Most command and query bodies read at once (memory held by uploads
    /// is at most this times `limits.command_bytes_max`).
    pub uploads_max: usize,
    /// How long a shutdown (SIGTERM, Ctrl-C) waits for requests in flight
    /// before closing their connections, in milliseconds.
    pub shutdown_grace_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            connections_max: limits::HTTP_CONNECTIONS_MAX,
            header_timeout_ms: limits::HTTP_HEADER_TIMEOUT_MS,
            body_timeout_ms: limits::HTTP_BODY_TIMEOUT_MS,
            uploads_max: limits::HTTP_UPLOADS_MAX,
            shutdown_grace_ms: limits::HTTP_SHUTDOWN_GRACE_MS,
        }
    }
}

/// A principal (`[[principal]]`): a caller of the HTTP API, its
/// credential and its roles (see [`crate::auth`]). The configuration holds
/// only hashes of tokens, never a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalConfig {
    /// The principal's name (what plugins see as the caller).
    pub name: String,
    /// SHA-256 of its bearer token, 64 hex digits (`keel hash-token`).
    #[serde(default)]
    pub token_sha256: Option<String>,
    /// A file of such hashes, one per line (`#` comments allowed): several
    /// tokens for one principal, e.g. while rotating (relative to the
    /// config file).
    #[serde(default)]
    pub token_sha256_file: Option<PathBuf>,
    /// `admin`, `client`, `operator`.
    pub roles: Vec<crate::auth::Role>,
    /// The plugins a client or operator may use (default: every plugin).
    #[serde(default)]
    pub plugins: Option<Vec<String>>,
}

/// A plugin to deploy at start-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSpec {
    /// Name of a plugin bundled with the `keel` binary (`counter`, ...).
    #[serde(default)]
    pub bundled: Option<String>,
    /// Path of a component file (relative to the config file).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Configuration given to `init` on first deployment.
    #[serde(default)]
    pub config: Option<toml::Value>,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
    /// Directory for the database and the compiled-component cache.
    pub data_dir: PathBuf,
    /// Directory for compiled components (default: `<data_dir>/cache`).
    /// Safe to share between hosts: entries are content-addressed.
    pub cache_dir: Option<PathBuf>,
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Commit durability; `relaxed` must be chosen explicitly.
    pub durability: Durability,
    /// Callers of the HTTP API and their roles; none: the API is
    /// unauthenticated and served on a loopback address only.
    #[serde(rename = "principal")]
    pub principals: Vec<PrincipalConfig>,
    /// Limits of the HTTP front.
    pub http: HttpConfig,
    /// Group commit.
    pub batch: BatchConfig,
    /// When the write-ahead log is folded into a durable redb commit.
    pub checkpoint: crate::storage::CheckpointPolicy,
    /// When each plugin's snapshot is taken and how many are kept.
    pub snapshots: crate::snapshot::SnapshotPolicy,
    /// Where journal entries older than the oldest snapshot go, and for
    /// how long.
    pub archive: crate::storage::ArchivePolicy,
    /// What a deployment of a new version does first.
    pub deploy: DeployConfig,
    /// Per-call limits.
    pub limits: Limits,
    /// How plugins' instances run.
    pub runtime: RuntimeConfig,
    /// Plugins to deploy at start-up (kept across restarts once deployed).
    #[serde(rename = "plugin")]
    pub plugins: Vec<PluginSpec>,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("keel-data"),
            cache_dir: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            durability: Durability::Immediate,
            principals: Vec::new(),
            http: HttpConfig::default(),
            batch: BatchConfig::default(),
            checkpoint: Default::default(),
            snapshots: Default::default(),
            archive: Default::default(),
            deploy: DeployConfig::default(),
            limits: Limits::default(),
            runtime: RuntimeConfig::default(),
            plugins: Vec::new(),
        }
    }
}

impl HostConfig {
    /// Reads a TOML file; relative paths in it are taken from its directory.
    pub fn load(path: &Path) -> anyhow::Result<HostConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        if let Ok(table) = toml::from_str::<toml::Table>(&text) {
            anyhow::ensure!(
                !table.contains_key("token"),
                "{}: `token` is no longer supported (it held a secret in clear); declare \
                 [[principal]] tables with `token_sha256` (`keel hash-token` prints it) and `roles`",
                path.display()
            );
        }
        let mut config: HostConfig =
            toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        if config.data_dir.is_relative() {
            config.data_dir = base.join(&config.data_dir);
        }
        for principal in &mut config.principals {
            if let Some(p) = &principal.token_sha256_file
                && p.is_relative()
            {
                principal.token_sha256_file = Some(base.join(p));
            }
        }
        for spec in &mut config.plugins {
            if let Some(p) = &spec.path
                && p.is_relative()
            {
                spec.path = Some(base.join(p));
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks values that serde cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(both) = self
            .runtime
            .reuse_instances
            .iter()
            .find(|p| self.runtime.fresh_instances.contains(p))
        {
            anyhow::bail!(
                "plugin {both:?} is in both runtime.reuse_instances and runtime.fresh_instances"
            );
        }
        anyhow::ensure!(
            self.batch.max_commands >= 1,
            "batch.max_commands must be at least 1"
        );
        anyhow::ensure!(
            self.limits.fuel_per_call >= 1_000,
            "limits.fuel_per_call must be at least 1000"
        );
        anyhow::ensure!(
            self.limits.deadline_ms >= limits::EPOCH_TICK_MS,
            "limits.deadline_ms must be at least {} ms",
            limits::EPOCH_TICK_MS
        );
        anyhow::ensure!(
            self.limits.memory_bytes_max >= 1 << 20,
            "limits.memory_bytes_max must be at least 1 MiB"
        );
        let h = &self.http;
        anyhow::ensure!(
            h.connections_max >= 1 && h.uploads_max >= 1,
            "http.connections_max and http.uploads_max must be at least 1"
        );
        anyhow::ensure!(
            h.header_timeout_ms >= 100 && h.body_timeout_ms >= 100,
            "http.header_timeout_ms and http.body_timeout_ms must be at least 100 ms"
        );
        crate::auth::Access::from_config(&self.principals)?;
        for (i, spec) in self.plugins.iter().enumerate() {
            anyhow::ensure!(
                spec.bundled.is_some() != spec.path.is_some(),
                "plugin #{} must name exactly one of `bundled` or `path`",
                i + 1
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_keel_toml_loads_with_every_section() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../keel.toml");
        let config = HostConfig::load(&path).unwrap();
        config.validate().unwrap();
        assert_eq!(config.checkpoint.interval_ms, 5000);
        assert_eq!(config.checkpoint.log_bytes_max, 64 << 20);
        assert_eq!(config.batch.max_commands, 4096);
        assert_eq!(config.plugins.len(), 5);
    }

    #[test]
    fn principals_and_http_limits_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keel.toml");
        let hash = crate::auth::hash_hex(&crate::auth::hash_token("t"));
        std::fs::write(
            dir.path().join("ops.sha256"),
            format!("# rotation\n{hash}\n"),
        )
        .unwrap();
        std::fs::write(
            &path,
            format!(
                "[http]\nconnections_max = 10\n\n[[principal]]\nname = \"alice\"\n\
                 token_sha256 = \"{}\"\nroles = [\"client\"]\nplugins = [\"spot\"]\n\n\
                 [[principal]]\nname = \"ops\"\ntoken_sha256_file = \"ops.sha256\"\n\
                 roles = [\"operator\", \"client\"]\n",
                crate::auth::hash_hex(&crate::auth::hash_token("other"))
            ),
        )
        .unwrap();
        let config = HostConfig::load(&path).unwrap();
        assert_eq!(config.http.connections_max, 10);
        assert_eq!(config.principals.len(), 2);
        assert_eq!(
            config.principals[1].token_sha256_file.as_deref(),
            Some(dir.path().join("ops.sha256").as_path())
        );
    }

    #[test]
    fn a_clear_token_is_refused_with_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keel.toml");
        std::fs::write(&path, "token = \"s3cret\"\n").unwrap();
        let err = format!("{:#}", HostConfig::load(&path).unwrap_err());
        assert!(err.contains("keel hash-token"), "{err}");
    }

    #[test]
    fn an_unknown_checkpoint_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keel.toml");
        std::fs::write(&path, "[checkpoint]\ninterval = 5\n").unwrap();
        let err = format!("{:#}", HostConfig::load(&path).unwrap_err());
        assert!(err.contains("interval"), "{err}");
    }
}
