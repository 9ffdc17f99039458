//! Restore in a running host: a plugin goes back to the state of one of
//! its snapshots, or to the state it had at any past sequence (the newest
//! snapshot at or before it, then the journal after it replayed with the
//! modules that ran it, every response checked against the journal). The
//! state is built and verified off the plugin's thread while it keeps
//! serving; a snapshot of the current state is taken (so a restore can
//! itself be undone); then, at a batch boundary, one batch installs it,
//! journaled as a `Restore` entry. Other plugins never notice.

use std::time::Instant;

use serde::Serialize;

use crate::error::HostError;
use crate::executor::Restored;
use crate::host::Host;
use crate::replay::Source;
use crate::snapshot::SnapshotError;
use crate::state_hash::hex;

/// Which state to go back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreTarget {
    /// The newest snapshot.
    Newest,
    /// The snapshot taken at this sequence.
    Snapshot(u64),
    /// The state at this sequence (point in time).
    Sequence(u64),
}

/// What a restore did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RestoreReport {
    /// The plugin.
    pub plugin: String,
    /// The sequence whose state the plugin has again.
    pub restored_to: u64,
    /// The snapshot it was built from (0: from the first journal entry).
    pub from_snapshot: u64,
    /// Journal entries replayed on top of the snapshot.
    pub replayed: u64,
    /// The sequence of the `Restore` journal entry.
    pub sequence: u64,
    /// The state hash now (hex).
    pub state_hash: String,
    /// The module active now (hex).
    pub module_hash: String,
    /// The snapshot taken of the state before the restore began.
    pub undo_snapshot: u64,
    /// The sequence just before the restore entry: `--to-sequence` it to
    /// undo the restore exactly (commands that arrived while the restore
    /// was prepared included; it starts from `undo_snapshot`).
    pub undo_to_sequence: u64,
    /// Wall time, in milliseconds.
    pub millis: u64,
}

/// Restores `plugin` of `host` to `target` (see the module docs).
pub(crate) fn restore(
    host: &Host,
    plugin: &str,
    target: RestoreTarget,
) -> Result<RestoreReport, HostError> {
    let started = Instant::now();
    let record = host.record(plugin)?;
    let store = host.snapshot_store();
    let source = Source {
        db: Some(host.db()),
        archive_root: host.db().archive_dir(""),
        snapshots: Some(store),
        cache_dir: host.cache_dir(),
    };
    let (restored, replayed) = match target {
        RestoreTarget::Newest | RestoreTarget::Snapshot(_) => {
            let sequence = match target {
                RestoreTarget::Snapshot(s) => s,
                _ => store
                    .newest_at_or_before(plugin, u64::MAX)?
                    .ok_or_else(|| {
                        SnapshotError::NotFound(format!("plugin {plugin} has no snapshot"))
                    })?,
            };
            let snap = store.read(plugin, sequence)?;
            let restored = Restored {
                record: snap.header.record,
                rows: snap.rows,
                from_snapshot: sequence,
            };
            (restored, 0)
        }
        RestoreTarget::Sequence(n) => source
            .state_at(&record, n)
            .map_err(|e| HostError::Deploy(format!("cannot build the state at {n}: {e:#}")))?,
    };
    let hash = restored.record.active().module_hash;
    let bytes = source
        .module(&hash)
        .map_err(|e| HostError::Deploy(format!("{e:#}")))?;
    let component = host.load_component(&bytes)?;
    let undo = store.take(host.db(), record.id, "before-restore")?;
    let kind = crate::storage::EntryKind::Restore {
        to_sequence: restored.record.last_sequence,
        from_snapshot: restored.from_snapshot,
    };
    let sequence = host.install_restored(plugin, restored.clone(), component, None, kind)?;
    let report = RestoreReport {
        plugin: plugin.to_owned(),
        restored_to: restored.record.last_sequence,
        from_snapshot: restored.from_snapshot,
        replayed,
        sequence,
        state_hash: restored.record.state_hash.to_hex(),
        module_hash: hex(&hash),
        undo_snapshot: undo.sequence,
        undo_to_sequence: sequence - 1,
        millis: started.elapsed().as_millis() as u64,
    };
    tracing::info!(
        plugin,
        restored_to = report.restored_to,
        sequence,
        "plugin restored"
    );
    Ok(report)
}
