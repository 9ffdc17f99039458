//! Reading plugin state: point reads and chunked range scans over a
//! plugin's resident rows, shared by the write batch and read-only views;
//! and the redb snapshot the journal and plugin records fall back to.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use redb::{ReadOnlyTable, ReadableDatabase, ReadableTable};

use super::journal::{JournalEntry, decode_entry};
use super::keys::{
    plugin_end, split_state_key, state_row_key, table_end, table_prefix, table_prefix_len,
};
use super::memtable::Journal;
use super::row_bytes::RowBytes;
use super::rows::{RowSet, Rows, row_bytes};
use super::{JOURNAL, PLUGINS, PluginRecord, STATE, StorageError, decode, redb_err};
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
/// keys). Each chunk re-seeks from these bounds, so no iterator is held
/// between calls.
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

/// One chunk of a scan: (plugin key, value) pairs in scan order.
pub type ScanChunk = Vec<(Vec<u8>, Vec<u8>)>;

/// Reads one plugin key from `rows`.
pub(crate) fn get_in(
    rows: &RowSet,
    plugin_id: u32,
    table: &str,
    key: &[u8],
) -> Result<Option<Vec<u8>>, StorageError> {
    get_row_in(rows, &state_row_key(plugin_id, table, key))
}

/// [`get_in`] by full state key (`keys::state_row_key`).
pub(crate) fn get_row_in(rows: &RowSet, full_key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
    Ok(rows.get(full_key)?.0.map(|v| v.to_vec()))
}

