//! The snapshot file format (version 1): one plugin's rows at one
//! sequence, in checksummed, compressed chunks. Every integer is little
//! endian.
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 8 | magic `KEELSNAP` |
//! | 8 | 4 | format version (u32), `1` |
//! | 12 | 4 | header length `h` (u32) |
//! | 16 | h | header: bincode (standard config) of [`SnapshotHeader`] |
//! | 16 + h | 16 | BLAKE3 of the header bytes, first 16 bytes |
//! | … | | chunks, each as below, until the trailer's magic |
//! | end − 60 | 4 | trailer magic `KSEN` |
//! | end − 56 | 4 | chunk count (u32) |
//! | end − 52 | 8 | row count (u64) |
//! | end − 44 | 32 | BLAKE3 of (header checksum ‖ every chunk checksum, in order) |
//! | end − 12 | 12 | end magic `KEELSNAP-END` |
//!
//! A chunk:
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `KSCH` |
//! | 4 | rows in the chunk (u32) |
//! | 4 | uncompressed length `u` (u32, at most [`CHUNK_BYTES_MAX`]) |
//! | 4 | compressed length `c` (u32) |
//! | 16 | BLAKE3 of (chunk index (u32) ‖ rows ‖ `u` ‖ the `c` compressed bytes), first 16 bytes |
//! | c | LZ4 block (lz4_flex) of the rows |
//!
//! Rows (uncompressed): for each, key length (u32), key, value length
//! (u32), value. The key is `table ‖ 00 ‖ plugin key` (the storage key
//! without the host-assigned plugin id, which differs between hosts).
//! Keys are strictly ascending across the whole file.
//!
//! The reader checks every magic, length and checksum, that keys ascend,
//! the counts, and finally that the multiset hash of the rows equals the
//! header's state hash; any failure names the file, the byte offset and
//! what failed. The writer hashes the rows as it encodes them and refuses
//! to publish unless that equals the record's state hash; after the
//! fsync it reads the file back and checks every checksum and that every
//! chunk decompresses ([`check`]) before renaming it into place.

use std::io::{Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::state_hash::StateHash;
use crate::storage::PluginRecord;

const MAGIC: &[u8; 8] = b"KEELSNAP";
const END_MAGIC: &[u8; 12] = b"KEELSNAP-END";
const CHUNK_MAGIC: &[u8; 4] = b"KSCH";
const TRAILER_MAGIC: &[u8; 4] = b"KSEN";
/// The format version this host writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Uncompressed bytes per chunk the writer aims for (a row larger than
/// this gets a chunk of its own).
pub const CHUNK_TARGET_BYTES: usize = 256 << 10;
/// Largest uncompressed chunk a reader accepts.
pub const CHUNK_BYTES_MAX: usize = 64 << 20;
/// Largest header a reader accepts.
const HEADER_BYTES_MAX: usize = 16 << 20;
const CHUNK_HEAD_BYTES: usize = 32;
const TRAILER_BYTES: usize = 60;

/// A plugin's rows as a snapshot holds them: ascending
/// `(table ‖ 00 ‖ key, value)` pairs.
pub type SnapshotRows = Vec<(Vec<u8>, Vec<u8>)>;

/// What a snapshot says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    /// The plugin's record at the snapshot's sequence: name, every
    /// deployment (the last is the module that produced this state), last
    /// sequence and timestamp, state hash.
    pub record: PluginRecord,
    /// Rows in the file.
    pub rows: u64,
    /// When the snapshot was taken (ms since the Unix epoch).
    pub created_ms: u64,
    /// Why: `scheduled`, `on-demand`, `before-restore`, `import`, ...
    pub reason: String,
}

impl SnapshotHeader {
    /// The sequence the snapshot holds the state at.
    pub fn sequence(&self) -> u64 {
        self.record.last_sequence
    }
}

/// A snapshot file that failed a check: which file, where, and what.
#[derive(Debug, thiserror::Error)]
#[error("snapshot {path}: at byte {offset}: {what}")]
pub struct Damaged {
    /// The file.
    pub path: String,
    /// Byte offset of the part that failed.
    pub offset: u64,
    /// What failed.
    pub what: String,
}

/// An error reading or writing a snapshot file.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The file failed a check.
    #[error(transparent)]
    Damaged(#[from] Damaged),
    /// The file could not be read or written.
    #[error("snapshot {path}: {op}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
}

fn checksum16(parts: &[&[u8]]) -> [u8; 16] {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(p);
    }
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    out
}

