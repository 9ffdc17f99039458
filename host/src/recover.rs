//! `keel recover`: rebuilds a stopped host's database from what survives
//! — its snapshots, its journal (database and archive) — into a new
//! database file, checks it, and puts it in place of the old one (kept
//! beside it as `keel.redb.replaced-<ms>`).
//!
//! Modes, per plugin:
//! - `scratch`: replay every retained command from the first entry (needs
//!   the whole journal, database plus archive);
//! - `snapshot`: the newest snapshot that verifies, nothing after it;
//! - `hybrid` (the default): that snapshot plus every journal entry after
//!   it that survives.
//!
//! Each ends with a check: every replayed response must equal the
//! journaled one, and where the old database's record is readable for the
//! same sequence, the state hash must equal it. When the database file is
//! missing, or fails redb's integrity check or cannot be opened, the
//! plugins are found from their snapshot directories, each is rebuilt
//! from its newest snapshot that verifies plus the archived journal after
//! it, and the report says exactly which sequences could not be
//! recovered. What each loss loses is documented in the README
//! ("Recovery").

use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

use crate::executor::{Restored, now_ms};
use crate::replay::{Source, replay_range, scratch_host};
use crate::snapshot::{Snapshot, SnapshotStore};
use crate::storage::{Db, Durability, PluginRecord};

/// Where each plugin's recovered state comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum RecoverMode {
    /// Every retained command, from the first journal entry.
    Scratch,
    /// The newest snapshot that verifies, and nothing after it.
    Snapshot,
    /// That snapshot plus every journal entry after it that survives.
    Hybrid,
}

/// What recovery did for one plugin.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PluginRecovery {
    /// The plugin.
    pub plugin: String,
    /// The snapshot it started from (0: the first journal entry).
    pub from_snapshot: u64,
    /// Journal entries replayed after it.
    pub replayed: u64,
    /// The sequence the recovered state belongs to.
    pub recovered_to: u64,
    /// The last sequence the old database recorded, when readable.
    pub known_last: Option<u64>,
    /// Which sequences could not be recovered, if any.
    pub lost: Option<String>,
    /// The recovered state hash (hex).
    pub state_hash: String,
    /// How the result was checked.
    pub check: String,
    /// Snapshots skipped because they did not verify (file, offset, what).
    pub damaged_snapshots: Vec<String>,
    /// Whether this plugin was recovered and checked.
    pub ok: bool,
}

/// What `keel recover` did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The mode.
    pub mode: RecoverMode,
    /// The old database: `readable`, `missing` or `damaged: …`.
    pub database: String,
    /// Each plugin.
    pub plugins: Vec<PluginRecovery>,
    /// Where the old database went (when the new one replaced it).
    pub previous_database: Option<String>,
    /// Whether every plugin was recovered and checked (only then is the
    /// new database put in place).
    pub ok: bool,
}

/// The newest snapshot of `name` at or before `at_most` that verifies,
/// and the damage met on the way.
fn newest_valid(
    store: &SnapshotStore,
    name: &str,
    at_most: u64,
) -> anyhow::Result<(Option<Snapshot>, Vec<String>)> {
    let mut damaged = Vec::new();
    for (sequence, _) in store.files(name)?.into_iter().rev() {
        if sequence > at_most {
            continue;
        }
        match store.read(name, sequence) {
            Ok(snap) => return Ok((Some(snap), damaged)),
            Err(e) => damaged.push(e.to_string()),
        }
    }
    Ok((None, damaged))
}

/// The last sequence the archive of `dir` holds contiguously after `start`.
fn archived_through(dir: &Path, start: u64) -> anyhow::Result<u64> {
    let mut through = start;
    for segment in crate::storage::archive::segments(dir)? {
        if segment.first <= through + 1 && segment.last > through {
            through = segment.last;
        }
    }
    Ok(through)
}

