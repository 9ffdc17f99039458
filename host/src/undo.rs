//! Undoing an upgrade as if it had never happened: the plugin's state
//! just before the upgrade, with every command journaled since run again
//! on the version the upgrade replaced (later deployments are undone too;
//! a restore after the upgrade refuses the undo). The result replaces the
//! live state in one batch, journaled as an `UndoUpgrade` entry that
//! replay rebuilds the same way; the report lists the commands whose
//! responses now differ from what clients were told.
//!
//! The rebuild runs in a scratch host off the plugin's thread while it
//! keeps serving; at a batch boundary the plugin pauses only to run the
//! commands that arrived meanwhile and to install the result.

use serde::Serialize;

use crate::error::HostError;
use crate::executor::{Call, Restored, Scheduled};
use crate::host::Host;
use crate::replay::{Source, capture, scratch_host};
use crate::storage::{Deployment, EntryKind, Outcome, PluginRecord};

/// Responses listed in full in a report.
const CHANGES_LISTED: usize = 100;

/// A command whose response is not what its client was told.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ResponseChange {
    /// Its sequence.
    pub sequence: u64,
    /// What the client was told (`ok: <response>` or `error <code>`).
    pub told: String,
    /// What the old version answers.
    pub now: String,
}

/// What an undone upgrade did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct UndoReport {
    /// The plugin.
    pub plugin: String,
    /// The sequence of the undone upgrade.
    pub upgrade_sequence: u64,
    /// The version active again (hex module hash) and its version string.
    pub module_hash: String,
    /// Its version string.
    pub version: String,
    /// Commands run again on it.
    pub replayed: u64,
    /// How many answer differently now.
    pub responses_changed: u64,
    /// The first of them.
    pub changes: Vec<ResponseChange>,
    /// The sequence of the `UndoUpgrade` journal entry.
    pub sequence: u64,
    /// The state hash now (hex).
    pub state_hash: String,
    /// The snapshot taken of the state before the undo began.
    pub undo_snapshot: u64,
    /// The sequence just before the undo entry: `--to-sequence` it to
    /// undo the undo exactly.
    pub undo_to_sequence: u64,
}

fn show(outcome: &Result<Vec<u8>, String>) -> String {
    match outcome {
        Ok(bytes) => format!("ok: {}", String::from_utf8_lossy(bytes)),
        Err(code) => format!("error {code}"),
    }
}

/// A plugin's state being rebuilt without an upgrade, in a scratch host.
pub(crate) struct Rebuild {
    scratch: Host,
    _dir: tempfile::TempDir,
    name: String,
    /// The last journal sequence taken into account.
    through: u64,
    pub(crate) replayed: u64,
    pub(crate) changes: Vec<ResponseChange>,
    pub(crate) changed: u64,
}

/// The deployment an undo removes (the one at `upgrade`, or the active
/// one) and the one before it.
pub(crate) fn pick(
    record: &PluginRecord,
    upgrade: Option<u64>,
) -> Result<(Deployment, Deployment), HostError> {
    let index = match upgrade {
        Some(u) => record
            .deployments
            .iter()
            .position(|d| d.sequence == u)
            .ok_or_else(|| {
                HostError::Deploy(format!("{} has no deployment at sequence {u}", record.name))
            })?,
        None => record.deployments.len() - 1,
    };
    if index == 0 {
        return Err(HostError::Deploy(format!(
            "{}'s deployment at sequence {} is its first: there is no earlier version to go back to",
            record.name, record.deployments[index].sequence
        )));
    }
    Ok((
        record.deployments[index].clone(),
        record.deployments[index - 1].clone(),
    ))
}

impl Rebuild {
    /// The state of `record`'s plugin just before `upgrade`, in a scratch
    /// host, on the version it replaced.
    pub(crate) fn start(
        source: &Source<'_>,
        record: &PluginRecord,
        upgrade: u64,
    ) -> anyhow::Result<Rebuild> {
        let (before, _) = source.state_at(record, upgrade - 1)?;
        let dir = tempfile::tempdir()?;
        let scratch = scratch_host(dir.path(), &source.cache_dir)?;
        let hash = before.record.active().module_hash;
        let component = scratch.load_component(&source.module(&hash)?)?;
        scratch.seed_plugin(component, &before)?;
        Ok(Rebuild {
            scratch,
            _dir: dir,
            name: record.name.clone(),
            through: upgrade,
            replayed: 0,
            changes: Vec::new(),
            changed: 0,
        })
    }