/// Splits a snapshot key (`table ‖ 00 ‖ key`) into (table, key).
pub fn split_key(key: &[u8]) -> Option<(&str, &[u8])> {
    let nul = key.iter().position(|&b| b == 0)?;
    let table = std::str::from_utf8(&key[..nul]).ok()?;
    Some((table, &key[nul + 1..]))
}

/// Writes a snapshot to `out` from rows in ascending key order; returns
/// the state hash of the rows written and their count. The header's
/// `rows` field must already hold the count (the caller knows it from the
/// view it copies).
pub struct Writer<W: Write> {
    out: W,
    chunk: Vec<u8>,
    chunk_rows: u32,
    chunks: u32,
    rows: u64,
    sums: blake3::Hasher,
    hash: StateHash,
    last_key: Option<Vec<u8>>,
}

impl<W: Write> Writer<W> {
    /// Starts a file: magic, version, header.
    pub fn new(mut out: W, header: &SnapshotHeader) -> std::io::Result<Self> {
        let head = bincode::serde::encode_to_vec(header, bincode::config::standard())
            .expect("encoding to a Vec cannot fail");
        let header_sum = checksum16(&[&head]);
        out.write_all(MAGIC)?;
        out.write_all(&FORMAT_VERSION.to_le_bytes())?;
        out.write_all(&(head.len() as u32).to_le_bytes())?;
        out.write_all(&head)?;
        out.write_all(&header_sum)?;
        let mut sums = blake3::Hasher::new();
        sums.update(&header_sum);
        Ok(Self {
            out,
            chunk: Vec::with_capacity(CHUNK_TARGET_BYTES + 1024),
            chunk_rows: 0,
            chunks: 0,
            rows: 0,
            sums,
            hash: StateHash::EMPTY,
            last_key: None,
        })
    }

    /// Adds one row; keys must ascend strictly (checked).
    pub fn row(&mut self, key: &[u8], value: &[u8]) -> std::io::Result<()> {
        let (table, plugin_key) = split_key(key).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "a row key has no table")
        })?;
        if self.last_key.as_deref().is_some_and(|last| last >= key) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "row keys do not ascend",
            ));
        }
        self.hash.add(table, plugin_key, value);
        self.chunk
            .extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.chunk.extend_from_slice(key);
        self.chunk
            .extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.chunk.extend_from_slice(value);
        self.chunk_rows += 1;
        self.rows += 1;
        match &mut self.last_key {
            Some(last) => {
                last.clear();
                last.extend_from_slice(key);
            }
            None => self.last_key = Some(key.to_vec()),
        }
        if self.chunk.len() >= CHUNK_TARGET_BYTES {
            self.flush_chunk()?;
        }
        Ok(())
    }

    fn flush_chunk(&mut self) -> std::io::Result<()> {
        if self.chunk_rows == 0 {
            return Ok(());
        }
        let compressed = lz4_flex::block::compress(&self.chunk);
        let rows = self.chunk_rows.to_le_bytes();
        let raw_len = (self.chunk.len() as u32).to_le_bytes();
        let sum = checksum16(&[&self.chunks.to_le_bytes(), &rows, &raw_len, &compressed]);
        self.out.write_all(CHUNK_MAGIC)?;
        self.out.write_all(&rows)?;
        self.out.write_all(&raw_len)?;
        self.out
            .write_all(&(compressed.len() as u32).to_le_bytes())?;
        self.out.write_all(&sum)?;
        self.out.write_all(&compressed)?;
        self.sums.update(&sum);
        self.chunks += 1;
        self.chunk.clear();
        self.chunk_rows = 0;
        Ok(())
    }

    /// Writes the last chunk and the trailer; returns the writer, the
    /// state hash of the rows and their count.
    pub fn finish(mut self) -> std::io::Result<(W, StateHash, u64)> {
        self.flush_chunk()?;
        self.out.write_all(TRAILER_MAGIC)?;
        self.out.write_all(&self.chunks.to_le_bytes())?;
        self.out.write_all(&self.rows.to_le_bytes())?;
        self.out.write_all(self.sums.finalize().as_bytes())?;
        self.out.write_all(END_MAGIC)?;
        Ok((self.out, self.hash, self.rows))
    }
}

/// A snapshot read and checked in full.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// What it says about itself.
    pub header: SnapshotHeader,
    /// Its rows: `table ‖ 00 ‖ key` → value, ascending.
    pub rows: SnapshotRows,
}

