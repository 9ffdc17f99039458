//! Test a plugin in isolation: a throwaway host on a temporary directory,
//! with the real runtime and a real redb file, plus crash and restart.
//!
//! ```no_run
//! use keel_host::testkit::TestHost;
//! use serde_json::json;
//!
//! let mut t = TestHost::new();
//! t.deploy_file("target/plugins-build/wasm32-unknown-unknown/plugin/keel_plugin_counter.wasm");
//! t.call("counter", json!({"add": {"name": "a", "amount": 2}})).unwrap();
//! t.crash_and_restart();                      // stop without a clean shutdown
//! assert_eq!(t.query("counter", json!({"get": {"name": "a"}})).unwrap(), json!(2));
//! assert!(t.verify_replay().iter().all(|v| v.ok()));
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::caller::Caller;
use crate::config::HostConfig;
use crate::error::HostError;
use crate::host::{Host, PluginStatus};
use crate::replay::{Verification, replay_with_cache};

/// A host on a temporary directory, deleted when dropped.
pub struct TestHost {
    dir: tempfile::TempDir,
    config: HostConfig,
    host: Option<Host>,
}

impl Default for TestHost {
    fn default() -> Self {
        Self::new()
    }
}

impl TestHost {
    /// A host with the default configuration (immediate durability).
    pub fn new() -> Self {
        Self::with_config(|_| {})
    }

    /// A host whose configuration `adjust` may change (limits, batch, ...).
    /// `data_dir` is always the temporary directory.
    pub fn with_config(adjust: impl FnOnce(&mut HostConfig)) -> Self {
        let dir = tempfile::tempdir().expect("creating a temporary directory");
        let mut config = HostConfig::default();
        adjust(&mut config);
        config.data_dir = dir.path().join("data");
        if config.cache_dir.is_none() {
            // Compiled components are content-addressed: share them between test hosts.
            config.cache_dir = Some(std::env::temp_dir().join("keel-test-component-cache"));
        }
        let host = Host::open(config.clone()).expect("opening the test host");
        Self {
            dir,
            config,
            host: Some(host),
        }
    }

