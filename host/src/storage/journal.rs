//! The command journal: every accepted command of every plugin, in order.
//!
//! Key: `(plugin id, sequence)`. Value, byte by byte:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | entry format, currently `2` |
//! | 1 | n | bincode (standard config, varint integers) of [`JournalEntry`] without `sequence` and `caller`; byte strings as length + raw bytes |
//! | 1 + n | rest | format 2 only: bincode of the caller, an `Option<Caller>`: `0` for none, or `1`, the principal (length + UTF-8), the roles (count, then each as length + UTF-8) |
//!
//! Format 1 (before callers existed) is the same without the trailing
//! caller; it is still read, as an entry with no caller. Replay runs every
//! command with its journaled caller, so a plugin that branches on its
//! caller replays exactly.
//!
//! The entry is written in the same redb transaction as the command's
//! effects, so the journal and the state never disagree after a crash.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::StorageError;
use crate::caller::Caller;

/// Version byte at the front of every journal value written now: format 2
/// (entry, caller) followed by one byte of instance flags: bit 0
/// [`JournalEntry::new_instance`], bit 1
/// [`JournalEntry::failed_on_kept_instance`].
pub const ENTRY_FORMAT: u8 = 3;

/// The format before instance boundaries were journaled (still read: every
/// call ran on a new instance).
pub const ENTRY_FORMAT_NO_INSTANCE: u8 = 2;

/// The format before the caller was journaled (still read: no caller).
pub const ENTRY_FORMAT_NO_CALLER: u8 = 1;

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
    /// The state was replaced by the state the plugin had at sequence
    /// `to_sequence` (built from the snapshot at `from_snapshot` and the
    /// journal after it); the entry's module is the one active then,
    /// active again from here. No plugin code ran.
    Restore {
        /// The sequence whose state the plugin has again.
        to_sequence: u64,
        /// The snapshot the state was built from.
        from_snapshot: u64,
    },
    /// An upgrade was undone as if it had never happened: the state is
    /// the state before `upgrade_sequence` with every command journaled
    /// after it, through `through`, run again on the version it replaced
    /// (later deployments skipped too); that version (the entry's module)
    /// is active again. No plugin code ran for the entry itself.
    UndoUpgrade {
        /// The sequence of the undone upgrade's `migrate` entry.
        upgrade_sequence: u64,
        /// The last journaled command run again.
        through: u64,
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
    /// Who sent it (`None` for `init`, `migrate` and calls from inside the
    /// host). Encoded after the other fields (format 2).
    #[serde(skip)]
    pub caller: Option<Arc<Caller>>,
    /// Whether the call ran on a new instance of the component (true) or
    /// on the instance the call before it ran on, with whatever that left
    /// in linear memory (false). Replay follows it, so that it reproduces
    /// every response of any component. Encoded last (format 3).
    #[serde(skip)]
    pub new_instance: bool,
    /// A failed call whose instance the next call may continue on (the
    /// plugin refused; a trap always ends its instance): replay runs it
    /// again, so that whatever it left in linear memory is there for the
    /// next call, where other failed entries are copied without running.
    /// Encoded with `new_instance` (format 3).
    #[serde(skip)]
    pub failed_on_kept_instance: bool,
}

pub(crate) fn encode_entry(entry: &JournalEntry) -> Vec<u8> {
    // Sized once for the variable parts (command or config, outcome); 192
    // bytes cover the fixed fields, the flags and a caller with short names.
    let payload = match &entry.kind {
        EntryKind::Init { config } => config.len(),
        EntryKind::Command { bytes } => bytes.len(),
        _ => 64,
    } + match &entry.outcome {
        Outcome::Ok(response) => response.len(),
        Outcome::Err { code, message } => code.len() + message.len(),
    };
    let mut out = Vec::with_capacity(192 + payload);
    out.push(ENTRY_FORMAT);
    let config = bincode::config::standard();
    bincode::serde::encode_into_std_write(entry, &mut out, config)
        .expect("encoding to a Vec cannot fail");
    bincode::serde::encode_into_std_write(entry.caller.as_deref(), &mut out, config)
        .expect("encoding to a Vec cannot fail");
    out.push(u8::from(entry.new_instance) | u8::from(entry.failed_on_kept_instance) << 1);
    out
}