/// Opens the old database if it is there and sound.
fn open_old(db_path: &Path) -> (Option<Db>, String) {
    if !db_path.exists() {
        return (None, "missing".into());
    }
    // redb may panic on a damaged page rather than return an error: a
    // panic here is damage, not a crash of the recovery.
    let checked = std::panic::catch_unwind(|| match crate::storage::check_integrity(db_path) {
        Ok(true) => Db::open(db_path, Durability::Immediate)
            .map(Some)
            .map_err(|e| e.to_string()),
        Ok(false) => Err("it fails redb's integrity check".into()),
        Err(e) => Err(e.to_string()),
    });
    match checked {
        Ok(Ok(db)) => (db, "readable".into()),
        Ok(Err(e)) => (None, format!("damaged: {e}")),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            (None, format!("damaged: redb cannot read it ({what})"))
        }
    }
}

/// The plugins to recover: the database's records, or (database lost)
/// the newest verifying snapshot's record of each snapshot directory.
fn plugins_of(
    db: Option<&Db>,
    data_dir: &Path,
    store: &SnapshotStore,
) -> anyhow::Result<Vec<(PluginRecord, bool)>> {
    if let Some(db) = db {
        return Ok(db.plugins()?.into_iter().map(|r| (r, true)).collect());
    }
    let mut out = Vec::new();
    let dir = data_dir.join("snapshots");
    let mut names: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    names.sort();
    for name in names {
        if let (Some(snap), _) = newest_valid(store, &name, u64::MAX)? {
            out.push((snap.header.record, false));
        }
    }
    Ok(out)
}

