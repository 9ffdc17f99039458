//! The storage layout. An insert touches few rows: it reads the author's
//! index, the quorum rules, the metadata, the (round, author) slot and one
//! node per parent, and writes three rows (node, certificate, metadata).
//! `insert_many` reads the rules and metadata once per command, each author
//! index and each parent node once, and writes the metadata once: two
//! writes per certificate. Both tables written per certificate are keyed
//! by round first, so a commit's writes land on a few B-tree pages instead
//! of all over an index. A stored certificate names its parents by author
//! index (a round holds one certificate per author), not by digest.
//!
//! | table | key | value |
//! |---|---|---|
//! | `committee` | `()` | names, stakes, quorum, prune depth (written by `init`) |
//! | `rules` | `()` | quorum and stakes by author index (what an insert needs) |
//! | `authors` | name | author index (committee sorted by name) |
//! | `meta` | `()` | counters and the last commit |
//! | `certs` | (round, author index) | digest, commit mark, parents (author indices), batches, signature |
//! | `nodes` | (round, digest) | author index: parent checks and lookups by digest |
//! | `sequence` | commit position | (round, author index): the global commit order |
//! | `commits` | commit number | leader, round, first position, count |
//! | `batches` | digest | author index, payload |
//! | `batches_by_author` | (author index, digest) | `()` |
//! | `unreferenced` | digest | `()`: batches no certificate references yet |
//! | `evidence` | (round, author index, conflicting digest) | the refused certificate |

use std::collections::BTreeMap;

use keel_guest::{Error, Table};
use serde::{Deserialize, Serialize};

use crate::codec::{Bytes, Digest, DigestList};

/// Most authors in a committee (author indices are `u16`).
pub const AUTHORS_MAX: usize = 1024;
/// Longest author name, in bytes.
pub const AUTHOR_NAME_BYTES_MAX: usize = 128;
/// Most batch digests one certificate may reference.
pub const BATCHES_PER_CERTIFICATE_MAX: usize = 1024;
/// Most certificates one `insert_many` takes.
pub const INSERT_MANY_CERTIFICATES_MAX: usize = 1024;
/// Longest signature, in bytes.
pub const SIGNATURE_BYTES_MAX: usize = 4096;
/// Largest batch payload, in bytes (hex doubles it in a command, which the
/// host caps at 1 MiB).
pub const BATCH_PAYLOAD_BYTES_MAX: usize = 256 << 10;
/// Cost units of a certificate with no digests. Budgets are counted in
/// units of `CERT_WEIGHT_BASE + parents + batches` per certificate: host
/// calls, decoding, hashing and JSON output all grow with the digests a
/// certificate carries, so budgets in these units hold for any committee
/// size (one unit ≈ 2–3.5 k wasm instructions, measured; see
/// tests/dag.rs `the_largest_calls_fit_half_the_default_fuel`).
pub const CERT_WEIGHT_BASE: u64 = 8;
/// Most certificates one `commit` may mark (bounds its answer).
pub const COMMIT_CERTIFICATES_MAX: usize = 10_000;
/// Most weight one `commit` may mark: about 515 certificates of an n = 50
/// committee (10 rounds of history), 2 500 of n = 4 (≈ 2 k instructions
/// per unit measured: a third of the default fuel). A larger uncommitted
/// history is refused (`commit-too-large`): commit earlier leaders first.
pub const COMMIT_WEIGHT_MAX: u64 = 30_000;
/// Certificates removed by one `prune` unless the command says otherwise.
pub const PRUNE_CERTIFICATES_DEFAULT: u64 = 10_000;
/// Most certificates one `prune` removes (whole rounds; at least one round).
pub const PRUNE_CERTIFICATES_MAX: u64 = 20_000;
/// Most weight one `prune` removes (whole rounds; at least one round).
pub const PRUNE_WEIGHT_MAX: u64 = 30_000;

/// The budget weight of a certificate with `digests` parents and batches.
pub fn weight(digests: usize) -> u64 {
    CERT_WEIGHT_BASE + digests as u64
}

impl CertRow {
    /// Its budget weight.
    pub fn weight(&self) -> u64 {
        weight(self.parents.len() + self.batches.0.len())
    }
}
/// Rounds kept below the last committed round unless configured.
pub const PRUNE_DEPTH_DEFAULT: u64 = 50;

const _: () = assert!(AUTHORS_MAX <= u16::MAX as usize + 1);
const _: () = assert!(BATCH_PAYLOAD_BYTES_MAX * 2 < 1 << 20);
const _: () = assert!(PRUNE_CERTIFICATES_DEFAULT <= PRUNE_CERTIFICATES_MAX);

/// The committee as configured (queries, digest checks).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Committee {
    /// Author names, sorted; the position is the author index.
    pub names: Vec<String>,
    /// Stake by author index.
    pub stakes: Vec<u64>,
    /// Sum of stakes.
    pub total: u64,
    /// Stake a certificate's parents must carry: floor(2 × total / 3) + 1.
    pub quorum: u64,
    /// Rounds kept below the last committed round by `prune`.
    pub prune_depth: u64,
}

