//! Replay: re-executes a database's journal, plugin by plugin and in
//! sequence order, into a fresh host, and compares every plugin's state
//! hash with the one the source recorded. This is the check behind
//! invariant 3 (recovery equals replay) and `keel verify`.
//!
//! Successful entries are re-executed with their journaled sequence,
//! timestamp and caller (so the plugin sees exactly what it saw); failed entries are
//! copied without running, since a failed command leaves no trace in state.

use std::path::Path;

use serde::Serialize;

use crate::config::HostConfig;
use crate::error::HostError;
use crate::executor::{Call, Scheduled};
use crate::host::Host;
use crate::state_hash::hex;
use crate::storage::{Db, Durability, EntryKind, Outcome};

/// Journal entries read and replayed per step.
const REPLAY_CHUNK_ENTRIES: u64 = 4096;

/// The verdict for one plugin.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Verification {
    /// Plugin name.
    pub plugin: String,
    /// Journal entries replayed.
    pub entries: u64,
    /// The hash the source database holds.
    pub stored_hash: String,
    /// The hash the replay produced.
    pub replayed_hash: String,
    /// Responses that differed from the journaled ones (first few sequences).
    pub response_mismatches: Vec<u64>,
}

impl Verification {
    /// Whether the replay reproduced the plugin exactly.
    pub fn ok(&self) -> bool {
        self.stored_hash == self.replayed_hash && self.response_mismatches.is_empty()
    }
}

/// Replays every plugin of `source` into a fresh host whose data lives in
/// `scratch_dir` (which should be empty), with compiled components cached
/// in a shared temporary directory. `progress` is called with (plugin,
/// entries done, entries total).
pub fn replay(
    source: &Db,
    scratch_dir: &Path,
    progress: impl FnMut(&str, u64, u64),
) -> anyhow::Result<Vec<Verification>> {
    let cache = std::env::temp_dir().join("keel-replay-component-cache");
    replay_with_cache(source, scratch_dir, &cache, progress)
}

/// [`replay`], loading compiled components from `cache_dir` — the source
/// host's own cache, so that a large component (a Python or JavaScript
/// runtime: minutes to compile in a debug build) is not compiled again.
/// Entries are content-addressed and keyed by the engine, so sharing is
/// safe.
pub fn replay_with_cache(
    source: &Db,
    scratch_dir: &Path,
    cache_dir: &Path,
    mut progress: impl FnMut(&str, u64, u64),
) -> anyhow::Result<Vec<Verification>> {
    let config = HostConfig {
        data_dir: scratch_dir.to_path_buf(),
        cache_dir: Some(cache_dir.to_path_buf()),
        durability: Durability::Relaxed,
        ..HostConfig::default()
    };
    let target = Host::open(config)?;
    let mut records = source.plugins()?;
    records.sort_by_key(|r| r.id);
    let mut out = Vec::new();
    for record in records {
        let mut mismatches = Vec::new();
        let mut next = 1;
        while next <= record.last_sequence {
            let to = (next + REPLAY_CHUNK_ENTRIES - 1).min(record.last_sequence);
            let entries = source.journal(record.id, next, to)?;
            anyhow::ensure!(
                entries.len() as u64 == to - next + 1,
                "journal of {} has a gap between {next} and {to}",
                record.name
            );
            let mut pending = Vec::new();
            for entry in entries {
                let forced = Some((entry.sequence, entry.timestamp_ms));
                match &entry.kind {
                    EntryKind::Init { config } => {
                        let component = load(source, &target, &entry.module_hash)?;
                        target.deploy_loaded(component, Some(config), forced)?;
                    }
                    EntryKind::Migrate { .. } => {
                        drain(&mut pending, &mut mismatches)?;
                        let component = load(source, &target, &entry.module_hash)?;
                        target.deploy_loaded(component, None, forced)?;
                    }
                    EntryKind::Command { bytes } => {
                        let call = match &entry.outcome {
                            Outcome::Ok(_) => Call::Command(bytes.clone()),
                            Outcome::Err { .. } => Call::RecordedFailure(entry.clone()),
                        };
                        let scheduled = Scheduled {
                            call,
                            forced,
                            caller: entry.caller.clone(),
                        };
                        let rx = target.enqueue_scheduled(&record.name, scheduled)?;
                        pending.push((entry.sequence, entry.outcome.clone(), rx));
                    }
                }
            }
            drain(&mut pending, &mut mismatches)?;
            progress(&record.name, to, record.last_sequence);
            next = to + 1;
        }
        let replayed = target.plugin(&record.name)?;
        out.push(Verification {
            plugin: record.name.clone(),
            entries: record.last_sequence,
            stored_hash: record.state_hash.to_hex(),
            replayed_hash: replayed.state_hash,
            response_mismatches: mismatches,
        });
    }
    target.shutdown();
    Ok(out)
}

type Pending = Vec<(
    u64,
    Outcome,
    tokio::sync::oneshot::Receiver<Result<crate::actor::Receipt, HostError>>,
)>;

fn drain(pending: &mut Pending, mismatches: &mut Vec<u64>) -> anyhow::Result<()> {
    for (sequence, expected, rx) in pending.drain(..) {
        let got = rx.blocking_recv().map_err(|_| HostError::Stopped)?;
        let same = match (&expected, &got) {
            (Outcome::Ok(a), Ok(receipt)) => *a == receipt.response && receipt.sequence == sequence,
            (Outcome::Err { .. }, Err(HostError::Rejected { sequence: s, .. })) => *s == sequence,
            _ => false,
        };
        if !same && mismatches.len() < 16 {
            mismatches.push(sequence);
        }
    }
    Ok(())
}

fn load(
    source: &Db,
    target: &Host,
    hash: &[u8; 32],
) -> anyhow::Result<crate::runtime::LoadedComponent> {
    let bytes = source.module(hash)?.ok_or_else(|| {
        anyhow::anyhow!("module {} is missing from the source database", hex(hash))
    })?;
    Ok(target.load_component(&bytes)?)
}
