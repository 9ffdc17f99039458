//! Reading plugin state through its layers: point reads and chunked range
//! scans that merge the in-memory layers with redb's checkpointed rows,
//! shared by the write batch and read-only views.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use redb::{ReadOnlyTable, ReadableDatabase, ReadableTable};

use super::journal::{JournalEntry, decode_entry};
use super::keys::{plugin_end, split_state_key, state_key, table_end, table_prefix};
use super::layer::{Layer, Source, layer_source, merge};
use super::{JOURNAL, PLUGINS, STATE, StorageError, redb_err};
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

/// Returns the next chunk of `scan` (at most `max_entries`, stopping once
/// past [`SCAN_CHUNK_BYTES_MAX`]) and advances its bounds.
pub(crate) fn scan_chunk_in(
    active: Option<&Layer>,
    view: &ReadView,
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
    let forward = scan.direction == ScanDirection::Forward;
    let prefix_len = table_prefix(plugin_id, &scan.table).len();
    let mut sources: Vec<Source<'_>> = Vec::with_capacity(view.layers.len() + 2);
    if let Some(active) = active {
        sources.push(layer_source(active, bounds, forward));
    }
    for layer in &view.layers {
        sources.push(layer_source(layer, bounds, forward));
    }
    sources.push(view.base.state_source(bounds, forward)?);
    let mut bytes = 0usize;
    let mut count = 0usize;
    let rows = merge(sources, forward, |k, v| {
        count += 1;
        bytes += k.len() - prefix_len + v.len();
        count < max_entries && bytes < SCAN_CHUNK_BYTES_MAX
    })?;
    let out: Vec<(Vec<u8>, Vec<u8>)> = rows
        .into_iter()
        .map(|(k, v)| (k[prefix_len..].to_vec(), v.to_vec()))
        .collect();
    match out.last() {
        None => scan.done = true,
        Some((last, _)) => match scan.direction {
            ScanDirection::Forward => scan.lower = Bound::Excluded(last.clone()),
            ScanDirection::Backward => scan.upper = Bound::Excluded(last.clone()),
        },
    }
    Ok(out)
}

/// A redb read snapshot: the checkpointed rows under a plugin's layers.
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

    fn get(&self, full_key: &[u8]) -> Result<Option<Bytes>, StorageError> {
        Ok(self
            .state
            .get(full_key)
            .map_err(redb_err("get"))?
            .map(|v| Bytes::copy_from_slice(v.value())))
    }

    fn state_source<'a>(
        &'a self,
        bounds: (Bound<&'a [u8]>, Bound<&'a [u8]>),
        forward: bool,
    ) -> Result<Source<'a>, StorageError> {
        let range = self
            .state
            .range::<&[u8]>(bounds)
            .map_err(redb_err("range"))?;
        let row = |r: Result<
            (
                redb::AccessGuard<'_, &'static [u8]>,
                redb::AccessGuard<'_, &'static [u8]>,
            ),
            redb::StorageError,
        >| {
            let (k, v) = r.map_err(redb_err("range"))?;
            Ok((k.value().to_vec(), Some(Bytes::copy_from_slice(v.value()))))
        };
        Ok(if forward {
            Box::new(range.map(row))
        } else {
            Box::new(range.rev().map(row))
        })
    }

    /// The plugin record redb holds under `name`.
    pub(crate) fn plugin_record(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .plugins
            .get(name)
            .map_err(redb_err("read plugin"))?
            .map(|v| v.value().to_vec()))
    }

    /// Every plugin record redb holds, by name.
    pub(crate) fn plugin_records(&self) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let mut out = Vec::new();
        for row in self.plugins.iter().map_err(redb_err("scan plugins"))? {
            let (name, value) = row.map_err(redb_err("scan plugins"))?;
            out.push((name.value().to_owned(), value.value().to_vec()));
        }
        Ok(out)
    }
}

/// A consistent read-only view of one plugin's committed state: its
/// frozen layers (newest first) over a redb snapshot. Holding one blocks
/// nobody.
pub struct ReadView {
    plugin_id: u32,
    pub(crate) layers: Vec<Arc<Layer>>,
    pub(crate) base: Arc<Base>,
}

impl ReadView {
    pub(crate) fn new(plugin_id: u32, layers: Vec<Arc<Layer>>, base: Arc<Base>) -> Self {
        Self {
            plugin_id,
            layers,
            base,
        }
    }

    /// The value of a full state key.
    pub(crate) fn get_full(&self, full_key: &[u8]) -> Result<Option<Bytes>, StorageError> {
        for layer in &self.layers {
            if let Some(slot) = layer.rows.get(full_key) {
                return Ok(slot.clone());
            }
        }
        self.base.get(full_key)
    }

    /// Reads one plugin key.
    pub fn get(
        &self,
        plugin_id: u32,
        table: &str,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .get_full(&state_key(plugin_id, table, key))?
            .map(|v| v.to_vec()))
    }

    /// The next chunk of a scan.
    pub fn scan_chunk(
        &self,
        plugin_id: u32,
        scan: &mut ScanState,
        max_entries: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StorageError> {
        scan_chunk_in(None, self, plugin_id, scan, max_entries)
    }

    /// Every (table, key) → value of the plugin.
    pub fn dump(&self) -> Result<BTreeMap<(String, Vec<u8>), Vec<u8>>, StorageError> {
        let start = self.plugin_id.to_be_bytes().to_vec();
        let end = plugin_end(self.plugin_id);
        let bounds = (
            Bound::Included(start.as_slice()),
            Bound::Excluded(end.as_slice()),
        );
        let mut sources: Vec<Source<'_>> = self
            .layers
            .iter()
            .map(|l| layer_source(l, bounds, true))
            .collect();
        sources.push(self.base.state_source(bounds, true)?);
        let mut out = BTreeMap::new();
        for (k, v) in merge(sources, true, |_, _| true)? {
            let (table, key) = split_state_key(&k).ok_or_else(|| StorageError::Corrupt {
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
        // Oldest layer first, so newer layers overwrite.
        for layer in self.layers.iter().rev() {
            for (s, e) in layer.journal.range(from..=to) {
                entries.insert(*s, e.clone());
            }
        }
        entries
            .into_iter()
            .map(|(s, e)| decode_entry(s, &e))
            .collect()
    }

    /// The plugin's record (bincode) as of this view.
    pub(crate) fn record_bytes(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        match self.layered_record() {
            Some(bytes) => Ok(Some(bytes.to_vec())),
            None => self.base.plugin_record(name),
        }
    }

    /// The newest plugin record bytes in the layers, if any holds one.
    pub(crate) fn layered_record(&self) -> Option<Bytes> {
        self.layers.iter().find_map(|l| l.record.clone())
    }
}
