//! The `keel` command line: `serve` runs a host; the other commands are
//! HTTP clients of a running host, except `verify` and `journal`, which
//! read a stopped host's data directory.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

mod client;
mod state;

use client::{client_get, client_post, url_encode};

use crate::config::HostConfig;
use crate::host::Host;
use crate::state_hash::hex;

/// Keel: a WebAssembly-pluggable storage host.
#[derive(Debug, Parser)]
#[command(name = "keel", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct ClientArgs {
    /// Address of the running host.
    #[arg(long, env = "KEEL_ADDR", default_value = "http://127.0.0.1:7700")]
    addr: String,
    /// File holding the API token (its first line), when the host
    /// requires one. Without it the token is read from the KEEL_TOKEN
    /// environment variable. A token is never given as an argument:
    /// `ps` shows every process's arguments.
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
}

impl ClientArgs {
    /// The bearer token: `--token-file`'s first line, else `KEEL_TOKEN`.
    fn token(&self) -> anyhow::Result<Option<String>> {
        if let Some(path) = &self.token_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the token file {}", path.display()))?;
            let token = text.lines().next().unwrap_or_default().trim().to_owned();
            anyhow::ensure!(
                !token.is_empty(),
                "the token file {} is empty",
                path.display()
            );
            return Ok(Some(token));
        }
        Ok(std::env::var("KEEL_TOKEN")
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty()))
    }
}