    /// Runs the journal after what was taken into account, through `to`,
    /// as if no upgrade had happened: commands again (failed ones too),
    /// deployments skipped, a restore refused.
    pub(crate) fn advance(
        &mut self,
        source: &Source<'_>,
        record: &PluginRecord,
        to: u64,
    ) -> anyhow::Result<()> {
        let mut next = self.through + 1;
        while next <= to {
            let last = (next + 1023).min(to);
            let mut pending = Vec::new();
            for entry in source.journal(record, next, last)? {
                match &entry.kind {
                    EntryKind::Command { bytes } => {
                        let scheduled = Scheduled {
                            call: Call::Command(bytes.clone()),
                            forced: Some((entry.sequence, entry.timestamp_ms)),
                            caller: entry.caller.clone(),
                            new_instance: Some(entry.new_instance),
                        };
                        let rx = self.scratch.enqueue_scheduled(&self.name, scheduled)?;
                        pending.push((entry.sequence, entry.outcome.clone(), rx));
                    }
                    EntryKind::Migrate { .. } => {}
                    EntryKind::Init { .. } => {
                        anyhow::bail!("an init at sequence {}", entry.sequence)
                    }
                    EntryKind::Restore { .. } | EntryKind::UndoUpgrade { .. } => anyhow::bail!(
                        "sequence {} replaced the state after the upgrade (a restore or an undo): restore a snapshot instead",
                        entry.sequence
                    ),
                }
            }
            for (sequence, journaled, rx) in pending {
                let now = match rx.blocking_recv().map_err(|_| HostError::Stopped)? {
                    Ok(receipt) => Ok(receipt.response),
                    Err(HostError::Rejected { code, .. }) => Err(code),
                    Err(e) => return Err(e.into()),
                };
                let told = match journaled {
                    Outcome::Ok(bytes) => Ok(bytes),
                    Outcome::Err { code, .. } => Err(code),
                };
                self.replayed += 1;
                if told != now {
                    self.changed += 1;
                    if self.changes.len() < CHANGES_LISTED {
                        self.changes.push(ResponseChange {
                            sequence,
                            told: show(&told),
                            now: show(&now),
                        });
                    }
                }
            }
            next = last + 1;
        }
        self.through = self.through.max(to);
        Ok(())
    }

    /// The rebuilt state.
    pub(crate) fn finish(self) -> anyhow::Result<Restored> {
        let state = capture(&self.scratch, &self.name);
        self.scratch.shutdown();
        state
    }
}

/// Undoes `upgrade` (default: the active deployment) of `plugin` (see the
/// module docs).
pub(crate) fn undo_upgrade(
    host: &Host,
    plugin: &str,
    upgrade: Option<u64>,
) -> Result<UndoReport, HostError> {
    let record = host.record(plugin)?;
    let (undone, old) = pick(&record, upgrade)?;
    let failed = |e: anyhow::Error| HostError::Deploy(format!("undoing the upgrade: {e:#}"));
    let source = Source {
        db: Some(host.db()),
        archive_root: host.db().archive_dir(""),
        snapshots: Some(host.snapshot_store()),
        cache_dir: host.cache_dir(),
    };
    let mut rebuild = Rebuild::start(&source, &record, undone.sequence).map_err(failed)?;
    rebuild
        .advance(&source, &record, record.last_sequence)
        .map_err(failed)?;
    let component = host.stored_component(&old.module_hash)?;
    let undo_snapshot = host
        .snapshot_store()
        .take(host.db(), record.id, "before-undo-upgrade")?;
    let (archive_root, cache_dir) = (host.db().archive_dir(""), host.cache_dir());
    let upgrade_sequence = undone.sequence;
    let (replayed, changes, changed, sequence, state_hash) =
        host.at_batch_boundary(plugin, move |exec| {
            // The commands that arrived meanwhile, then the switch.
            let live = exec.record().clone();
            let source = Source {
                db: Some(exec.db()),
                archive_root,
                snapshots: None,
                cache_dir,
            };
            rebuild
                .advance(&source, &live, live.last_sequence)
                .map_err(failed)?;
            let (replayed, changes, changed) =
                (rebuild.replayed, rebuild.changes.clone(), rebuild.changed);
            let state = rebuild.finish().map_err(failed)?;
            let kind = EntryKind::UndoUpgrade {
                upgrade_sequence,
                through: live.last_sequence,
            };
            let sequence = exec.install(&state, component, None, kind)?;
            Ok((
                replayed,
                changes,
                changed,
                sequence,
                state.record.state_hash.to_hex(),
            ))
        })?;
    tracing::info!(plugin, upgrade_sequence, sequence, "upgrade undone");
    Ok(UndoReport {
        plugin: plugin.to_owned(),
        upgrade_sequence,
        module_hash: crate::state_hash::hex(&old.module_hash),
        version: old.version,
        replayed,
        responses_changed: changed,
        changes,
        sequence,
        state_hash,
        undo_snapshot: undo_snapshot.sequence,
        undo_to_sequence: sequence - 1,
    })
}
