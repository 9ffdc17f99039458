//! [`RowBytes`]: the key or value of a resident row, stored inline when it
//! is short.
//!
//! The resident map ([`super::rows::Rows`]) holds millions of rows, and
//! after every snapshot (a checkpoint, a read view) a write copies the
//! B-tree nodes on its path, cloning every key and value in them. With
//! `Bytes` each clone was an atomic reference count and each comparison of
//! a binary search read a separate heap allocation, a cache miss on a large
//! map. Most keys (`plugin id ‖ table ‖ 00 ‖ key`) and many values are
//! short: those live inside the node, so cloning is a copy and comparing
//! reads memory the search already touched. Longer ones are shared `Bytes`.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

/// Bytes held inline at most (the type is 40 bytes, as large as the tag
/// plus a shared `Bytes`).
pub(crate) const INLINE_MAX: usize = 38;

/// An immutable byte string: inline up to [`INLINE_MAX`] bytes, shared
/// beyond. Compares and borrows as the `[u8]` it holds.
#[derive(Clone)]
pub(crate) enum RowBytes {
    /// Short: `len` bytes of `data`.
    Inline { len: u8, data: [u8; INLINE_MAX] },
    /// Long: shared by reference count.
    Shared(Bytes),
}

impl RowBytes {
    /// The empty string.
    pub(crate) const EMPTY: RowBytes = RowBytes::Inline {
        len: 0,
        data: [0; INLINE_MAX],
    };

    /// A copy of `bytes`.
    pub(crate) fn copy_from_slice(bytes: &[u8]) -> Self {
        if bytes.len() <= INLINE_MAX {
            let mut data = [0; INLINE_MAX];
            data[..bytes.len()].copy_from_slice(bytes);
            RowBytes::Inline {
                len: bytes.len() as u8,
                data,
            }
        } else {
            RowBytes::Shared(Bytes::copy_from_slice(bytes))
        }
    }

    /// The concatenation of `parts`, built in place when it is short.
    pub(crate) fn concat(parts: &[&[u8]]) -> Self {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total <= INLINE_MAX {
            let mut data = [0; INLINE_MAX];
            let mut at = 0;
            for part in parts {
                data[at..at + part.len()].copy_from_slice(part);
                at += part.len();
            }
            RowBytes::Inline {
                len: total as u8,
                data,
            }
        } else {
            RowBytes::Shared(Bytes::from(parts.concat()))
        }
    }

    /// The bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            RowBytes::Inline { len, data } => &data[..usize::from(*len)],
            RowBytes::Shared(bytes) => bytes,
        }
    }
}

impl Deref for RowBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for RowBytes {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Borrow<[u8]> for RowBytes {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for RowBytes {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for RowBytes {}

impl PartialOrd for RowBytes {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for RowBytes {
    fn cmp(&self, other: &Self) -> Ordering {
        compare(self.as_slice(), other.as_slice())
    }
}

/// Lexicographic order of two byte strings (as `[u8]::cmp`), eight bytes
/// at a time without a call: the map's binary searches compare short keys
/// that share a long prefix (`plugin id ‖ table ‖ 00`), where calling
/// `memcmp` for each comparison cost more than the comparison.
fn compare(a: &[u8], b: &[u8]) -> Ordering {
    let mut a_words = a.chunks_exact(8);
    let mut b_words = b.chunks_exact(8);
    for (x, y) in (&mut a_words).zip(&mut b_words) {
        let x = u64::from_be_bytes(x.try_into().expect("8 bytes"));
        let y = u64::from_be_bytes(y.try_into().expect("8 bytes"));
        if x != y {
            return x.cmp(&y);
        }
    }
    let at = a.len().min(b.len()) / 8 * 8;
    for (x, y) in a[at..].iter().zip(&b[at..]) {
        if x != y {
            return x.cmp(y);
        }
    }
    a.len().cmp(&b.len())
}

impl fmt::Debug for RowBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&Bytes::copy_from_slice(self.as_slice()), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| seed.wrapping_add(i as u8)).collect()
    }

    #[test]
    fn it_is_as_large_as_a_tag_and_a_shared_bytes() {
        assert_eq!(std::mem::size_of::<RowBytes>(), 40);
    }

    #[test]
    fn short_strings_are_inline_and_long_ones_shared_with_the_same_bytes() {
        for n in [0, 1, INLINE_MAX - 1, INLINE_MAX, INLINE_MAX + 1, 300] {
            let bytes = sample(n, 7);
            for made in [
                RowBytes::copy_from_slice(&bytes),
                RowBytes::concat(&[&bytes[..n / 3], &bytes[n / 3..]]),
            ] {
                assert_eq!(made.as_slice(), bytes.as_slice(), "length {n}");
                assert_eq!(
                    matches!(made, RowBytes::Inline { .. }),
                    n <= INLINE_MAX,
                    "length {n}"
                );
            }
        }
    }

    #[test]
    fn order_and_equality_are_those_of_the_bytes_across_representations() {
        let strings: Vec<Vec<u8>> = vec![
            vec![],
            vec![0],
            vec![0, 0],
            vec![1],
            sample(INLINE_MAX, 0),
            sample(INLINE_MAX + 1, 0),
            sample(INLINE_MAX + 5, 0),
            sample(INLINE_MAX - 1, 0),
            sample(INLINE_MAX, 1),
            vec![255; 50],
        ];
        for a in &strings {
            for b in &strings {
                let (ra, rb) = (RowBytes::copy_from_slice(a), RowBytes::copy_from_slice(b));
                assert_eq!(ra.cmp(&rb), a.cmp(b), "{a:?} vs {b:?}");
                assert_eq!(ra == rb, a == b, "{a:?} vs {b:?}");
            }
        }
        // Every pair of strings up to 40 bytes that share a prefix and
        // differ (or end) at any position, in either word half.
        let base = sample(40, 3);
        for len_a in 0..=40 {
            for len_b in 0..=40 {
                for differ_at in 0..len_a.min(len_b) {
                    let a = base[..len_a].to_vec();
                    let mut b = base[..len_b].to_vec();
                    b[differ_at] =
                        b[differ_at].wrapping_add(if differ_at % 2 == 0 { 1 } else { 255 });
                    assert_eq!(compare(&a, &b), a.cmp(&b), "{a:?} vs {b:?}");
                    assert_eq!(compare(&b, &a), b.cmp(&a), "{b:?} vs {a:?}");
                }
                let (a, b) = (&base[..len_a], &base[..len_b]);
                assert_eq!(compare(a, b), a.cmp(b), "{a:?} vs {b:?}");
            }
        }
        let mut map = imbl::OrdMap::new();
        for (i, s) in strings.iter().enumerate() {
            map.insert(RowBytes::copy_from_slice(s), i);
        }
        for (i, s) in strings.iter().enumerate() {
            assert_eq!(map.get(s.as_slice()), Some(&i), "lookup by slice");
        }
        let keys: Vec<Vec<u8>> = map.keys().map(|k| k.to_vec()).collect();
        let mut sorted = strings.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }
}