/// Rebuilds the database of the stopped host in `data_dir` by `mode` (see
/// the module docs). The new database replaces the old one only if every
/// plugin was recovered and checked. `progress` gets (plugin, sequence
/// done, last sequence to replay).
pub fn recover(
    data_dir: &Path,
    cache_dir: &Path,
    mode: RecoverMode,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> anyhow::Result<RecoveryReport> {
    let db_path = data_dir.join("keel.redb");
    let store = SnapshotStore::new(data_dir);
    let (old, database) = open_old(&db_path);
    let source = Source {
        db: old.as_ref(),
        archive_root: data_dir.join("archive"),
        snapshots: Some(&store),
        cache_dir: cache_dir.to_path_buf(),
    };
    let plugins = plugins_of(old.as_ref(), data_dir, &store)?;
    let work = data_dir.join("recover.tmp");
    if work.exists() {
        std::fs::remove_dir_all(&work)
            .with_context(|| format!("removing the leftover {}", work.display()))?;
    }
    let scratch = scratch_host(&work, cache_dir)?;
    let mut report = RecoveryReport {
        mode,
        database,
        plugins: Vec::new(),
        previous_database: None,
        ok: true,
    };
    for (record, from_database) in &plugins {
        let known = from_database.then_some(record);
        let outcome = recover_plugin(&source, &store, &scratch, record, known, mode, progress);
        let plugin = outcome.unwrap_or_else(|e| PluginRecovery {
            plugin: record.name.clone(),
            from_snapshot: 0,
            replayed: 0,
            recovered_to: 0,
            known_last: known.map(|r| r.last_sequence),
            lost: Some("everything: the plugin could not be rebuilt".into()),
            state_hash: String::new(),
            check: format!("failed: {e:#}"),
            damaged_snapshots: Vec::new(),
            ok: false,
        });
        report.ok &= plugin.ok;
        report.plugins.push(plugin);
    }
    let ids: std::collections::BTreeMap<String, u32> = scratch
        .plugins()
        .into_iter()
        .map(|p| (p.name, p.id))
        .collect();
    scratch.shutdown();
    if !report.ok {
        drop(old);
        return Ok(report);
    }
    // The journal the new database did not re-create: the archive keeps
    // what it holds; entries between it and the recovered start come
    // from the old database.
    {
        let new = Db::open(&work.join("keel.redb"), Durability::Immediate)?;
        for plugin in &report.plugins {
            let name = &plugin.plugin;
            let id = ids
                .get(name)
                .with_context(|| format!("{name} is missing from the new database"))?;
            let segments_last = crate::storage::archive::segments(&source.archive_root.join(name))?
                .last()
                .map_or(0, |s| s.last);
            let start = plugin.from_snapshot;
            let mark = segments_last.min(plugin.recovered_to);
            let history = match plugins.iter().find(|(r, _)| &r.name == name) {
                Some((record, _)) if mark < start => source.journal(record, mark + 1, start)?,
                _ => Vec::new(),
            };
            new.adopt_history(*id, mark, &history)?;
        }
        new.stop_background();
    }
    drop(old);
    let stamp = now_ms();
    let mut previous = None;
    if db_path.exists() {
        let aside = data_dir.join(format!("keel.redb.replaced-{stamp}"));
        std::fs::rename(&db_path, &aside)
            .with_context(|| format!("moving {} aside", db_path.display()))?;
        previous = Some(aside.display().to_string());
    }
    let wal = crate::storage::wal::dir_for(&db_path);
    if wal.exists() {
        std::fs::rename(
            &wal,
            data_dir.join(format!("keel.redb.wal.replaced-{stamp}")),
        )
        .with_context(|| format!("moving {} aside", wal.display()))?;
    }
    std::fs::rename(work.join("keel.redb"), &db_path)
        .with_context(|| format!("putting the new database in {}", db_path.display()))?;
    crate::snapshot::sync_dir(data_dir)?;
    let _ = std::fs::remove_dir_all(&work);
    report.previous_database = previous;
    Ok(report)
}

fn recover_plugin(
    source: &Source<'_>,
    store: &SnapshotStore,
    scratch: &crate::host::Host,
    record: &PluginRecord,
    known: Option<&PluginRecord>,
    mode: RecoverMode,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> anyhow::Result<PluginRecovery> {
    let name = record.name.as_str();
    let known_last = known.map(|r| r.last_sequence);
    let (snapshot, damaged) = match mode {
        RecoverMode::Scratch => (None, Vec::new()),
        _ => newest_valid(store, name, known_last.unwrap_or(u64::MAX))?,
    };
    let start = match (&snapshot, mode) {
        (Some(snap), _) => snap.header.sequence(),
        (None, RecoverMode::Snapshot) => {
            anyhow::bail!("no snapshot of {name} verifies ({damaged:?})")
        }
        (None, _) => 0,
    };
    if start == 0 && source.journal(record, 1, 1)?.is_empty() {
        anyhow::bail!(
            "the journal of {name} does not start at 1 (archived and deleted, or imported): recover it from a snapshot"
        );
    }
    if let Some(snap) = snapshot {
        let hash = snap.header.record.active().module_hash;
        let component = scratch.load_component(&source.module(&hash)?)?;
        scratch.seed_plugin(
            component,
            &Restored {
                record: snap.header.record,
                rows: snap.rows,
                from_snapshot: start,
            },
        )?;
    }
    let end = match (mode, known) {
        (RecoverMode::Snapshot, _) => start,
        (_, Some(known)) => known.last_sequence,
        (_, None) => archived_through(&source.archive_root.join(name), start)?,
    };
    let mismatches = replay_range(source, scratch, record, start + 1, end, &mut |done| {
        progress(name, done, end)
    })?;
    let status = scratch.plugin(name)?;
    let (check, ok) = match known {
        _ if !mismatches.is_empty() => (
            format!("MISMATCH: responses differ from the journal at sequences {mismatches:?}"),
            false,
        ),
        Some(k) if k.last_sequence == status.last_sequence => {
            if k.state_hash.to_hex() == status.state_hash {
                ("the state hash equals the database's".to_owned(), true)
            } else {
                (
                    format!(
                        "MISMATCH: the state hashes to {}, the database recorded {}",
                        status.state_hash,
                        k.state_hash.to_hex()
                    ),
                    false,
                )
            }
        }
        _ if end == start => (
            "the snapshot's rows hash to its recorded state hash".to_owned(),
            true,
        ),
        _ => (
            "every replayed response equals the journaled one".to_owned(),
            true,
        ),
    };
    let lost = match known_last {
        Some(last) if last > status.last_sequence => {
            Some(format!("{}..={last}", status.last_sequence + 1))
        }
        Some(_) => None,
        None => Some(format!(
            "any sequence after {} (the database is gone; the archive ends there)",
            status.last_sequence
        )),
    };
    Ok(PluginRecovery {
        plugin: name.to_owned(),
        from_snapshot: start,
        replayed: end - start,
        recovered_to: status.last_sequence,
        known_last,
        lost,
        state_hash: status.state_hash,
        check,
        damaged_snapshots: damaged,
        ok,
    })
}
