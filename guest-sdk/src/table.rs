//! Typed tables: `const ORDERS: Table<u64, Order> = Table::new("orders");`
//!
//! Keys use the order-preserving [`Key`] encoding; values are serde types
//! stored with bincode. The panicking methods (`get`, `put`, ...) are for
//! plugin code: inside a component a panic traps, and a trapped command
//! leaves no trace, so a storage refusal aborts the command atomically. The
//! `try_` variants return the error instead.
//!
//! Costs: each `get`/`put`/`remove` is one host call (≈ 0.2 µs plus
//! encoding); a scan costs one host call per chunk of [`SCAN_CHUNK_ENTRIES`]
//! entries.

use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::{self, RawCursor, RawEntry};
use crate::error::StorageError;
use crate::key::{Key, prefix_successor};

/// Entries fetched per host call during a scan.
pub const SCAN_CHUNK_ENTRIES: u32 = 64;

/// Direction of a range scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Ascending keys.
    Forward,
    /// Descending keys.
    Backward,
}

/// A named table of `K -> V`, private to the plugin that uses it.
pub struct Table<K, V> {
    name: &'static str,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for Table<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K, V> Copy for Table<K, V> {}

impl<K, V> std::fmt::Debug for Table<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Table({:?})", self.name)
    }
}

fn encode_value<V: Serialize>(value: &V) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .expect("serializing into a Vec cannot fail for serde types without custom errors")
}

fn decode_value<V: DeserializeOwned>(bytes: &[u8]) -> Result<V, StorageError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| StorageError::Decode(e.to_string()))
}

