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
//!
//! [`Table::codec`] gives a [`TableCodec`]: the conversion of one stored row
//! (key bytes, value bytes) to JSON and back, which a plugin lists in
//! [`crate::Plugin::tables`] so that the host can export its state readably
//! and import it back (see the reserved queries in [`crate::Plugin`]).

use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value as Json;

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

/// Converts the stored rows of one table to JSON and back: what
/// [`crate::Plugin::tables`] lists, made by [`Table::codec`].
///
/// - [`TableCodec::decode`]: (key bytes, value bytes) → (key JSON, value
///   JSON). The key is decoded with [`Key::from_key_bytes`] and the value
///   with bincode (the table's encoding); either refuses trailing bytes.
///   The decoded key and value are then serialized with `serde_json`, so
///   they read as the types' serde JSON (e.g. a `String` key `"apples"`, a
///   `(u32, u64)` key `[1, 7]`, a `()` key `null`, a struct value an object).
/// - [`TableCodec::encode`]: the reverse — `serde_json` into the key and
///   value types, then the table's key and value encodings.
///
/// For every row a plugin wrote, `encode(decode(row)) == row`, with these
/// limits of the JSON form: a number must fit in 64 bits (a `u128` or
/// `i128` beyond the `u64`/`i64` range does not decode — the host then
/// keeps the row as bytes), a float must be finite, and `Option<Option<T>>`
/// reads `Some(None)` back as `None`.
/// [`crate::testing::Harness::check_declared_tables`] finds rows that do
/// not round-trip.
#[derive(Clone, Copy)]
pub struct TableCodec {
    name: &'static str,
    decode: DecodeRow,
    encode: EncodeRow,
}

/// (key bytes, value bytes) → (key, value) as JSON.
type DecodeRow = fn(&[u8], &[u8]) -> Result<(Json, Json), String>;
/// (key, value) as JSON → (key bytes, value bytes).
type EncodeRow = fn(&Json, &Json) -> Result<(Vec<u8>, Vec<u8>), String>;

impl TableCodec {
    /// The table's name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// Decodes one stored row (key bytes, value bytes) to (key, value) as
    /// JSON, or says why it does not decode.
    pub fn decode(&self, key: &[u8], value: &[u8]) -> Result<(Json, Json), String> {
        (self.decode)(key, value)
    }

    /// Encodes one row given as JSON to the bytes the table stores (key
    /// bytes, value bytes), or says why the JSON does not fit the types.
    pub fn encode(&self, key: &Json, value: &Json) -> Result<(Vec<u8>, Vec<u8>), String> {
        (self.encode)(key, value)
    }
}

impl std::fmt::Debug for TableCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TableCodec({:?})", self.name)
    }
}

fn decode_row<K: Key + Serialize, V: Serialize + DeserializeOwned>(
    key_bytes: &[u8],
    value_bytes: &[u8],
) -> Result<(Json, Json), String> {
    let key = K::from_key_bytes(key_bytes).map_err(|e| e.to_string())?;
    let (value, read): (V, usize) =
        bincode::serde::decode_from_slice(value_bytes, bincode::config::standard())
            .map_err(|e| format!("value does not decode: {e}"))?;
    if read != value_bytes.len() {
        return Err(format!(
            "value does not decode: {} trailing bytes",
            value_bytes.len() - read
        ));
    }
    let key = serde_json::to_value(&key).map_err(|e| format!("key is not JSON: {e}"))?;
    let value = serde_json::to_value(&value).map_err(|e| format!("value is not JSON: {e}"))?;
    Ok((key, value))
}

fn encode_row<K: Key + DeserializeOwned, V: Serialize + DeserializeOwned>(
    key: &Json,
    value: &Json,
) -> Result<(Vec<u8>, Vec<u8>), String> {
    let key = K::deserialize(key).map_err(|e| format!("key does not fit the key type: {e}"))?;
    let value =
        V::deserialize(value).map_err(|e| format!("value does not fit the value type: {e}"))?;
    Ok((key.to_key_bytes(), encode_value(&value)))
}