/// Where an export or import runs, and how it reports.
#[derive(Debug, clap::Args)]
struct TransferArgs {
    /// A stopped host's data directory (instead of the running host).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the host: opens the data directory, deploys the configured
    /// plugins and serves the HTTP API.
    Serve {
        /// Configuration file (TOML). Without one, the defaults apply.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides `listen` from the configuration.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Overrides `data_dir` from the configuration.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Sends a command (JSON) to a plugin and prints the response once durable.
    Call {
        /// Plugin name.
        plugin: String,
        /// The command, as JSON.
        command: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Runs a read-only query (JSON) against a plugin.
    Query {
        /// Plugin name.
        plugin: String,
        /// The query, as JSON.
        request: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Lists plugins with version, schema, last sequence and state hash.
    Plugins {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Shows the host's status, durability mode included.
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Deploys a component file: a new plugin, or a hot-swap of a running one.
    Deploy {
        /// The component (.wasm).
        file: PathBuf,
        /// JSON given to `init` when the plugin is new.
        #[arg(long)]
        config: Option<String>,
        /// Deploy nothing: report what this version would have done with
        /// the plugin's recorded commands, compared with the live version.
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: replay this many of the last commands (default:
        /// those since the newest snapshot).
        #[arg(long, requires = "dry_run")]
        last: Option<u64>,
        /// Deploy even if the host's `[deploy] dry_run` gate refuses.
        #[arg(long, conflicts_with = "dry_run")]
        force: bool,
        /// Print the dry-run report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Makes an earlier deployed version of a plugin active again: its
    /// code only (`<module_hash>`, state kept, `migrate` runs), or with
    /// `--undo-upgrade` as if the upgrade had never happened (the state
    /// before it, every command since run again on the old version; the
    /// answer lists the responses that now differ from what clients were told).
    Rollback {
        /// Plugin name.
        plugin: String,
        /// Module hash (hex) of the version to restore, as `keel plugins` lists it.
        #[arg(required_unless_present = "undo_upgrade")]
        module_hash: Option<String>,
        /// Undo the upgrade instead (the active one, or `--upgrade`).
        #[arg(long, conflicts_with = "module_hash")]
        undo_upgrade: bool,
        /// The sequence of the upgrade to undo (as `keel plugins` lists deployments).
        #[arg(long, requires = "undo_upgrade")]
        upgrade: Option<u64>,
        /// Print the undo report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Takes a snapshot of a plugin now (in the running host).
    Snapshot {
        /// Plugin name.
        plugin: String,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Lists a plugin's snapshots: sequence, time, size, state hash, module.
    Snapshots {
        /// Plugin name.
        plugin: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Restores a plugin of the running host: to its newest snapshot, to
    /// the snapshot `--snapshot`, or to the state it had at `--to-sequence`.
    /// The current state is snapshotted first (the answer names it), so a
    /// restore can be undone by restoring that snapshot.
    Restore {
        /// Plugin name.
        plugin: String,
        /// The snapshot's sequence, as `keel snapshots` lists it.
        #[arg(long, conflicts_with = "to_sequence")]
        snapshot: Option<u64>,
        /// Any past sequence (point in time).
        #[arg(long)]
        to_sequence: Option<u64>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Writes a plugin's state to a JSON-lines export file (rows decoded
    /// as JSON where the plugin declares its tables): from the running
    /// host, or from a stopped host's `--data-dir`.
    Export {
        /// Plugin name.
        plugin: String,
        /// The file to write (default `<plugin>.jsonl`).
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        target: TransferArgs,
    },
    /// Creates a plugin from an export file, on the running host or in a
    /// stopped host's `--data-dir`. The rows must hash to the export's
    /// state hash unless `--accept-changes`.
    Import {
        /// The export file.
        file: PathBuf,
        /// The plugin's component (.wasm), when the host does not have it.
        #[arg(long)]
        component: Option<PathBuf>,
        /// Import an edited file whose rows no longer hash to its header's state hash.
        #[arg(long)]
        accept_changes: bool,
        #[command(flatten)]
        target: TransferArgs,
    },
    /// Reads an API token from stdin and prints its SHA-256 (hex), the
    /// `token_sha256` to put in a `[[principal]]` of the configuration.
    /// Use a long random token, e.g. `openssl rand -hex 32`.
    HashToken,
    /// Replays the journal of a stopped host into a scratch database and
    /// checks that every plugin's state hash is reproduced exactly.
    Verify {
        /// The host's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Where the host keeps compiled components (its `cache_dir`;
        /// default `<data-dir>/cache`), so that replay does not compile them
        /// again.
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Print the verdicts as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rebuilds a stopped host's database from its snapshots and journal
    /// (database and archive) into a new file, checks every plugin, and
    /// puts it in place (the old one stays beside it). Also the way back
    /// when the database file is lost or damaged: each plugin is rebuilt
    /// from its newest snapshot that verifies plus the archived journal,
    /// and the report names the sequences that could not be recovered.
    Recover {
        /// The host's data directory (host stopped).
        #[arg(long)]
        data_dir: PathBuf,
        /// Where each plugin's state comes from.
        #[arg(long, value_enum, default_value = "hybrid")]
        mode: crate::recover::RecoverMode,
        /// Where the host keeps compiled components (default `<data-dir>/cache`).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Prints a plugin's journal entries as JSON lines (sequence,
    /// timestamp, module, kind, payload, caller, outcome).
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Journal {
        /// `export`: write a test fixture instead of printing.
        #[command(subcommand)]
        action: Option<JournalAction>,
        /// The host's data directory (host stopped).
        #[arg(long, required = true)]
        data_dir: Option<PathBuf>,
        /// Plugin name.
        #[arg(required = true)]
        plugin: Option<String>,
        /// First sequence to print.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Most entries to print.
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
}

#[derive(Debug, Subcommand)]
enum JournalAction {
    /// Writes a plugin's recorded commands and the answers they got as a
    /// test fixture (JSON lines, see the host's `fixture.rs`) that the
    /// guest SDK's `Harness::replay_fixture` and the test kit's
    /// `TestHost::replay_fixture` replay through a build under test.
    /// Reads a stopped host's data directory (database and archive).
    Export {
        /// Plugin name.
        plugin: String,
        /// The host's data directory (host stopped).
        #[arg(long)]
        data_dir: PathBuf,
        /// First sequence (default 1: from `init`; later: the state before
        /// it is embedded).
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Last sequence (default: the last).
        #[arg(long)]
        to: Option<u64>,
        /// The file to write (default `<plugin>.fixture.jsonl`).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEEL_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,wasmtime=warn,cranelift=warn")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            config,
            listen,
            data_dir,
        } => serve(config, listen, data_dir),
        Command::Call {
            plugin,
            command,
            client,
        } => client_post(
            &client,
            &format!("/v1/plugins/{plugin}/commands"),
            command.into_bytes(),
        ),
        Command::Query {
            plugin,
            request,
            client,
        } => client_post(
            &client,
            &format!("/v1/plugins/{plugin}/queries"),
            request.into_bytes(),
        ),
        Command::Plugins { client } => client_get(&client, "/v1/plugins"),
        Command::Status { client } => client_get(&client, "/v1/status"),
        Command::Deploy {
            file,
            config,
            dry_run,
            last,
            force,
            json,
            client,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            if dry_run {
                return state::dry_run(&client, bytes, last, json);
            }
            let mut query = vec![format!("force={force}")];
            if let Some(config) = config {
                serde_json::from_str::<serde_json::Value>(&config)
                    .context("--config is not valid JSON")?;
                query.push(format!("config={}", url_encode(&config)));
            }
            client_post(&client, &format!("/v1/plugins?{}", query.join("&")), bytes)
        }
        Command::Rollback {
            plugin,
            module_hash,
            undo_upgrade,
            upgrade,
            json,
            client,
        } => match (undo_upgrade, module_hash) {
            (true, _) => state::undo_upgrade(&client, &plugin, upgrade, json),
            (false, Some(hash)) => client_post(
                &client,
                &format!("/v1/plugins/{plugin}/rollback/{hash}"),
                Vec::new(),
            ),
            (false, None) => {
                anyhow::bail!("name the module hash to roll back to, or --undo-upgrade")
            }
        },
        Command::Snapshot {
            plugin,
            json,
            client,
        } => state::snapshot(&client, &plugin, json),
        Command::Snapshots {
            plugin,
            json,
            client,
        } => state::list_snapshots(&client, &plugin, json),
        Command::Export {
            plugin,
            output,
            target,
        } => state::export(&target, &plugin, output),
        Command::Import {
            file,
            component,
            accept_changes,
            target,
        } => state::import(&target, &file, component, accept_changes),
        Command::Restore {
            plugin,
            snapshot,
            to_sequence,
            json,
            client,
        } => state::restore(&client, &plugin, snapshot, to_sequence, json),
        Command::HashToken => hash_token(),
        Command::Verify {
            data_dir,
            cache_dir,
            json,
        } => state::verify(data_dir, cache_dir, json),
        Command::Recover {
            data_dir,
            mode,
            cache_dir,
            json,
        } => state::recover(data_dir, mode, cache_dir, json),
        Command::Journal {
            action:
                Some(JournalAction::Export {
                    plugin,
                    data_dir,
                    from,
                    to,
                    output,
                    json,
                }),
            ..
        } => state::journal_export(&data_dir, &plugin, from, to, output, json),
        Command::Journal {
            data_dir,
            plugin,
            from,
            limit,
            ..
        } => match (data_dir, plugin) {
            (Some(data_dir), Some(plugin)) => journal(data_dir, &plugin, from, limit),
            _ => anyhow::bail!("keel journal needs --data-dir and a plugin name"),
        },
    }
}

fn serve(
    config: Option<PathBuf>,
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let mut config = match config {
        Some(path) => HostConfig::load(&path)?,
        None => HostConfig::default(),
    };
    if let Some(listen) = listen {
        config.listen = listen;
    }
    if let Some(dir) = data_dir {
        config.data_dir = dir;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let listen = config.listen;
    let durability = config.durability;
    let access = Arc::new(crate::auth::Access::from_config(&config.principals)?);
    access.check_listen(listen)?;
    let host = Arc::new(Host::open(config)?);
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(listen))
        .with_context(|| format!("listening on {listen}"))?;
    let local = listener.local_addr()?;
    // Tests and scripts wait for this line.
    println!(
        "keel listening on http://{local} (durability: {}; authentication: {})",
        durability.as_str(),
        access.describe()
    );
    std::io::stdout().flush().ok();
    tracing::info!(%local, durability = durability.as_str(), authentication = %access.describe(), "serving");
    let shutdown = async {
        let ctrl_c = tokio::signal::ctrl_c();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    };
    runtime.block_on(crate::http::serve(host.clone(), access, listener, shutdown))?;
    drop(runtime);
    match Arc::try_unwrap(host) {
        Ok(host) => host.shutdown(),
        Err(_) => tracing::warn!("requests still hold the host; exiting without draining"),
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

fn hash_token() -> anyhow::Result<ExitCode> {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
        .context("reading the token from stdin")?;
    let token = text.trim_end_matches(['\n', '\r']);
    anyhow::ensure!(!token.is_empty(), "no token on stdin");
    anyhow::ensure!(
        token.trim() == token,
        "the token starts or ends with a space; clients trim it, so it could never match"
    );
    if token.len() < 32 {
        eprintln!(
            "warning: a token of {} characters is short; use at least 32 random characters (openssl rand -hex 32)",
            token.len()
        );
    }
    println!("{}", crate::auth::hash_hex(&crate::auth::hash_token(token)));
    Ok(ExitCode::SUCCESS)
}

fn journal(data_dir: PathBuf, plugin: &str, from: u64, limit: u64) -> anyhow::Result<ExitCode> {
    let (db, record) = state::open_stopped(&data_dir, plugin)?;
    let to = from.saturating_add(limit.saturating_sub(1));
    for entry in db.journal(record.id, from, to)? {
        let (kind, payload) = match &entry.kind {
            crate::storage::EntryKind::Init { config } => {
                ("init", String::from_utf8_lossy(config).into_owned())
            }
            crate::storage::EntryKind::Command { bytes } => {
                ("command", String::from_utf8_lossy(bytes).into_owned())
            }
            crate::storage::EntryKind::Migrate { from_schema, .. } => {
                ("migrate", format!("from schema {from_schema}"))
            }
            crate::storage::EntryKind::Restore {
                to_sequence,
                from_snapshot,
            } => (
                "restore",
                format!("to sequence {to_sequence} (from the snapshot at {from_snapshot})"),
            ),
            crate::storage::EntryKind::UndoUpgrade {
                upgrade_sequence,
                through,
            } => (
                "undo-upgrade",
                format!(
                    "the upgrade at {upgrade_sequence} undone, commands through {through} run again"
                ),
            ),
        };
        let outcome = match &entry.outcome {
            crate::storage::Outcome::Ok(r) => serde_json::json!({"ok": String::from_utf8_lossy(r)}),
            crate::storage::Outcome::Err { code, message } => {
                serde_json::json!({"err": {"code": code, "message": message}})
            }
        };
        println!(
            "{}",
            serde_json::json!({
                "sequence": entry.sequence,
                "timestamp_ms": entry.timestamp_ms,
                "module": hex(&entry.module_hash),
                "kind": kind,
                "payload": payload,
                "caller": entry.caller.as_deref(),
                "outcome": outcome,
                "new_instance": entry.new_instance,
            })
        );
    }
    Ok(ExitCode::SUCCESS)
}