impl<K: Key, V: Serialize + DeserializeOwned> Table<K, V> {
    /// Declares a table. `name` must be 1..=64 bytes of `[a-z0-9_.-]`.
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            _types: PhantomData,
        }
    }

    /// The table's name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// Reads a value. One host call.
    pub fn try_get(&self, key: &K) -> Result<Option<V>, StorageError> {
        match backend::get(self.name, &key.to_key_bytes())? {
            Some(bytes) => decode_value(&bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Reads a value; panics (traps the command) on a storage error.
    pub fn get(&self, key: &K) -> Option<V> {
        self.try_get(key)
            .unwrap_or_else(|e| panic!("table {}: {e}", self.name))
    }

    /// Whether `key` holds a value. One host call.
    pub fn contains(&self, key: &K) -> bool {
        backend::get(self.name, &key.to_key_bytes())
            .unwrap_or_else(|e| panic!("table {}: {e}", self.name))
            .is_some()
    }

    /// Stores a value, replacing any previous one. One host call.
    pub fn try_put(&self, key: &K, value: &V) -> Result<(), StorageError> {
        backend::put(self.name, &key.to_key_bytes(), &encode_value(value))
    }

    /// Stores a value; panics (traps the command) on a storage error.
    pub fn put(&self, key: &K, value: &V) {
        self.try_put(key, value)
            .unwrap_or_else(|e| panic!("table {}: {e}", self.name))
    }

    /// Removes a key; returns whether it held a value. One host call.
    pub fn try_remove(&self, key: &K) -> Result<bool, StorageError> {
        backend::remove(self.name, &key.to_key_bytes())
    }

    /// Removes a key; panics (traps the command) on a storage error.
    pub fn remove(&self, key: &K) -> bool {
        self.try_remove(key)
            .unwrap_or_else(|e| panic!("table {}: {e}", self.name))
    }

    /// Removes a key and returns its value. Two host calls.
    pub fn take(&self, key: &K) -> Option<V> {
        let value = self.get(key);
        if value.is_some() {
            self.remove(key);
        }
        value
    }

    /// Scans the keys within `range` in `direction`.
    pub fn try_range<R: RangeBounds<K>>(
        &self,
        range: R,
        direction: Direction,
    ) -> Result<Scan<K, V>, StorageError> {
        let start = match range.start_bound() {
            Bound::Unbounded => None,
            Bound::Included(k) => Some(k.to_key_bytes()),
            Bound::Excluded(k) => Some(successor(k.to_key_bytes())),
        };
        let end = match range.end_bound() {
            Bound::Unbounded => None,
            Bound::Included(k) => Some(successor(k.to_key_bytes())),
            Bound::Excluded(k) => Some(k.to_key_bytes()),
        };
        Scan::open(self.name, start, end, direction)
    }

    /// Scans the keys within `range`, ascending.
    pub fn range<R: RangeBounds<K>>(&self, range: R) -> Scan<K, V> {
        self.try_range(range, Direction::Forward)
            .unwrap_or_else(|e| panic!("table {}: {e}", self.name))
    }

    /// Scans the keys within `range`, descending.
    pub fn range_rev<R: RangeBounds<K>>(&self, range: R) -> Scan<K, V> {
        self.try_range(range, Direction::Backward)
            .unwrap_or_else(|e| panic!("table {}: {e}", self.name))
    }

    /// Every entry, ascending.
    pub fn iter(&self) -> Scan<K, V> {
        self.range(..)
    }

    /// Every entry, descending.
    pub fn iter_rev(&self) -> Scan<K, V> {
        self.range_rev(..)
    }

    /// Every entry whose key starts with `prefix` (a leading part of a
    /// tuple key, e.g. `(user,)` for keys `(user, order)`), in `direction`.
    pub fn prefix<P: Key>(&self, prefix: &P, direction: Direction) -> Scan<K, V> {
        let start = prefix.to_key_bytes();
        let end = prefix_successor(&start);
        Scan::open(self.name, Some(start), end, direction)
            .unwrap_or_else(|e| panic!("table {}: {e}", self.name))
    }

    /// The entry with the smallest key.
    pub fn first(&self) -> Option<(K, V)> {
        self.iter().with_chunk(1).next()
    }

    /// The entry with the largest key.
    pub fn last(&self) -> Option<(K, V)> {
        self.iter_rev().with_chunk(1).next()
    }
}

/// The smallest encoding strictly greater than `key`.
fn successor(mut key: Vec<u8>) -> Vec<u8> {
    key.push(0);
    key
}

/// An ordered scan over a table, fetched from the host in chunks.
pub struct Scan<K, V> {
    cursor: RawCursor,
    buffer: std::vec::IntoIter<RawEntry>,
    chunk: u32,
    exhausted: bool,
    table: &'static str,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K: Key, V: DeserializeOwned> Scan<K, V> {
    fn open(
        table: &'static str,
        start: Option<Vec<u8>>,
        end: Option<Vec<u8>>,
        direction: Direction,
    ) -> Result<Self, StorageError> {
        Ok(Self {
            cursor: RawCursor::open(table, start, end, direction)?,
            buffer: Vec::new().into_iter(),
            chunk: SCAN_CHUNK_ENTRIES,
            exhausted: false,
            table,
            _types: PhantomData,
        })
    }

    /// Sets how many entries each host call fetches (1..=1024). Use a small
    /// chunk when only the first few entries will be read.
    pub fn with_chunk(mut self, entries: u32) -> Self {
        self.chunk = entries.clamp(1, 1024);
        self
    }

    /// Next raw entry, decoded; errors instead of panicking.
    pub fn try_next(&mut self) -> Option<Result<(K, V), StorageError>> {
        loop {
            if let Some((k, v)) = self.buffer.next() {
                let key = K::from_key_bytes(&k).map_err(|e| StorageError::Decode(e.to_string()));
                return Some(key.and_then(|key| Ok((key, decode_value(&v)?))));
            }
            if self.exhausted {
                return None;
            }
            let chunk = self.cursor.next_chunk(self.chunk);
            if chunk.is_empty() {
                self.exhausted = true;
                return None;
            }
            self.buffer = chunk.into_iter();
        }
    }
}

impl<K: Key, V: DeserializeOwned> Iterator for Scan<K, V> {
    type Item = (K, V);

    fn next(&mut self) -> Option<(K, V)> {
        self.try_next()
            .map(|r| r.unwrap_or_else(|e| panic!("table {}: {e}", self.table)))
    }
}
