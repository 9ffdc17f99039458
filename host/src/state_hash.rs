//! A per-plugin state hash kept incrementally: a multiset hash (the sum,
//! lane by lane, of a 512-bit BLAKE3 digest per key/value pair). Adding or
//! removing one pair costs one BLAKE3 call, and two hosts (or a host and a
//! replay) compare whole states in O(1). It does not depend on the
//! host-assigned plugin id, only on (table, key, value).

use std::fmt;

const LANES: usize = 8;

/// The multiset hash of a plugin's (table, key, value) pairs.
#[derive(Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct StateHash([u64; LANES]);

thread_local! {
    /// One hasher per thread, reset for each pair: a fresh
    /// `blake3::Hasher` is a 1.7 KB struct to initialise, more than the
    /// hashing of a small row itself.
    static HASHER: std::cell::RefCell<blake3::Hasher> = std::cell::RefCell::new(blake3::Hasher::new());
}

fn digest(table: &str, key: &[u8], value: &[u8]) -> [u64; LANES] {
    let mut out = [0u8; LANES * 8];
    HASHER.with_borrow_mut(|h| {
        h.reset();
        h.update(&(table.len() as u32).to_le_bytes());
        h.update(table.as_bytes());
        h.update(&(key.len() as u32).to_le_bytes());
        h.update(key);
        h.update(value);
        h.finalize_xof().fill(&mut out);
    });
    let mut lanes = [0u64; LANES];
    for (lane, chunk) in lanes.iter_mut().zip(out.chunks_exact(8)) {
        *lane = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
    }
    lanes
}

impl StateHash {
    /// The hash of the empty state.
    pub const EMPTY: StateHash = StateHash([0; LANES]);

    /// Adds one pair to the multiset.
    pub fn add(&mut self, table: &str, key: &[u8], value: &[u8]) {
        for (a, b) in self.0.iter_mut().zip(digest(table, key, value)) {
            *a = a.wrapping_add(b);
        }
    }

    /// Removes one pair from the multiset.
    pub fn remove(&mut self, table: &str, key: &[u8], value: &[u8]) {
        for (a, b) in self.0.iter_mut().zip(digest(table, key, value)) {
            *a = a.wrapping_sub(b);
        }
    }

    /// A 32-byte digest of the hash, for display and comparison.
    pub fn digest(&self) -> [u8; 32] {
        let mut bytes = [0u8; LANES * 8];
        for (chunk, lane) in bytes.chunks_exact_mut(8).zip(self.0) {
            chunk.copy_from_slice(&lane.to_le_bytes());
        }
        *blake3::hash(&bytes).as_bytes()
    }

    /// The digest as lowercase hex.
    pub fn to_hex(&self) -> String {
        hex(&self.digest())
    }
}

impl fmt::Debug for StateHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StateHash({})", self.to_hex())
    }
}

/// Lowercase hex of some bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_does_not_matter_and_remove_undoes_add() {
        let mut a = StateHash::EMPTY;
        a.add("t", b"k1", b"v1");
        a.add("t", b"k2", b"v2");
        let mut b = StateHash::EMPTY;
        b.add("t", b"k2", b"v2");
        b.add("t", b"k1", b"v1");
        assert_eq!(a, b);
        b.remove("t", b"k1", b"v1");
        b.remove("t", b"k2", b"v2");
        assert_eq!(b, StateHash::EMPTY);
    }

    #[test]
    fn table_is_part_of_the_pair() {
        let mut a = StateHash::EMPTY;
        a.add("t1", b"k", b"v");
        let mut b = StateHash::EMPTY;
        b.add("t2", b"k", b"v");
        assert_ne!(a, b);
    }
}
