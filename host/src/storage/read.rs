//! Reading plugin state: point reads and chunked range scans, shared by
//! the write batch and read-only views.

use std::collections::BTreeMap;
use std::ops::Bound;

use redb::{ReadOnlyTable, ReadableTable};

use super::keys::{plugin_end, split_state_key, state_key, table_end, table_prefix};
use super::{STATE, StorageError, redb_err};
use crate::limits::SCAN_CHUNK_BYTES_MAX;

/// Direction of a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanDirection {
    /// Ascending keys.
    Forward,
    /// Descending keys.
    Backward,
}

/// A scan position owned by the caller: bounds on plugin keys (not full
/// keys). Each chunk re-seeks from these bounds, so no redb iterator is
/// held between calls.
#[derive(Debug, Clone)]
pub struct ScanState {
    /// The plugin's table.
    pub table: String,
    /// Lower bound on plugin keys.
    pub lower: Bound<Vec<u8>>,
    /// Upper bound on plugin keys.
    pub upper: Bound<Vec<u8>>,
    /// Scan direction.
    pub direction: ScanDirection,
    /// Set once the scan has returned its last entry.
    pub done: bool,
}

pub(crate) fn get_in<T: ReadableTable<&'static [u8], &'static [u8]>>(
    table: &T,
    plugin_id: u32,
    name: &str,
    key: &[u8],
) -> Result<Option<Vec<u8>>, StorageError> {
    let full = state_key(plugin_id, name, key);
    Ok(table
        .get(full.as_slice())
        .map_err(redb_err("get"))?
        .map(|v| v.value().to_vec()))
}

/// Returns the next chunk of `scan` (at most `max_entries`, stopping once
/// past [`SCAN_CHUNK_BYTES_MAX`]) and advances its bounds.
pub(crate) fn scan_chunk_in<T: ReadableTable<&'static [u8], &'static [u8]>>(
    table: &T,
    plugin_id: u32,
    scan: &mut ScanState,
    max_entries: usize,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StorageError> {
    if scan.done {
        return Ok(Vec::new());
    }
    let full = |b: &Bound<Vec<u8>>, unbounded: Vec<u8>, inclusive_unbounded: bool| match b {
        Bound::Included(k) => Bound::Included(state_key(plugin_id, &scan.table, k)),
        Bound::Excluded(k) => Bound::Excluded(state_key(plugin_id, &scan.table, k)),
        Bound::Unbounded if inclusive_unbounded => Bound::Included(unbounded),
        Bound::Unbounded => Bound::Excluded(unbounded),
    };
    let lower = full(&scan.lower, table_prefix(plugin_id, &scan.table), true);
    let upper = full(&scan.upper, table_end(plugin_id, &scan.table), false);
    let empty = match (&lower, &upper) {
        (Bound::Included(a), Bound::Excluded(b)) | (Bound::Excluded(a), Bound::Excluded(b)) => {
            a >= b
        }
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Excluded(a), Bound::Included(b)) => a >= b,
        _ => false,
    };
    if empty {
        scan.done = true;
        return Ok(Vec::new());
    }
    let bounds = (
        lower.as_ref().map(|v| v.as_slice()),
        upper.as_ref().map(|v| v.as_slice()),
    );
    let range = table.range::<&[u8]>(bounds).map_err(redb_err("range"))?;
    let prefix_len = table_prefix(plugin_id, &scan.table).len();
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let mut push = |row: Result<
        (
            redb::AccessGuard<'_, &'static [u8]>,
            redb::AccessGuard<'_, &'static [u8]>,
        ),
        redb::StorageError,
    >|
     -> Result<bool, StorageError> {
        let (k, v) = row.map_err(redb_err("range"))?;
        let key = k.value()[prefix_len..].to_vec();
        let value = v.value().to_vec();
        bytes += key.len() + value.len();
        out.push((key, value));
        Ok(out.len() < max_entries && bytes < SCAN_CHUNK_BYTES_MAX)
    };
    match scan.direction {
        ScanDirection::Forward => {
            for row in range {
                if !push(row)? {
                    break;
                }
            }
        }
        ScanDirection::Backward => {
            for row in range.rev() {
                if !push(row)? {
                    break;
                }
            }
        }
    }
    match out.last() {
        None => scan.done = true,
        Some((last, _)) => match scan.direction {
            ScanDirection::Forward => scan.lower = Bound::Excluded(last.clone()),
            ScanDirection::Backward => scan.upper = Bound::Excluded(last.clone()),
        },
    }
    Ok(out)
}

/// A consistent read-only view of committed state (one redb read transaction).
pub struct ReadView {
    state: ReadOnlyTable<&'static [u8], &'static [u8]>,
}

impl ReadView {
    pub(crate) fn new(txn: redb::ReadTransaction) -> Result<Self, StorageError> {
        Ok(Self {
            state: txn.open_table(STATE).map_err(redb_err("open state"))?,
        })
    }

    /// Reads one plugin key.
    pub fn get(
        &self,
        plugin_id: u32,
        table: &str,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StorageError> {
        get_in(&self.state, plugin_id, table, key)
    }

    /// The next chunk of a scan.
    pub fn scan_chunk(
        &self,
        plugin_id: u32,
        scan: &mut ScanState,
        max_entries: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StorageError> {
        scan_chunk_in(&self.state, plugin_id, scan, max_entries)
    }

    /// Every (table, key) → value of one plugin.
    pub fn dump_plugin(
        &self,
        plugin_id: u32,
    ) -> Result<BTreeMap<(String, Vec<u8>), Vec<u8>>, StorageError> {
        let start = plugin_id.to_be_bytes().to_vec();
        let end = plugin_end(plugin_id);
        let mut out = BTreeMap::new();
        for row in self
            .state
            .range::<&[u8]>(start.as_slice()..end.as_slice())
            .map_err(redb_err("range"))?
        {
            let (k, v) = row.map_err(redb_err("range"))?;
            let (table, key) = split_state_key(k.value()).ok_or_else(|| StorageError::Corrupt {
                what: "state key".into(),
                why: "no table separator".into(),
            })?;
            out.insert((table.to_owned(), key.to_vec()), v.value().to_vec());
        }
        Ok(out)
    }
}
