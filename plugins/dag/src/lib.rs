//! The dag plugin: a Narwhal-style DAG certificate store.
//!
//! A committee (authors and stakes) is fixed at `init`:
//! `{"authors": ["a", "b", "c", "d"]}` (equal stakes) or
//! `{"committee": [{"name": "a", "stake": 3}, ...]}`, plus an optional
//! `"prune_depth"` (default 50). Authors are ordered by name; that order
//! breaks ties inside a round everywhere. The quorum is
//! `floor(2 × total stake / 3) + 1` (2f + 1 for n = 3f + 1 equal stakes) and
//! `f = total − quorum`.
//!
//! Commands (JSON; digests, signatures and payloads in hex):
//! - `{"store_batch": {"author": "a", "payload": "00ff"}}` → `{"batch_stored": {"digest", "author"}}`
//! - `{"insert": {"round": 1, "author": "a", "parents": [..], "batches": [..], "signature": "..", "digest": ".."}}`
//!   → `{"inserted": {"digest", "round"}}`. The digest is computed from the
//!   header (see [`hash`]); a given `digest` must match. Refused with an
//!   error that changes nothing: `bad-digest`, `unknown-author`, `duplicate`,
//!   `missing-parent`, `parent-wrong-round`, `short-quorum`,
//!   `genesis-with-parents`, `duplicate-parent`, `missing-batch`,
//!   `batch-author-mismatch`, `batch-already-referenced`, `round-pruned`,
//!   `too-large`.
//!   **Equivocation** (another certificate stored for the same round and
//!   author) is refused too — the DAG is unchanged — but the command
//!   succeeds with `{"equivocation": {"round", "author", "existing",
//!   "conflicting", "first_report"}}` because it records the evidence, and a
//!   failed command keeps no writes. Clients must check which variant came
//!   back.
//! - `{"insert_many": {"certificates": [..]}}` → `{"inserted_many": {"inserted": 49,
//!   "refused": [{"index", "code", "message"}], "equivocations": [{"index", "report"}]}}`:
//!   the same, for up to 1024 certificates in one command (a round, a sync
//!   batch), in order (later ones may name earlier ones as parents): each is
//!   inserted, refused (nothing written for it) or reported as an
//!   equivocation; only the exceptions are listed. One command amortises the host's per-command cost and reads
//!   parents shared by several certificates once.
//! - `{"commit": {"leader": ".."}}` → `{"committed": {"commit", "leader", "round", "certificates": [{"position", "round", "author", "digest"}]}}`:
//!   the leader's uncommitted causal history in execution order (round,
//!   then author; the leader last). Leaders are committed in increasing
//!   rounds (`stale-leader`, `already-committed` otherwise).
//! - `{"prune": {"max_certificates": 10000}}` → `{"pruned": {..}}`: removes
//!   rounds below `last committed round − prune_depth` with their batches.
//!
//! Access (see [`access`]): every command sees its caller, journaled by
//! the host and the same on replay. Without a caller — a call from inside
//! the host, or a host with no principals configured (unauthenticated,
//! loopback-only development mode) — every command is trusted. With one,
//! `store_batch`, `insert` and `insert_many` insert only the caller's own
//! batches and certificates (its principal must be the `author`, a
//! committee member): `not-owner` otherwise, and an `insert_many` naming
//! another author is refused whole; `commit` and `prune` are operator-only
//! (`operator-only`). Queries are public. Refusals change nothing.
//!
//! Queries: `"committee"`, `"metadata"`, `certificate`, `by_round`,
//! `by_author`, `committed`, `uncommitted`, `causal_history`, `commits`,
//! `batch`, `batches_by_author`, `unreferenced_batches`, `evidence`, and
//! `check` (the consistency check) — see [`api::Query`].

pub mod access;
pub mod api;
pub mod codec;
pub mod hash;
mod ops;
mod queries;
pub mod store;

use keel_guest::{Error, Plugin, TableCodec};

pub use api::{Command, Config, NewBatch, NewCertificate, Query, QueryResponse, Response};
pub use codec::{Bytes, Digest, DigestList};
pub use hash::{batch_digest, certificate_digest};
pub use ops::quorum_for;
pub use queries::metadata_of;

/// The plugin.
pub struct Dag;

impl Plugin for Dag {
    const NAME: &'static str = "dag";
    const VERSION: &'static str = "1.0.0";
    const SCHEMA: u32 = 1;
    type Config = Config;
    type Command = Command;
    type Response = Response;
    type Query = Query;
    type QueryResponse = QueryResponse;

    fn init(config: Config) -> Result<(), Error> {
        ops::init(config)
    }

    fn handle(command: Command) -> Result<Response, Error> {
        access::check(keel_guest::caller().as_ref(), &command)?;
        match command {
            Command::StoreBatch(batch) => ops::store_batch(batch),
            Command::Insert(cert) => ops::insert(cert),
            Command::InsertMany { certificates } => ops::insert_many(certificates),
            Command::Commit { leader, round } => ops::commit(leader, round),
            Command::Prune { max_certificates } => ops::prune(max_certificates),
        }
    }

    fn query(request: Query) -> Result<QueryResponse, Error> {
        queries::query(request)
    }

    /// One codec per table name, with the full value type where several
    /// typed views share a table (`certs`, `nodes`, `sequence`, `batches`).
    fn tables() -> Vec<TableCodec> {
        use store::*;
        vec![
            COMMITTEE.codec(),
            RULES.codec(),
            AUTHORS.codec(),
            META.codec(),
            CERTS.codec(),
            NODES.codec(),
            SEQUENCE.codec(),
            COMMITS.codec(),
            BATCHES.codec(),
            BATCHES_BY_AUTHOR.codec(),
            UNREFERENCED.codec(),
            EVIDENCE.codec(),
        ]
    }
}

// Natively (tests, benchmarks) the crate is a library: the component
// exports exist only in the wasm build (their names do not link natively).
#[cfg(target_arch = "wasm32")]
keel_guest::export!(Dag);
