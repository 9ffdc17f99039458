//! How digests are computed. Clients compute the same digests to name
//! parents before the plugin answers (pipelining), so the encoding is part
//! of the API and fixed here, byte by byte:
//!
//! certificate = BLAKE3(
//!   "keel-dag/certificate/v1\0" ‖ round (u64 LE) ‖ len(author) (u32 LE) ‖ author (UTF-8)
//!   ‖ len(parents) (u32 LE) ‖ parents, **sorted ascending**, 32 bytes each
//!   ‖ len(batches) (u32 LE) ‖ batches in the given order, 32 bytes each)
//!
//! batch = BLAKE3("keel-dag/batch/v1\0" ‖ len(author) (u32 LE) ‖ author ‖ payload)
//!
//! The signature is not part of the digest (it signs the digest).

use crate::codec::Digest;

const CERTIFICATE_DOMAIN: &[u8] = b"keel-dag/certificate/v1\0";
const BATCH_DOMAIN: &[u8] = b"keel-dag/batch/v1\0";

fn len_u32(n: usize) -> [u8; 4] {
    // Lengths are bounded far below u32::MAX by the plugin's limits.
    u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes()
}

/// The digest of a certificate header. `sorted_parents` must be sorted
/// ascending (use [`certificate_digest`] when they may not be).
pub fn certificate_digest_sorted(
    round: u64,
    author: &str,
    sorted_parents: &[Digest],
    batches: &[Digest],
) -> Digest {
    let mut h = blake3::Hasher::new();
    h.update(CERTIFICATE_DOMAIN);
    h.update(&round.to_le_bytes());
    h.update(&len_u32(author.len()));
    h.update(author.as_bytes());
    h.update(&len_u32(sorted_parents.len()));
    for p in sorted_parents {
        h.update(&p.0);
    }
    h.update(&len_u32(batches.len()));
    for b in batches {
        h.update(&b.0);
    }
    Digest(*h.finalize().as_bytes())
}

/// The digest of a certificate header, parents in any order.
pub fn certificate_digest(
    round: u64,
    author: &str,
    parents: &[Digest],
    batches: &[Digest],
) -> Digest {
    let mut sorted = parents.to_vec();
    sorted.sort_unstable();
    certificate_digest_sorted(round, author, &sorted, batches)
}

/// The digest of a batch.
pub fn batch_digest(author: &str, payload: &[u8]) -> Digest {
    let mut h = blake3::Hasher::new();
    h.update(BATCH_DOMAIN);
    h.update(&len_u32(author.len()));
    h.update(author.as_bytes());
    h.update(payload);
    Digest(*h.finalize().as_bytes())
}
