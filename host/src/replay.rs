//! Replay: re-executes a database's journal, plugin by plugin and in
//! sequence order, into a fresh host, and compares every plugin's state
//! hash with the one the source recorded. This is the check behind
//! invariant 3 (recovery equals replay) and `keel verify`; restores to a
//! past sequence are built the same way ([`Source::state_at`]).
//!
//! Successful entries are re-executed with their journaled sequence,
//! timestamp and caller (so the plugin sees exactly what it saw); failed
//! entries are copied without running, since a failed command leaves no
//! trace in state. A `Restore` entry is replayed by building the state it
//! names (the source's state at its `to_sequence`) and installing it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use crate::config::HostConfig;
use crate::error::HostError;
use crate::executor::{Call, Restored, Scheduled};
use crate::host::Host;
use crate::snapshot::{SnapshotPolicy, SnapshotStore};
use crate::state_hash::hex;
use crate::storage::{Db, Durability, EntryKind, JournalEntry, Outcome, PluginRecord};

/// Journal entries read and replayed per step.
const REPLAY_CHUNK_ENTRIES: u64 = 4096;

/// The verdict for one plugin.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Verification {
    /// Plugin name.
    pub plugin: String,
    /// Journal entries replayed.
    pub entries: u64,
    /// The hash the source database holds in the plugin's record.
    pub stored_hash: String,
    /// The hash of the rows the source database holds (a row damaged
    /// behind the host's back shows here).
    pub rows_hash: String,
    /// The hash the replay produced.
    pub replayed_hash: String,
    /// Responses that differed from the journaled ones (first few sequences).
    pub response_mismatches: Vec<u64>,
    /// The snapshot the replay started from (0: the first journal entry,
    /// which is the stronger check).
    pub from_snapshot: u64,
}

impl Verification {
    /// Whether the replay reproduced the plugin exactly.
    pub fn ok(&self) -> bool {
        self.stored_hash == self.replayed_hash
            && self.rows_hash == self.stored_hash
            && self.response_mismatches.is_empty()
    }
}

/// Where a replay reads from: a database's journal and modules, and
/// optionally its snapshots (to start a past state from the newest
/// snapshot before it instead of from the first entry).
pub struct Source<'a> {
    /// The source database; `None` when it is lost, and the journal
    /// comes from the archive under `archive_root` alone.
    pub db: Option<&'a Db>,
    /// The source's journal archive (`<data_dir>/archive`), read when
    /// there is no database.
    pub archive_root: PathBuf,
    /// The source's snapshots, if any may be used.
    pub snapshots: Option<&'a SnapshotStore>,
    /// Where compiled components are cached (shared with scratch hosts).
    pub cache_dir: PathBuf,
}

/// A throwaway host in `dir` (relaxed durability, no scheduled
/// snapshots) sharing the compiled-component cache `cache_dir`.
pub fn scratch_host(dir: &Path, cache_dir: &Path) -> anyhow::Result<Host> {
    Host::open(HostConfig {
        data_dir: dir.to_path_buf(),
        cache_dir: Some(cache_dir.to_path_buf()),
        durability: Durability::Relaxed,
        snapshots: SnapshotPolicy::OFF,
        ..HostConfig::default()
    })
}

