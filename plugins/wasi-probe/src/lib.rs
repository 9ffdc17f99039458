//! A test-only plugin built for `wasm32-wasip2` with Rust's std, so that it
//! imports WASI 0.2 the way components from standard toolchains do. Its one
//! command reports what the sandbox lets it observe; tests check that the
//! host's sealed WASI shows nothing that could differ on replay.

use keel_guest::{Error, Plugin, Table};
use serde::{Deserialize, Serialize};

const SEEN: Table<u64, u64> = Table::new("seen");

/// Commands.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Looks around the sandbox and reports.
    Probe,
}

/// What the probe saw.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `SystemTime::now()` in ms since the epoch.
    pub wall_clock_ms: u64,
    /// The journaled timestamp from Keel's context.
    pub journaled_ms: u64,
    /// `Instant` elapsed across a busy loop, in ns.
    pub monotonic_elapsed_ns: u64,
    /// `SystemTime::now()` after `thread::sleep` for an hour, in ms.
    pub after_sleep_ms: u64,
    /// Environment variables visible.
    pub env_vars: usize,
    /// Arguments visible (program name included, if any).
    pub args: usize,
    /// Result of listing `/`.
    pub read_dir: String,
    /// Result of creating a file.
    pub create_file: String,
    /// Result of a TCP connection to 127.0.0.1:7700.
    pub connect: String,
    /// 16 random bytes from WASI random, hex.
    pub random: String,
}

fn outcome<T>(r: std::io::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("error: {e}"),
    }
}

/// The plugin.
pub struct WasiProbe;

impl Plugin for WasiProbe {
    const NAME: &'static str = "wasi-probe";
    const VERSION: &'static str = "1.0.0";
    const SCHEMA: u32 = 1;
    type Config = serde::de::IgnoredAny;
    type Command = Command;
    type Response = Report;
    type Query = serde::de::IgnoredAny;
    type QueryResponse = u64;

    fn handle(command: Command) -> Result<Report, Error> {
        let Command::Probe = command;
        let wall_clock_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let start = std::time::Instant::now();
        let mut x = 0u64;
        for i in 0..100_000u64 {
            x = std::hint::black_box(x.wrapping_add(i));
        }
        let monotonic_elapsed_ns = start.elapsed().as_nanos() as u64;
        std::thread::sleep(std::time::Duration::from_secs(3600));
        let after_sleep_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut random = [0u8; 16];
        getrandom::fill(&mut random).map_err(|e| Error::new("random", e.to_string()))?;
        println!("probe at sequence {}", keel_guest::sequence());
        eprintln!("probe stderr line");
        SEEN.put(&keel_guest::sequence(), &wall_clock_ms);
        Ok(Report {
            wall_clock_ms,
            journaled_ms: keel_guest::timestamp_ms(),
            monotonic_elapsed_ns,
            after_sleep_ms,
            env_vars: std::env::vars().count(),
            args: std::env::args().count(),
            read_dir: outcome(std::fs::read_dir("/")),
            create_file: outcome(std::fs::File::create("escape.txt")),
            connect: outcome(std::net::TcpStream::connect("127.0.0.1:7700")),
            random: random.iter().map(|b| format!("{b:02x}")).collect(),
        })
    }

    fn query(_request: Self::Query) -> Result<u64, Error> {
        Ok(SEEN.iter().count() as u64)
    }
}

keel_guest::export!(WasiProbe);