/// Reads only the header of the file at `path` (checking its checksum).
pub fn read_header(path: &Path) -> Result<(SnapshotHeader, u64), FormatError> {
    let file = std::fs::File::open(path).map_err(|source| FormatError::Io {
        path: path.display().to_string(),
        op: "open",
        source,
    })?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut reader = std::io::BufReader::new(file);
    let mut prefix = [0u8; 16];
    let mut cursor = Cursor::new(path);
    cursor.read_exact(&mut reader, &mut prefix, "the file header")?;
    let head_len = check_prefix(&cursor, &prefix)?;
    let mut head = vec![0u8; head_len];
    cursor.read_exact(&mut reader, &mut head, "the snapshot header")?;
    let mut sum = [0u8; 16];
    cursor.read_exact(&mut reader, &mut sum, "the header checksum")?;
    let header = check_header(&cursor, &head, &sum)?;
    Ok((header, size))
}

/// Reads and checks the whole file at `path`: every checksum, the key
/// order, the counts and the state hash.
pub fn read(path: &Path) -> Result<Snapshot, FormatError> {
    let bytes = std::fs::read(path).map_err(|source| FormatError::Io {
        path: path.display().to_string(),
        op: "read",
        source,
    })?;
    decode(path, &bytes)
}

/// Tracks the offset for error messages.
struct Cursor<'a> {
    path: &'a Path,
    offset: u64,
}

impl<'a> Cursor<'a> {
    fn new(path: &'a Path) -> Self {
        Self { path, offset: 0 }
    }

    fn damaged(&self, offset: u64, what: impl Into<String>) -> FormatError {
        FormatError::Damaged(Damaged {
            path: self.path.display().to_string(),
            offset,
            what: what.into(),
        })
    }

    fn read_exact(
        &mut self,
        reader: &mut impl Read,
        buf: &mut [u8],
        what: &str,
    ) -> Result<(), FormatError> {
        reader.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                self.damaged(self.offset, format!("truncated in {what}"))
            } else {
                FormatError::Io {
                    path: self.path.display().to_string(),
                    op: "read",
                    source: e,
                }
            }
        })?;
        self.offset += buf.len() as u64;
        Ok(())
    }
}

