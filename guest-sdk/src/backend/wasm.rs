//! Storage through the host's `keel:plugin/tables` imports.

use super::RawEntry;
use crate::bindings::keel::plugin::tables::{self as host, TableError};
use crate::error::StorageError;
use crate::table::Direction;

fn convert(err: TableError) -> StorageError {
    match err {
        TableError::InvalidTableName(name) => StorageError::InvalidTableName(name),
        TableError::KeyTooLarge(max_bytes) => StorageError::KeyTooLarge { max_bytes },
        TableError::ValueTooLarge(max_bytes) => StorageError::ValueTooLarge { max_bytes },
        TableError::ReadOnly => StorageError::ReadOnly,
        TableError::WriteSetTooLarge(max_bytes) => StorageError::WriteSetTooLarge { max_bytes },
    }
}

pub(crate) fn get(table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
    host::get(table, key).map_err(convert)
}

pub(crate) fn put(table: &str, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
    host::put(table, key, value).map_err(convert)
}

pub(crate) fn remove(table: &str, key: &[u8]) -> Result<bool, StorageError> {
    host::remove(table, key).map_err(convert)
}

/// A host cursor.
pub(crate) struct RawCursor(host::Cursor);

impl RawCursor {
    pub(crate) fn open(
        table: &str,
        start: Option<Vec<u8>>,
        end: Option<Vec<u8>>,
        direction: Direction,
    ) -> Result<Self, StorageError> {
        let direction = match direction {
            Direction::Forward => host::Direction::Forward,
            Direction::Backward => host::Direction::Backward,
        };
        host::scan(table, start.as_deref(), end.as_deref(), direction)
            .map(RawCursor)
            .map_err(convert)
    }

    pub(crate) fn next_chunk(&mut self, max: u32) -> Vec<RawEntry> {
        self.0
            .next(max)
            .into_iter()
            .map(|e| (e.key, e.value))
            .collect()
    }
}

pub(crate) fn sequence() -> u64 {
    crate::bindings::keel::plugin::context::sequence()
}

pub(crate) fn timestamp_ms() -> u64 {
    crate::bindings::keel::plugin::context::timestamp_ms()
}

pub(crate) fn caller() -> Option<crate::context::Caller> {
    crate::bindings::keel::plugin::context::caller().map(|c| crate::context::Caller {
        principal: c.principal,
        roles: c.roles,
    })
}

pub(crate) fn log(level: crate::context::Level, message: &str) {
    use crate::bindings::keel::plugin::context::{self as ctx, Level as L};
    let level = match level {
        crate::context::Level::Trace => L::Trace,
        crate::context::Level::Debug => L::Debug,
        crate::context::Level::Info => L::Info,
        crate::context::Level::Warn => L::Warn,
        crate::context::Level::Error => L::Error,
    };
    ctx::log(level, message);
}
