//! The JSON API: configuration, commands, queries and their answers.
//! Digests, signatures and payloads are lowercase hex strings.

use serde::{Deserialize, Serialize};

use crate::codec::{Bytes, Digest, DigestList};

/// One committee member with its stake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Author name (e.g. a public key in hex), 1..=128 bytes.
    pub name: String,
    /// Stake, at least 1.
    pub stake: u64,
}

/// `init` configuration: exactly one of `authors` (equal stakes) or
/// `committee` (weighted). `{"authors": ["a", "b", "c", "d"], "prune_depth": 50}`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Author names, each with stake 1.
    #[serde(default)]
    pub authors: Option<Vec<String>>,
    /// Authors with their stakes.
    #[serde(default)]
    pub committee: Option<Vec<Member>>,
    /// Rounds `prune` keeps below the last committed round (default 50).
    #[serde(default)]
    pub prune_depth: Option<u64>,
}

/// A certificate to insert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCertificate {
    /// Round (0 is genesis).
    pub round: u64,
    /// Author name.
    pub author: String,
    /// Digests of certificates of round − 1 (any order; stored sorted).
    #[serde(default)]
    pub parents: DigestList,
    /// Digests of batches created by the same author.
    #[serde(default)]
    pub batches: DigestList,
    /// Opaque signature bytes (not verified here).
    #[serde(default)]
    pub signature: Bytes,
    /// The digest the client computed; checked when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
}

/// A batch to store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewBatch {
    /// Author name of its creator.
    pub author: String,
    /// Opaque payload (transactions).
    #[serde(default)]
    pub payload: Bytes,
    /// The digest the client computed; checked when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
}

/// A state-changing command.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// `{"store_batch": {"author": "a", "payload": "00ff"}}`
    StoreBatch(NewBatch),
    /// `{"insert": {"round": 1, "author": "a", "parents": [..], "batches": [..], "signature": "..", "digest": ".."}}`
    Insert(NewCertificate),
    /// `{"insert_many": {"certificates": [{..}, ..]}}`: each certificate is
    /// inserted (in order, so later ones may name earlier ones as parents)
    /// or refused on its own; one answer per certificate.
    InsertMany {
        /// The certificates (at most 1024).
        certificates: Vec<NewCertificate>,
    },
    /// `{"commit": {"leader": "<digest>", "round": 12}}`
    Commit {
        /// Digest of the leader certificate.
        leader: Digest,
        /// The leader's round: optional, saves searching for it (see
        /// [`crate::store::LOCATE_ROUNDS_MAX`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        round: Option<u64>,
    },
    /// `{"prune": {}}` or `{"prune": {"max_certificates": 5000}}`
    Prune {
        /// Stop after the round that reaches this many removals (default 10 000).
        #[serde(default)]
        max_certificates: Option<u64>,
    },
}

/// What `store_batch` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchStored {
    /// The batch's digest.
    pub digest: Digest,
    /// Its author.
    pub author: String,
}

/// What a successful `insert` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inserted {
    /// The certificate's digest.
    pub digest: Digest,
    /// Its round.
    pub round: u64,
}

/// What an `insert` that equivocates answers: the certificate was refused
/// (the DAG is unchanged) and the evidence recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EquivocationReport {
    /// The round.
    pub round: u64,
    /// The equivocating author.
    pub author: String,
    /// The certificate already stored for (round, author).
    pub existing: Digest,
    /// The refused one.
    pub conflicting: Digest,
    /// False when this exact evidence was recorded before.
    pub first_report: bool,
}

/// One certificate in a commit's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedCertificate {
    /// Position in the global commit order.
    pub position: u64,
    /// Round.
    pub round: u64,
    /// Author.
    pub author: String,
    /// Digest.
    pub digest: Digest,
}