fn check_prefix(cursor: &Cursor<'_>, prefix: &[u8; 16]) -> Result<usize, FormatError> {
    if &prefix[..8] != MAGIC {
        return Err(cursor.damaged(0, "not a Keel snapshot (bad magic)"));
    }
    let version = u32::from_le_bytes(prefix[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(cursor.damaged(
            8,
            format!("format version {version} (this host reads {FORMAT_VERSION})"),
        ));
    }
    let head_len = u32::from_le_bytes(prefix[12..16].try_into().expect("4 bytes")) as usize;
    if head_len > HEADER_BYTES_MAX {
        return Err(cursor.damaged(12, format!("header length {head_len} is implausible")));
    }
    Ok(head_len)
}

fn check_header(
    cursor: &Cursor<'_>,
    head: &[u8],
    sum: &[u8; 16],
) -> Result<SnapshotHeader, FormatError> {
    if checksum16(&[head]) != *sum {
        return Err(cursor.damaged(16, "header checksum mismatch"));
    }
    bincode::serde::decode_from_slice(head, bincode::config::standard())
        .map(|(h, _)| h)
        .map_err(|e| cursor.damaged(16, format!("header does not decode: {e}")))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// Checks and decodes a whole snapshot held in memory.
pub fn decode(path: &Path, bytes: &[u8]) -> Result<Snapshot, FormatError> {
    decode_checked(path, bytes, true)
}

/// Checks the file at `path` as it lies on disk — every magic, length and
/// checksum, and that every chunk decompresses to its length — without
/// decoding rows (the writer's read-back: it hashed the rows as it
/// encoded them).
pub fn check(path: &Path) -> Result<(), FormatError> {
    let bytes = std::fs::read(path).map_err(|source| FormatError::Io {
        path: path.display().to_string(),
        op: "read",
        source,
    })?;
    decode_checked(path, &bytes, false).map(|_| ())
}

fn decode_checked(path: &Path, bytes: &[u8], full: bool) -> Result<Snapshot, FormatError> {
    let cursor = Cursor::new(path);
    let size = bytes.len();
    if size < 16 + 16 + TRAILER_BYTES {
        return Err(cursor.damaged(size as u64, "truncated: shorter than an empty snapshot"));
    }
    let head_len = check_prefix(&cursor, bytes[..16].try_into().expect("16 bytes"))?;
    let body_start = 16 + head_len + 16;
    if body_start + TRAILER_BYTES > size {
        return Err(cursor.damaged(size as u64, "truncated in the header"));
    }
    let header_sum: [u8; 16] = bytes[16 + head_len..body_start]
        .try_into()
        .expect("16 bytes");
    let header = check_header(&cursor, &bytes[16..16 + head_len], &header_sum)?;
    let mut sums = blake3::Hasher::new();
    sums.update(&header_sum);
    let trailer_at = size - TRAILER_BYTES;
    if &bytes[size - 12..] != END_MAGIC {
        return Err(cursor.damaged(
            (size - 12) as u64,
            "truncated or damaged at the end (no end marker)",
        ));
    }
    let mut rows = Vec::with_capacity(header.rows.min(1 << 24) as usize);
    let mut hash = StateHash::EMPTY;
    let mut at = body_start;
    let mut index = 0u32;
    let mut raw = Vec::new();
    while at < trailer_at {
        if at + CHUNK_HEAD_BYTES > trailer_at {
            return Err(cursor.damaged(at as u64, "a chunk header runs into the trailer"));
        }
        if &bytes[at..at + 4] != CHUNK_MAGIC {
            return Err(cursor.damaged(at as u64, format!("chunk {index}: bad magic")));
        }
        let chunk_rows = u32_at(bytes, at + 4);
        let raw_len = u32_at(bytes, at + 8) as usize;
        let comp_len = u32_at(bytes, at + 12) as usize;
        let sum: [u8; 16] = bytes[at + 16..at + 32].try_into().expect("16 bytes");
        let data_at = at + CHUNK_HEAD_BYTES;
        if raw_len > CHUNK_BYTES_MAX || comp_len > trailer_at - data_at {
            return Err(cursor.damaged(
                (at + 8) as u64,
                format!("chunk {index}: lengths {raw_len}/{comp_len} run past the file"),
            ));
        }
        let data = &bytes[data_at..data_at + comp_len];
        let expected = checksum16(&[
            &index.to_le_bytes(),
            &chunk_rows.to_le_bytes(),
            &(raw_len as u32).to_le_bytes(),
            data,
        ]);
        if expected != sum {
            return Err(cursor.damaged(at as u64, format!("chunk {index}: checksum mismatch")));
        }
        sums.update(&sum);
        raw.clear();
        raw.resize(raw_len, 0);
        match lz4_flex::block::decompress_into(data, &mut raw) {
            Ok(n) if n == raw_len => {}
            Ok(n) => {
                return Err(cursor.damaged(
                    data_at as u64,
                    format!("chunk {index}: decompressed to {n} bytes, not {raw_len}"),
                ));
            }
            Err(e) => {
                return Err(cursor.damaged(
                    data_at as u64,
                    format!("chunk {index}: does not decompress: {e}"),
                ));
            }
        }
        if !full {
            at = data_at + comp_len;
            index += 1;
            continue;
        }
        let mut p = 0usize;
        for _ in 0..chunk_rows {
            let bad = |what: &str| cursor.damaged(data_at as u64, format!("chunk {index}: {what}"));
            let field = |p: &mut usize| -> Option<Vec<u8>> {
                let len = u32::from_le_bytes(raw.get(*p..*p + 4)?.try_into().ok()?) as usize;
                let v = raw.get(*p + 4..*p + 4 + len)?.to_vec();
                *p += 4 + len;
                Some(v)
            };
            let key = field(&mut p).ok_or_else(|| bad("a row runs past the chunk"))?;
            let value = field(&mut p).ok_or_else(|| bad("a row runs past the chunk"))?;
            let (table, plugin_key) =
                split_key(&key).ok_or_else(|| bad("a row key has no table"))?;
            if rows
                .last()
                .is_some_and(|(last, _): &(Vec<u8>, Vec<u8>)| last.as_slice() >= key.as_slice())
            {
                return Err(bad("row keys do not ascend"));
            }
            hash.add(table, plugin_key, &value);
            rows.push((key, value));
        }
        if p != raw_len {
            return Err(cursor.damaged(
                data_at as u64,
                format!("chunk {index}: {} bytes after its last row", raw_len - p),
            ));
        }
        at = data_at + comp_len;
        index += 1;
    }
    if at != trailer_at || &bytes[trailer_at..trailer_at + 4] != TRAILER_MAGIC {
        return Err(cursor.damaged(trailer_at as u64, "bad trailer"));
    }
    let chunks = u32_at(bytes, trailer_at + 4);
    let count = u64::from_le_bytes(
        bytes[trailer_at + 8..trailer_at + 16]
            .try_into()
            .expect("8 bytes"),
    );
    let read_rows = if full { rows.len() as u64 } else { count };
    if chunks != index || read_rows != count || count != header.rows {
        return Err(cursor.damaged(
            trailer_at as u64,
            format!(
                "counts disagree: trailer {chunks} chunks / {count} rows, read {index} / {}, header {} rows",
                rows.len(),
                header.rows
            ),
        ));
    }
    if &bytes[trailer_at + 16..trailer_at + 48] != sums.finalize().as_bytes() {
        return Err(cursor.damaged(
            (trailer_at + 16) as u64,
            "the chunk list checksum does not match (a chunk is missing, extra or moved)",
        ));
    }
    if full && hash != header.record.state_hash {
        return Err(cursor.damaged(
            16,
            format!(
                "the rows hash to {}, the header says {}",
                hash.to_hex(),
                header.record.state_hash.to_hex()
            ),
        ));
    }
    Ok(Snapshot { header, rows })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Deployment;

    fn sample(rows: usize) -> (SnapshotHeader, SnapshotRows) {
        let mut data: SnapshotRows = (0..rows)
            .map(|i| {
                let mut k = b"orders\0".to_vec();
                k.extend_from_slice(&(i as u64).to_be_bytes());
                (k, format!("value {i}").into_bytes())
            })
            .collect();
        data.sort();
        let mut hash = StateHash::EMPTY;
        for (k, v) in &data {
            let (t, key) = split_key(k).unwrap();
            hash.add(t, key, v);
        }
        let header = SnapshotHeader {
            record: PluginRecord {
                id: 3,
                name: "spot".into(),
                deployments: vec![Deployment {
                    module_hash: [7; 32],
                    version: "1".into(),
                    schema: 1,
                    sequence: 1,
                }],
                last_sequence: 42,
                last_timestamp_ms: 1000,
                state_hash: hash,
            },
            rows: rows as u64,
            created_ms: 5,
            reason: "test".into(),
        };
        (header, data)
    }

    fn encode_sample(rows: usize) -> (Vec<u8>, SnapshotHeader, SnapshotRows) {
        let (header, data) = sample(rows);
        let mut w = Writer::new(Vec::new(), &header).unwrap();
        for (k, v) in &data {
            w.row(k, v).unwrap();
        }
        let (bytes, hash, count) = w.finish().unwrap();
        assert_eq!(hash, header.record.state_hash);
        assert_eq!(count, rows as u64);
        (bytes, header, data)
    }

    #[test]
    fn a_snapshot_round_trips() {
        for rows in [0, 1, 20_000] {
            let (bytes, header, data) = encode_sample(rows);
            let snap = decode(Path::new("x.ksnap"), &bytes).unwrap();
            assert_eq!(snap.header, header);
            assert_eq!(snap.rows, data);
        }
    }

    #[test]
    fn every_flipped_byte_and_every_truncation_is_refused_with_its_offset() {
        let (bytes, _, _) = encode_sample(300);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x5A;
            let err = decode(Path::new("x.ksnap"), &bad)
                .err()
                .unwrap_or_else(|| panic!("flipping byte {i} went unnoticed"));
            let text = err.to_string();
            assert!(
                text.contains("x.ksnap") && text.contains("at byte"),
                "{text}"
            );
        }
        for len in 0..bytes.len() {
            assert!(
                decode(Path::new("x.ksnap"), &bytes[..len]).is_err(),
                "cut at {len} went unnoticed"
            );
        }
    }

    #[test]
    fn a_consistent_file_with_the_wrong_state_hash_is_refused() {
        let (mut header, data) = sample(10);
        header.record.state_hash = StateHash::EMPTY;
        let mut w = Writer::new(Vec::new(), &header).unwrap();
        for (k, v) in &data {
            w.row(k, v).unwrap();
        }
        let (bytes, _, _) = w.finish().unwrap();
        let err = decode(Path::new("x.ksnap"), &bytes)
            .unwrap_err()
            .to_string();
        assert!(err.contains("hash to"), "{err}");
    }

    #[test]
    fn rows_out_of_order_are_refused_by_the_writer() {
        let (header, _) = sample(0);
        let mut w = Writer::new(Vec::new(), &header).unwrap();
        w.row(b"t\0b", b"1").unwrap();
        assert!(w.row(b"t\0a", b"1").is_err());
        assert!(w.row(b"notable", b"1").is_err());
    }
}