/// What an insert needs from the committee, without the names.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rules {
    /// Quorum stake.
    pub quorum: u64,
    /// Stake by author index.
    pub stakes: Vec<u64>,
}

/// Counters and the last commit, updated by every command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Highest round holding a certificate (never lowered by pruning).
    pub highest_round: Option<u64>,
    /// Certificates stored now.
    pub certificates: u64,
    /// Of those, committed.
    pub committed: u64,
    /// Batches stored now.
    pub batches: u64,
    /// Of those, not referenced by any certificate.
    pub unreferenced: u64,
    /// Leaders committed so far (the next commit number).
    pub commits: u64,
    /// Certificates committed so far, pruned or not (the next position).
    pub next_position: u64,
    /// (round, digest) of the last committed leader.
    pub last_committed: Option<(u64, Digest)>,
    /// Rounds below this one have been pruned.
    pub pruned_below: u64,
    /// Certificates removed by pruning.
    pub pruned_certificates: u64,
    /// Batches removed by pruning.
    pub pruned_batches: u64,
    /// Equivocations recorded.
    pub evidence: u64,
}

/// Where a committed certificate sits in the commit order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitMark {
    /// Number of the commit (0-based) that marked it.
    pub commit: u64,
    /// Position in the global commit order (0-based).
    pub position: u64,
}

/// A stored certificate. Field order matters: [`CertHead`] decodes the
/// first two fields of the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRow {
    /// Digest of the header.
    pub digest: Digest,
    /// Set once committed.
    pub committed: Option<CommitMark>,
    /// The parents.
    pub parents: Parents,
    /// Batch digests, in the header's order.
    pub batches: DigestList,
    /// Opaque signature bytes.
    pub signature: Bytes,
}

/// The parents of a stored certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Parents {
    /// Author indices (ascending) of the parents, all in the round below:
    /// (round − 1, author) names exactly one certificate, since
    /// equivocations are never stored, so 1–3 bytes stand for a 32-byte
    /// digest (an n = 50 certificate shrinks from ~1.2 KB to ~150 bytes).
    Authors(Vec<u16>),
    /// Explicit digests, sorted: the lowest retained round's certificates,
    /// whose parents were pruned, are rewritten this way by `prune`.
    Digests(DigestList),
}