/// What `commit` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitReport {
    /// Commit number (0-based).
    pub commit: u64,
    /// The leader.
    pub leader: Digest,
    /// The leader's round.
    pub round: u64,
    /// The newly committed certificates in execution order (round, then
    /// author); the leader is last.
    pub certificates: Vec<CommittedCertificate>,
}

/// What `prune` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneReport {
    /// Rounds below this one are now pruned.
    pub pruned_below_round: u64,
    /// Certificates removed by this command.
    pub certificates: u64,
    /// Batches removed by this command.
    pub batches: u64,
    /// False when the budget stopped it early: run `prune` again.
    pub done: bool,
}

/// A certificate of `insert_many` that was refused; nothing was written
/// for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Its position in the command's list (0-based).
    pub index: u32,
    /// Why, as `insert` would have answered it.
    pub code: String,
    /// What to do about it.
    pub message: String,
}

/// A certificate of `insert_many` refused as an equivocation (evidence
/// recorded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedEquivocation {
    /// Its position in the command's list (0-based).
    pub index: u32,
    /// The evidence.
    pub report: EquivocationReport,
}

/// What `insert_many` answers: only the exceptions are listed, so that the
/// answer (which the host journals) stays small; every certificate not
/// listed was inserted, with the digest the client computed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ManyReport {
    /// Certificates inserted.
    pub inserted: u32,
    /// Certificates refused, in order.
    pub refused: Vec<Refusal>,
    /// Certificates refused as equivocations, in order.
    pub equivocations: Vec<IndexedEquivocation>,
}

/// What a command answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// `{"inserted_many": {"inserted": 49, "refused": [{"index", "code", "message"}], "equivocations": [{"index", "report"}]}}`
    InsertedMany(ManyReport),
    /// `{"batch_stored": {..}}`
    BatchStored(BatchStored),
    /// `{"inserted": {"digest": .., "round": ..}}`
    Inserted(Inserted),
    /// `{"equivocation": {..}}`: refused, evidence recorded.
    Equivocation(EquivocationReport),
    /// `{"committed": {..}}`
    Committed(CommitReport),
    /// `{"pruned": {..}}`
    Pruned(PruneReport),
}

/// Where to resume a paged consistency check: pass back the `resume` of
/// the previous answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckResume {
    /// The next round to check.
    pub round: u64,
    /// Certificates checked so far.
    pub certificates: u64,
    /// Committed certificates seen so far.
    pub committed: u64,
    /// Batch references seen so far.
    pub batch_references: u64,
}

