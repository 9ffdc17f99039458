//! The command journal: every accepted command of every plugin, in order.
//!
//! Key: `(plugin id, sequence)`. Value, byte by byte:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | entry format, currently `1` |
//! | 1 | rest | bincode (standard config, varint integers) of [`JournalEntry`] without `sequence`; byte strings as length + raw bytes |
//!
//! The entry is written in the same redb transaction as the command's
//! effects, so the journal and the state never disagree after a crash.

use serde::{Deserialize, Serialize};

use super::StorageError;

/// Version byte at the front of every journal value.
pub const ENTRY_FORMAT: u8 = 1;

/// What a journal entry records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// First deployment: `init(config)` ran with these JSON bytes.
    Init {
        /// The configuration given to `init`.
        #[serde(with = "serde_bytes")]
        config: Vec<u8>,
    },
    /// A command (JSON bytes) given to `handle`.
    Command {
        /// The command as the client sent it.
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// A new version replaced the previous one; `migrate(from_schema)` ran.
    Migrate {
        /// The module that was active before.
        from_module: [u8; 32],
        /// Its schema.
        from_schema: u32,
    },
}

/// How the call ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// It succeeded and its writes were committed; the response bytes.
    Ok(#[serde(with = "serde_bytes")] Vec<u8>),
    /// It failed and left no trace in state.
    Err {
        /// Stable error code.
        code: String,
        /// Message.
        message: String,
    },
}

/// One journaled command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Per-plugin sequence number, from 1, without gaps.
    #[serde(skip)]
    pub sequence: u64,
    /// Milliseconds since the Unix epoch, assigned when journaled.
    pub timestamp_ms: u64,
    /// BLAKE3 of the component that ran it.
    pub module_hash: [u8; 32],
    /// What ran.
    pub kind: EntryKind,
    /// How it ended.
    pub outcome: Outcome,
}

pub(crate) fn encode_entry(entry: &JournalEntry) -> Vec<u8> {
    let mut out = vec![ENTRY_FORMAT];
    bincode::serde::encode_into_std_write(entry, &mut out, bincode::config::standard())
        .expect("encoding to a Vec cannot fail");
    out
}

pub(crate) fn decode_entry(sequence: u64, bytes: &[u8]) -> Result<JournalEntry, StorageError> {
    let corrupt = |why: String| StorageError::Corrupt {
        what: format!("journal entry {sequence}"),
        why,
    };
    match bytes.first() {
        Some(&ENTRY_FORMAT) => {}
        Some(other) => return Err(corrupt(format!("unknown entry format {other}"))),
        None => return Err(corrupt("empty entry".into())),
    }
    let mut entry: JournalEntry =
        bincode::serde::decode_from_slice(&bytes[1..], bincode::config::standard())
            .map(|(v, _)| v)
            .map_err(|e| corrupt(e.to_string()))?;
    entry.sequence = sequence;
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_garbage_is_refused() {
        let entry = JournalEntry {
            sequence: 9,
            timestamp_ms: 1234,
            module_hash: [3; 32],
            kind: EntryKind::Command {
                bytes: b"{}".to_vec(),
            },
            outcome: Outcome::Err {
                code: "x".into(),
                message: "y".into(),
            },
        };
        assert_eq!(decode_entry(9, &encode_entry(&entry)).unwrap(), entry);
        assert!(decode_entry(9, &[]).is_err());
        assert!(decode_entry(9, &[7, 1, 2]).is_err());
        assert!(decode_entry(9, &[ENTRY_FORMAT, 0xFF]).is_err());
    }
}
