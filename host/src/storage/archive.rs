//! The journal archive: journal entries moved out of the database into
//! checksummed segment files under `<data_dir>/archive/<plugin>/`, so that
//! the database stays bounded under a constant command stream while old
//! entries stay readable (restore to a past sequence, replay) until the
//! archive's own retention deletes them.
//!
//! A segment holds the contiguous entries `first..=last` of one plugin
//! and is named `<first, 20 digits>-<last, 20 digits>.kjar`. It is written
//! under a temporary name, fsynced and renamed (then the directory
//! fsynced) before the entries are deleted from the database in one
//! durable commit that also raises `meta."archived.<plugin id>"` (u64 LE,
//! the last archived sequence). A crash between the two leaves a segment
//! above the mark: the next round deletes it and writes it again.
//! Entries at or below the mark are never written to the database again
//! (the checkpointer and recovery skip them).
//!
//! Byte layout (integers little endian):
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `KEELJAR1` |
//! | | records, each: |
//! | 4 | magic `KJRE` |
//! | 4 | payload length `n` (u32) |
//! | 8 | sequence (u64) |
//! | 16 | BLAKE3 of (sequence ‖ payload), first 16 bytes |
//! | n | payload: the journal entry ([`super::journal`] format) |
//! | | then the trailer: |
//! | 4 | magic `KJEN` |
//! | 8 | record count (u64) |
//! | 32 | BLAKE3 of every record checksum, in order |
//!
//! The reader checks every magic, length and checksum, that sequences run
//! `first..=last` without a gap as the name says, and the trailer; a
//! failure names the file, the byte offset and what failed.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::StorageError;

const MAGIC: &[u8; 8] = b"KEELJAR1";
const RECORD_MAGIC: &[u8; 4] = b"KJRE";
const TRAILER_MAGIC: &[u8; 4] = b"KJEN";
const RECORD_HEAD_BYTES: usize = 32;
const TRAILER_BYTES: usize = 44;
const SUFFIX: &str = "kjar";
/// Largest entry a reader accepts.
const PAYLOAD_BYTES_MAX: usize = 1 << 30;

/// Key prefix in `meta` of a plugin's archive mark.
pub(crate) fn mark_key(plugin_id: u32) -> String {
    format!("archived.{plugin_id}")
}

/// When archive segments are deleted (`[archive]`). A limit of 0 is no
/// limit; the newest segment is never deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArchivePolicy {
    /// Move journal entries older than a plugin's oldest retained
    /// snapshot out of the database (false: the journal stays in the
    /// database for ever).
    pub enabled: bool,
    /// Keep at most this many segments per plugin.
    pub keep_segments_max: usize,
    /// Keep at most this many bytes of segments per plugin.
    pub keep_bytes_max: u64,
    /// Delete segments older than this (by file time), in ms.
    pub keep_max_age_ms: u64,
}

impl Default for ArchivePolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            keep_segments_max: 0,
            keep_bytes_max: 4 << 30,
            keep_max_age_ms: 0,
        }
    }
}

/// One segment file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Segment {
    /// First sequence held.
    pub first: u64,
    /// Last sequence held.
    pub last: u64,
    /// File size.
    pub bytes: u64,
    /// The file.
    pub path: PathBuf,
}

fn damaged(path: &Path, offset: usize, what: impl Into<String>) -> StorageError {
    StorageError::Corrupt {
        what: format!("journal archive {} at byte {offset}", path.display()),
        why: what.into(),
    }
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StorageError + 'a {
    move |source| StorageError::Log {
        op,
        path: path.display().to_string(),
        source,
    }
}

fn checksum(sequence: u64, payload: &[u8]) -> [u8; 16] {
    let mut h = blake3::Hasher::new();
    h.update(&sequence.to_le_bytes());
    h.update(payload);
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    out
}

/// The segments in `dir`, oldest first (by name; nothing is read).
pub(crate) fn segments(dir: &Path) -> Result<Vec<Segment>, StorageError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io("listing", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io("listing", dir))?;
        let name = entry.file_name();
        let Some((first, last)) = name
            .to_str()
            .and_then(|n| n.strip_suffix(SUFFIX)?.strip_suffix('.'))
            .and_then(|n| n.split_once('-'))
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        else {
            continue;
        };
        let bytes = entry.metadata().map_or(0, |m| m.len());
        out.push(Segment {
            first,
            last,
            bytes,
            path: entry.path(),
        });
    }
    out.sort_by_key(|s| s.first);
    Ok(out)
}