/// A read-only request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Query {
    /// `"committee"`: members, stakes, quorum, f.
    Committee,
    /// `"metadata"`: counters and the last commit.
    Metadata,
    /// `{"certificate": {"digest": "..", "round": 3}}` (null when absent).
    Certificate {
        /// Its digest.
        digest: Digest,
        /// Its round: optional, saves searching for it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        round: Option<u64>,
    },
    /// `{"by_round": {"round": 3, "after": "b", "limit": 100}}`; `after` is an author.
    ByRound {
        /// The round.
        round: u64,
        /// Resume after this author.
        #[serde(default)]
        after: Option<String>,
        /// Page size (default 100, at most 1000).
        #[serde(default)]
        limit: Option<u32>,
    },
    /// `{"by_author": {"author": "a", "after": 10, "limit": 100}}`; `after` is a round.
    ByAuthor {
        /// The author.
        author: String,
        /// Resume after this round.
        #[serde(default)]
        after: Option<u64>,
        /// Page size (default 100, at most 1000).
        #[serde(default)]
        limit: Option<u32>,
    },
    /// `{"committed": {"after": 41, "limit": 100}}`: in commit order; `after` is a position.
    Committed {
        /// Resume after this position.
        #[serde(default)]
        after: Option<u64>,
        /// Page size (default 100, at most 1000).
        #[serde(default)]
        limit: Option<u32>,
    },
    /// `{"uncommitted": {"after": [3, "b"], "limit": 100}}`: by round then author.
    Uncommitted {
        /// Resume after this (round, author).
        #[serde(default)]
        after: Option<(u64, String)>,
        /// Page size (default 100, at most 1000).
        #[serde(default)]
        limit: Option<u32>,
    },
    /// `{"causal_history": {"digest": "..", "limit": 1000}}`: the certificate
    /// and its stored ancestors, by round then author.
    CausalHistory {
        /// The certificate.
        digest: Digest,
        /// Its round: optional, saves searching for it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        round: Option<u64>,
        /// Most certificates listed (default 1000, at most 10 000).
        #[serde(default)]
        limit: Option<u32>,
    },
    /// `{"commits": {"after": 3, "limit": 100}}`: the commit log.
    Commits {
        /// Resume after this commit number.
        #[serde(default)]
        after: Option<u64>,
        /// Page size (default 100, at most 1000).
        #[serde(default)]
        limit: Option<u32>,
    },
    /// `{"batch": {"digest": ".."}}` (null when absent).
    Batch {
        /// Its digest.
        digest: Digest,
    },
    /// `{"batches_by_author": {"author": "a", "after": "..", "limit": 100}}`
    BatchesByAuthor {
        /// The author.
        author: String,
        /// Resume after this digest.
        #[serde(default)]
        after: Option<Digest>,
        /// Page size (default 100, at most 1000).
        #[serde(default)]
        limit: Option<u32>,
    },
    /// `{"unreferenced_batches": {"after": "..", "limit": 100}}`
    UnreferencedBatches {
        /// Resume after this digest.
        #[serde(default)]
        after: Option<Digest>,
        /// Page size (default 100, at most 1000).
        #[serde(default)]
        limit: Option<u32>,
    },
    /// `{"evidence": {"after": [3, "b", ".."], "limit": 100}}`: recorded equivocations.
    Evidence {
        /// Resume after this (round, author, conflicting digest).
        #[serde(default)]
        after: Option<(u64, String, Digest)>,
        /// Page size (default 100, at most 1000).
        #[serde(default)]
        limit: Option<u32>,
    },
    /// `{"check": {}}`: verifies the stored DAG; pages of whole rounds.
    Check {
        /// Resume a check (the previous answer's `resume`).
        #[serde(default)]
        resume: Option<CheckResume>,
        /// Most certificates per page (at most 20 000); pages also stop at a weight
        /// budget, so large committees get fewer certificates per page.
        #[serde(default)]
        max_certificates: Option<u64>,
    },
}

/// Commit status of a stored certificate.
pub use crate::store::CommitMark;

/// A stored certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// Digest.
    pub digest: Digest,
    /// Round.
    pub round: u64,
    /// Author.
    pub author: String,
    /// Parents, sorted.
    pub parents: DigestList,
    /// Batches.
    pub batches: DigestList,
    /// Signature.
    pub signature: Bytes,
    /// Commit number and position once committed.
    pub committed: Option<CommitMark>,
}

/// A page of certificates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificatePage<C> {
    /// The certificates.
    pub certificates: Vec<Certificate>,
    /// Pass as `after` for the next page; null at the end.
    pub next: Option<C>,
}

/// A committee member in the `committee` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitteeInfo {
    /// Members sorted by name (the author order used by commits).
    pub members: Vec<Member>,
    /// Sum of stakes.
    pub total_stake: u64,
    /// floor(2 × total / 3) + 1: the stake parents must carry.
    pub quorum: u64,
    /// total − quorum: the faulty stake tolerated (f for n = 3f + 1 equal stakes).
    pub f: u64,
    /// Rounds `prune` keeps below the last committed round.
    pub prune_depth: u64,
}

