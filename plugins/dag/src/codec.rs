//! Byte types with two encodings: lowercase hex in JSON (the human-facing
//! boundary) and raw bytes in storage (bincode, compact and copied in one
//! go). serde tells them apart with `is_human_readable`, which is true for
//! serde_json and false for bincode.

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Length of a digest, in bytes.
pub const DIGEST_BYTES: usize = 32;

/// A 32-byte BLAKE3 digest (certificates and batches).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Digest(pub [u8; DIGEST_BYTES]);

impl Digest {
    /// The digest as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let bytes = from_hex(text)?;
        let array: [u8; DIGEST_BYTES] = bytes.try_into().map_err(|b: Vec<u8>| {
            format!(
                "a digest is {DIGEST_BYTES} bytes (64 hex digits), not {}",
                b.len()
            )
        })?;
        Ok(Digest(array))
    }

    /// A short form for messages: the first 8 hex digits.
    pub fn short(&self) -> String {
        to_hex(&self.0[..4])
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.short())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Nibble value of each byte; 0xFF for bytes that are not hex digits.
const HEX_VALUES: [u8; 256] = {
    let mut table = [0xFF; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// Writes the lowercase hex of `bytes` into `out` (twice as long).
fn encode_hex_into(bytes: &[u8], out: &mut [u8]) {
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = HEX_DIGITS[(b >> 4) as usize];
        pair[1] = HEX_DIGITS[(b & 15) as usize];
    }
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut out = vec![0; bytes.len() * 2];
    encode_hex_into(bytes, &mut out);
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// Decodes hex `text` (exactly twice as long as `out`) into `out`.
fn decode_hex_into(text: &[u8], out: &mut [u8]) -> Result<(), String> {
    debug_assert_eq!(text.len(), out.len() * 2);
    for (o, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let (hi, lo) = (HEX_VALUES[pair[0] as usize], HEX_VALUES[pair[1] as usize]);
        if (hi | lo) & 0xF0 != 0 {
            return Err(format!(
                "{:?} is not a hex byte",
                String::from_utf8_lossy(pair)
            ));
        }
        *o = hi << 4 | lo;
    }
    Ok(())
}

/// Parses hex digits (either case) into bytes.
pub fn from_hex(text: &str) -> Result<Vec<u8>, String> {
    let text = text.as_bytes();
    if !text.len().is_multiple_of(2) {
        return Err(format!("hex has an odd number of digits ({})", text.len()));
    }
    let mut out = vec![0; text.len() / 2];
    decode_hex_into(text, &mut out)?;
    Ok(out)
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            let mut buf = [0; 2 * DIGEST_BYTES];
            encode_hex_into(&self.0, &mut buf);
            s.serialize_str(std::str::from_utf8(&buf).expect("hex digits are ASCII"))
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Digest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a digest: 64 hex digits")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Digest, E> {
                Digest::from_hex(v).map_err(E::custom)
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Digest, E> {
                v.try_into()
                    .map(Digest)
                    .map_err(|_| E::invalid_length(v.len(), &self))
            }
        }
        if d.is_human_readable() {
            d.deserialize_str(V)
        } else {
            d.deserialize_bytes(V)
        }
    }
}

/// A list of digests: a JSON array of hex strings, one byte string in storage.
#[derive(Clone, PartialEq, Eq, Default, Debug)]
pub struct DigestList(pub Vec<Digest>);

impl Serialize for DigestList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_seq(&self.0)
        } else {
            let mut flat = Vec::with_capacity(self.0.len() * DIGEST_BYTES);
            for d in &self.0 {
                flat.extend_from_slice(&d.0);
            }
            s.serialize_bytes(&flat)
        }
    }
}

impl<'de> Deserialize<'de> for DigestList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = DigestList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of digests (64 hex digits each)")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<DigestList, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
                while let Some(d) = seq.next_element::<Digest>()? {
                    out.push(d);
                }
                Ok(DigestList(out))
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<DigestList, E> {
                if !v.len().is_multiple_of(DIGEST_BYTES) {
                    return Err(E::invalid_length(v.len(), &self));
                }
                Ok(DigestList(
                    v.chunks_exact(DIGEST_BYTES)
                        .map(|c| Digest(c.try_into().expect("chunk of DIGEST_BYTES")))
                        .collect(),
                ))
            }
        }
        if d.is_human_readable() {
            d.deserialize_seq(V)
        } else {
            d.deserialize_bytes(V)
        }
    }
}

/// Opaque bytes (signatures, batch payloads): hex in JSON.
#[derive(Clone, PartialEq, Eq, Default, Debug)]
pub struct Bytes(pub Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&to_hex(&self.0))
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes as hex digits")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Bytes, E> {
                from_hex(v).map(Bytes).map_err(E::custom)
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
        }
        if d.is_human_readable() {
            d.deserialize_str(V)
        } else {
            d.deserialize_byte_buf(V)
        }
    }
}