    /// The running host.
    pub fn host(&self) -> &Host {
        self.host.as_ref().expect("the host is running")
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// Deploys a component file; panics with the host's message on refusal.
    pub fn deploy_file(&self, path: impl AsRef<Path>) -> PluginStatus {
        let bytes = std::fs::read(path.as_ref()).expect("reading the component");
        self.host()
            .deploy(&bytes, None)
            .unwrap_or_else(|e| panic!("deploying {}: {e}", path.as_ref().display()))
    }

    /// Deploys component bytes with an `init` configuration.
    pub fn deploy(&self, bytes: &[u8], config: Option<Value>) -> Result<PluginStatus, HostError> {
        let config = config.map(|c| serde_json::to_vec(&c).expect("JSON"));
        self.host().deploy(bytes, config.as_deref())
    }

    /// Sends a command and waits for its commit; returns the response.
    pub fn call(&self, plugin: &str, command: Value) -> Result<Value, HostError> {
        let receipt = self.host().submit(plugin, command.to_string().as_bytes())?;
        Ok(serde_json::from_slice(&receipt.response).expect("plugin responses are JSON"))
    }

    /// Sends a command on behalf of `caller` (what the plugin's
    /// `context.caller` returns) and waits for its commit.
    pub fn call_as(
        &self,
        plugin: &str,
        caller: &Caller,
        command: Value,
    ) -> Result<Value, HostError> {
        let receipt =
            self.host()
                .submit_as(plugin, command.to_string().as_bytes(), Some(caller.clone()))?;
        Ok(serde_json::from_slice(&receipt.response).expect("plugin responses are JSON"))
    }

    /// Sends a command given as raw bytes; returns (sequence, response).
    pub fn call_raw(&self, plugin: &str, command: &[u8]) -> Result<(u64, Vec<u8>), HostError> {
        let receipt = self.host().submit(plugin, command)?;
        Ok((receipt.sequence, receipt.response))
    }

    /// Runs a query.
    pub fn query(&self, plugin: &str, request: Value) -> Result<Value, HostError> {
        let bytes = self.host().query(plugin, request.to_string().as_bytes())?;
        Ok(serde_json::from_slice(&bytes).expect("plugin responses are JSON"))
    }

    /// Runs a query on behalf of `caller`.
    pub fn query_as(
        &self,
        plugin: &str,
        caller: &Caller,
        request: Value,
    ) -> Result<Value, HostError> {
        let bytes =
            self.host()
                .query_as(plugin, request.to_string().as_bytes(), Some(caller.clone()))?;
        Ok(serde_json::from_slice(&bytes).expect("plugin responses are JSON"))
    }

    /// Every journal entry of `plugin`, oldest first (sequence, kind,
    /// outcome, caller).
    pub fn journal(&self, plugin: &str) -> Vec<crate::storage::JournalEntry> {
        let status = self.status(plugin);
        self.host()
            .db()
            .journal(status.id, 1, status.last_sequence)
            .expect("reading the journal")
    }

    /// A plugin's status (version, last sequence, state hash).
    pub fn status(&self, plugin: &str) -> PluginStatus {
        self.host().plugin(plugin).expect("plugin is deployed")
    }

    /// A plugin's state hash (hex).
    pub fn state_hash(&self, plugin: &str) -> String {
        self.status(plugin).state_hash
    }

    /// Every (table, key) → value the plugin has committed.
    pub fn tables(&self, plugin: &str) -> BTreeMap<(String, Vec<u8>), Vec<u8>> {
        let id = self.status(plugin).id;
        self.host()
            .db()
            .dump_plugin(id)
            .expect("reading the plugin's tables")
    }

    /// Stops as a crash would (nothing in flight is committed) and reopens.
    pub fn crash_and_restart(&mut self) {
        if let Some(host) = self.host.take() {
            host.crash();
        }
        self.reopen();
    }

    /// Crashes (see [`crate::Host::crash`]) and stays stopped; [`TestHost::start`]
    /// opens it again (to time recovery on its own).
    pub fn crash(&mut self) {
        if let Some(host) = self.host.take() {
            host.crash();
        }
    }

    /// Shuts down cleanly and reopens.
    pub fn restart(&mut self) {
        if let Some(host) = self.host.take() {
            host.shutdown();
        }
        self.reopen();
    }

    /// Shuts down cleanly and stays stopped (to work on the files, as
    /// `keel recover` does); [`TestHost::start`] opens it again.
    pub fn stop(&mut self) {
        if let Some(host) = self.host.take() {
            host.shutdown();
        }
    }

    /// Opens the stopped host again.
    pub fn start(&mut self) {
        assert!(self.host.is_none(), "the host is running");
        self.reopen();
    }

    fn reopen(&mut self) {
        let mut config = self.config.clone();
        config.plugins.clear();
        self.host = Some(Host::open(config).expect("reopening the test host"));
    }

    /// Replays a recorded fixture (see [`crate::fixture`]) through
    /// `component` (bytes of the build under test) as a new plugin of this
    /// host: `init` with the recorded configuration, or the recorded rows,
    /// then every command with its recorded sequence, timestamp and
    /// caller; each answer is compared with production's. An error is a
    /// fixture or component that does not load.
    pub fn replay_fixture(
        &self,
        component: &[u8],
        fixture: &str,
    ) -> Result<crate::fixture::FixtureReport, String> {
        use crate::executor::{Call, Restored, Scheduled};
        use crate::fixture::{FixtureDivergence, FixtureReport, same};
        #[derive(serde::Deserialize)]
        struct Line {
            sequence: u64,
            timestamp_ms: u64,
            caller: Option<Caller>,
            command: Box<serde_json::value::RawValue>,
            outcome: Value,
            /// Absent in fixtures written before instance boundaries were
            /// journaled: every call then ran on a new instance.
            #[serde(default = "yes")]
            new_instance: bool,
        }
        fn yes() -> bool {
            true
        }
        let mut lines = fixture.lines().filter(|l| !l.trim().is_empty());
        let header: Value = serde_json::from_str(lines.next().ok_or("an empty fixture")?)
            .map_err(|e| format!("the header: {e}"))?;
        let host = self.host();
        let loaded = host.load_component(component).map_err(|e| e.to_string())?;
        let plugin = header["plugin"].as_str().unwrap_or_default().to_owned();
        if !header["init"].is_null() {
            let ts = header["init_timestamp_ms"].as_u64().unwrap_or(0);
            let config = header["init"].to_string();
            host.deploy_loaded(loaded, Some(config.as_bytes()), Some((1, ts)))
                .map_err(|e| e.to_string())?;
        } else {
            let from = header["from"].as_u64().unwrap_or(1);
            let info = host.component_info(&loaded).map_err(|e| e.to_string())?;
            let mut rows = Vec::new();
            let mut hash = crate::state_hash::StateHash::EMPTY;
            for row in header["state"].as_array().into_iter().flatten() {
                let field = |i: usize| -> Result<Vec<u8>, String> {
                    let text = row[i].as_str().ok_or("a state row is not strings")?;
                    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text)
                        .map_err(|e| e.to_string())
                };
                let table = row[0].as_str().ok_or("a state row has no table")?;
                let (key, value) = (field(1)?, field(2)?);
                hash.add(table, &key, &value);
                let mut full = table.as_bytes().to_vec();
                full.push(0);
                full.extend_from_slice(&key);
                rows.push((full, value));
            }
            rows.sort();
            let restored = Restored {
                record: crate::storage::PluginRecord {
                    id: 0,
                    name: info.name.clone(),
                    deployments: vec![crate::storage::Deployment {
                        module_hash: loaded.hash,
                        version: info.version,
                        schema: info.schema,
                        sequence: from - 1,
                    }],
                    last_sequence: from - 1,
                    last_timestamp_ms: 0,
                    state_hash: hash,
                },
                rows,
                from_snapshot: 0,
            };
            host.seed_plugin(loaded, &restored)
                .map_err(|e| e.to_string())?;
        }
        let mut pending = Vec::new();
        for (i, text) in lines.enumerate() {
            let line: Line =
                serde_json::from_str(text).map_err(|e| format!("line {}: {e}", i + 2))?;
            let scheduled = Scheduled {
                call: Call::Command(line.command.get().as_bytes().to_vec()),
                forced: Some((line.sequence, line.timestamp_ms)),
                caller: line.caller.map(std::sync::Arc::new),
                new_instance: Some(line.new_instance),
            };
            let rx = host
                .enqueue_scheduled(&plugin, scheduled)
                .map_err(|e| e.to_string())?;
            pending.push((line.sequence, line.command, line.outcome, rx));
        }
        let mut report = FixtureReport {
            plugin: plugin.clone(),
            replayed: 0,
            divergences: Vec::new(),
        };
        for (sequence, command, expected, rx) in pending {
            let got = match rx
                .blocking_recv()
                .map_err(|_| "the host stopped".to_owned())?
            {
                Ok(receipt) => serde_json::json!({
                    "ok": serde_json::from_slice::<Value>(&receipt.response).unwrap_or(Value::Null)
                }),
                Err(HostError::Rejected { code, message, .. }) => {
                    serde_json::json!({"err": {"code": code, "message": message}})
                }
                Err(e) => return Err(e.to_string()),
            };
            report.replayed += 1;
            if !same(&expected, &got) {
                report.divergences.push(FixtureDivergence {
                    sequence,
                    command: serde_json::from_str(command.get()).unwrap_or(Value::Null),
                    expected,
                    got,
                });
            }
        }
        Ok(report)
    }