impl Parents {
    /// How many parents.
    pub fn len(&self) -> usize {
        match self {
            Parents::Authors(a) => a.len(),
            Parents::Digests(d) => d.0.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Resolves stored parents to digests, reading the round below once per
/// round (pages list certificates round by round).
#[derive(Default)]
pub struct ParentDigests {
    round: Option<u64>,
    by_author: BTreeMap<u16, Digest>,
}

impl ParentDigests {
    /// The digests (sorted) of the parents of a certificate of `round`.
    pub fn resolve(&mut self, round: u64, parents: &Parents) -> Result<Vec<Digest>, Error> {
        let authors = match parents {
            Parents::Digests(d) => return Ok(d.0.clone()),
            Parents::Authors(a) if a.is_empty() => return Ok(Vec::new()),
            Parents::Authors(a) => a,
        };
        let below = round
            .checked_sub(1)
            .ok_or_else(|| corrupt("a round-0 certificate has parents"))?;
        if self.round != Some(below) {
            self.by_author = CERT_HEADS
                .prefix(&(below,), keel_guest::Direction::Forward)
                .map(|((_, author), head)| (author, head.digest))
                .collect();
            self.round = Some(below);
        }
        let mut out = authors
            .iter()
            .map(|a| {
                self.by_author.get(a).copied().ok_or_else(|| {
                    corrupt(format!(
                        "parent of round {round} by author {a} is not stored"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_unstable();
        Ok(out)
    }
}

/// The leading fields of a [`CertRow`]: bincode encodes struct fields one
/// after the other with no framing and decoding ignores trailing bytes, so
/// this view of the `certs` table skips decoding parents and batches.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertHead {
    /// Digest of the header.
    pub digest: Digest,
    /// Set once committed.
    pub committed: Option<CommitMark>,
}

/// Where a certificate lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Its round.
    pub round: u64,
    /// Its author index.
    pub author: u16,
}

/// One commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRow {
    /// The leader's digest.
    pub leader: Digest,
    /// The leader's round.
    pub round: u64,
    /// Position of the first certificate it committed.
    pub first_position: u64,
    /// How many certificates it committed.
    pub count: u64,
}

/// A stored batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRow {
    /// Author index of its creator.
    pub author: u16,
    /// Opaque payload.
    pub payload: Bytes,
}

/// The leading field of a [`BatchRow`] (see [`CertHead`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchHead {
    /// Author index of its creator.
    pub author: u16,
}

/// A refused equivocating certificate, kept as evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceRow {
    /// Digest of the certificate already stored for (round, author).
    pub existing: Digest,
    /// Parents of the refused certificate.
    pub parents: DigestList,
    /// Batches of the refused certificate.
    pub batches: DigestList,
    /// Signature of the refused certificate.
    pub signature: Bytes,
    /// Sequence number of the command that recorded it.
    pub sequence: u64,
}

/// `committee`: the configured committee.
pub const COMMITTEE: Table<(), Committee> = Table::new("committee");
/// `rules`: quorum and stakes.
pub const RULES: Table<(), Rules> = Table::new("rules");
/// `authors`: name → author index.
pub const AUTHORS: Table<String, u16> = Table::new("authors");
/// `meta`: counters.
pub const META: Table<(), Meta> = Table::new("meta");
/// `certs`: (round, author) → certificate.
pub const CERTS: Table<(u64, u16), CertRow> = Table::new("certs");
/// `certs`, decoding only the digest and commit mark.
pub const CERT_HEADS: Table<(u64, u16), CertHead> = Table::new("certs");
/// `nodes`: (round, digest) → author. Keyed by round first so that
/// inserts append near each other (a digest-first key would scatter every
/// insert over the whole index, rewriting most of its pages per commit).
pub const NODES: Table<(u64, [u8; 32]), u16> = Table::new("nodes");
/// `nodes`, decoding no value (counting: bincode decodes `()` from zero bytes).
pub const NODE_KEYS: Table<(u64, [u8; 32]), ()> = Table::new("nodes");
/// `sequence`: position → (round, author).
pub const SEQUENCE: Table<u64, (u64, u16)> = Table::new("sequence");
/// `sequence`, decoding no value.
pub const SEQUENCE_KEYS: Table<u64, ()> = Table::new("sequence");
/// `commits`: commit number → commit.
pub const COMMITS: Table<u64, CommitRow> = Table::new("commits");
/// `batches`: digest → batch.
pub const BATCHES: Table<[u8; 32], BatchRow> = Table::new("batches");
/// `batches`, decoding only the author.
pub const BATCH_HEADS: Table<[u8; 32], BatchHead> = Table::new("batches");
/// `batches`, decoding no value.
pub const BATCH_KEYS: Table<[u8; 32], ()> = Table::new("batches");
/// `batches_by_author`: (author, digest) → ().
pub const BATCHES_BY_AUTHOR: Table<(u16, [u8; 32]), ()> = Table::new("batches_by_author");
/// `unreferenced`: batch digest → ().
pub const UNREFERENCED: Table<[u8; 32], ()> = Table::new("unreferenced");
/// `evidence`: (round, author, conflicting digest) → refused certificate.
pub const EVIDENCE: Table<(u64, u16, [u8; 32]), EvidenceRow> = Table::new("evidence");

/// An error for state that the plugin's own writes cannot produce.
pub fn corrupt(what: impl Into<String>) -> Error {
    Error::new(
        "corrupt-state",
        format!("stored DAG is inconsistent: {}", what.into()),
    )
}

fn not_configured() -> Error {
    Error::new(
        "not-configured",
        "the dag plugin has no committee: deploy it with a config such as {\"authors\": [\"a\", \"b\", \"c\", \"d\"]}",
    )
}

/// The metadata row.
pub fn meta() -> Result<Meta, Error> {
    META.try_get(&())?.ok_or_else(not_configured)
}

/// The committee row.
pub fn committee() -> Result<Committee, Error> {
    COMMITTEE.try_get(&())?.ok_or_else(not_configured)
}

/// The rules row.
pub fn rules() -> Result<Rules, Error> {
    RULES.try_get(&())?.ok_or_else(not_configured)
}

/// Most rounds a lookup by digest alone searches, downwards from the
/// highest round (one read each); give the round for older certificates.
pub const LOCATE_ROUNDS_MAX: u64 = 20_000;

/// Finds a certificate by digest: in `round` when given (one read), else
/// in the retained rounds from the highest down, at most
/// [`LOCATE_ROUNDS_MAX`] of them.
pub fn locate(digest: &Digest, round: Option<u64>, meta: &Meta) -> Option<Node> {
    let find = |round: u64| {
        NODES
            .get(&(round, digest.0))
            .map(|author| Node { round, author })
    };
    if let Some(round) = round {
        return find(round);
    }
    let highest = meta.highest_round?;
    let lowest = meta
        .pruned_below
        .max(highest.saturating_sub(LOCATE_ROUNDS_MAX - 1));
    (lowest..=highest).rev().find_map(find)
}

/// The index of the author called `name`.
pub fn author_index(name: &str) -> Result<u16, Error> {
    AUTHORS.try_get(&name.to_owned())?.ok_or_else(|| {
        Error::new(
            "unknown-author",
            format!("{name:?} is not in the committee (see the `committee` query)"),
        )
    })
}

impl Committee {
    /// The name of author `index`.
    pub fn name(&self, index: u16) -> Result<&str, Error> {
        self.names
            .get(usize::from(index))
            .map(String::as_str)
            .ok_or_else(|| corrupt(format!("author index {index} is outside the committee")))
    }
}
