//! One plugin's rows: the resident ("hot") ones in a persistent ordered
//! map, and — once the plugin's state has outgrown its budget
//! (`[checkpoint] resident_bytes_max`) — the evicted ("cold") ones read
//! through from the redb snapshot of the last checkpoint.
//!
//! The invariant that makes read-through correct: **a key that is neither
//! hot nor marked removed has, in `base`, the value it has now.** It holds
//! because
//! - every write makes its key hot (a put) or marks it removed (a removal
//!   while the set is not complete), until the checkpoint that writes it;
//! - only clean rows are evicted: rows whose value equals what the
//!   checkpoint that produced `base` wrote ([`RowSet::evict_if_clean`]);
//! - `base` moves forward only together with dropping the removal marks
//!   that checkpoint wrote ([`RowSet::checkpointed`]), under the plugin's
//!   lock, so a clone (a read view) keeps a matching pair.
//!
//! While every row fits ("complete"), redb is never read and removals
//! leave no marks: the write path is the in-memory map alone.

use std::ops::Bound;
use std::sync::Arc;

use super::row_bytes::RowBytes;

use super::StorageError;
use super::read::Base;

/// The resident rows: full state key → value, short ones inline (see
/// [`RowBytes`]), so that the node copies after a snapshot copy them.
pub(crate) type Rows = imbl::OrdMap<RowBytes, RowBytes>;

/// Bytes a resident row is counted for beyond its key and value: the map
/// node's share and two `RowBytes` (an estimate, for the budget).
pub(crate) const ROW_OVERHEAD_BYTES: u64 = 80;

/// What a row costs the resident budget.
pub(crate) fn row_bytes(key: &[u8], value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64 + ROW_OVERHEAD_BYTES
}

/// A plugin's rows (see the module docs). Cloning is O(1): a clone is a
/// consistent snapshot.
#[derive(Clone)]
pub(crate) struct RowSet {
    hot: Rows,
    /// Keys removed since the checkpoint of the epoch given (while the set
    /// is not complete): they read as absent whatever `base` holds.
    removed: imbl::OrdMap<RowBytes, u64>,
    /// Every row is hot: `base` is never read for rows.
    complete: bool,
    /// The redb snapshot cold rows are read from (and the journal and
    /// plugin record fall back to).
    base: Arc<Base>,
    /// Rows in all (hot and cold).
    count: u64,
    /// [`row_bytes`] summed over the hot rows.
    hot_bytes: u64,
}

impl RowSet {
    /// Loads the rows of `start..end` from `base`: every row while their
    /// [`row_bytes`] stay within `budget`, the rest left cold.
    pub(crate) fn load(
        base: Arc<Base>,
        start: &[u8],
        end: &[u8],
        budget: u64,
    ) -> Result<Self, StorageError> {
        let (hot, hot_bytes, count, complete) = base.load_rows(start, end, budget)?;
        Ok(Self {
            hot,
            removed: imbl::OrdMap::new(),
            complete,
            base,
            count,
            hot_bytes,
        })
    }

    /// The rows of `start..end` exactly as `base` holds them, none resident
    /// (for reading a checkpoint's state without touching the live map).
    pub(crate) fn from_base(
        base: Arc<Base>,
        start: &[u8],
        end: &[u8],
    ) -> Result<Self, StorageError> {
        let count = base.count_rows(start, end)?;
        Ok(Self {
            hot: Rows::new(),
            removed: imbl::OrdMap::new(),
            complete: false,
            base,
            count,
            hot_bytes: 0,
        })
    }

    /// The resident rows.
    pub(crate) fn hot(&self) -> &Rows {
        &self.hot
    }

    /// Whether every row is resident.
    pub(crate) fn is_complete(&self) -> bool {
        self.complete
    }

    /// The redb snapshot under this set.
    pub(crate) fn base(&self) -> &Arc<Base> {
        &self.base
    }

    /// How many rows the plugin has.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// Bytes the resident rows count for.
    pub(crate) fn hot_bytes(&self) -> u64 {
        self.hot_bytes
    }

    /// The value of `key`, and whether it had to be read from redb.
    pub(crate) fn get(&self, key: &[u8]) -> Result<(Option<RowBytes>, bool), StorageError> {
        if let Some(v) = self.hot.get(key) {
            return Ok((Some(v.clone()), false));
        }
        if self.complete || self.removed.contains_key(key) {
            return Ok((None, false));
        }
        Ok((self.base.state_get(key)?, true))
    }

    /// [`RowSet::get`], keeping a value read from redb resident.
    pub(crate) fn get_and_keep(&mut self, key: &[u8]) -> Result<Option<RowBytes>, StorageError> {
        let (value, cold) = self.get(key)?;
        if cold && let Some(v) = &value {
            self.hot_bytes += row_bytes(key, v);
            self.hot.insert(RowBytes::copy_from_slice(key), v.clone());
        }
        Ok(value)
    }

    /// Writes `key`; returns the value it replaced.
    pub(crate) fn insert(
        &mut self,
        key: RowBytes,
        value: RowBytes,
    ) -> Result<Option<RowBytes>, StorageError> {
        self.hot_bytes += row_bytes(&key, &value);
        let old = match self.hot.insert(key.clone(), value) {
            Some(old) => {
                self.hot_bytes -= row_bytes(&key, &old);
                Some(old)
            }
            None if self.complete => None,
            None => match self.removed.remove(key.as_ref()) {
                Some(_) => None,
                None => self.base.state_get(&key)?,
            },
        };
        if old.is_none() {
            self.count += 1;
        }
        Ok(old)
    }

