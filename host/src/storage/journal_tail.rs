//! A plugin's journal entries not yet in redb, in sequence order.
//!
//! Entries arrive in sequence order (each batch appends after the last),
//! readers take O(1) snapshots of the whole tail, and a checkpoint drops
//! the prefix it wrote. An ordered map does the first two but not the
//! third: `imbl::OrdMap::split` rebuilds both halves entry by entry (it
//! held the plugin's lock for 115–235 ms per checkpoint at 200 k entries).
//! So the tail is an `imbl::Vector` (a chunked tree whose clones share
//! structure) kept sorted by sequence: appending is amortised O(1),
//! dropping a prefix and finding a sequence are O(log n).

use std::ops::RangeInclusive;

use bytes::Bytes;

/// Journal entries (encoded, see [`super::journal`]) by sequence, in
/// increasing order, each sequence once.
#[derive(Clone, Default)]
pub(crate) struct JournalTail {
    entries: imbl::Vector<(u64, Bytes)>,
}

impl JournalTail {
    /// An empty tail.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// How many entries it holds.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The position of the first entry with a sequence `>= sequence`.
    fn position(&self, sequence: u64) -> usize {
        match self.entries.binary_search_by_key(&sequence, |(s, _)| *s) {
            Ok(i) | Err(i) => i,
        }
    }

    /// Adds the entry of `sequence`, replacing one of the same sequence.
    /// Appending after the last sequence (the usual case) is amortised
    /// O(1); anything else O(log n).
    pub(crate) fn insert(&mut self, sequence: u64, entry: Bytes) {
        if self.entries.back().is_none_or(|(last, _)| *last < sequence) {
            self.entries.push_back((sequence, entry));
            return;
        }
        let at = self.position(sequence);
        if self.entries.get(at).is_some_and(|(s, _)| *s == sequence) {
            self.entries.set(at, (sequence, entry));
        } else {
            self.entries.insert(at, (sequence, entry));
        }
    }

    /// The last sequence held, if any.
    pub(crate) fn last_sequence(&self) -> Option<u64> {
        self.entries.back().map(|(s, _)| *s)
    }

    /// The entries with a sequence in `range`, in order.
    pub(crate) fn range(&self, range: RangeInclusive<u64>) -> impl Iterator<Item = &(u64, Bytes)> {
        let (from, to) = range.into_inner();
        let start = self.position(from);
        let end = match to.checked_add(1) {
            Some(next) => self.position(next),
            None => self.entries.len(),
        };
        let end = end.max(start);
        self.entries.focus().narrow(start..end).into_iter()
    }

    /// Drops every entry with a sequence `<= last` (what a checkpoint
    /// wrote). O(log n).
    pub(crate) fn forget_through(&mut self, last: u64) {
        let keep_from = match last.checked_add(1) {
            Some(next) => self.position(next),
            None => self.entries.len(),
        };
        self.entries = self.entries.skip(keep_from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(sequence: u64) -> Bytes {
        Bytes::from(sequence.to_le_bytes().to_vec())
    }

    fn sequences<'a>(it: impl Iterator<Item = &'a (u64, Bytes)>) -> Vec<u64> {
        it.map(|(s, e)| {
            assert_eq!(e, &entry(*s), "each sequence keeps its own entry");
            *s
        })
        .collect()
    }

    #[test]
    fn behaves_as_an_ordered_map_of_sequences() {
        // A reference ordered map driven with the same operations,
        // including out-of-order and repeated sequences.
        let mut tail = JournalTail::new();
        let mut model = std::collections::BTreeMap::new();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = 1u64;
        for step in 0..5_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let sequence = match x % 10 {
                0 => x % next.max(1), // an older (or repeated) sequence
                _ => {
                    next += 1 + x % 3; // gaps, as after refused batches
                    next
                }
            };
            tail.insert(sequence, entry(sequence));
            model.insert(sequence, entry(sequence));
            if step % 700 == 699 {
                let last = x % next;
                tail.forget_through(last);
                model = model.split_off(&(last + 1));
            }
            let (from, to) = (x % (next + 2), (x >> 20) % (next + 2));
            let expected: Vec<u64> = if from <= to {
                model.range(from..=to).map(|(s, _)| *s).collect()
            } else {
                Vec::new()
            };
            assert_eq!(
                sequences(tail.range(from..=to)),
                expected,
                "range {from}..={to} after step {step}"
            );
            assert_eq!(tail.len(), model.len());
            assert_eq!(tail.last_sequence(), model.keys().next_back().copied());
        }
    }

    #[test]
    fn a_snapshot_is_unchanged_by_later_inserts_and_forgets() {
        let mut tail = JournalTail::new();
        for s in 1..=1000 {
            tail.insert(s, entry(s));
        }
        let snapshot = tail.clone();
        tail.forget_through(600);
        for s in 1001..=1500 {
            tail.insert(s, entry(s));
        }
        assert_eq!(
            sequences(snapshot.range(0..=u64::MAX)),
            (1..=1000).collect::<Vec<_>>()
        );
        assert_eq!(
            sequences(tail.range(0..=u64::MAX)),
            (601..=1500).collect::<Vec<_>>()
        );
        tail.forget_through(u64::MAX);
        assert_eq!(tail.len(), 0);
        assert_eq!(tail.last_sequence(), None);
    }
}
