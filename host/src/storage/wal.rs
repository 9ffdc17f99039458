//! The write-ahead log: the durability path of immediate durability.
//!
//! A group commit is made durable by appending one *redo record* — every
//! row the batch writes to `state`, `journal` and `plugins`, in order — to
//! the log and fsyncing it once (`fdatasync`). Appending only queues the
//! record in memory; the first thread to wait for its durability writes
//! the queue and fsyncs (see [`Wal`]), so the executing thread spends no
//! time in the kernel for it. The rows themselves live in
//! the plugin's in-memory layers until a checkpoint (see
//! [`super::checkpoint`]) writes them to redb in a durable commit, with
//! `meta.wal_applied` ([`APPLIED_KEY`]) naming the last record it holds;
//! the segments up to there are then retired (recycled, see below).
//!
//! After a crash redb comes back at its last checkpoint; [`apply`] applies
//! every record past that number again, in order, at open. So a command is
//! acknowledged only after the fsync of the record holding it, and the
//! state after recovery is exactly the acknowledged (and possibly some
//! unacknowledged but logged) batches.
//!
//! On disk: a directory of segments named by their first record number
//! (`00000000000000000042.wal`); a segment is a sequence of records
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `KWAL` |
//! | 4 | payload length (u32 LE) |
//! | 8 | record number (u64 LE) |
//! | 16 | BLAKE3 of (number ‖ payload), truncated |
//! | n | payload: redo operations (see [`Redo`]) |
//!
//! A segment's records are numbered consecutively from the number in its
//! name; the first bytes that are not the next record end the segment.
//! Past them lie either nothing, a torn record (a crash in the middle of a
//! write: never acknowledged, and recovery cuts it off at the end of the
//! last segment) or records of an earlier use of the file (see below).
//! Damage anywhere but at the end of the last segment leaves records
//! missing between two segments, and is refused with an error naming the
//! segment and offset.
//!
//! **Segments are recycled.** A segment that a checkpoint made obsolete is
//! not deleted but kept as a spare (`….wal.spare`, at most
//! [`SPARE_SEGMENTS_MAX`]), and the next new segment is that file renamed:
//! its records overwrite the old ones in place, within blocks the file
//! system has already allocated. An `fdatasync` of such a write then has no
//! file size or block allocation to journal, so it neither commits the file
//! system's journal nor waits for other files' data (a checkpoint's redb
//! commit) that the journal's commit would flush first: on this machine's
//! ext4 it took about half as long as an `fdatasync` of an append. Old
//! records left in a recycled file are told apart by their numbers, which
//! are all below the segment's first.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use redb::WriteTransaction;
use serde::{Deserialize, Serialize};

use super::{JOURNAL, META, PLUGINS, STATE, StorageError, redb_err};

/// Key in `meta` of the number of the last log record redb holds (u64 LE).
pub const APPLIED_KEY: &str = "wal_applied";

const MAGIC: &[u8; 4] = b"KWAL";
/// Obsolete segments kept for reuse, at most (see the module docs).
pub const SPARE_SEGMENTS_MAX: usize = 2;
/// What an obsolete segment's name gets when it is kept as a spare.
const SPARE_SUFFIX: &str = ".spare";
const HEADER_BYTES: usize = 32;
/// Largest payload a record may claim; anything larger is damage.
const PAYLOAD_BYTES_MAX: usize = 1 << 31;

const OP_PUT: u8 = 1;
const OP_REMOVE: u8 = 2;
const OP_JOURNAL: u8 = 3;
const OP_PLUGIN: u8 = 4;

/// When the log is folded into a durable redb commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointPolicy {
    /// At most this long between checkpoints while commands flow, in ms.
    pub interval_ms: u64,
    /// At most this many bytes written to memory (and the log) between
    /// checkpoints: bounds recovery time and the memory the layers hold.
    pub log_bytes_max: u64,
    /// redb's page cache: checkpointed rows not in memory are read through
    /// it from the database file, so state larger than memory works at the
    /// cost of disk reads.
    pub read_cache_bytes: u64,
    /// At most this many bytes of one plugin's rows stay resident in
    /// memory (key, value and about 80 bytes of overhead per row). Past
    /// it, rows neither read nor written lately are evicted after each
    /// checkpoint and read through from redb when used again.
    pub resident_bytes_max: u64,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        Self {
            interval_ms: 1_000,
            log_bytes_max: 32 << 20,
            read_cache_bytes: 256 << 20,
            resident_bytes_max: 8 << 30,
        }
    }
}

