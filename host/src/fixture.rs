//! Recorded journals as test fixtures: `keel journal export` writes a
//! plugin's recorded commands, with the answers production gave, to a
//! portable file; the guest SDK's `Harness::replay_fixture` (natively) and
//! `testkit::TestHost::replay_fixture` (feature `testkit`) (the real component) run
//! them through the plugin under test and report every command answered
//! differently.
//!
//! The file (format 1), one JSON object per line:
//!
//! 1. the header: `{"keel_fixture": 1, "plugin": "spot", "module_hash":
//!    "<hex of the module that answered>", "from": A, "to": B, "init":
//!    <init's configuration> | null, "init_timestamp_ms": t | null,
//!    "state": [[table, key_base64, value_base64], …] | null}` — a fixture
//!    from the first command carries `init`'s configuration, one from
//!    later the plugin's rows just before `from`;
//! 2. one line per command, in order: `{"sequence": n, "timestamp_ms": t,
//!    "caller": {"principal": …, "roles": […]} | null, "command": <the
//!    command's JSON, byte for byte>, "outcome": {"ok": <response, byte for
//!    byte>} | {"err": {"code": …, "message": …}}}`.
//!
//! A fixture covers one version's answers: it ends before the first later
//! deployment, restore or undone upgrade (the summary says where).

use std::io::Write;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Serialize;
use serde_json::Value;

use crate::replay::Source;
use crate::snapshot::format::split_key;
use crate::state_hash::hex;
use crate::storage::{EntryKind, Outcome, PluginRecord};

/// The fixture format this host writes.
pub const FIXTURE_FORMAT: u32 = 1;
/// Journal entries read per step.
const CHUNK_ENTRIES: u64 = 4096;

/// What `keel journal export` wrote.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FixtureSummary {
    /// The plugin.
    pub plugin: String,
    /// First and last sequence written.
    pub from: u64,
    /// Last sequence written.
    pub to: u64,
    /// Commands written.
    pub commands: u64,
    /// Why it ends before the requested end, if it does.
    pub ended_at: Option<String>,
}

/// Writes `record`'s journal `from..=to` from `source` as a fixture.
pub fn write_fixture(
    source: &Source<'_>,
    record: &PluginRecord,
    from: u64,
    to: u64,
    out: &mut dyn Write,
) -> anyhow::Result<FixtureSummary> {
    anyhow::ensure!(
        from >= 1 && from <= to && to <= record.last_sequence,
        "{} has sequences 1..={}; asked for {from}..={to}",
        record.name,
        record.last_sequence
    );
    let (mut init, mut init_ts, mut state, mut first) =
        (Value::Null, Value::Null, Value::Null, from);
    let module = if from == 1 {
        let entry = source.journal(record, 1, 1)?.pop().ok_or_else(|| {
            anyhow::anyhow!("the journal of {} lacks its first entry", record.name)
        })?;
        let EntryKind::Init { config } = &entry.kind else {
            anyhow::bail!("the first entry of {} is not its init", record.name);
        };
        init = serde_json::from_slice(config)?;
        init_ts = entry.timestamp_ms.into();
        first = 2;
        entry.module_hash
    } else {
        let (before, _) = source.state_at(record, from - 1)?;
        state = before
            .rows
            .iter()
            .map(|(k, v)| {
                let (table, key) = split_key(k).unwrap_or(("", k));
                serde_json::json!([table, BASE64.encode(key), BASE64.encode(v)])
            })
            .collect();
        before.record.active().module_hash
    };
    let mut lines = Vec::new();
    let mut summary = FixtureSummary {
        plugin: record.name.clone(),
        from,
        to: first.saturating_sub(1),
        commands: 0,
        ended_at: None,
    };
    let mut next = first;
    'entries: while next <= to {
        let last = (next + CHUNK_ENTRIES - 1).min(to);
        for entry in source.journal(record, next, last)? {
            let EntryKind::Command { bytes } = &entry.kind else {
                summary.ended_at = Some(format!(
                    "sequence {}: not a command (a deployment, restore or undone upgrade)",
                    entry.sequence
                ));
                break 'entries;
            };
            let outcome = match &entry.outcome {
                Outcome::Ok(response) => {
                    format!("{{\"ok\":{}}}", String::from_utf8_lossy(response))
                }
                Outcome::Err { code, message } => {
                    serde_json::json!({"err": {"code": code, "message": message}}).to_string()
                }
            };
            lines.push(format!(
                "{{\"sequence\":{},\"timestamp_ms\":{},\"caller\":{},\"command\":{},\"outcome\":{},\"new_instance\":{}}}\n",
                entry.sequence,
                entry.timestamp_ms,
                serde_json::to_string(&entry.caller.as_deref())?,
                String::from_utf8_lossy(bytes),
                outcome,
                entry.new_instance
            ));
            summary.to = entry.sequence;
            summary.commands += 1;
        }
        next = last + 1;
    }
    let header = serde_json::json!({
        "keel_fixture": FIXTURE_FORMAT,
        "plugin": record.name,
        "module_hash": hex(&module),
        "from": from,
        "to": summary.to,
        "init": init,
        "init_timestamp_ms": init_ts,
        "state": state,
    });
    writeln!(out, "{header}")?;
    for line in lines {
        out.write_all(line.as_bytes())?;
    }
    out.flush()?;
    Ok(summary)
}

/// A command the component answered differently than recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct FixtureDivergence {
    /// Its sequence.
    pub sequence: u64,
    /// The command.
    pub command: Value,
    /// What production answered.
    pub expected: Value,
    /// What the component answered.
    pub got: Value,
}

/// The result of replaying a fixture through a component.
#[derive(Debug, Clone, PartialEq)]
pub struct FixtureReport {
    /// The plugin.
    pub plugin: String,
    /// Commands replayed.
    pub replayed: u64,
    /// Every command answered differently (refusals compared by code).
    pub divergences: Vec<FixtureDivergence>,
}

impl FixtureReport {
    /// Panics with a readable diff unless every answer matched.
    #[track_caller]
    pub fn assert_same(&self) {
        if !self.divergences.is_empty() {
            panic!("{self}");
        }
    }
}

impl std::fmt::Display for FixtureReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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

/// Whether an answer (`{"ok": …}` / `{"err": {"code", …}}`) matches the
/// recorded one: the same response, or a refusal with the same code.
#[cfg(feature = "testkit")]
pub(crate) fn same(expected: &Value, got: &Value) -> bool {
    match (expected.get("ok"), got.get("ok")) {
        (Some(a), Some(b)) => a == b,
        (None, None) => expected["err"]["code"] == got["err"]["code"],
        _ => false,
    }
}