/// Returns the next chunk of `scan` over `rows` (at most `max_entries`,
/// stopping once past [`SCAN_CHUNK_BYTES_MAX`]) and advances its bounds.
pub(crate) fn scan_chunk_in(
    rows: &RowSet,
    plugin_id: u32,
    scan: &mut ScanState,
    max_entries: usize,
) -> Result<ScanChunk, StorageError> {
    if scan.done {
        return Ok(Vec::new());
    }
    // Built in place when short (`RowBytes`): no allocation per chunk.
    let full = |b: &Bound<Vec<u8>>, unbounded: RowBytes, inclusive_unbounded: bool| match b {
        Bound::Included(k) => Bound::Included(state_row_key(plugin_id, &scan.table, k)),
        Bound::Excluded(k) => Bound::Excluded(state_row_key(plugin_id, &scan.table, k)),
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
    let bounds: (Bound<&[u8]>, Bound<&[u8]>) = (
        lower.as_ref().map(RowBytes::as_slice),
        upper.as_ref().map(RowBytes::as_slice),
    );
    let prefix_len = table_prefix_len(&scan.table);
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let forward = scan.direction == ScanDirection::Forward;
    rows.for_each_in(bounds, forward, |k, v| {
        let key = k[prefix_len..].to_vec();
        bytes += key.len() + v.len();
        out.push((key, v.to_vec()));
        out.len() < max_entries && bytes < SCAN_CHUNK_BYTES_MAX
    })?;
    match out.last() {
        None => scan.done = true,
        Some((last, _)) => match scan.direction {
            ScanDirection::Forward => scan.lower = Bound::Excluded(last.clone()),
            ScanDirection::Backward => scan.upper = Bound::Excluded(last.clone()),
        },
    }
    Ok(out)
}

/// A redb read snapshot: what the last checkpoint wrote.
pub(crate) struct Base {
    state: ReadOnlyTable<&'static [u8], &'static [u8]>,
    journal: ReadOnlyTable<(u32, u64), &'static [u8]>,
    plugins: ReadOnlyTable<&'static str, &'static [u8]>,
}

impl Base {
    /// A snapshot of what redb holds now.
    pub(crate) fn open(db: &redb::Database) -> Result<Arc<Base>, StorageError> {
        let txn = db.begin_read().map_err(redb_err("begin read"))?;
        Ok(Arc::new(Base {
            state: txn.open_table(STATE).map_err(redb_err("open state"))?,
            journal: txn.open_table(JOURNAL).map_err(redb_err("open journal"))?,
            plugins: txn.open_table(PLUGINS).map_err(redb_err("open plugins"))?,
        }))
    }

    /// Loads the state rows with `start <= key < end`, in key order, while
    /// their [`row_bytes`] stay within `budget`: (the rows, their bytes,
    /// how many rows the range holds in all, whether every row was loaded).
    pub(crate) fn load_rows(
        &self,
        start: &[u8],
        end: &[u8],
        budget: u64,
    ) -> Result<(Rows, u64, u64, bool), StorageError> {
        let mut rows = Rows::new();
        let mut bytes = 0u64;
        let mut count = 0u64;
        let mut complete = true;
        for row in self
            .state
            .range::<&[u8]>(start..end)
            .map_err(redb_err("load state"))?
        {
            let (k, v) = row.map_err(redb_err("load state"))?;
            count += 1;
            if !complete {
                continue;
            }
            let size = row_bytes(k.value(), v.value());
            if bytes + size > budget {
                complete = false;
                continue;
            }
            bytes += size;
            rows.insert(
                RowBytes::copy_from_slice(k.value()),
                RowBytes::copy_from_slice(v.value()),
            );
        }
        Ok((rows, bytes, count, complete))
    }

    /// How many state rows `start <= key < end` holds.
    pub(crate) fn count_rows(&self, start: &[u8], end: &[u8]) -> Result<u64, StorageError> {
        let mut count = 0;
        for row in self
            .state
            .range::<&[u8]>(start..end)
            .map_err(redb_err("count state"))?
        {
            row.map_err(redb_err("count state"))?;
            count += 1;
        }
        Ok(count)
    }

    /// One state row as the last checkpoint left it.
    pub(crate) fn state_get(&self, key: &[u8]) -> Result<Option<RowBytes>, StorageError> {
        Ok(self
            .state
            .get(key)
            .map_err(redb_err("read state"))?
            .map(|v| RowBytes::copy_from_slice(v.value())))
    }

    /// The state rows in `bounds` (full keys) as the last checkpoint left
    /// them, in key order (reversible).
    pub(crate) fn state_range(
        &self,
        bounds: (Bound<&[u8]>, Bound<&[u8]>),
    ) -> Result<
        impl DoubleEndedIterator<Item = Result<(RowBytes, RowBytes), StorageError>>,
        StorageError,
    > {
        let range = self
            .state
            .range::<&[u8]>(bounds)
            .map_err(redb_err("scan state"))?;
        Ok(range.map(|row| {
            let (k, v) = row.map_err(redb_err("scan state"))?;
            Ok((
                RowBytes::copy_from_slice(k.value()),
                RowBytes::copy_from_slice(v.value()),
            ))
        }))
    }

    /// The plugin record redb holds under `name`.
    pub(crate) fn plugin_record(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .plugins
            .get(name)
            .map_err(redb_err("read plugin"))?
            .map(|v| v.value().to_vec()))
    }

    /// Every plugin record redb holds, by plugin id.
    pub(crate) fn records(&self) -> Result<BTreeMap<u32, PluginRecord>, StorageError> {
        let mut out = BTreeMap::new();
        for row in self.plugins.iter().map_err(redb_err("scan plugins"))? {
            let (name, value) = row.map_err(redb_err("scan plugins"))?;
            let record: PluginRecord =
                decode(&format!("plugin record {}", name.value()), value.value())?;
            out.insert(record.id, record);
        }
        Ok(out)
    }
}

/// A consistent read-only view of one plugin's committed state: a
/// snapshot of its resident rows (O(1) to take), the journal entries and
/// record not yet checkpointed, and the redb snapshot under them. Holding
/// one blocks nobody.
pub struct ReadView {
    plugin_id: u32,
    rows: RowSet,
    journal: Journal,
    record: Option<Bytes>,
}

impl ReadView {
    pub(crate) fn new(
        plugin_id: u32,
        rows: RowSet,
        journal: Journal,
        record: Option<Bytes>,
    ) -> Self {
        Self {
            plugin_id,
            rows,
            journal,
            record,
        }
    }

    fn base(&self) -> &Base {
        self.rows.base()
    }