/// A batch's redo operations, encoded as they happen so that undoing a
/// failed command is a truncation.
#[derive(Debug, Default)]
pub struct Redo {
    bytes: Vec<u8>,
}

impl Redo {
    /// The current length: a mark to [`Redo::truncate`] back to.
    pub fn mark(&self) -> usize {
        self.bytes.len()
    }

    /// Drops every operation after `mark`.
    pub fn truncate(&mut self, mark: usize) {
        self.bytes.truncate(mark);
    }

    /// Whether no operation was recorded.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// A `state` row written (`Some`) or removed (`None`).
    pub fn state(&mut self, full_key: &[u8], value: Option<&[u8]>) {
        match value {
            Some(v) => {
                self.bytes.push(OP_PUT);
                self.field(full_key);
                self.field(v);
            }
            None => {
                self.bytes.push(OP_REMOVE);
                self.field(full_key);
            }
        }
    }

    /// A `journal` row.
    pub fn journal(&mut self, plugin_id: u32, sequence: u64, entry: &[u8]) {
        self.bytes.push(OP_JOURNAL);
        self.bytes.extend_from_slice(&plugin_id.to_le_bytes());
        self.bytes.extend_from_slice(&sequence.to_le_bytes());
        self.field(entry);
    }

    /// A `plugins` row.
    pub fn plugin(&mut self, name: &str, record: &[u8]) {
        self.bytes.push(OP_PLUGIN);
        self.field(name.as_bytes());
        self.field(record);
    }

    fn field(&mut self, bytes: &[u8]) {
        self.bytes
            .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(bytes);
    }

    /// The encoded operations.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The encoded operations, owned (a log record's payload).
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// One operation of a redo record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Op<'a> {
    /// A `state` row written: full state key, value.
    Put { key: &'a [u8], value: &'a [u8] },
    /// A `state` row removed.
    Remove { key: &'a [u8] },
    /// A `journal` row.
    Journal {
        plugin_id: u32,
        sequence: u64,
        entry: &'a [u8],
    },
    /// A `plugins` row: the plugin's name and record (bincode).
    Plugin { name: &'a str, record: &'a [u8] },
}

/// Decodes the operations of record `number`, in order; damage is an
/// error naming the record.
pub(crate) fn decode_ops(number: u64, payload: &[u8]) -> Result<Vec<Op<'_>>, StorageError> {
    let corrupt = |why: &str| StorageError::Corrupt {
        what: format!("write-ahead log record {number}"),
        why: why.to_owned(),
    };
    let mut ops = Vec::new();
    let mut r = Reader { bytes: payload };
    while let Some(op) = r.byte() {
        ops.push(match op {
            OP_PUT => {
                let key = r.field().ok_or_else(|| corrupt("truncated put"))?;
                let value = r.field().ok_or_else(|| corrupt("truncated put"))?;
                Op::Put { key, value }
            }
            OP_REMOVE => {
                let key = r.field().ok_or_else(|| corrupt("truncated remove"))?;
                Op::Remove { key }
            }
            OP_JOURNAL => {
                let plugin_id = r.u32().ok_or_else(|| corrupt("truncated journal row"))?;
                let sequence = r.u64().ok_or_else(|| corrupt("truncated journal row"))?;
                let entry = r.field().ok_or_else(|| corrupt("truncated journal row"))?;
                Op::Journal {
                    plugin_id,
                    sequence,
                    entry,
                }
            }
            OP_PLUGIN => {
                let name = r.field().ok_or_else(|| corrupt("truncated plugin row"))?;
                let name = std::str::from_utf8(name).map_err(|_| corrupt("plugin name"))?;
                let record = r.field().ok_or_else(|| corrupt("truncated plugin row"))?;
                Op::Plugin { name, record }
            }
            other => return Err(corrupt(&format!("unknown operation {other}"))),
        });
    }
    Ok(ops)
}

