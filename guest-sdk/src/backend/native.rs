//! The native in-memory store behind the test kit. It applies the same
//! rules as the host (table names, key and value sizes, read-only queries,
//! all-or-nothing commands) so that plugin logic tested natively behaves as
//! it will inside a component.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::Bound;

use super::RawEntry;
use crate::error::StorageError;
use crate::table::Direction;

/// Longest key the native store accepts, in bytes (the host's default).
pub const KEY_SIZE_BYTES_MAX: usize = 1024;
/// Longest value the native store accepts, in bytes (the host's default).
pub const VALUE_SIZE_BYTES_MAX: usize = 1 << 20;
/// Longest table name, in bytes.
pub const TABLE_NAME_BYTES_MAX: usize = 64;

type Tables = BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>;

#[derive(Default)]
pub(crate) struct NativeState {
    pub(crate) tables: Tables,
    /// Old values of every key written by the open command, in write order.
    pub(crate) undo: Option<Vec<(String, Vec<u8>, Option<Vec<u8>>)>>,
    pub(crate) read_only: bool,
    pub(crate) sequence: u64,
    pub(crate) timestamp_ms: u64,
    /// The caller the harness set for its calls.
    pub(crate) caller: Option<crate::context::Caller>,
    pub(crate) logs: Vec<(crate::context::Level, String)>,
}

thread_local! {
    pub(crate) static STATE: RefCell<NativeState> = RefCell::new(NativeState::default());
}

pub(crate) fn validate_table_name(table: &str) -> Result<(), StorageError> {
    let ok = !table.is_empty()
        && table.len() <= TABLE_NAME_BYTES_MAX
        && table
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StorageError::InvalidTableName(table.to_owned()))
    }
}

fn check_key(key: &[u8]) -> Result<(), StorageError> {
    if key.len() > KEY_SIZE_BYTES_MAX {
        return Err(StorageError::KeyTooLarge {
            max_bytes: KEY_SIZE_BYTES_MAX as u32,
        });
    }
    Ok(())
}

pub(crate) fn get(table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
    validate_table_name(table)?;
    check_key(key)?;
    Ok(STATE.with_borrow(|s| s.tables.get(table).and_then(|t| t.get(key).cloned())))
}

fn write(table: &str, key: &[u8], value: Option<&[u8]>) -> Result<Option<Vec<u8>>, StorageError> {
    validate_table_name(table)?;
    check_key(key)?;
    if let Some(v) = value
        && v.len() > VALUE_SIZE_BYTES_MAX
    {
        return Err(StorageError::ValueTooLarge {
            max_bytes: VALUE_SIZE_BYTES_MAX as u32,
        });
    }
    STATE.with_borrow_mut(|s| {
        if s.read_only {
            return Err(StorageError::ReadOnly);
        }
        let t = s.tables.entry(table.to_owned()).or_default();
        let old = match value {
            Some(v) => t.insert(key.to_vec(), v.to_vec()),
            None => t.remove(key),
        };
        if let Some(undo) = s.undo.as_mut() {
            undo.push((table.to_owned(), key.to_vec(), old.clone()));
        }
        Ok(old)
    })
}

pub(crate) fn put(table: &str, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
    write(table, key, Some(value)).map(|_| ())
}

pub(crate) fn remove(table: &str, key: &[u8]) -> Result<bool, StorageError> {
    write(table, key, None).map(|old| old.is_some())
}

/// A cursor that owns its position and re-seeks for every chunk, exactly as
/// the host's does.
pub(crate) struct RawCursor {
    table: String,
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    direction: Direction,
    done: bool,
}

impl RawCursor {
    pub(crate) fn open(
        table: &str,
        start: Option<Vec<u8>>,
        end: Option<Vec<u8>>,
        direction: Direction,
    ) -> Result<Self, StorageError> {
        validate_table_name(table)?;
        Ok(Self {
            table: table.to_owned(),
            lower: start.map_or(Bound::Unbounded, Bound::Included),
            upper: end.map_or(Bound::Unbounded, Bound::Excluded),
            direction,
            done: false,
        })
    }

    pub(crate) fn next_chunk(&mut self, max: u32) -> Vec<RawEntry> {
        if self.done {
            return Vec::new();
        }
        let max = max.clamp(1, 1024) as usize;
        let empty_range = match (&self.lower, &self.upper) {
            (Bound::Included(a) | Bound::Excluded(a), Bound::Excluded(b)) => a >= b,
            _ => false,
        };
        let chunk: Vec<RawEntry> = if empty_range {
            Vec::new()
        } else {
            STATE.with_borrow(|s| {
                let Some(t) = s.tables.get(&self.table) else {
                    return Vec::new();
                };
                let range = t.range::<Vec<u8>, _>((self.lower.clone(), self.upper.clone()));
                match self.direction {
                    Direction::Forward => range
                        .take(max)
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    Direction::Backward => range
                        .rev()
                        .take(max)
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                }
            })
        };
        match chunk.last() {
            None => self.done = true,
            Some((last, _)) => match self.direction {
                Direction::Forward => self.lower = Bound::Excluded(last.clone()),
                Direction::Backward => self.upper = Bound::Excluded(last.clone()),
            },
        }
        if chunk.len() < max {
            self.done = true;
        }
        chunk
    }
}

pub(crate) fn sequence() -> u64 {
    STATE.with_borrow(|s| s.sequence)
}

pub(crate) fn timestamp_ms() -> u64 {
    STATE.with_borrow(|s| s.timestamp_ms)
}

pub(crate) fn caller() -> Option<crate::context::Caller> {
    STATE.with_borrow(|s| s.caller.clone())
}

pub(crate) fn log(level: crate::context::Level, message: &str) {
    STATE.with_borrow_mut(|s| s.logs.push((level, message.to_owned())));
}
