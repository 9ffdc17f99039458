//! Snapshots: the user-facing copy of one plugin's state at one sequence,
//! in a file of its own under `<data_dir>/snapshots/<plugin>/` (format in
//! [`format`]). "Checkpoint" is the other word: the storage layer's
//! folding of the write-ahead log into redb (`storage::checkpoint`);
//! a snapshot is independent of it and survives the loss of the database
//! file.
//!
//! A snapshot is written from a read view — an O(1) copy of the plugin's
//! resident rows and record at a batch boundary — so commands keep
//! flowing while it is written. The rows are hashed as they are encoded
//! and must equal the record's state hash; the file is written under a
//! temporary name, fsynced, read back and checked (every checksum, every
//! chunk decompresses), then renamed into place and the directory fsynced: a
//! listed snapshot is a complete one. The components a snapshot's record
//! names are copied to `<data_dir>/modules/<hash>.wasm` (content
//! addressed), so that a plugin can be rebuilt from its snapshot without
//! the database.

pub mod format;
pub mod schedule;

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::executor::now_ms;
use crate::state_hash::hex;
use crate::storage::{Db, StorageError};
pub use format::{Damaged, FormatError, Snapshot, SnapshotHeader, SnapshotRows};

/// File name suffix of a snapshot.
const SUFFIX: &str = "ksnap";
/// Write buffer of the snapshot writer.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// When snapshots are taken and how many are kept (`[snapshots]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotPolicy {
    /// Take one when this long has passed since the last one and the
    /// plugin has run commands since, in ms (0: never by time).
    pub interval_ms: u64,
    /// Take one when this many journal entries followed the last one
    /// (0: never by count).
    pub every_commands: u64,
    /// Keep at most this many per plugin (the newest; at least 1).
    pub keep_newest: usize,
    /// Also remove snapshots older than this, in ms (0: no age limit). The
    /// newest snapshot is never removed.
    pub keep_max_age_ms: u64,
}

impl SnapshotPolicy {
    /// No scheduled snapshots (on-demand ones still work).
    pub const OFF: SnapshotPolicy = SnapshotPolicy {
        interval_ms: 0,
        every_commands: 0,
        keep_newest: usize::MAX,
        keep_max_age_ms: 0,
    };
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        // A market: at most a minute's journal to replay for a restore,
        // ten minutes of minute-by-minute restore points; the journal since
        // the oldest (at most ten minutes of it) stays in the database,
        // older entries go to the archive.
        Self {
            interval_ms: 60_000,
            every_commands: 1_000_000,
            keep_newest: 10,
            keep_max_age_ms: 0,
        }
    }
}

/// An error of the snapshot store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// A file failed a check or could not be read or written.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The database could not be read.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A file or directory operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// No such snapshot, plugin or module.
    #[error("{0}")]
    NotFound(String),
    /// What was written does not hash to what the record says.
    #[error(
        "snapshot of {plugin} at {sequence}: the rows hash to {found}, the record says {expected}; not published"
    )]
    HashMismatch {
        /// The plugin.
        plugin: String,
        /// Its sequence.
        sequence: u64,
        /// The record's state hash.
        expected: String,
        /// The hash of the rows written.
        found: String,
    },
}

fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}

/// One snapshot, as `keel snapshots` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotInfo {
    /// The plugin.
    pub plugin: String,
    /// The snapshot's id: the sequence it holds the state at.
    pub sequence: u64,
    /// When it was taken (ms since the Unix epoch).
    pub created_ms: u64,
    /// The timestamp of its last journal entry.
    pub timestamp_ms: u64,
    /// File size in bytes.
    pub bytes: u64,
    /// Rows.
    pub rows: u64,
    /// State hash (hex).
    pub state_hash: String,
    /// The module that produced the state (hex) and its version.
    pub module_hash: String,
    /// Its version string.
    pub version: String,
    /// Why it was taken.
    pub reason: String,
    /// The file.
    pub path: PathBuf,
}

impl SnapshotInfo {
    fn new(header: &SnapshotHeader, bytes: u64, path: PathBuf) -> Self {
        let active = header.record.active();
        Self {
            plugin: header.record.name.clone(),
            sequence: header.sequence(),
            created_ms: header.created_ms,
            timestamp_ms: header.record.last_timestamp_ms,
            bytes,
            rows: header.rows,
            state_hash: header.record.state_hash.to_hex(),
            module_hash: hex(&active.module_hash),
            version: active.version.clone(),
            reason: header.reason.clone(),
            path,
        }
    }
}

