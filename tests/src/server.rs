//! A real `keel serve` process for end-to-end tests: spawned on a
//! temporary data directory, driven over HTTP on 127.0.0.1, and killed
//! with SIGKILL to prove crash safety.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Path of the `keel` CLI built in this package (`keel-test-server`): next
/// to the `deps/` directory that holds the running test or bench binary,
/// unless `KEEL_BIN` names another.
pub fn keel_bin() -> PathBuf {
    if let Ok(path) = std::env::var("KEEL_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("locating the test binary");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps");
    let bin = dir.join("keel-test-server");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p keel-tests --bins`",
        bin.display()
    );
    bin
}

/// How long a server may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running (or killed) `keel serve` process.
pub struct Server {
    child: Option<Child>,
    config_path: PathBuf,
    base: String,
    agent: ureq::Agent,
    token: Option<String>,
}

/// An HTTP error answer: status and JSON body.
pub type HttpError = (u16, Value);

impl Server {
    /// Writes a config in `dir` deploying the bundled `plugins` (name and
    /// optional init config) and starts the server.
    pub fn start(dir: &Path, plugins: &[(&str, Option<Value>)]) -> Server {
        Self::start_with(dir, plugins, "")
    }

    /// Like [`Server::start`], with extra TOML appended to the config
    /// (top-level keys such as `durability = ...` must come before any
    /// table, so they are inserted first; tables such as `[http]` or
    /// [`principal_toml`]'s may follow them). Requests carry no token until
    /// [`Server::set_token`].
    pub fn start_with(
        dir: &Path,
        plugins: &[(&str, Option<Value>)],
        extra_top_level: &str,
    ) -> Server {
        std::fs::create_dir_all(dir).expect("creating the server dir");
        let mut toml = format!(
            "data_dir = {:?}\nlisten = \"127.0.0.1:0\"\ncache_dir = {:?}\n{extra_top_level}\n",
            dir.join("data").display().to_string(),
            std::env::temp_dir()
                .join("keel-test-component-cache")
                .display()
                .to_string(),
        );
        for (name, config) in plugins {
            toml.push_str(&format!("\n[[plugin]]\nbundled = {name:?}\n"));
            if let Some(config) = config {
                toml.push_str(&format!("config = {}\n", json_to_toml_inline(config)));
            }
        }
        let config_path = dir.join("keel.toml");
        std::fs::write(&config_path, toml).expect("writing the server config");
        let token = None;
        let mut server = Server {
            child: None,
            config_path,
            base: String::new(),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(30)))
                .build()
                .new_agent(),
            token,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut child = Command::new(keel_bin())
            .args(["serve", "--config"])
            .arg(&self.config_path)
            .env("KEEL_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning keel serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let started = Instant::now();
        let line = rx
            .recv_timeout(START_TIMEOUT)
            .unwrap_or_else(|_| panic!("keel serve did not start within {START_TIMEOUT:?}"));
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("unexpected first line from keel serve: {line}"));
        self.base = url.to_owned();
        self.child = Some(child);
        let _ = started;
    }

    /// Sets the bearer token every later request carries (`None`: none).
    pub fn set_token(&mut self, token: Option<&str>) {
        self.token = token.map(str::to_owned);
    }

    /// The server's address, e.g. `127.0.0.1:41234`.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.base
            .trim_start_matches("http://")
            .parse()
            .expect("the server's address")
    }

    /// Sends SIGTERM and waits up to `within` for the process to exit;
    /// returns its exit status, or `None` if it is still running (it is
    /// then left to [`Drop`], which kills it).
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(sent.success(), "kill -TERM failed");
        let started = Instant::now();
        while started.elapsed() < within {
            if let Some(status) = child.try_wait().expect("waiting for keel serve") {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The process's resident memory (VmRSS), in KiB.
    pub fn rss_kib(&self) -> u64 {
        let pid = self.pid().expect("the server is running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading /proc");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    /// How many file descriptors the process holds open.
    pub fn open_fds(&self) -> usize {
        let pid = self.pid().expect("the server is running");
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("reading /proc/<pid>/fd")
            .count()
    }

    /// The server's base URL, e.g. `http://127.0.0.1:41234`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn post(&self, path: &str, body: &[u8]) -> Result<Value, HttpError> {
        let mut req = self.agent.post(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let mut resp = req
            .send(body)
            .map_err(|e| (0, Value::String(e.to_string())))?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status == 200 {
            Ok(value)
        } else {
            Err((status, value))
        }
    }

    /// GETs a path; returns the JSON body or (status, body).
    pub fn get(&self, path: &str) -> Result<Value, HttpError> {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let mut resp = req.call().map_err(|e| (0, Value::String(e.to_string())))?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status == 200 {
            Ok(value)
        } else {
            Err((status, value))
        }
    }

    /// Sends a command; returns (sequence, response) once durable.
    pub fn call(&self, plugin: &str, command: &Value) -> Result<(u64, Value), HttpError> {
        self.call_raw(plugin, command.to_string().as_bytes())
    }

    /// Sends raw command bytes.
    pub fn call_raw(&self, plugin: &str, body: &[u8]) -> Result<(u64, Value), HttpError> {
        let v = self.post(&format!("/v1/plugins/{plugin}/commands"), body)?;
        Ok((
            v["sequence"].as_u64().expect("sequence"),
            v["response"].clone(),
        ))
    }

    /// Runs a query; returns the response.
    pub fn query(&self, plugin: &str, request: &Value) -> Result<Value, HttpError> {
        self.post(
            &format!("/v1/plugins/{plugin}/queries"),
            request.to_string().as_bytes(),
        )
        .map(|v| v["response"].clone())
    }

    /// Posts raw bytes to any path (deploy, bad input, ...).
    pub fn post_raw(&self, path: &str, body: &[u8]) -> Result<Value, HttpError> {
        self.post(path, body)
    }

    /// A plugin's status (`last_sequence`, `state_hash`, ...).
    pub fn plugin_status(&self, plugin: &str) -> Value {
        self.get(&format!("/v1/plugins/{plugin}"))
            .expect("plugin status")
    }

    /// Kills the process with SIGKILL (no clean shutdown) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on the same data directory and config.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `[[principal]]` table for [`Server::start_with`]: `name` holding
/// `token` (stored as its SHA-256), `roles`, and optionally `plugins`.
pub fn principal_toml(name: &str, token: &str, roles: &[&str], plugins: Option<&[&str]>) -> String {
    let hash = keel_host::auth::hash_hex(&keel_host::auth::hash_token(token));
    let mut toml =
        format!("\n[[principal]]\nname = {name:?}\ntoken_sha256 = {hash:?}\nroles = {roles:?}\n");
    if let Some(plugins) = plugins {
        toml.push_str(&format!("plugins = {plugins:?}\n"));
    }
    toml
}

fn json_to_toml_inline(value: &Value) -> String {
    match value {
        Value::Null => "{}".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(json_to_toml_inline)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Object(map) => format!(
            "{{ {} }}",
            map.iter()
                .map(|(k, v)| format!("{k:?} = {}", json_to_toml_inline(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