pub(crate) fn decode_entry(sequence: u64, bytes: &[u8]) -> Result<JournalEntry, StorageError> {
    let corrupt = |why: String| StorageError::Corrupt {
        what: format!("journal entry {sequence}"),
        why,
    };
    let (with_caller, with_instance) = match bytes.first() {
        Some(&ENTRY_FORMAT) => (true, true),
        Some(&ENTRY_FORMAT_NO_INSTANCE) => (true, false),
        Some(&ENTRY_FORMAT_NO_CALLER) => (false, false),
        Some(other) => return Err(corrupt(format!("unknown entry format {other}"))),
        None => return Err(corrupt("empty entry".into())),
    };
    let config = bincode::config::standard();
    let (mut entry, used): (JournalEntry, usize) =
        bincode::serde::decode_from_slice(&bytes[1..], config)
            .map_err(|e| corrupt(e.to_string()))?;
    let mut rest = &bytes[1 + used..];
    if with_caller {
        let (caller, used): (Option<Caller>, usize) =
            bincode::serde::decode_from_slice(rest, config)
                .map_err(|e| corrupt(format!("the caller: {e}")))?;
        entry.caller = caller.map(Arc::new);
        rest = &rest[used..];
    }
    (entry.new_instance, entry.failed_on_kept_instance) = if with_instance {
        match rest {
            [flags @ 0..=3] => (flags & 1 == 1, flags & 2 == 2),
            _ => return Err(corrupt(format!("the instance flags: {rest:?}"))),
        }
    } else {
        // Before format 3 every call ran on a new instance.
        (true, false)
    };
    entry.sequence = sequence;
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(caller: Option<Caller>) -> JournalEntry {
        JournalEntry {
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
            caller: caller.map(Arc::new),
            new_instance: false,
            failed_on_kept_instance: true,
        }
    }

    #[test]
    fn entries_round_trip_and_garbage_is_refused() {
        for caller in [None, Some(Caller::new("alice", ["client", "operator"]))] {
            let entry = entry(caller);
            assert_eq!(decode_entry(9, &encode_entry(&entry)).unwrap(), entry);
        }
        assert!(decode_entry(9, &[]).is_err());
        assert!(decode_entry(9, &[7, 1, 2]).is_err());
        assert!(decode_entry(9, &[ENTRY_FORMAT, 0xFF]).is_err());
        // An entry cut before its caller or its instance flag is refused,
        // not read as "no caller" or "new instance".
        let bytes = encode_entry(&entry(None));
        assert!(decode_entry(9, &bytes[..bytes.len() - 1]).is_err());
        assert!(decode_entry(9, &bytes[..bytes.len() - 2]).is_err());
        let mut flag_4 = bytes.clone();
        *flag_4.last_mut().unwrap() = 4;
        assert!(decode_entry(9, &flag_4).is_err());
    }

    #[test]
    fn format_2_entries_are_read_as_calls_on_new_instances() {
        let mut e = entry(Some(Caller::new("al", ["op"])));
        let mut bytes = encode_entry(&e);
        assert_eq!(bytes.pop(), Some(2), "the flags are the last byte");
        bytes[0] = ENTRY_FORMAT_NO_INSTANCE;
        e.new_instance = true;
        e.failed_on_kept_instance = false;
        assert_eq!(decode_entry(9, &bytes).unwrap(), e);
    }

    #[test]
    fn format_1_entries_are_read_without_a_caller() {
        // Format 1 is format 2 without the trailing caller: build one the
        // way the old encoder did.
        let mut old = entry(None);
        old.new_instance = true;
        old.failed_on_kept_instance = false;
        let mut bytes = vec![ENTRY_FORMAT_NO_CALLER];
        bincode::serde::encode_into_std_write(&old, &mut bytes, bincode::config::standard())
            .unwrap();
        assert_eq!(decode_entry(9, &bytes).unwrap(), old);
        // A caller's bytes are exactly the documented layout.
        let with = encode_entry(&entry(Some(Caller::new("al", ["op"]))));
        assert_eq!(
            &with[bytes.len()..],
            &[1, 2, b'a', b'l', 1, 2, b'o', b'p', 2]
        );
        assert_eq!(&with[1..bytes.len()], &bytes[1..]);
    }
}