impl Source<'_> {
    /// The component bytes stored under `hash` (database, else snapshot
    /// modules).
    pub fn module(&self, hash: &[u8; 32]) -> anyhow::Result<Vec<u8>> {
        if let Some(db) = self.db
            && let Some(bytes) = db.module(hash)?
        {
            return Ok(bytes);
        }
        if let Some(store) = self.snapshots
            && let Some(bytes) = store.module(hash)?
        {
            return Ok(bytes);
        }
        anyhow::bail!("module {} is missing from the source", hex(hash))
    }

    /// Where a full replay of `record`'s plugin starts: 0 (the first
    /// entry) when the journal holds it, else the oldest snapshot the
    /// journal continues, seeded into `target`. Returns that snapshot's
    /// sequence.
    fn start_of_replay(&self, record: &PluginRecord, target: &Host) -> anyhow::Result<u64> {
        if record.last_sequence == 0 || self.has_entry(record, 1)? {
            return Ok(0);
        }
        let store = self.snapshots.with_context(|| {
            format!(
                "the journal of {} does not start at 1 and no snapshots are given",
                record.name
            )
        })?;
        for (sequence, _) in store.files(&record.name)? {
            let next = sequence + 1;
            let continued = sequence == record.last_sequence || self.has_entry(record, next)?;
            if !continued {
                continue;
            }
            let snap = store.read(&record.name, sequence)?;
            let hash = snap.header.record.active().module_hash;
            let component = target.load_component(&self.module(&hash)?)?;
            target.seed_plugin(
                component,
                &Restored {
                    record: snap.header.record,
                    rows: snap.rows,
                    from_snapshot: sequence,
                },
            )?;
            return Ok(sequence);
        }
        anyhow::bail!(
            "the journal of {} does not start at 1 and no snapshot is continued by it",
            record.name
        )
    }

    /// Journal entries `from..=to` of `record`'s plugin that the source
    /// holds (database and archive, or the archive alone), in order.
    pub fn journal(
        &self,
        record: &PluginRecord,
        from: u64,
        to: u64,
    ) -> anyhow::Result<Vec<JournalEntry>> {
        Ok(match self.db {
            Some(db) => db.journal(record.id, from, to)?,
            None => crate::storage::archive::read_journal(
                &self.archive_root.join(&record.name),
                from,
                to,
            )?,
        })
    }

    fn has_entry(&self, record: &PluginRecord, sequence: u64) -> anyhow::Result<bool> {
        Ok(!self.journal(record, sequence, sequence)?.is_empty())
    }

    fn entries(
        &self,
        record: &PluginRecord,
        from: u64,
        to: u64,
    ) -> anyhow::Result<Vec<JournalEntry>> {
        let entries = self.journal(record, from, to)?;
        anyhow::ensure!(
            entries.len() as u64 == to - from + 1,
            "the journal of {} lacks entries between {from} and {to} ({} of {} found)",
            record.name,
            entries.len(),
            to - from + 1
        );
        Ok(entries)
    }

    /// The state `record`'s plugin had at `sequence`: the newest snapshot
    /// at or before it (or nothing), then the journal after it replayed
    /// in a scratch host with the modules that ran it; every response must
    /// equal the journaled one. Returns the state and the entries replayed.
    pub fn state_at(
        &self,
        record: &PluginRecord,
        sequence: u64,
    ) -> anyhow::Result<(Restored, u64)> {
        anyhow::ensure!(
            (1..=record.last_sequence).contains(&sequence),
            "{} has no sequence {sequence} (its journal runs 1..={})",
            record.name,
            record.last_sequence
        );
        let snapshot = match self.snapshots {
            Some(store) => store.newest_at_or_before(&record.name, sequence)?,
            None => None,
        };
        let dir = tempfile::tempdir().context("creating a scratch directory")?;
        let scratch = scratch_host(dir.path(), &self.cache_dir)?;
        let result = (|| {
            let (from, from_snapshot) = match (snapshot, self.snapshots) {
                (Some(at), Some(store)) => {
                    let snap = store.read(&record.name, at)?;
                    let hash = snap.header.record.active().module_hash;
                    let component = scratch.load_component(&self.module(&hash)?)?;
                    let restored = Restored {
                        record: snap.header.record,
                        rows: snap.rows,
                        from_snapshot: at,
                    };
                    scratch.seed_plugin(component, &restored)?;
                    (at + 1, at)
                }
                _ => (1, 0),
            };
            let mismatches = replay_range(self, &scratch, record, from, sequence, &mut |_| {})?;
            anyhow::ensure!(
                mismatches.is_empty(),
                "replaying {} from {from} to {sequence} gave other responses than the journal at sequences {mismatches:?}",
                record.name
            );
            let mut state = capture(&scratch, &record.name)?;
            state.from_snapshot = from_snapshot;
            Ok((state, sequence + 1 - from))
        })();
        scratch.shutdown();
        result
    }
}