    /// Reads one plugin key.
    pub fn get(
        &self,
        plugin_id: u32,
        table: &str,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StorageError> {
        get_in(&self.rows, plugin_id, table, key)
    }

    /// [`ReadView::get`] by full state key (`keys::state_row_key`).
    pub(crate) fn get_row(&self, full_key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        get_row_in(&self.rows, full_key)
    }

    /// The next chunk of a scan.
    pub fn scan_chunk(
        &self,
        plugin_id: u32,
        scan: &mut ScanState,
        max_entries: usize,
    ) -> Result<ScanChunk, StorageError> {
        scan_chunk_in(&self.rows, plugin_id, scan, max_entries)
    }

    /// How many rows the plugin has.
    pub fn row_count(&self) -> usize {
        self.rows.count() as usize
    }

    /// Bytes the plugin's resident rows count for (key, value and about
    /// 80 bytes each; see `[checkpoint] resident_bytes_max`).
    pub fn resident_bytes(&self) -> u64 {
        self.rows.hot_bytes()
    }

    /// Calls `f` with every row of the plugin in key order: the key as
    /// `table ‖ 00 ‖ plugin key` (without the host-assigned plugin id),
    /// and the value. Stops at the first error (a storage error reading
    /// cold rows converts into `E`).
    pub fn for_each_row<E: From<StorageError>>(
        &self,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let start = self.plugin_id.to_be_bytes().to_vec();
        let end = plugin_end(self.plugin_id);
        let bounds: (Bound<&[u8]>, Bound<&[u8]>) = (
            Bound::Included(start.as_slice()),
            Bound::Excluded(end.as_slice()),
        );
        let mut failed = None;
        self.rows
            .for_each_in(bounds, true, |k, v| match f(&k[4..], v) {
                Ok(()) => true,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            })?;
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Every (table, key) → value of the plugin.
    pub fn dump(&self) -> Result<BTreeMap<(String, Vec<u8>), Vec<u8>>, StorageError> {
        let start = self.plugin_id.to_be_bytes().to_vec();
        let end = plugin_end(self.plugin_id);
        let mut out = BTreeMap::new();
        let bounds: (Bound<&[u8]>, Bound<&[u8]>) = (
            Bound::Included(start.as_slice()),
            Bound::Excluded(end.as_slice()),
        );
        let mut bad = false;
        self.rows
            .for_each_in(bounds, true, |k, v| match split_state_key(k) {
                Some((table, key)) => {
                    out.insert((table.to_owned(), key.to_vec()), v.to_vec());
                    true
                }
                None => {
                    bad = true;
                    false
                }
            })?;
        if bad {
            return Err(StorageError::Corrupt {
                what: "state key".into(),
                why: "no table separator".into(),
            });
        }
        Ok(out)
    }

    /// Journal entries with sequence in `from..=to`, in order.
    pub fn journal(&self, from: u64, to: u64) -> Result<Vec<JournalEntry>, StorageError> {
        if from > to {
            return Ok(Vec::new());
        }
        let mut entries: BTreeMap<u64, Bytes> = BTreeMap::new();
        for row in self
            .base()
            .journal
            .range((self.plugin_id, from)..=(self.plugin_id, to))
            .map_err(redb_err("scan journal"))?
        {
            let (key, value) = row.map_err(redb_err("scan journal"))?;
            entries.insert(key.value().1, Bytes::copy_from_slice(value.value()));
        }
        for (s, e) in self.journal.range(from..=to) {
            entries.insert(*s, e.clone());
        }
        entries
            .into_iter()
            .map(|(s, e)| decode_entry(s, &e))
            .collect()
    }

    /// The plugin's record (bincode) as of this view.
    pub(crate) fn record_bytes(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        match &self.record {
            Some(bytes) => Ok(Some(bytes.to_vec())),
            None => self.base().plugin_record(name),
        }
    }

    /// The plugin's record as of this view, if it has one.
    pub(crate) fn record(&self) -> Result<Option<PluginRecord>, StorageError> {
        match &self.record {
            Some(bytes) => Ok(Some(decode("plugin record", bytes)?)),
            None => Ok(self.base().records()?.remove(&self.plugin_id)),
        }
    }
}