    /// Replays the journal into a fresh host and compares state hashes.
    pub fn verify_replay(&self) -> Vec<Verification> {
        let scratch = self
            .dir
            .path()
            .join(format!("replay-{}", crate::executor::now_ms()));
        let cache = self
            .config
            .cache_dir
            .clone()
            .unwrap_or_else(|| self.config.data_dir.join("cache"));
        replay_with_cache(self.host().db(), &scratch, &cache, |_, _, _| {})
            .expect("replaying the journal")
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if let Some(host) = self.host.take() {
            host.shutdown();
        }
    }
}

/// The process's resident set size in MiB (from `/proc/self/status`; 0
/// where there is none): the benches' memory figure.
pub fn process_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU seconds used so far by each of the process's threads, summed by
/// thread name (from `/proc/self/task`; empty where there is none), so a
/// bench can show which thread is the bottleneck: diff two readings.
pub fn thread_cpu_seconds() -> std::collections::BTreeMap<String, f64> {
    let mut by_name = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return by_name;
    };
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_owned();
        // utime and stime are the 12th and 13th fields after the name.
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
            f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
        });
        *by_name.entry(name).or_insert(0.0) += ticks / 100.0; // USER_HZ
    }
    by_name
}

/// The CPU seconds each thread used between two [`thread_cpu_seconds`]
/// readings, busiest first, as `name s, name s, …` (threads under 10 ms
/// left out; exited threads' time is lost).
pub fn thread_cpu_report(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
) -> String {
    let mut used: Vec<(&str, f64)> = after
        .iter()
        .map(|(name, s)| (name.as_str(), s - before.get(name).copied().unwrap_or(0.0)))
        .filter(|(_, s)| *s >= 0.01)
        .collect();
    used.sort_by(|a, b| b.1.total_cmp(&a.1));
    used.iter()
        .map(|(name, s)| format!("{name} {s:.2} s"))
        .collect::<Vec<_>>()
        .join(", ")
}