impl<K: Key + Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> Table<K, V> {
    /// This table's [`TableCodec`], for [`crate::Plugin::tables`].
    pub const fn codec(&self) -> TableCodec {
        TableCodec {
            name: self.name,
            decode: decode_row::<K, V>,
            encode: encode_row::<K, V>,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Order {
        id: u32,
        user: String,
        fills: Vec<(u64, i64)>,
        note: Option<String>,
    }

    const ORDERS: Table<u64, Order> = Table::new("orders");
    const COUNTS: Table<String, i64> = Table::new("counts");
    const PAIRS: Table<(u32, String, i64), ()> = Table::new("pairs");
    const SINGLE: Table<(), [u8; 4]> = Table::new("single");

    /// Both round trips of one row, given both ways.
    fn round_trip(codec: TableCodec, key: Json, value: Json, key_bytes: &[u8], value_bytes: &[u8]) {
        let (k, v) = codec.encode(&key, &value).unwrap();
        assert_eq!((k.as_slice(), v.as_slice()), (key_bytes, value_bytes));
        let (k, v) = codec.decode(key_bytes, value_bytes).unwrap();
        assert_eq!((&k, &v), (&key, &value));
        // Through JSON text, as an export file holds it.
        let k: Json = serde_json::from_str(&k.to_string()).unwrap();
        let v: Json = serde_json::from_str(&v.to_string()).unwrap();
        let (k, v) = codec.encode(&k, &v).unwrap();
        assert_eq!((k.as_slice(), v.as_slice()), (key_bytes, value_bytes));
    }

    #[test]
    fn rows_round_trip_through_json() {
        let order = Order {
            id: 3,
            user: "al".into(),
            fills: vec![(1, -2)],
            note: None,
        };
        round_trip(
            ORDERS.codec(),
            json!(7),
            json!({"id": 3, "user": "al", "fills": [[1, -2]], "note": null}),
            &7u64.to_key_bytes(),
            &encode_value(&order),
        );
        // The bytes are the table's own: bincode varints, order-preserving keys.
        assert_eq!(7u64.to_key_bytes(), [0, 0, 0, 0, 0, 0, 0, 7]);
        assert_eq!(encode_value(&order), [3, 2, b'a', b'l', 1, 1, 3, 0]);

        round_trip(
            COUNTS.codec(),
            json!("apples"),
            json!(-3),
            b"apples\0\0",
            &[5],
        );
        round_trip(
            PAIRS.codec(),
            json!([1, "a\u{0}b", -1]),
            json!(null),
            &(1u32, "a\u{0}b".to_owned(), -1i64).to_key_bytes(),
            &[],
        );
        round_trip(
            SINGLE.codec(),
            json!(null),
            json!([1, 2, 3, 255]),
            &[],
            &[1, 2, 3, 255],
        );
    }

    #[test]
    fn stored_rows_round_trip_through_json() {
        let rows: Vec<(u64, Order)> = (0..20)
            .map(|i| {
                let order = Order {
                    id: i as u32 * 1000,
                    user: "x\u{0}é".repeat(i as usize),
                    fills: (0..i).map(|j| (j << 40, -(j as i64))).collect(),
                    note: (i % 2 == 0).then(|| i.to_string()),
                };
                (u64::MAX - i * 7919, order)
            })
            .collect();
        let codec = ORDERS.codec();
        assert_eq!(codec.name(), "orders");
        for (key, order) in &rows {
            let (k, v) = (key.to_key_bytes(), encode_value(order));
            let (kj, vj) = codec.decode(&k, &v).unwrap();
            assert_eq!(kj, json!(key));
            assert_eq!(vj, serde_json::to_value(order).unwrap());
            assert_eq!(codec.encode(&kj, &vj).unwrap(), (k, v));
        }
    }

    #[test]
    fn trailing_or_missing_bytes_are_refused() {
        let codec = COUNTS.codec();
        assert!(codec.decode(b"a\0\0", &[5]).is_ok());
        let err = codec.decode(b"a\0\0x", &[5]).unwrap_err();
        assert!(err.contains("trailing"), "{err}");
        let err = codec.decode(b"a\0\0", &[5, 0]).unwrap_err();
        assert!(err.contains("trailing"), "{err}");
        assert!(codec.decode(b"a\0", &[5]).is_err());
        assert!(codec.decode(b"a\0\0", &[]).is_err());
        let err = ORDERS.codec().decode(&[0; 7], &[]).unwrap_err();
        assert!(err.contains("key"), "{err}");
    }

    #[test]
    fn json_of_the_wrong_shape_is_refused() {
        let codec = COUNTS.codec();
        assert!(codec.encode(&json!(1), &json!(1)).is_err());
        assert!(codec.encode(&json!("a"), &json!("1")).is_err());
        assert!(codec.encode(&json!("a"), &json!(1.5)).is_err());
        let err = ORDERS
            .codec()
            .encode(&json!(1), &json!({"id": 1, "user": "u", "note": null}))
            .unwrap_err();
        assert!(err.contains("value"), "{err}");
        assert!(
            PAIRS
                .codec()
                .encode(&json!([1, "a"]), &json!(null))
                .is_err()
        );
        assert!(ORDERS.codec().encode(&json!(-1), &json!(null)).is_err());
    }
}