/// The `metadata` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Highest round holding a certificate.
    pub highest_round: Option<u64>,
    /// Certificates stored.
    pub certificates: u64,
    /// Of those, committed.
    pub committed: u64,
    /// Of those, not committed.
    pub uncommitted: u64,
    /// Batches stored.
    pub batches: u64,
    /// Of those, referenced by no certificate.
    pub unreferenced_batches: u64,
    /// Round of the last committed leader.
    pub last_committed_round: Option<u64>,
    /// The last committed leader.
    pub last_committed_leader: Option<Digest>,
    /// Commits so far.
    pub commits: u64,
    /// Certificates committed so far, including pruned ones.
    pub committed_total: u64,
    /// Rounds below this one are pruned.
    pub pruned_below_round: u64,
    /// Certificates removed by pruning.
    pub pruned_certificates: u64,
    /// Batches removed by pruning.
    pub pruned_batches: u64,
    /// Equivocations recorded.
    pub evidence: u64,
}

/// One entry of the commit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitInfo {
    /// Commit number.
    pub commit: u64,
    /// The leader.
    pub leader: Digest,
    /// The leader's round.
    pub round: u64,
    /// Position of its first certificate.
    pub first_position: u64,
    /// Certificates it committed.
    pub count: u64,
}

/// A stored batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// Digest.
    pub digest: Digest,
    /// Author.
    pub author: String,
    /// Payload.
    pub payload: Bytes,
    /// Whether a certificate references it.
    pub referenced: bool,
}

/// A page of batch digests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchPage {
    /// The digests.
    pub batches: Vec<Digest>,
    /// Pass as `after` for the next page; null at the end.
    pub next: Option<Digest>,
}

/// One recorded equivocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// Round.
    pub round: u64,
    /// Author.
    pub author: String,
    /// The stored certificate's digest.
    pub existing: Digest,
    /// The refused certificate.
    pub conflicting: Certificate,
    /// Sequence of the command that recorded it.
    pub sequence: u64,
}

/// A page of evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidencePage {
    /// The evidence.
    pub evidence: Vec<Evidence>,
    /// Pass as `after` for the next page; null at the end.
    pub next: Option<(u64, String, Digest)>,
}

/// A page of the commit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitPage {
    /// The commits.
    pub commits: Vec<CommitInfo>,
    /// Pass as `after` for the next page; null at the end.
    pub next: Option<u64>,
}

/// The first problem a consistency check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// Stable code: `missing-parent`, `short-quorum`, `parent-wrong-round`,
    /// `committed-not-closed`, `digest-mismatch`, `index-mismatch`,
    /// `sequence-mismatch`, `missing-batch`, `count-mismatch`, ...
    pub code: String,
    /// What is wrong, where.
    pub message: String,
    /// Round of the certificate at fault, if one is.
    pub round: Option<u64>,
    /// Its digest.
    pub digest: Option<Digest>,
}

/// The `check` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    /// No violation found so far (and, when `complete`, none at all).
    pub ok: bool,
    /// The first violation.
    pub violation: Option<Violation>,
    /// Certificates checked, this page and earlier ones.
    pub certificates: u64,
    /// Whether the whole DAG (and the totals) has been checked.
    pub complete: bool,
    /// When not complete and ok: pass as `resume` to continue.
    pub resume: Option<CheckResume>,
}

/// What a query answers (the shape depends on the query).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum QueryResponse {
    /// `committee`
    Committee(CommitteeInfo),
    /// `metadata`
    Metadata(Metadata),
    /// `certificate`
    Certificate(Option<Certificate>),
    /// `by_round`
    ByRound(CertificatePage<String>),
    /// `by_author`, `committed`
    ByNumber(CertificatePage<u64>),
    /// `uncommitted`
    Uncommitted(CertificatePage<(u64, String)>),
    /// `causal_history`
    History {
        /// The certificates, by round then author.
        certificates: Vec<Certificate>,
        /// True when `limit` cut the list.
        truncated: bool,
    },
    /// `commits`
    Commits(CommitPage),
    /// `batch`
    Batch(Option<Batch>),
    /// `batches_by_author`, `unreferenced_batches`
    Batches(BatchPage),
    /// `evidence`
    Evidence(EvidencePage),
    /// `check`
    Check(CheckReport),
}
