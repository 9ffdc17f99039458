//! Order-preserving key encoding.
//!
//! Every [`Key`] encodes to bytes whose lexicographic order equals the
//! value order, so range scans over a table walk keys in value order, in
//! both directions:
//!
//! | type | encoding |
//! |---|---|
//! | `u8`..`u128` | big-endian |
//! | `i8`..`i128` | big-endian with the sign bit flipped |
//! | `bool` | one byte, 0 or 1 |
//! | `[u8; N]` | the N bytes as they are |
//! | `String`, `Vec<u8>` | bytes with `00` escaped as `00 FF`, then the terminator `00 00` |
//! | tuples (up to 4) | the encodings concatenated |
//!
//! The string terminator makes every encoding self-delimiting, so a tuple
//! `(a, b)` sorts by `a` first, then `b`, and a tuple prefix `(a,)` encodes
//! to a byte prefix of every `(a, _)` (see [`crate::Table::prefix`]).

use std::fmt;

/// A key that could not be decoded: the stored bytes do not match the type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDecodeError(pub &'static str);

impl fmt::Display for KeyDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key does not decode: {}", self.0)
    }
}

impl std::error::Error for KeyDecodeError {}

/// A value usable as a table key, with an order-preserving byte encoding.
pub trait Key: Sized {
    /// Appends this key's encoding to `out`.
    fn encode_key(&self, out: &mut Vec<u8>);
    /// Decodes one key from the front of `input`, advancing it.
    fn decode_key(input: &mut &[u8]) -> Result<Self, KeyDecodeError>;

    /// This key's encoding as a new vector.
    fn to_key_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        self.encode_key(&mut out);
        out
    }

    /// Decodes a whole byte string; trailing bytes are an error.
    fn from_key_bytes(mut bytes: &[u8]) -> Result<Self, KeyDecodeError> {
        let key = Self::decode_key(&mut bytes)?;
        if bytes.is_empty() {
            Ok(key)
        } else {
            Err(KeyDecodeError("trailing bytes after key"))
        }
    }
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], KeyDecodeError> {
    if input.len() < n {
        return Err(KeyDecodeError("key too short"));
    }
    let (head, tail) = input.split_at(n);
    *input = tail;
    Ok(head)
}

macro_rules! unsigned_key {
    ($($t:ty),*) => {$(
        impl Key for $t {
            fn encode_key(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_be_bytes());
            }
            fn decode_key(input: &mut &[u8]) -> Result<Self, KeyDecodeError> {
                let bytes = take(input, std::mem::size_of::<$t>())?;
                Ok(<$t>::from_be_bytes(bytes.try_into().expect("length checked")))
            }
        }
    )*};
}
unsigned_key!(u8, u16, u32, u64, u128);

macro_rules! signed_key {
    ($($t:ty => $u:ty),*) => {$(
        impl Key for $t {
            fn encode_key(&self, out: &mut Vec<u8>) {
                let flipped = (*self as $u) ^ (1 << (<$u>::BITS - 1));
                out.extend_from_slice(&flipped.to_be_bytes());
            }
            fn decode_key(input: &mut &[u8]) -> Result<Self, KeyDecodeError> {
                let bytes = take(input, std::mem::size_of::<$t>())?;
                let flipped = <$u>::from_be_bytes(bytes.try_into().expect("length checked"));
                Ok((flipped ^ (1 << (<$u>::BITS - 1))) as $t)
            }
        }
    )*};
}
signed_key!(i8 => u8, i16 => u16, i32 => u32, i64 => u64, i128 => u128);

impl Key for bool {
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn decode_key(input: &mut &[u8]) -> Result<Self, KeyDecodeError> {
        match take(input, 1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(KeyDecodeError("bool byte is neither 0 nor 1")),
        }
    }
}

impl<const N: usize> Key for [u8; N] {
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn decode_key(input: &mut &[u8]) -> Result<Self, KeyDecodeError> {
        Ok(take(input, N)?.try_into().expect("length checked"))
    }
}

fn encode_escaped(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 0]);
}