/// Writes `entries` (contiguous, ascending) as a segment in `dir`; returns it.
pub(crate) fn write(dir: &Path, entries: &[(u64, Bytes)]) -> Result<Segment, StorageError> {
    let (first, last) = match (entries.first(), entries.last()) {
        (Some(f), Some(l)) => (f.0, l.0),
        _ => {
            return Err(StorageError::Corrupt {
                what: "journal archive".into(),
                why: "an empty segment".into(),
            });
        }
    };
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let path = dir.join(format!("{first:020}-{last:020}.{SUFFIX}"));
    let temp = dir.join(format!(".{first:020}-{last:020}.{SUFFIX}.tmp"));
    let result = (|| {
        let file = File::create(&temp).map_err(io("creating", &temp))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut sums = blake3::Hasher::new();
        out.write_all(MAGIC).map_err(io("writing", &temp))?;
        for (sequence, payload) in entries {
            let sum = checksum(*sequence, payload);
            sums.update(&sum);
            for part in [
                RECORD_MAGIC.as_slice(),
                &(payload.len() as u32).to_le_bytes(),
                &sequence.to_le_bytes(),
                &sum,
                payload,
            ] {
                out.write_all(part).map_err(io("writing", &temp))?;
            }
        }
        for part in [
            TRAILER_MAGIC.as_slice(),
            &(entries.len() as u64).to_le_bytes(),
            sums.finalize().as_bytes(),
        ] {
            out.write_all(part).map_err(io("writing", &temp))?;
        }
        let file = out
            .into_inner()
            .map_err(|e| e.into_error())
            .map_err(io("writing", &temp))?;
        file.sync_all().map_err(io("fsync", &temp))?;
        // What is on disk, read back and checked.
        read(&temp, first, last)?;
        std::fs::rename(&temp, &path).map_err(io("renaming", &temp))?;
        sync_dir(dir)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
    Ok(Segment {
        first,
        last,
        bytes,
        path,
    })
}

/// Reads and checks the segment at `path`, which must hold `first..=last`.
pub(crate) fn read(path: &Path, first: u64, last: u64) -> Result<Vec<(u64, Bytes)>, StorageError> {
    let bytes = std::fs::read(path).map_err(io("reading", path))?;
    if bytes.len() < MAGIC.len() + TRAILER_BYTES || &bytes[..8] != MAGIC {
        return Err(damaged(
            path,
            0,
            "not a journal archive segment (bad magic or too short)",
        ));
    }
    let trailer_at = bytes.len() - TRAILER_BYTES;
    let mut out = Vec::new();
    let mut sums = blake3::Hasher::new();
    let mut at = MAGIC.len();
    let mut expected = first;
    while at < trailer_at {
        if at + RECORD_HEAD_BYTES > trailer_at || &bytes[at..at + 4] != RECORD_MAGIC {
            return Err(damaged(path, at, "bad record header"));
        }
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        let sequence = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().expect("8 bytes"));
        let data_at = at + RECORD_HEAD_BYTES;
        if len > PAYLOAD_BYTES_MAX || len > trailer_at - data_at {
            return Err(damaged(
                path,
                at + 4,
                format!("record length {len} runs past the file"),
            ));
        }
        let payload = &bytes[data_at..data_at + len];
        if checksum(sequence, payload) != bytes[at + 16..at + 32] {
            return Err(damaged(
                path,
                at,
                format!("record {sequence}: checksum mismatch"),
            ));
        }
        if sequence != expected {
            return Err(damaged(
                path,
                at + 8,
                format!("sequence {sequence} where {expected} belongs"),
            ));
        }
        sums.update(&bytes[at + 16..at + 32]);
        out.push((sequence, Bytes::copy_from_slice(payload)));
        expected += 1;
        at = data_at + len;
    }
    let count = u64::from_le_bytes(
        bytes[trailer_at + 4..trailer_at + 12]
            .try_into()
            .expect("8 bytes"),
    );
    if at != trailer_at
        || &bytes[trailer_at..trailer_at + 4] != TRAILER_MAGIC
        || count != out.len() as u64
        || bytes[trailer_at + 12..] != *sums.finalize().as_bytes()
    {
        return Err(damaged(
            path,
            trailer_at,
            "bad trailer (records missing, extra or cut)",
        ));
    }
    if expected != last + 1 {
        return Err(damaged(
            path,
            trailer_at,
            format!("holds up to {} where the name says {last}", expected - 1),
        ));
    }
    Ok(out)
}

/// The archived journal entries in `dir` with sequence in `from..=to`,
/// in order, read and checked (for a host whose database is lost: the
/// archive alone). Sequences no segment holds are simply absent.
pub fn read_journal(
    dir: &Path,
    from: u64,
    to: u64,
) -> Result<Vec<super::JournalEntry>, StorageError> {
    let mut out = Vec::new();
    for segment in segments(dir)? {
        if segment.last < from || segment.first > to {
            continue;
        }
        for (sequence, bytes) in read(&segment.path, segment.first, segment.last)? {
            if (from..=to).contains(&sequence)
                && out
                    .last()
                    .is_none_or(|e: &super::JournalEntry| e.sequence < sequence)
            {
                out.push(super::journal::decode_entry(sequence, &bytes)?);
            }
        }
    }
    Ok(out)
}

/// Deletes segments of `dir` by `policy` (oldest first; never the
/// newest) and any segment above `mark` (left by a crashed round) or
/// temporary file. Returns the segments deleted.
pub(crate) fn prune(
    dir: &Path,
    mark: u64,
    policy: &ArchivePolicy,
) -> Result<Vec<Segment>, StorageError> {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with('.') && n.ends_with(".tmp"))
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    let mut all = segments(dir)?;
    let mut removed = Vec::new();
    all.retain(|s| {
        if s.last > mark {
            removed.push(s.clone());
            false
        } else {
            true
        }
    });
    let now = std::time::SystemTime::now();
    let mut total: u64 = all.iter().map(|s| s.bytes).sum();
    let mut count = all.len();
    for s in all.iter().take(all.len().saturating_sub(1)) {
        let too_many = policy.keep_segments_max > 0 && count > policy.keep_segments_max;
        let too_big = policy.keep_bytes_max > 0 && total > policy.keep_bytes_max;
        let too_old = policy.keep_max_age_ms > 0
            && std::fs::metadata(&s.path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age.as_millis() as u64 > policy.keep_max_age_ms);
        if !(too_many || too_big || too_old) {
            break;
        }
        removed.push(s.clone());
        total -= s.bytes;
        count -= 1;
    }
    for s in &removed {
        std::fs::remove_file(&s.path).map_err(io("removing", &s.path))?;
    }
    if !removed.is_empty() {
        sync_dir(dir)?;
    }
    Ok(removed)
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(first: u64, n: u64) -> Vec<(u64, Bytes)> {
        (first..first + n)
            .map(|s| (s, Bytes::from(format!("entry {s}").into_bytes())))
            .collect()
    }

    #[test]
    fn a_segment_round_trips_and_any_damage_is_refused_with_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let seg = write(dir.path(), &entries(5, 30)).unwrap();
        assert_eq!((seg.first, seg.last), (5, 34));
        assert_eq!(read(&seg.path, 5, 34).unwrap(), entries(5, 30));
        let good = std::fs::read(&seg.path).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            std::fs::write(&seg.path, &bad).unwrap();
            let err = read(&seg.path, 5, 34)
                .expect_err(&format!("byte {i}"))
                .to_string();
            assert!(err.contains(".kjar at byte"), "{err}");
        }
        for cut in 0..good.len() {
            std::fs::write(&seg.path, &good[..cut]).unwrap();
            assert!(read(&seg.path, 5, 34).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn pruning_keeps_the_newest_and_removes_segments_above_the_mark() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..5 {
            write(dir.path(), &entries(1 + i * 10, 10)).unwrap();
        }
        let policy = ArchivePolicy {
            keep_segments_max: 2,
            ..ArchivePolicy::default()
        };
        let removed = prune(dir.path(), 40, &policy).unwrap();
        let left: Vec<u64> = segments(dir.path())
            .unwrap()
            .iter()
            .map(|s| s.first)
            .collect();
        assert_eq!(left, vec![21, 31]);
        assert_eq!(removed.len(), 3);
    }
}