/// The committed state of `plugin` in `host`, as an installable copy.
pub(crate) fn capture(host: &Host, plugin: &str) -> anyhow::Result<Restored> {
    let id = host.plugin(plugin)?.id;
    let view = host.db().view(id)?;
    let record = view
        .record()?
        .context("the scratch copy has no plugin record")?;
    let mut rows = Vec::with_capacity(view.row_count());
    view.for_each_row(|k, v| {
        rows.push((k.to_vec(), v.to_vec()));
        Ok::<_, crate::storage::StorageError>(())
    })?;
    Ok(Restored {
        record,
        rows,
        from_snapshot: 0,
    })
}

/// The sequences whose state a `Restore` entry in `from..=to` goes back
/// to, at or after `from - 1`: the replay keeps a copy of its own state
/// at each, instead of rebuilding it.
fn restore_points(
    source: &Source<'_>,
    record: &PluginRecord,
    from: u64,
    to: u64,
) -> anyhow::Result<std::collections::BTreeSet<u64>> {
    let mut points = std::collections::BTreeSet::new();
    let mut next = from;
    while next <= to {
        let last = (next + REPLAY_CHUNK_ENTRIES - 1).min(to);
        for entry in source.entries(record, next, last)? {
            if let EntryKind::Restore { to_sequence, .. } = entry.kind
                && to_sequence + 1 >= from
            {
                points.insert(to_sequence);
            }
        }
        next = last + 1;
    }
    Ok(points)
}

/// Replays entries `from..=to` of `record`'s plugin from `source` into
/// `target` (which holds the plugin's state at `from - 1`, or no such
/// plugin when `from` is 1). Returns the sequences whose responses
/// differed from the journaled ones (the first 16). `progress` gets the
/// last sequence done after each chunk.
pub fn replay_range(
    source: &Source<'_>,
    target: &Host,
    record: &PluginRecord,
    from: u64,
    to: u64,
    progress: &mut dyn FnMut(u64),
) -> anyhow::Result<Vec<u64>> {
    let mut mismatches = Vec::new();
    // The states later `Restore` entries go back to, captured on the way
    // (a restore to before `from` is rebuilt from the source instead).
    let points = restore_points(source, record, from, to)?;
    let mut captured: BTreeMap<u64, Restored> = BTreeMap::new();
    if from > 1 && points.contains(&(from - 1)) {
        captured.insert(from - 1, capture(target, &record.name)?);
    }
    let mut next = from;
    while next <= to {
        let last = (next + REPLAY_CHUNK_ENTRIES - 1).min(to);
        let mut pending = Vec::new();
        for entry in source.entries(record, next, last)? {
            let sequence = entry.sequence;
            let forced = Some((entry.sequence, entry.timestamp_ms));
            match &entry.kind {
                EntryKind::Init { config } => {
                    let component = target.load_component(&source.module(&entry.module_hash)?)?;
                    target.deploy_loaded(component, Some(config), forced)?;
                }
                EntryKind::Migrate { .. } => {
                    drain(&mut pending, &mut mismatches)?;
                    let component = target.load_component(&source.module(&entry.module_hash)?)?;
                    target.deploy_loaded(component, None, forced)?;
                }
                EntryKind::Restore { to_sequence, .. } => {
                    drain(&mut pending, &mut mismatches)?;
                    let restored = match captured.get(to_sequence) {
                        Some(state) => state.clone(),
                        None => source.state_at(record, *to_sequence)?.0,
                    };
                    let component = target.load_component(&source.module(&entry.module_hash)?)?;
                    target.install_restored(
                        &record.name,
                        restored,
                        component,
                        forced,
                        entry.kind.clone(),
                    )?;
                }
                EntryKind::UndoUpgrade {
                    upgrade_sequence,
                    through,
                } => {
                    drain(&mut pending, &mut mismatches)?;
                    let mut rebuild =
                        crate::undo::Rebuild::start(source, record, *upgrade_sequence)?;
                    rebuild.advance(source, record, *through)?;
                    let state = rebuild.finish()?;
                    let component = target.load_component(&source.module(&entry.module_hash)?)?;
                    target.install_restored(
                        &record.name,
                        state,
                        component,
                        forced,
                        entry.kind.clone(),
                    )?;
                }
                EntryKind::Command { bytes } => {
                    let call = match &entry.outcome {
                        Outcome::Ok(_) => Call::Command(bytes.clone()),
                        // A refusal whose instance went on: run it again
                        // for what it left in memory (it must fail again).
                        Outcome::Err { .. } if entry.failed_on_kept_instance => {
                            Call::Command(bytes.clone())
                        }
                        Outcome::Err { .. } => Call::RecordedFailure(entry.clone()),
                    };
                    let scheduled = Scheduled {
                        call,
                        forced,
                        caller: entry.caller.clone(),
                        new_instance: Some(entry.new_instance),
                    };
                    let rx = target.enqueue_scheduled(&record.name, scheduled)?;
                    pending.push((entry.sequence, entry.outcome.clone(), rx));
                }
            }
            if points.contains(&sequence) {
                drain(&mut pending, &mut mismatches)?;
                captured.insert(sequence, capture(target, &record.name)?);
            }
        }
        drain(&mut pending, &mut mismatches)?;
        progress(last);
        next = last + 1;
    }
    Ok(mismatches)
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
    progress: impl FnMut(&str, u64, u64),
) -> anyhow::Result<Vec<Verification>> {
    verify(source, None, scratch_dir, cache_dir, progress)
}