fn decode_escaped(input: &mut &[u8]) -> Result<Vec<u8>, KeyDecodeError> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        match input.get(i) {
            None => return Err(KeyDecodeError("unterminated string key")),
            Some(0) => match input.get(i + 1) {
                Some(0) => {
                    *input = &input[i + 2..];
                    return Ok(out);
                }
                Some(0xFF) => {
                    out.push(0);
                    i += 2;
                }
                _ => return Err(KeyDecodeError("bad escape in string key")),
            },
            Some(&b) => {
                out.push(b);
                i += 1;
            }
        }
    }
}

impl Key for Vec<u8> {
    fn encode_key(&self, out: &mut Vec<u8>) {
        encode_escaped(self, out);
    }
    fn decode_key(input: &mut &[u8]) -> Result<Self, KeyDecodeError> {
        decode_escaped(input)
    }
}

impl Key for String {
    fn encode_key(&self, out: &mut Vec<u8>) {
        encode_escaped(self.as_bytes(), out);
    }
    fn decode_key(input: &mut &[u8]) -> Result<Self, KeyDecodeError> {
        String::from_utf8(decode_escaped(input)?)
            .map_err(|_| KeyDecodeError("string key is not UTF-8"))
    }
}

impl Key for () {
    fn encode_key(&self, _out: &mut Vec<u8>) {}
    fn decode_key(_input: &mut &[u8]) -> Result<Self, KeyDecodeError> {
        Ok(())
    }
}

macro_rules! tuple_key {
    ($($name:ident),+) => {
        impl<$($name: Key),+> Key for ($($name,)+) {
            #[allow(non_snake_case)]
            fn encode_key(&self, out: &mut Vec<u8>) {
                let ($($name,)+) = self;
                $($name.encode_key(out);)+
            }
            fn decode_key(input: &mut &[u8]) -> Result<Self, KeyDecodeError> {
                Ok(($($name::decode_key(input)?,)+))
            }
        }
    };
}
tuple_key!(A);
tuple_key!(A, B);
tuple_key!(A, B, C);
tuple_key!(A, B, C, D);

/// The smallest byte string greater than every string that starts with
/// `prefix`, or `None` when there is none (the prefix is all `FF`).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut out = prefix.to_vec();
    while let Some(last) = out.pop() {
        if last < 0xFF {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc<K: Key>(k: &K) -> Vec<u8> {
        k.to_key_bytes()
    }

    proptest! {
        #[test]
        fn signed_order_is_byte_order(a: i64, b: i64) {
            prop_assert_eq!(a.cmp(&b), enc(&a).cmp(&enc(&b)));
            prop_assert_eq!(i64::from_key_bytes(&enc(&a)).unwrap(), a);
        }

        #[test]
        fn unsigned_order_is_byte_order(a: u128, b: u128) {
            prop_assert_eq!(a.cmp(&b), enc(&a).cmp(&enc(&b)));
        }

        #[test]
        fn string_tuples_order_is_byte_order(a: (String, u32), b: (String, u32)) {
            prop_assert_eq!(a.cmp(&b), enc(&a).cmp(&enc(&b)));
            prop_assert_eq!(<(String, u32)>::from_key_bytes(&enc(&a)).unwrap(), a);
        }

        #[test]
        fn byte_strings_with_zeros_order(a: (Vec<u8>, i32), b: (Vec<u8>, i32)) {
            prop_assert_eq!(a.cmp(&b), enc(&a).cmp(&enc(&b)));
            prop_assert_eq!(<(Vec<u8>, i32)>::from_key_bytes(&enc(&a)).unwrap(), a);
        }

        #[test]
        fn tuple_prefix_is_byte_prefix(a: String, b: u64) {
            let whole = enc(&(a.clone(), b));
            prop_assert!(whole.starts_with(&enc(&(a,))));
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(u64::from_key_bytes(&[1, 2]).is_err());
        assert!(String::from_key_bytes(&[b'a', 0, 7]).is_err());
        assert!(String::from_key_bytes(&[0xFF, 0, 0]).is_err());
        assert!(bool::from_key_bytes(&[2]).is_err());
        assert!(u8::from_key_bytes(&[1, 2]).is_err());
    }

    #[test]
    fn prefix_successor_carries() {
        assert_eq!(prefix_successor(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xFF, 0xFF]), None);
    }
}
