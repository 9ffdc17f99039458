//! Reading plugin state: point reads and chunked range scans over a
//! plugin's resident rows, shared by the write batch and read-only views;
//! and the redb snapshot the journal and plugin records fall back to.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use redb::{ReadOnlyTable, ReadableDatabase, ReadableTable};

use super::journal::{JournalEntry, decode_entry};
use super::keys::{plugin_end, split_state_key, state_key, table_end, table_prefix};
use super::memtable::{Journal, Rows};
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

/// Reads one plugin key from `rows`.
pub(crate) fn get_in(rows: &Rows, plugin_id: u32, table: &str, key: &[u8]) -> Option<Vec<u8>> {
    rows.get(state_key(plugin_id, table, key).as_slice())
        .map(|v| v.to_vec())
}

/// Returns the next chunk of `scan` over `rows` (at most `max_entries`,
/// stopping once past [`SCAN_CHUNK_BYTES_MAX`]) and advances its bounds.
pub(crate) fn scan_chunk_in(
    rows: &Rows,
    plugin_id: u32,
    scan: &mut ScanState,
    max_entries: usize,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    if scan.done {
        return Vec::new();
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
        return Vec::new();
    }
    let bounds: (Bound<&[u8]>, Bound<&[u8]>) = (
        lower.as_ref().map(|v| v.as_slice()),
        upper.as_ref().map(|v| v.as_slice()),
    );
    let prefix_len = table_prefix(plugin_id, &scan.table).len();
    let range = rows.range::<_, [u8]>(bounds);
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let mut push = |(k, v): (&Bytes, &Bytes)| {
        let key = k[prefix_len..].to_vec();
        bytes += key.len() + v.len();
        out.push((key, v.to_vec()));
        out.len() < max_entries && bytes < SCAN_CHUNK_BYTES_MAX
    };
    match scan.direction {
        ScanDirection::Forward => {
            for row in range {
                if !push(row) {
                    break;
                }
            }
        }
        ScanDirection::Backward => {
            for row in range.rev() {
                if !push(row) {
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
    out
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

    /// Every state row with `start <= key < end`, in key order.
    pub(crate) fn rows_between(
        &self,
        start: &[u8],
        end: &[u8],
    ) -> Result<Vec<(Bytes, Bytes)>, StorageError> {
        let mut out = Vec::new();
        for row in self
            .state
            .range::<&[u8]>(start..end)
            .map_err(redb_err("load state"))?
        {
            let (k, v) = row.map_err(redb_err("load state"))?;
            out.push((
                Bytes::copy_from_slice(k.value()),
                Bytes::copy_from_slice(v.value()),
            ));
        }
        Ok(out)
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
    rows: Rows,
    journal: Journal,
    record: Option<Bytes>,
    base: Arc<Base>,
}

impl ReadView {
    pub(crate) fn new(
        plugin_id: u32,
        rows: Rows,
        journal: Journal,
        record: Option<Bytes>,
        base: Arc<Base>,
    ) -> Self {
        Self {
            plugin_id,
            rows,
            journal,
            record,
            base,
        }
    }

    /// Reads one plugin key.
    pub fn get(
        &self,
        plugin_id: u32,
        table: &str,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(get_in(&self.rows, plugin_id, table, key))
    }

    /// The next chunk of a scan.
    pub fn scan_chunk(
        &self,
        plugin_id: u32,
        scan: &mut ScanState,
        max_entries: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StorageError> {
        Ok(scan_chunk_in(&self.rows, plugin_id, scan, max_entries))
    }

    /// How many rows the plugin has.
    pub fn row_count(&self) -> usize {
        // The resident map holds only this plugin's rows.
        self.rows.len()
    }

    /// Calls `f` with every row of the plugin in key order: the key as
    /// `table ‖ 00 ‖ plugin key` (without the host-assigned plugin id),
    /// and the value. Stops at the first error.
    pub fn for_each_row<E>(
        &self,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let start = self.plugin_id.to_be_bytes().to_vec();
        let end = plugin_end(self.plugin_id);
        let bounds: (Bound<&[u8]>, Bound<&[u8]>) = (
            Bound::Included(start.as_slice()),
            Bound::Excluded(end.as_slice()),
        );
        for (k, v) in self.rows.range::<_, [u8]>(bounds) {
            f(&k[4..], v)?;
        }
        Ok(())
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
        for (k, v) in self.rows.range::<_, [u8]>(bounds) {
            let (table, key) = split_state_key(k).ok_or_else(|| StorageError::Corrupt {
                what: "state key".into(),
                why: "no table separator".into(),
            })?;
            out.insert((table.to_owned(), key.to_vec()), v.to_vec());
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
            .base
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
            None => self.base.plugin_record(name),
        }
    }

    /// The plugin's record as of this view, if it has one.
    pub(crate) fn record(&self) -> Result<Option<PluginRecord>, StorageError> {
        match &self.record {
            Some(bytes) => Ok(Some(decode("plugin record", bytes)?)),
            None => Ok(self.base.records()?.remove(&self.plugin_id)),
        }
    }
}