/// `keel verify`: replays every plugin of `source` into a fresh host in
/// `scratch_dir` and compares state hashes and responses. A plugin whose
/// journal starts at 1 is replayed from its first entry; one whose early
/// journal is gone (archive retention, an import) from the oldest of
/// `snapshots` that the journal continues (hybrid).
pub fn verify(
    source: &Db,
    snapshots: Option<&SnapshotStore>,
    scratch_dir: &Path,
    cache_dir: &Path,
    mut progress: impl FnMut(&str, u64, u64),
) -> anyhow::Result<Vec<Verification>> {
    let target = scratch_host(scratch_dir, cache_dir)?;
    let archive_root = source.archive_dir("");
    let source = Source {
        db: Some(source),
        archive_root,
        snapshots,
        cache_dir: cache_dir.to_path_buf(),
    };
    let mut records = source.db.map(Db::plugins).transpose()?.unwrap_or_default();
    records.sort_by_key(|r| r.id);
    let mut out = Vec::new();
    for record in records {
        let total = record.last_sequence;
        let from_snapshot = source.start_of_replay(&record, &target)?;
        let mismatches = replay_range(
            &source,
            &target,
            &record,
            from_snapshot + 1,
            total,
            &mut |done| progress(&record.name, done, total),
        )?;
        let replayed = target.plugin(&record.name)?;
        let mut rows_hash = crate::state_hash::StateHash::EMPTY;
        source
            .db
            .expect("verify reads a database")
            .view(record.id)?
            .for_each_row(|k, v| {
                if let Some((table, key)) = crate::snapshot::format::split_key(k) {
                    rows_hash.add(table, key, v);
                }
                Ok::<_, crate::storage::StorageError>(())
            })?;
        out.push(Verification {
            plugin: record.name.clone(),
            entries: total - from_snapshot,
            stored_hash: record.state_hash.to_hex(),
            rows_hash: rows_hash.to_hex(),
            replayed_hash: replayed.state_hash,
            response_mismatches: mismatches,
            from_snapshot,
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
            (
                Outcome::Err { code, .. },
                Err(HostError::Rejected {
                    sequence: s,
                    code: got,
                    ..
                }),
            ) => *s == sequence && code == got,
            _ => false,
        };
        if !same && mismatches.len() < 16 {
            mismatches.push(sequence);
        }
    }
    Ok(())
}