    /// Removes `key` (in `epoch`: the number of the checkpoint that will
    /// write the removal); returns the value it had.
    pub(crate) fn remove(
        &mut self,
        key: &[u8],
        epoch: u64,
    ) -> Result<Option<RowBytes>, StorageError> {
        let old = match self.hot.remove(key) {
            Some(old) => {
                self.hot_bytes -= row_bytes(key, &old);
                Some(old)
            }
            None if self.complete || self.removed.contains_key(key) => None,
            None => self.base.state_get(key)?,
        };
        if !self.complete {
            self.removed.insert(RowBytes::copy_from_slice(key), epoch);
        }
        if old.is_some() {
            self.count -= 1;
        }
        Ok(old)
    }

    /// Puts back a value a write of this batch replaced (the key is hot or
    /// marked removed, so redb is not read).
    pub(crate) fn restore(&mut self, key: RowBytes, before: Option<RowBytes>, epoch: u64) {
        let now_present = self.hot.contains_key(key.as_ref());
        match before {
            Some(v) => {
                self.hot_bytes += row_bytes(&key, &v);
                self.removed.remove(key.as_ref());
                if let Some(old) = self.hot.insert(key.clone(), v) {
                    self.hot_bytes -= row_bytes(&key, &old);
                }
                if !now_present {
                    self.count += 1;
                }
            }
            None => {
                if let Some(old) = self.hot.remove(key.as_ref()) {
                    self.hot_bytes -= row_bytes(&key, &old);
                    self.count -= 1;
                }
                if !self.complete {
                    self.removed.insert(key, epoch);
                }
            }
        }
    }

    /// After the checkpoint of `epoch` committed and produced `base`: the
    /// removals it wrote are in `base` now, so their marks go.
    pub(crate) fn checkpointed(&mut self, base: Arc<Base>, epoch: u64) {
        self.base = base;
        if self.removed.is_empty() {
            return;
        }
        let done: Vec<RowBytes> = self
            .removed
            .iter()
            .filter(|(_, e)| **e <= epoch)
            .map(|(k, _)| k.clone())
            .collect();
        for k in done {
            self.removed.remove(k.as_ref());
        }
    }

    /// Leaves "complete": from now on rows may be cold. `dirty` are the
    /// keys written since the last checkpoint: those absent now are
    /// marked removed (with `epoch`), since `base` may still hold them.
    fn make_incomplete<'a>(&mut self, dirty: impl Iterator<Item = &'a RowBytes>, epoch: u64) {
        if !self.complete {
            return;
        }
        self.complete = false;
        for k in dirty {
            if !self.hot.contains_key(k.as_ref()) {
                self.removed.insert(k.clone(), epoch);
            }
        }
    }

    /// Evicts `key` if its resident value is `clean` (the value the last
    /// checkpoint — the one that produced `base` — left in redb); returns
    /// whether it did. `dirty` and `epoch` as for the first eviction.
    pub(crate) fn evict_if_clean<'a>(
        &mut self,
        key: &[u8],
        clean: &[u8],
        dirty: impl Iterator<Item = &'a RowBytes>,
        epoch: u64,
    ) -> bool {
        match self.hot.get(key) {
            Some(v) if v.as_ref() == clean => {}
            _ => return false,
        }
        self.make_incomplete(dirty, epoch);
        if let Some(old) = self.hot.remove(key) {
            self.hot_bytes -= row_bytes(key, &old);
        }
        true
    }

    /// Calls `f` with every row in `bounds` (full keys) in `direction`
    /// order — resident rows merged with cold ones — until it returns
    /// `false`.
    pub(crate) fn for_each_in(
        &self,
        bounds: (Bound<&[u8]>, Bound<&[u8]>),
        forward: bool,
        mut f: impl FnMut(&RowBytes, &RowBytes) -> bool,
    ) -> Result<(), StorageError> {
        let hot = self.hot.range::<_, [u8]>(bounds);
        if self.complete {
            if forward {
                for (k, v) in hot {
                    if !f(k, v) {
                        break;
                    }
                }
            } else {
                for (k, v) in hot.rev() {
                    if !f(k, v) {
                        break;
                    }
                }
            }
            return Ok(());
        }
        let cold = self.base.state_range(bounds)?;
        if forward {
            merge(hot, cold, |a, b| a < b, self, f)
        } else {
            merge(hot.rev(), cold.rev(), |a, b| a > b, self, f)
        }
    }
}

/// Merges resident rows `hot` with redb rows `cold` (both in the same key
/// order; `first(a, b)`: `a` comes before `b`): a cold row is skipped when
/// its key is resident or marked removed.
fn merge<'h>(
    hot: impl Iterator<Item = (&'h RowBytes, &'h RowBytes)>,
    cold: impl Iterator<Item = Result<(RowBytes, RowBytes), StorageError>>,
    first: impl Fn(&[u8], &[u8]) -> bool,
    set: &RowSet,
    mut f: impl FnMut(&RowBytes, &RowBytes) -> bool,
) -> Result<(), StorageError> {
    let mut hot = hot.peekable();
    let mut cold = cold.filter(|row| match row {
        Ok((k, _)) => !set.hot.contains_key(k.as_ref()) && !set.removed.contains_key(k.as_ref()),
        Err(_) => true,
    });
    let mut next_cold = cold.next().transpose()?;
    loop {
        let take_hot = match (hot.peek(), &next_cold) {
            (None, None) => return Ok(()),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((hk, _)), Some((ck, _))) => first(hk, ck),
        };
        let go_on = if take_hot {
            let (k, v) = hot.next().expect("peeked");
            f(k, v)
        } else {
            let (k, v) = next_cold.take().expect("checked");
            let go_on = f(&k, &v);
            next_cold = cold.next().transpose()?;
            go_on
        };
        if !go_on {
            return Ok(());
        }
    }
}
