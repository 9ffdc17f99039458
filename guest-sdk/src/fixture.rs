//! Recorded journals as test fixtures: replay production traffic through
//! the plugin under test, natively, and see every command it answers
//! differently.
//!
//! A fixture is the JSON-lines file `keel journal export` writes (format
//! 1, documented in the host's `fixture.rs`): a header
//! `{"keel_fixture": 1, "plugin", "module_hash", "from", "to", "init",
//! "state"}` — `init` is the configuration `init` ran with when the
//! fixture starts at the first command, `state` the plugin's rows before
//! `from` otherwise (`[[table, key_base64, value_base64], …]`) — then one
//! line per command: `{"sequence", "timestamp_ms", "caller", "command",
//! "outcome"}` with `outcome` `{"ok": <response>}` or `{"err": {"code",
//! "message"}}`.
//!
//! ```ignore
//! #[test]
//! fn answers_last_tuesdays_traffic_as_production_did() {
//!     let report = Harness::<Spot>::replay_fixture(include_str!("../fixtures/spot.jsonl")).unwrap();
//!     report.assert_same();
//! }
//! ```

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde_json::Value;

use crate::context::Caller;

/// The fixture format this SDK reads.
pub const FIXTURE_FORMAT: u32 = 1;

/// A fixture's first line.
#[derive(Debug, Clone, Deserialize)]
pub struct FixtureHeader {
    /// The format, [`FIXTURE_FORMAT`].
    pub keel_fixture: u32,
    /// The plugin it was recorded from.
    pub plugin: String,
    /// The module that answered (hex).
    pub module_hash: String,
    /// First and last sequence.
    pub from: u64,
    /// Last sequence.
    pub to: u64,
    /// `init`'s configuration, when the fixture starts at the beginning.
    #[serde(default)]
    pub init: Option<Value>,
    /// The timestamp `init` ran at.
    #[serde(default)]
    pub init_timestamp_ms: Option<u64>,
    /// The rows before `from`, when it does not.
    #[serde(default)]
    pub state: Option<Vec<(String, String, String)>>,
}

/// One recorded command.
#[derive(Debug, Clone, Deserialize)]
pub struct FixtureCommand {
    /// Its journal sequence.
    pub sequence: u64,
    /// Its journal timestamp.
    pub timestamp_ms: u64,
    /// Who sent it.
    #[serde(default)]
    pub caller: Option<Caller>,
    /// The command.
    pub command: Value,
    /// What production answered.
    pub outcome: Recorded,
    /// Whether the command ran on a new instance of the component (absent
    /// in older fixtures: it did). Natively there is no instance; the
    /// host's fixture replay follows it.
    #[serde(default = "yes")]
    pub new_instance: bool,
}

fn yes() -> bool {
    true
}

/// What production answered.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Recorded {
    /// The response.
    Ok(Value),
    /// The refusal.
    Err {
        /// Error code.
        code: String,
        /// Message.
        message: String,
    },
}

impl fmt::Display for Recorded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recorded::Ok(v) => write!(f, "ok {v}"),
            Recorded::Err { code, message } => write!(f, "error {code}: {message}"),
        }
    }
}

/// A command answered differently than recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Divergence {
    /// Its sequence.
    pub sequence: u64,
    /// The command.
    pub command: Value,
    /// What production answered.
    pub expected: Recorded,
    /// What the plugin under test answered.
    pub got: Recorded,
}

/// The result of replaying a fixture.
#[derive(Debug, Clone, PartialEq)]
pub struct FixtureReport {
    /// The plugin.
    pub plugin: String,
    /// Commands replayed.
    pub replayed: u64,
    /// Every command answered differently (a refusal is compared by code).
    pub divergences: Vec<Divergence>,
}

impl FixtureReport {
    /// Panics with a readable diff unless every command was answered as
    /// recorded.
    #[track_caller]
    pub fn assert_same(&self) {
        if !self.divergences.is_empty() {
            panic!("{self}");
        }
    }

    /// The sequences answered differently.
    pub fn diverging_sequences(&self) -> Vec<u64> {
        self.divergences.iter().map(|d| d.sequence).collect()
    }
}

impl fmt::Display for FixtureReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} of {} recorded commands answered differently",
            self.plugin,
            self.divergences.len(),
            self.replayed
        )?;
        for d in self.divergences.iter().take(20) {
            writeln!(f, "  sequence {}: {}", d.sequence, d.command)?;
            writeln!(f, "    - recorded: {}", d.expected)?;
            writeln!(f, "    + now:      {}", d.got)?;
        }
        if self.divergences.len() > 20 {
            writeln!(f, "  … and {} more", self.divergences.len() - 20)?;
        }
        Ok(())
    }
}

/// Whether an answer matches the recorded one: the same response, or a
/// refusal with the same code (messages may differ).
pub fn same(expected: &Recorded, got: &Recorded) -> bool {
    match (expected, got) {
        (Recorded::Ok(a), Recorded::Ok(b)) => a == b,
        (Recorded::Err { code: a, .. }, Recorded::Err { code: b, .. }) => a == b,
        _ => false,
    }
}

/// A parsed fixture.
pub struct Fixture {
    /// Its header.
    pub header: FixtureHeader,
    /// Its commands, in order.
    pub commands: Vec<FixtureCommand>,
}

/// Parses a fixture's text; an error names the line.
pub fn parse(text: &str) -> Result<Fixture, String> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, first) = lines.next().ok_or("an empty fixture")?;
    let header: FixtureHeader =
        serde_json::from_str(first).map_err(|e| format!("line 1 (the header): {e}"))?;
    if header.keel_fixture != FIXTURE_FORMAT {
        return Err(format!(
            "fixture format {} (this SDK reads {FIXTURE_FORMAT})",
            header.keel_fixture
        ));
    }
    let commands = lines
        .map(|(i, line)| serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect::<Result<Vec<FixtureCommand>, String>>()?;
    Ok(Fixture { header, commands })
}

/// A stored row: table, key bytes, value bytes.
pub type Row = (String, Vec<u8>, Vec<u8>);

/// Decodes the header's `state` rows.
pub(crate) fn state_rows(header: &FixtureHeader) -> Result<Vec<Row>, String> {
    header
        .state
        .iter()
        .flatten()
        .map(|(table, key, value)| {
            let key = BASE64.decode(key).map_err(|e| format!("state key: {e}"))?;
            let value = BASE64
                .decode(value)
                .map_err(|e| format!("state value: {e}"))?;
            Ok((table.clone(), key, value))
        })
        .collect()
}
