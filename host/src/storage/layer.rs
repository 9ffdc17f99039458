//! In-memory layers of one plugin's state: the rows written since redb's
//! last checkpoint, as an ordered map from full state key to value (or a
//! tombstone), plus the journal entries and the latest plugin record.
//!
//! A plugin's state is read through a stack of layers over redb: the
//! *active* layer (owned by the batch running now, mutable), then *frozen*
//! layers (immutable, shared with readers and the checkpointer), newest
//! first, then redb's checkpointed rows. The newest layer holding a key
//! decides its value; a tombstone hides older values.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;

/// A value in a layer: `Some` written, `None` removed (a tombstone).
pub(crate) type Slot = Option<Bytes>;

/// Rows, journal entries and the plugin record written in some span of
/// batches.
#[derive(Debug, Default, Clone)]
pub(crate) struct Layer {
    /// Full state key → value or tombstone.
    pub(crate) rows: BTreeMap<Vec<u8>, Slot>,
    /// Journal entries by sequence (encoded, see [`super::journal`]).
    pub(crate) journal: BTreeMap<u64, Bytes>,
    /// The plugin record (bincode) as of the end of the layer's last batch.
    pub(crate) record: Option<Bytes>,
    /// Key and value bytes held, for sizing.
    pub(crate) bytes: usize,
}

impl Layer {
    /// Whether the layer holds nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.journal.is_empty() && self.record.is_none()
    }

    /// Sets a row; returns what the layer held for the key before (`None`:
    /// the layer did not hold it).
    pub(crate) fn put_row(&mut self, key: Vec<u8>, value: Slot) -> Option<Slot> {
        let added = key.len() + value.as_ref().map_or(0, |v| v.len());
        let old = self.rows.insert(key, value);
        self.bytes += added;
        old
    }

    /// Restores a row to what [`Layer::put_row`] returned.
    pub(crate) fn restore_row(&mut self, key: Vec<u8>, before: Option<Slot>) {
        match before {
            Some(slot) => {
                self.rows.insert(key, slot);
            }
            None => {
                self.rows.remove(&key);
            }
        }
    }

    /// Copies `newer` over this layer (newer rows win; journal entries and
    /// the record are taken from `newer` where it has them).
    pub(crate) fn absorb(&mut self, newer: &Layer) {
        for (k, v) in &newer.rows {
            self.rows.insert(k.clone(), v.clone());
        }
        for (s, e) in &newer.journal {
            self.journal.insert(*s, e.clone());
        }
        if newer.record.is_some() {
            self.record = newer.record.clone();
        }
        self.bytes += newer.bytes;
    }
}

/// One source of a merged scan: rows in key order (as the scan's
/// direction asks), a tombstone as `None`.
pub(crate) type Source<'a> =
    Box<dyn Iterator<Item = Result<(Vec<u8>, Slot), super::StorageError>> + 'a>;

/// The rows of `layer` within `bounds` (full keys), in the scan's direction.
pub(crate) fn layer_source<'a>(
    layer: &'a Layer,
    bounds: (Bound<&'a [u8]>, Bound<&'a [u8]>),
    forward: bool,
) -> Source<'a> {
    let range = layer
        .rows
        .range::<[u8], _>(bounds)
        .map(|(k, v)| Ok((k.clone(), v.clone())));
    if forward {
        Box::new(range)
    } else {
        Box::new(range.rev())
    }
}

/// Merges `sources` (index 0 the newest) into live rows in key order: for
/// a key several sources hold, the newest decides; tombstones are dropped.
/// Stops when `keep` returns false for a row just pushed.
pub(crate) fn merge(
    mut sources: Vec<Source<'_>>,
    forward: bool,
    mut keep: impl FnMut(&[u8], &Bytes) -> bool,
) -> Result<Vec<(Vec<u8>, Bytes)>, super::StorageError> {
    let mut heads: Vec<Option<(Vec<u8>, Slot)>> = Vec::with_capacity(sources.len());
    for s in &mut sources {
        heads.push(s.next().transpose()?);
    }
    let mut out = Vec::new();
    loop {
        // The next key in scan order among the heads, and the newest
        // source holding it (ties go to the lower index).
        let mut best: Option<usize> = None;
        for (i, head) in heads.iter().enumerate() {
            let Some((key, _)) = head else { continue };
            best = match best {
                None => Some(i),
                Some(b) => {
                    let current = &heads[b].as_ref().expect("best has a head").0;
                    let better = if forward {
                        key < current
                    } else {
                        key > current
                    };
                    if better { Some(i) } else { Some(b) }
                }
            };
        }
        let Some(b) = best else { break };
        let (key, slot) = heads[b].take().expect("best has a head");
        // Every source at the same key is shadowed: advance past it.
        for (i, head) in heads.iter_mut().enumerate() {
            if i == b || head.as_ref().is_some_and(|(k, _)| *k == key) {
                *head = sources[i].next().transpose()?;
            }
        }
        if let Some(value) = slot {
            let go_on = keep(&key, &value);
            out.push((key, value));
            if !go_on {
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(rows: &[(&str, Option<&str>)], forward: bool) -> Source<'static> {
        let mut v: Vec<(Vec<u8>, Slot)> = rows
            .iter()
            .map(|(k, v)| {
                (
                    k.as_bytes().to_vec(),
                    v.map(|v| Bytes::copy_from_slice(v.as_bytes())),
                )
            })
            .collect();
        if !forward {
            v.reverse();
        }
        Box::new(v.into_iter().map(Ok))
    }

    fn keys(rows: Vec<(Vec<u8>, Bytes)>) -> Vec<String> {
        rows.into_iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    String::from_utf8(k).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap()
                )
            })
            .collect()
    }

    #[test]
    fn the_newest_source_wins_and_tombstones_hide_older_rows() {
        for forward in [true, false] {
            let newest = src(&[("b", None), ("c", Some("3"))], forward);
            let older = src(
                &[("a", Some("1")), ("b", Some("2")), ("c", Some("old"))],
                forward,
            );
            let base = src(&[("a", Some("base")), ("d", Some("4"))], forward);
            let mut got = keys(merge(vec![newest, older, base], forward, |_, _| true).unwrap());
            if !forward {
                got.reverse();
            }
            assert_eq!(got, ["a=1", "c=3", "d=4"], "forward {forward}");
        }
    }

    #[test]
    fn a_merge_stops_where_keep_says() {
        let a = src(
            &[("a", Some("1")), ("b", Some("2")), ("c", Some("3"))],
            true,
        );
        let mut n = 0;
        let got = merge(vec![a], true, |_, _| {
            n += 1;
            n < 2
        })
        .unwrap();
        assert_eq!(keys(got), ["a=1", "b=2"]);
    }
}