/// Applies a record's operations inside `txn` (recovery without a log to
/// keep them in: relaxed durability).
pub fn apply(txn: &WriteTransaction, number: u64, payload: &[u8]) -> Result<(), StorageError> {
    let mut state = txn.open_table(STATE).map_err(redb_err("open state"))?;
    let mut journal = txn.open_table(JOURNAL).map_err(redb_err("open journal"))?;
    let mut plugins = txn.open_table(PLUGINS).map_err(redb_err("open plugins"))?;
    let mut meta = txn.open_table(META).map_err(redb_err("open meta"))?;
    let mut marks = std::collections::HashMap::new();
    for op in decode_ops(number, payload)? {
        match op {
            Op::Put { key, value } => {
                state.insert(key, value).map_err(redb_err("recover put"))?;
            }
            Op::Remove { key } => {
                state.remove(key).map_err(redb_err("recover remove"))?;
            }
            Op::Journal {
                plugin_id,
                sequence,
                entry,
            } => {
                // An entry the archive holds stays out of the database.
                let mark = match marks.get(&plugin_id) {
                    Some(&m) => m,
                    None => {
                        let m = super::archive_mark(&meta, plugin_id)?;
                        marks.insert(plugin_id, m);
                        m
                    }
                };
                if sequence <= mark {
                    continue;
                }
                journal
                    .insert((plugin_id, sequence), entry)
                    .map_err(redb_err("recover journal"))?;
            }
            Op::Plugin { name, record } => {
                plugins
                    .insert(name, record)
                    .map_err(redb_err("recover plugin"))?;
            }
        }
    }
    meta.insert(APPLIED_KEY, number.to_le_bytes().as_slice())
        .map_err(redb_err("write meta"))?;
    Ok(())
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }
    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    fn field(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

fn checksum(number: u64, payload: &[u8]) -> [u8; 16] {
    let mut h = blake3::Hasher::new();
    h.update(&number.to_le_bytes());
    h.update(payload);
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    out
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StorageError {
    let path = path.display().to_string();
    move |source| StorageError::Log { op, path, source }
}

fn segment_path(dir: &Path, first_record: u64) -> PathBuf {
    dir.join(format!("{first_record:020}.wal"))
}

/// The files of the log in `dir`, from one listing: its segments by
/// first record number, and its spares (see [`SPARE_SEGMENTS_MAX`]).
fn log_files(dir: &Path) -> Result<(Vec<(u64, PathBuf)>, Vec<PathBuf>), StorageError> {
    let (mut segments, mut spares) = (Vec::new(), Vec::new());
    for entry in std::fs::read_dir(dir).map_err(io_err("list log", dir))? {
        let entry = entry.map_err(io_err("list log", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(SPARE_SUFFIX) {
            spares.push(entry.path());
        } else if let Some(Ok(first)) = name.strip_suffix(".wal").map(str::parse::<u64>) {
            segments.push((first, entry.path()));
        }
    }
    segments.sort();
    spares.sort();
    Ok((segments, spares))
}

/// The segments in `dir`, by first record number.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StorageError> {
    Ok(log_files(dir)?.0)
}

/// Deletes every segment in `dir` (after recovery made them durable in
/// redb), and every spare.
pub fn delete_segments(dir: &Path) -> Result<(), StorageError> {
    let (segments, spares) = log_files(dir)?;
    for (_, path) in segments {
        std::fs::remove_file(&path).map_err(io_err("delete recovered segment", &path))?;
    }
    for path in spares {
        std::fs::remove_file(&path).map_err(io_err("delete spare segment", &path))?;
    }
    Ok(())
}

/// The spare segments in `dir`.
#[cfg(test)]
fn spares(dir: &Path) -> Result<Vec<PathBuf>, StorageError> {
    Ok(log_files(dir)?.1)
}

/// One record read back.
#[derive(Debug, PartialEq, Eq)]
pub struct Record {
    /// Its number.
    pub number: u64,
    /// Its redo operations.
    pub payload: Vec<u8>,
}

/// Reads every intact record in `dir`, in order. The bytes after the last
/// record of the last segment — a torn record (never acknowledged), or
/// records of the file's earlier use — end the log and are reported as the
/// number of bytes to cut; records missing anywhere before are an error.
pub fn read_all(dir: &Path) -> Result<(Vec<Record>, u64), StorageError> {
    let segments = segments(dir)?;
    let mut records: Vec<Record> = Vec::new();
    let mut torn = 0;
    // The number the next segment must start at, and where the segment
    // before ended if that was before its end: a gap after it is damage
    // there.
    let mut expected: Option<u64> = None;
    let mut ended_early: Option<(&Path, usize)> = None;
    for (i, (first, path)) in segments.iter().enumerate() {
        if let Some(expected) = expected
            && *first != expected
        {
            return Err(StorageError::Corrupt {
                what: match ended_early {
                    Some((path, at)) => format!("write-ahead log {} at byte {at}", path.display()),
                    None => format!("write-ahead log in {}", dir.display()),
                },
                why: match ended_early {
                    Some(_) => "damaged record before the end of the log".into(),
                    None => format!(
                        "the segment of record {first} follows record {}: records are missing",
                        expected - 1
                    ),
                },
            });
        }
        let bytes = std::fs::read(path).map_err(io_err("read log", path))?;
        let (at, read) = segment_records(&bytes, *first);
        expected = Some(first + read.len() as u64);
        records.extend(read);
        ended_early = (at < bytes.len()).then_some((path.as_path(), at));
        if i + 1 == segments.len() {
            torn = (bytes.len() - at) as u64;
        }
    }
    Ok((records, torn))
}

/// The records of a segment whose first is numbered `first`: each the
/// next number, until bytes that are not (the segment's end, see the
/// module docs). Returns where they end and the records.
fn segment_records(bytes: &[u8], first: u64) -> (usize, Vec<Record>) {
    let mut records = Vec::new();
    let mut at = 0;
    let mut expected = first;
    while at < bytes.len() {
        match parse_record(&bytes[at..]) {
            Some((record, len)) if record.number == expected => {
                records.push(record);
                at += len;
                expected += 1;
            }
            _ => break,
        }
    }
    (at, records)
}

/// [`read_all`] for a log that stays in use: also cuts a torn record off
/// the end of the last segment (new records go to a new segment, after
/// which the torn bytes would read as damage) and fsyncs every segment and
/// the directory, so that whatever is served from the records read is
/// durable. Returns the records and the bytes cut.
pub fn recover_segments(dir: &Path) -> Result<(Vec<Record>, u64), StorageError> {
    let (records, torn) = read_all(dir)?;
    let segments = segments(dir)?;
    for (i, (_, path)) in segments.iter().enumerate() {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_err("open log segment", path))?;
        let mut len = file
            .metadata()
            .map_err(io_err("read log segment size", path))?
            .len();
        if torn > 0 && i + 1 == segments.len() {
            len -= torn;
            file.set_len(len)
                .map_err(io_err("cut torn log record", path))?;
        }
        if len == 0 {
            // No record: its name may be the next segment's.
            drop(file);
            std::fs::remove_file(path).map_err(io_err("delete empty log segment", path))?;
            continue;
        }
        file.sync_all().map_err(io_err("sync log", path))?;
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync log dir", dir))?;
    Ok((records, torn))
}

fn parse_record(bytes: &[u8]) -> Option<(Record, usize)> {
    if bytes.len() < HEADER_BYTES || &bytes[..4] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(bytes[4..8].try_into().ok()?) as usize;
    let number = u64::from_le_bytes(bytes[8..16].try_into().ok()?);
    if len > PAYLOAD_BYTES_MAX || bytes.len() < HEADER_BYTES + len {
        return None;
    }
    let payload = &bytes[HEADER_BYTES..HEADER_BYTES + len];
    if bytes[16..32] != checksum(number, payload) {
        return None;
    }
    Some((
        Record {
            number,
            payload: payload.to_vec(),
        },
        HEADER_BYTES + len,
    ))
}

/// The open log.
///
/// A batch [`Wal::append`]s its record: it gets its number and joins a
/// queue in memory, and the executing thread makes no system call. Whoever
/// first waits for a record's durability ([`super::DbInner::wait_durable`],
/// the batch's acknowledger as a rule) writes every queued record, in
/// number order, to the current segment in one `write` ([`Wal::flush`])
/// and fsyncs it for all of them (group commit). A checkpoint rotates the
/// segment ([`Wal::begin_checkpoint`]), writing the queue first.
///
/// Two locks: the queue's, held by an append for a push, and the
/// writer's, held while queued records are taken and written and while
/// the segment rotates, so records reach the files in number order and a
/// rotation never passes a record taken but not yet written. The writer's
/// lock is always taken first.
pub struct Wal {
    queue: Mutex<Queue>,
    writer: Mutex<Writer>,
}

struct Queue {
    /// The number the next record gets.
    next_record: u64,
    /// Records appended and not yet written, in number order: the last
    /// is numbered `next_record - 1`.
    records: Vec<Vec<u8>>,
}

struct Writer {
    dir: PathBuf,
    /// The segment being appended to and its path, created (or recycled
    /// from a spare) at the first write after a checkpoint.
    segment: Option<(Arc<File>, PathBuf)>,
    /// Where the next record goes in `segment`.
    offset: u64,
    /// Segments that a durable redb commit in progress makes obsolete.
    obsolete: Vec<PathBuf>,
    /// Obsolete segments kept for reuse (see the module docs), renamed.
    spares: Vec<PathBuf>,
    /// The last record written to a segment (or redb held at open).
    written: u64,
    /// A write failed: the records it took are lost, so nothing after
    /// them may be written (the database is poisoned by then).
    failed: bool,
    scratch: Vec<u8>,
}

impl Wal {
    /// Opens the log in `dir` (created if missing) to append records from
    /// `next_record` on. Segments already there must hold nothing redb lacks
    /// (call after recovery); they are deleted at the next checkpoint.
    pub fn open(dir: &Path, next_record: u64) -> Result<Wal, StorageError> {
        std::fs::create_dir_all(dir).map_err(io_err("create log dir", dir))?;
        let (segments, mut spares) = log_files(dir)?;
        let obsolete = segments.into_iter().map(|(_, p)| p).collect();
        for extra in spares.split_off(spares.len().min(SPARE_SEGMENTS_MAX)) {
            std::fs::remove_file(&extra).map_err(io_err("delete spare segment", &extra))?;
        }
        Ok(Wal {
            queue: Mutex::new(Queue {
                next_record,
                records: Vec::new(),
            }),
            writer: Mutex::new(Writer {
                dir: dir.to_owned(),
                segment: None,
                offset: 0,
                obsolete,
                spares,
                written: next_record - 1,
                failed: false,
                scratch: Vec::new(),
            }),
        })
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The number the next record gets.
    pub fn next_record(&self) -> u64 {
        self.queue().next_record
    }

    /// Queues record `next_record()` (no I/O); returns its number. It is
    /// durable once a [`Wal::flush`] has written it and the file it
    /// returns has been fsynced (or the segment rotated, which fsyncs it).
    pub fn append(&self, payload: Vec<u8>) -> u64 {
        let mut queue = self.queue();
        let number = queue.next_record;
        queue.records.push(payload);
        queue.next_record += 1;
        number
    }

    /// Writes every queued record to the current segment; returns what an
    /// fsync now makes durable: that segment (if any) and the number of the
    /// last record written.
    pub fn flush(&self) -> Result<(Option<(Arc<File>, PathBuf)>, u64), StorageError> {
        let mut writer = self.writer();
        writer.write_queued(&self.queue)?;
        Ok((writer.segment.clone(), writer.written))
    }

    /// Appends a record, writes it and fsyncs it; returns its number.
    #[cfg(test)]
    pub fn append_durable(&self, payload: &[u8]) -> Result<u64, StorageError> {
        let number = self.append(payload.to_vec());
        if let (Some((file, path)), _) = self.flush()? {
            file.sync_data().map_err(io_err("sync log", &path))?;
        }
        Ok(number)
    }

    /// Called before a durable redb commit: writes the queued records and
    /// fsyncs the current segment (so that every record appended so far is
    /// durable), and later records go to a new one; the current ones become
    /// obsolete once the commit is durable. Returns the last record
    /// appended (the cut).
    pub fn begin_checkpoint(&self) -> Result<u64, StorageError> {
        let mut writer = self.writer();
        writer.write_queued(&self.queue)?;
        if let Some((file, path)) = writer.segment.take() {
            file.sync_data().map_err(io_err("sync log", &path))?;
            writer.obsolete.push(path);
        }
        Ok(writer.written)
    }

    /// Called after the durable redb commit: keeps obsolete segments as
    /// spares (up to [`SPARE_SEGMENTS_MAX`]) and deletes the others, oldest
    /// first, so that a crash meanwhile leaves the log without a gap.
    pub fn end_checkpoint(&self) {
        let mut writer = self.writer();
        let writer = &mut *writer;
        for path in writer.obsolete.drain(..) {
            if writer.spares.len() < SPARE_SEGMENTS_MAX {
                let mut spare = path.clone().into_os_string();
                spare.push(SPARE_SUFFIX);
                let spare = PathBuf::from(spare);
                match std::fs::rename(&path, &spare) {
                    Ok(()) => {
                        writer.spares.push(spare);
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "could not keep an obsolete log segment as a spare");
                    }
                }
            }
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not delete an obsolete log segment");
            }
        }
    }
}

impl Writer {
    /// Takes the queued records (the queue's lock held only for that) and
    /// writes them, framed, in one `write` to the current segment (created
    /// if none).
    fn write_queued(&mut self, queue: &Mutex<Queue>) -> Result<(), StorageError> {
        if self.failed {
            return Err(StorageError::Poisoned);
        }
        let (records, next_record) = {
            let mut queue = queue.lock().unwrap_or_else(|p| p.into_inner());
            (std::mem::take(&mut queue.records), queue.next_record)
        };
        if records.is_empty() {
            return Ok(());
        }
        let first = next_record - records.len() as u64;
        debug_assert_eq!(
            first,
            self.written + 1,
            "log records are written in number order"
        );
        // Until this write succeeds, the records taken are lost if it fails.
        self.failed = true;
        if self.segment.is_none() {
            let path = segment_path(&self.dir, first);
            // The largest spare: the most room already allocated.
            let largest = (0..self.spares.len())
                .max_by_key(|&i| std::fs::metadata(&self.spares[i]).map_or(0, |m| m.len()));
            if let Some(spare) = largest.map(|i| self.spares.swap_remove(i)) {
                std::fs::rename(&spare, &path).map_err(io_err("recycle log segment", &spare))?;
            }
            let file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(false)
                .open(&path)
                .map_err(io_err("create log segment", &path))?;
            // The new file's name must survive a crash too.
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err("sync log dir", &self.dir))?;
            self.segment = Some((Arc::new(file), path));
            self.offset = 0;
        }
        self.scratch.clear();
        for (number, payload) in (first..).zip(&records) {
            self.scratch.extend_from_slice(MAGIC);
            self.scratch
                .extend_from_slice(&(payload.len() as u32).to_le_bytes());
            self.scratch.extend_from_slice(&number.to_le_bytes());
            self.scratch.extend_from_slice(&checksum(number, payload));
            self.scratch.extend_from_slice(payload);
        }
        let (file, path) = self.segment.as_ref().expect("opened above");
        file.write_all_at(&self.scratch, self.offset)
            .map_err(io_err("append log", path))?;
        self.offset += self.scratch.len() as u64;
        self.written = next_record - 1;
        self.failed = false;
        Ok(())
    }
}

/// The log directory that belongs to the database file `db_path`.
pub fn dir_for(db_path: &Path) -> PathBuf {
    let mut name = db_path.file_name().unwrap_or_default().to_os_string();
    name.push(".wal");
    db_path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(i: u64) -> Vec<u8> {
        let mut redo = Redo::default();
        redo.state(format!("key-{i}").as_bytes(), Some(&i.to_le_bytes()));
        redo.journal(1, i, b"entry");
        redo.as_bytes().to_vec()
    }

    #[test]
    fn records_come_back_in_order_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), 1).unwrap();
        for i in 1..=3 {
            assert_eq!(wal.append_durable(&payload(i)).unwrap(), i);
        }
        wal.begin_checkpoint().unwrap(); // later records go to a second segment
        for i in 4..=5 {
            wal.append_durable(&payload(i)).unwrap();
        }
        assert_eq!(segments(dir.path()).unwrap().len(), 2);
        let (records, torn) = read_all(dir.path()).unwrap();
        assert_eq!(torn, 0);
        let numbers: Vec<u64> = records.iter().map(|r| r.number).collect();
        assert_eq!(numbers, [1, 2, 3, 4, 5]);
        assert_eq!(records[3].payload, payload(4));
        wal.end_checkpoint(); // the first segment is obsolete now
        let (records, _) = read_all(dir.path()).unwrap();
        assert_eq!(records.iter().map(|r| r.number).collect::<Vec<_>>(), [4, 5]);
    }

    #[test]
    fn a_torn_last_record_is_cut_off_at_every_length() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), 1).unwrap();
        wal.append_durable(&payload(1)).unwrap();
        wal.append_durable(&payload(2)).unwrap();
        let (_, path) = segments(dir.path()).unwrap().pop().unwrap();
        let full = std::fs::read(&path).unwrap();
        let first_len = HEADER_BYTES + payload(1).len();
        for cut in first_len..full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            let (records, torn) = read_all(dir.path()).unwrap();
            assert_eq!(records.len(), 1, "cut at {cut}");
            assert_eq!(torn, (cut - first_len) as u64);
        }
    }

    #[test]
    fn a_flipped_bit_in_the_last_record_cuts_it_but_elsewhere_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), 1).unwrap();
        wal.append_durable(&payload(1)).unwrap();
        wal.begin_checkpoint().unwrap();
        wal.append_durable(&payload(2)).unwrap();
        let segs = segments(dir.path()).unwrap();
        // Last segment: a damaged record is the torn end of the log.
        let mut last = std::fs::read(&segs[1].1).unwrap();
        let n = last.len();
        last[n - 1] ^= 1;
        std::fs::write(&segs[1].1, &last).unwrap();
        let (records, torn) = read_all(dir.path()).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(torn, n as u64);
        // Earlier segment: damage before the end of the log is refused.
        let mut first = std::fs::read(&segs[0].1).unwrap();
        first[HEADER_BYTES] ^= 1;
        std::fs::write(&segs[0].1, &first).unwrap();
        let err = read_all(dir.path()).unwrap_err().to_string();
        assert!(err.contains("damaged record"), "{err}");
    }

    #[test]
    fn a_gap_in_the_numbers_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), 1).unwrap();
        wal.append_durable(&payload(1)).unwrap();
        wal.begin_checkpoint().unwrap();
        let later = Wal::open(dir.path(), 3).unwrap();
        later.append_durable(&payload(3)).unwrap();
        let err = read_all(dir.path()).unwrap_err().to_string();
        assert!(err.contains("records are missing"), "{err}");
    }

    #[test]
    fn appended_records_reach_the_file_at_flush_or_rotation_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), 1).unwrap();
        assert_eq!(wal.append(payload(1)), 1);
        assert_eq!(wal.append(payload(2)), 2);
        let (records, _) = read_all(dir.path()).unwrap();
        assert!(records.is_empty(), "appending makes no system call");
        let (segment, upto) = wal.flush().unwrap();
        assert!(segment.is_some());
        assert_eq!(upto, 2);
        assert_eq!(wal.append(payload(3)), 3);
        // A rotation writes what is queued into the segment it closes.
        assert_eq!(wal.begin_checkpoint().unwrap(), 3);
        assert_eq!(wal.append(payload(4)), 4);
        assert_eq!(wal.flush().unwrap().1, 4);
        let segs = segments(dir.path()).unwrap();
        assert_eq!(
            segs.iter().map(|(first, _)| *first).collect::<Vec<_>>(),
            [1, 4]
        );
        let (records, torn) = read_all(dir.path()).unwrap();
        assert_eq!(torn, 0);
        assert_eq!(
            records.iter().map(|r| r.number).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        assert_eq!(records[2].payload, payload(3));
        // Nothing queued: a flush writes nothing and names the same point.
        assert_eq!(wal.flush().unwrap().1, 4);
        assert_eq!(read_all(dir.path()).unwrap().0.len(), 4);
    }

    #[test]
    fn obsolete_segments_are_recycled_and_their_old_records_end_the_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let numbers = |records: &[Record]| records.iter().map(|r| r.number).collect::<Vec<_>>();
        let wal = Wal::open(dir.path(), 1).unwrap();
        for i in 1..=5 {
            wal.append_durable(&payload(i)).unwrap();
        }
        let record_bytes = (HEADER_BYTES + payload(1).len()) as u64;
        wal.begin_checkpoint().unwrap();
        wal.end_checkpoint();
        // The obsolete segment is a spare now, not a segment.
        assert!(segments(dir.path()).unwrap().is_empty());
        let spare = spares(dir.path()).unwrap();
        assert_eq!(spare.len(), 1);
        // The next segment is the spare renamed: record 6 overwrites record
        // 1 (same size), and old record 2 after it ends the segment.
        wal.append_durable(&payload(6)).unwrap();
        assert!(spares(dir.path()).unwrap().is_empty());
        let segs = segments(dir.path()).unwrap();
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].0, 6);
        assert_eq!(
            std::fs::metadata(&segs[0].1).unwrap().len(),
            5 * record_bytes
        );
        let (records, torn) = read_all(dir.path()).unwrap();
        assert_eq!(numbers(&records), [6]);
        assert_eq!(records[0].payload, payload(6));
        assert_eq!(torn, 4 * record_bytes, "old records 2..=5 follow");
        wal.append_durable(&payload(7)).unwrap();
        assert_eq!(read_all(dir.path()).unwrap().1, 3 * record_bytes);
        // Old records at the end of a segment that is not the last are no
        // damage: the next segment starts where its records end.
        wal.begin_checkpoint().unwrap();
        wal.append_durable(&payload(8)).unwrap();
        let (records, torn) = read_all(dir.path()).unwrap();
        assert_eq!(numbers(&records), [6, 7, 8]);
        assert_eq!(torn, 0);
        // Damage in that segment's records is still found: record 7's
        // loss leaves 8 without its predecessor.
        let mut bytes = std::fs::read(&segs[0].1).unwrap();
        bytes[record_bytes as usize + HEADER_BYTES] ^= 1;
        std::fs::write(&segs[0].1, &bytes).unwrap();
        let err = read_all(dir.path()).unwrap_err().to_string();
        assert!(err.contains("damaged record"), "{err}");
        assert!(err.contains(&format!("at byte {record_bytes}")), "{err}");
        bytes[record_bytes as usize + HEADER_BYTES] ^= 1;
        std::fs::write(&segs[0].1, &bytes).unwrap();
        // Recovery cuts the old records off the last segment.
        wal.begin_checkpoint().unwrap();
        wal.end_checkpoint();
        wal.append_durable(&payload(9)).unwrap();
        let (records, torn) = recover_segments(dir.path()).unwrap();
        assert_eq!(numbers(&records), [9]);
        assert_eq!(
            torn,
            4 * record_bytes,
            "segment 9 is segment 6's file, the larger spare"
        );
        assert_eq!(read_all(dir.path()).unwrap().1, 0);
        // A new log keeps at most SPARE_SEGMENTS_MAX spares.
        for i in 0..4 {
            std::fs::write(dir.path().join(format!("{i}.wal{SPARE_SUFFIX}")), b"old").unwrap();
        }
        drop(wal);
        let _wal = Wal::open(dir.path(), 10).unwrap();
        assert_eq!(spares(dir.path()).unwrap().len(), SPARE_SEGMENTS_MAX);
    }

    #[test]
    fn malformed_payloads_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("db")).unwrap();
        for bad in [
            &[9u8][..],
            &[OP_PUT, 5, 0, 0, 0, 1],
            &[OP_JOURNAL, 1, 0],
            &[OP_PLUGIN, 2, 0, 0, 0, 0xff, 0xfe, 0, 0, 0, 0],
        ] {
            let txn = db.begin_write().unwrap();
            assert!(apply(&txn, 1, bad).is_err(), "{bad:?}");
        }
    }
}