/// The snapshot files of one host: `<data_dir>/snapshots/<plugin>/`
/// `<sequence, 20 digits>.ksnap`, and the components they name in
/// `<data_dir>/modules/`.
#[derive(Debug)]
pub struct SnapshotStore {
    root: PathBuf,
    modules: PathBuf,
    /// One writer at a time (scheduled and on-demand snapshots).
    writing: Mutex<()>,
}

impl SnapshotStore {
    /// The store of the host whose data directory is `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            root: data_dir.join("snapshots"),
            modules: data_dir.join("modules"),
            writing: Mutex::new(()),
        }
    }

    /// The directory of `plugin`'s snapshots.
    pub fn dir(&self, plugin: &str) -> PathBuf {
        self.root.join(plugin)
    }

    /// The file of `plugin`'s snapshot at `sequence`.
    pub fn file(&self, plugin: &str, sequence: u64) -> PathBuf {
        self.dir(plugin).join(format!("{sequence:020}.{SUFFIX}"))
    }

    /// Writes a snapshot of `plugin_id`'s committed state (a consistent
    /// view at its last batch; commands keep running), and copies the
    /// modules its record names. Idempotent: a snapshot at the same
    /// sequence with the same state hash is returned as it is.
    pub fn take(
        &self,
        db: &Db,
        plugin_id: u32,
        reason: &str,
    ) -> Result<SnapshotInfo, SnapshotError> {
        let view = db.view(plugin_id)?;
        self.take_view(db, &view, reason)
    }

    /// Writes a snapshot of `plugin_id`'s state as a checkpoint run now
    /// leaves it in redb, read from redb alone (the scheduler's way: a
    /// view of the live map would make every batch that runs while a large
    /// state is written copy the map nodes it touches; measured with put3
    /// growing to 5 M keys, the executor thread spent about 5 % more CPU
    /// with it). The snapshot's sequence is the one the checkpoint reached,
    /// a little behind the live one while commands flow. Falls back to
    /// [`SnapshotStore::take`] for a plugin no checkpoint has written.
    pub fn take_checkpointed(
        &self,
        db: &Db,
        plugin_id: u32,
        reason: &str,
    ) -> Result<SnapshotInfo, SnapshotError> {
        db.checkpoint()?;
        match db.checkpointed_view(plugin_id)? {
            Some(view) => self.take_view(db, &view, reason),
            None => self.take(db, plugin_id, reason),
        }
    }

    /// Writes a snapshot of the state `view` holds (taken earlier, e.g. at
    /// the batch boundary before an upgrade).
    pub fn take_view(
        &self,
        db: &Db,
        view: &crate::storage::ReadView,
        reason: &str,
    ) -> Result<SnapshotInfo, SnapshotError> {
        let _one = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let record = view
            .record()?
            .ok_or_else(|| SnapshotError::NotFound("a view without a plugin record".into()))?;
        for deployment in &record.deployments {
            self.keep_module(db, &deployment.module_hash)?;
        }
        let header = SnapshotHeader {
            rows: view.row_count() as u64,
            record,
            created_ms: now_ms(),
            reason: reason.to_owned(),
        };
        self.write_locked(&header, |writer| {
            view.for_each_row(|key, value| writer.row(key, value))
        })
    }

    /// Writes a snapshot of given rows (ascending `table ‖ 00 ‖ key`).
    pub fn write_rows<'a>(
        &self,
        header: &SnapshotHeader,
        rows: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Result<SnapshotInfo, SnapshotError> {
        let _one = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        self.write_locked(header, |writer| {
            for (k, v) in rows {
                writer.row(k, v)?;
            }
            Ok(())
        })
    }

    fn write_locked(
        &self,
        header: &SnapshotHeader,
        rows: impl FnOnce(&mut format::Writer<BufWriter<File>>) -> std::io::Result<()>,
    ) -> Result<SnapshotInfo, SnapshotError> {
        let plugin = header.record.name.as_str();
        let sequence = header.sequence();
        let dir = self.dir(plugin);
        let path = self.file(plugin, sequence);
        if let Ok((existing, bytes)) = format::read_header(&path)
            && existing.record.state_hash == header.record.state_hash
        {
            return Ok(SnapshotInfo::new(&existing, bytes, path));
        }
        std::fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        let temp = dir.join(format!(".{sequence:020}.{SUFFIX}.tmp"));
        let result = (|| {
            let file = File::create(&temp).map_err(io_err("creating", &temp))?;
            let out = BufWriter::with_capacity(WRITE_BUFFER_BYTES, file);
            let mut writer = format::Writer::new(out, header).map_err(io_err("writing", &temp))?;
            rows(&mut writer).map_err(io_err("writing", &temp))?;
            let (out, hash, count) = writer.finish().map_err(io_err("writing", &temp))?;
            let file = out
                .into_inner()
                .map_err(|e| e.into_error())
                .map_err(io_err("writing", &temp))?;
            file.sync_all().map_err(io_err("fsync", &temp))?;
            if hash != header.record.state_hash || count != header.rows {
                return Err(SnapshotError::HashMismatch {
                    plugin: plugin.to_owned(),
                    sequence,
                    expected: header.record.state_hash.to_hex(),
                    found: format!("{} ({count} rows)", hash.to_hex()),
                });
            }
            // What is on disk, read back: every checksum, every chunk
            // decompresses (the rows were hashed as they were encoded).
            format::check(&temp)?;
            std::fs::rename(&temp, &path).map_err(io_err("renaming", &temp))?;
            sync_dir(&dir)
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
        let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
        tracing::debug!(plugin, sequence, bytes, "snapshot written");
        Ok(SnapshotInfo::new(header, bytes, path))
    }

    /// The snapshot files of `plugin` by the sequence in their names,
    /// oldest first (published files only; nothing is read).
    pub fn files(&self, plugin: &str) -> Result<Vec<(u64, PathBuf)>, SnapshotError> {
        let dir = self.dir(plugin);
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io_err("listing", &dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err("listing", &dir))?;
            let name = entry.file_name();
            let Some(sequence) = name
                .to_str()
                .and_then(|n| n.strip_suffix(SUFFIX))
                .and_then(|n| n.strip_suffix('.'))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            out.push((sequence, entry.path()));
        }
        out.sort();
        Ok(out)
    }

    /// Every snapshot of `plugin` whose header reads, oldest first. A file
    /// whose header is damaged is left out with a warning (reading it in
    /// full names the damage; restores that would use it refuse).
    pub fn list(&self, plugin: &str) -> Result<Vec<SnapshotInfo>, SnapshotError> {
        let mut out = Vec::new();
        for (_, path) in self.files(plugin)? {
            match format::read_header(&path) {
                Ok((header, bytes)) => out.push(SnapshotInfo::new(&header, bytes, path)),
                Err(e) => tracing::warn!(error = %e, "a snapshot file is damaged; not listed"),
            }
        }
        Ok(out)
    }

    /// The sequence of `plugin`'s newest snapshot file at or before
    /// `sequence` (by name: a damaged newest file is not skipped, reading
    /// it refuses).
    pub fn newest_at_or_before(
        &self,
        plugin: &str,
        sequence: u64,
    ) -> Result<Option<u64>, SnapshotError> {
        Ok(self
            .files(plugin)?
            .into_iter()
            .map(|(s, _)| s)
            .rfind(|&s| s <= sequence))
    }

    /// Reads `plugin`'s snapshot at `sequence`, checked in full.
    pub fn read(&self, plugin: &str, sequence: u64) -> Result<Snapshot, SnapshotError> {
        let path = self.file(plugin, sequence);
        if !path.exists() {
            return Err(SnapshotError::NotFound(format!(
                "plugin {plugin} has no snapshot at sequence {sequence} ({})",
                path.display()
            )));
        }
        let snapshot = format::read(&path)?;
        if snapshot.header.record.name != plugin || snapshot.header.sequence() != sequence {
            return Err(SnapshotError::Format(FormatError::Damaged(Damaged {
                path: path.display().to_string(),
                offset: 16,
                what: format!(
                    "the header names {} at {}, the file name {plugin} at {sequence}",
                    snapshot.header.record.name,
                    snapshot.header.sequence()
                ),
            })));
        }
        Ok(snapshot)
    }

    /// Applies `policy` to `plugin`'s snapshots: keeps the newest
    /// `keep_newest` and, with an age limit, removes older ones past it
    /// (never the newest); removes temporary files a crash left. Returns
    /// the sequences removed.
    pub fn prune(&self, plugin: &str, policy: &SnapshotPolicy) -> Result<Vec<u64>, SnapshotError> {
        let _one = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let dir = self.dir(plugin);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                if name
                    .to_str()
                    .is_some_and(|n| n.starts_with('.') && n.ends_with(".tmp"))
                {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let listed = self.list(plugin)?;
        let keep = policy.keep_newest.max(1);
        let now = now_ms();
        let mut removed = Vec::new();
        let newest = listed.len().saturating_sub(1);
        for (i, snap) in listed.iter().enumerate() {
            if i == newest {
                break;
            }
            let too_many = listed.len() - i > keep;
            let too_old = policy.keep_max_age_ms > 0
                && now.saturating_sub(snap.created_ms) > policy.keep_max_age_ms;
            if too_many || too_old {
                std::fs::remove_file(&snap.path).map_err(io_err("removing", &snap.path))?;
                removed.push(snap.sequence);
            }
        }
        if !removed.is_empty() {
            sync_dir(&dir)?;
        }
        Ok(removed)
    }

    /// Copies the component `hash` from the database to
    /// `<data_dir>/modules/` unless it is there.
    fn keep_module(&self, db: &Db, hash: &[u8; 32]) -> Result<(), SnapshotError> {
        let path = self.modules.join(format!("{}.wasm", hex(hash)));
        if path.exists() {
            return Ok(());
        }
        let bytes = db
            .module(hash)?
            .ok_or_else(|| SnapshotError::NotFound(format!("module {}", hex(hash))))?;
        self.store_module(hash, &bytes)
    }

    /// Stores component bytes under their hash in `<data_dir>/modules/`.
    pub fn store_module(&self, hash: &[u8; 32], bytes: &[u8]) -> Result<(), SnapshotError> {
        let path = self.modules.join(format!("{}.wasm", hex(hash)));
        if path.exists() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.modules).map_err(io_err("creating", &self.modules))?;
        let temp = self.modules.join(format!(".{}.wasm.tmp", hex(hash)));
        let mut file = File::create(&temp).map_err(io_err("creating", &temp))?;
        file.write_all(bytes).map_err(io_err("writing", &temp))?;
        file.sync_all().map_err(io_err("fsync", &temp))?;
        std::fs::rename(&temp, &path).map_err(io_err("renaming", &temp))?;
        sync_dir(&self.modules)
    }

    /// The component stored under `hash`, checked against it.
    pub fn module(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, SnapshotError> {
        let path = self.modules.join(format!("{}.wasm", hex(hash)));
        match std::fs::read(&path) {
            Ok(bytes) if blake3::hash(&bytes).as_bytes() == hash => Ok(Some(bytes)),
            Ok(_) => Err(SnapshotError::Format(FormatError::Damaged(Damaged {
                path: path.display().to_string(),
                offset: 0,
                what: "the component does not hash to its name".into(),
            }))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("reading", &path)(e)),
        }
    }
}

/// Moves the journal entries of `record`'s plugin up to its oldest
/// retained snapshot out of the database into the archive (when
/// `policy.enabled`), and applies the archive's retention. Called after
/// each snapshot and prune; failures are logged, the journal then simply
/// stays in the database until the next round.
pub fn retire_journal(
    db: &Db,
    store: &SnapshotStore,
    policy: &crate::storage::ArchivePolicy,
    plugin_id: u32,
    plugin: &str,
) {
    if !policy.enabled {
        return;
    }
    let oldest = match store.files(plugin) {
        Ok(files) => files.first().map(|(s, _)| *s),
        Err(e) => {
            tracing::warn!(plugin, error = %e, "cannot list snapshots; the journal stays in the database");
            return;
        }
    };
    let Some(oldest) = oldest else { return };
    match db.archive_journal(plugin_id, plugin, oldest, policy) {
        Ok(Some(segment)) => tracing::debug!(
            plugin,
            first = segment.first,
            last = segment.last,
            bytes = segment.bytes,
            "journal archived"
        ),
        Ok(None) => {}
        Err(e) => tracing::warn!(plugin, error = %e, "archiving the journal failed"),
    }
}

/// Fsyncs a directory, so that a rename or removal in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), SnapshotError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync", dir))
}
