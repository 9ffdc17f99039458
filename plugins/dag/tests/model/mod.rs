//! A reference model of the dag plugin, written plainly (maps and sets, no
//! storage layout), and a driver for random valid DAG growth with invalid
//! inserts mixed in. Shared by the native tests (plugins/dag/tests) and the
//! component tests (tests/dag.rs includes this file by path).

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use keel_plugin_dag::api::{
    Certificate, CertificatePage, CheckReport, CommitMark, CommitReport, CommittedCertificate,
    IndexedEquivocation, Inserted, ManyReport, Metadata, PruneReport, Refusal,
};
use keel_plugin_dag::store;
use keel_plugin_dag::{
    Bytes, Command, Digest, DigestList, NewBatch, NewCertificate, Query, Response, batch_digest,
    certificate_digest, quorum_for,
};
use proptest::prelude::*;
use serde_json::Value;

/// Blanks the messages of per-certificate refusals (the model knows codes only).
pub fn normalize(r: Result<Response, String>) -> Result<Response, String> {
    r.map(|response| match response {
        Response::InsertedMany(mut report) => {
            for r in &mut report.refused {
                r.message.clear();
            }
            Response::InsertedMany(report)
        }
        other => other,
    })
}

/// Something that runs commands and queries: the native harness or a host.
pub trait Driver {
    /// Runs a command; `Err` carries the error code.
    fn command(&mut self, command: &Command) -> Result<Response, String>;
    /// Runs a query; panics on error.
    fn query(&mut self, query: &Query) -> Value;
    /// Restarts (crash or clean) where that means something.
    fn restart(&mut self, _crash: bool) {}
}

/// A certificate in the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MCert {
    pub digest: Digest,
    pub parents: Vec<Digest>,
    pub batches: Vec<Digest>,
    pub signature: Vec<u8>,
    pub committed: Option<CommitMark>,
}

/// The reference model.
#[derive(Debug, Clone)]
pub struct Model {
    pub names: Vec<String>,
    pub stakes: Vec<u64>,
    pub quorum: u64,
    pub prune_depth: u64,
    pub certs: BTreeMap<(u64, usize), MCert>,
    pub by_digest: BTreeMap<Digest, (u64, usize)>,
    /// digest → (author, referenced)
    pub batches: BTreeMap<Digest, (usize, bool)>,
    pub commits: u64,
    pub next_position: u64,
    pub sequence: BTreeMap<u64, Digest>,
    pub last_committed: Option<(u64, Digest)>,
    pub pruned_below: u64,
    pub pruned_certificates: u64,
    pub pruned_batches: u64,
    pub evidence: BTreeSet<(u64, usize, Digest)>,
    pub highest_ever: Option<u64>,
}

impl Model {
    /// A committee of `n` equal-stake authors `v0..`.
    pub fn equal(n: usize, prune_depth: u64) -> Self {
        let names: Vec<String> = (0..n).map(|i| format!("v{i:02}")).collect();
        Self::weighted(names.into_iter().map(|n| (n, 1)).collect(), prune_depth)
    }

    /// A weighted committee (sorted by name here, as the plugin does).
    pub fn weighted(mut members: Vec<(String, u64)>, prune_depth: u64) -> Self {
        members.sort();
        let total: u64 = members.iter().map(|m| m.1).sum();
        Self {
            names: members.iter().map(|m| m.0.clone()).collect(),
            stakes: members.iter().map(|m| m.1).collect(),
            quorum: quorum_for(total),
            prune_depth,
            certs: BTreeMap::new(),
            by_digest: BTreeMap::new(),
            batches: BTreeMap::new(),
            commits: 0,
            next_position: 0,
            sequence: BTreeMap::new(),
            last_committed: None,
            pruned_below: 0,
            pruned_certificates: 0,
            pruned_batches: 0,
            evidence: BTreeSet::new(),
            highest_ever: None,
        }
    }

    /// The init configuration for this committee.
    pub fn config(&self) -> Value {
        let committee: Vec<Value> = self
            .names
            .iter()
            .zip(&self.stakes)
            .map(|(n, s)| serde_json::json!({"name": n, "stake": s}))
            .collect();
        serde_json::json!({"committee": committee, "prune_depth": self.prune_depth})
    }

    pub fn highest_round(&self) -> Option<u64> {
        self.highest_ever
    }

    fn author(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// Stake of a set of certificates (by digest).
    pub fn stake_of(&self, digests: &[Digest]) -> u64 {
        digests
            .iter()
            .filter_map(|d| self.by_digest.get(d))
            .map(|&(_, a)| self.stakes[a])
            .sum()
    }

    /// Certificates of one round, by author.
    pub fn round(&self, round: u64) -> Vec<(usize, &MCert)> {
        self.certs
            .range((round, 0)..=(round, usize::MAX))
            .map(|(k, c)| (k.1, c))
            .collect()
    }

    /// Stores a batch; mirrors `store_batch`.
    pub fn store_batch(&mut self, author: &str, payload: &[u8]) -> Result<Digest, String> {
        let a = self.author(author).ok_or("unknown-author")?;
        let d = batch_digest(author, payload);
        if self.batches.contains_key(&d) {
            return Err("duplicate".into());
        }
        self.batches.insert(d, (a, false));
        Ok(d)
    }

    /// Mirrors `insert`: the expected response or error code.
    pub fn insert(&mut self, c: &NewCertificate) -> Result<Response, String> {
        let a = self.author(&c.author).ok_or("unknown-author")?;
        let mut parents = c.parents.0.clone();
        parents.sort();
        if parents.windows(2).any(|w| w[0] == w[1]) {
            return Err("duplicate-parent".into());
        }
        let mut sorted_batches = c.batches.0.clone();
        sorted_batches.sort();
        if sorted_batches.windows(2).any(|w| w[0] == w[1]) {
            return Err("duplicate-batch".into());
        }
        let digest = certificate_digest(c.round, &c.author, &parents, &c.batches.0);
        if c.digest.is_some_and(|d| d != digest) {
            return Err("bad-digest".into());
        }
        if (c.round == 0 && self.pruned_below > 0)
            || (c.round > 0 && c.round - 1 < self.pruned_below)
        {
            return Err("round-pruned".into());
        }
        if let Some(existing) = self.certs.get(&(c.round, a)) {
            if existing.digest == digest {
                return Err("duplicate".into());
            }
            let first_report = self.evidence.insert((c.round, a, digest));
            return Ok(Response::Equivocation(
                keel_plugin_dag::api::EquivocationReport {
                    round: c.round,
                    author: c.author.clone(),
                    existing: existing.digest,
                    conflicting: digest,
                    first_report,
                },
            ));
        }
        if c.round == 0 {
            if !parents.is_empty() {
                return Err("genesis-with-parents".into());
            }
        } else {
            for p in &parents {
                match self.by_digest.get(p) {
                    None => return Err("missing-parent".into()),
                    Some(&(r, _)) if r != c.round - 1 => return Err("parent-wrong-round".into()),
                    Some(_) => {}
                }
            }
            if self.stake_of(&parents) < self.quorum {
                return Err("short-quorum".into());
            }
        }
        for b in &c.batches.0 {
            match self.batches.get(b) {
                None => return Err("missing-batch".into()),
                Some(&(ba, _)) if ba != a => return Err("batch-author-mismatch".into()),
                Some(&(_, true)) => return Err("batch-already-referenced".into()),
                Some(_) => {}
            }
        }
        for b in &c.batches.0 {
            self.batches.get_mut(b).unwrap().1 = true;
        }
        self.certs.insert(
            (c.round, a),
            MCert {
                digest,
                parents,
                batches: c.batches.0.clone(),
                signature: c.signature.0.clone(),
                committed: None,
            },
        );
        self.by_digest.insert(digest, (c.round, a));
        self.highest_ever = self.highest_ever.max(Some(c.round));
        Ok(Response::Inserted(Inserted {
            digest,
            round: c.round,
        }))
    }

    /// Mirrors `commit`.
    pub fn commit(&mut self, leader: Digest) -> Result<Response, String> {
        let &(round, a) = self.by_digest.get(&leader).ok_or("not-found")?;
        if self.certs[&(round, a)].committed.is_some() {
            return Err("already-committed".into());
        }
        if self.last_committed.is_some_and(|(r, _)| round <= r) {
            return Err("stale-leader".into());
        }
        // Every uncommitted ancestor still stored, by a plain graph search.
        let mut seen = BTreeSet::from([(round, a)]);
        let mut stack = vec![(round, a)];
        while let Some(key) = stack.pop() {
            for p in &self.certs[&key].parents {
                if let Some(&pk) = self.by_digest.get(p)
                    && self.certs[&pk].committed.is_none()
                    && seen.insert(pk)
                {
                    stack.push(pk);
                }
            }
        }
        let number = self.commits;
        let mut certificates = Vec::new();
        for key in seen {
            let position = self.next_position;
            self.next_position += 1;
            let cert = self.certs.get_mut(&key).unwrap();
            cert.committed = Some(CommitMark {
                commit: number,
                position,
            });
            self.sequence.insert(position, cert.digest);
            certificates.push(CommittedCertificate {
                position,
                round: key.0,
                author: self.names[key.1].clone(),
                digest: cert.digest,
            });
        }
        self.commits += 1;
        self.last_committed = Some((round, leader));
        Ok(Response::Committed(CommitReport {
            commit: number,
            leader,
            round,
            certificates,
        }))
    }

    /// Mirrors `prune`.
    pub fn prune(&mut self, max_certificates: Option<u64>) -> Response {
        let budget = max_certificates.unwrap_or(10_000).clamp(1, 20_000);
        let target = self
            .last_committed
            .map_or(0, |(r, _)| r.saturating_sub(self.prune_depth));
        let (mut certificates, mut batches, mut removed_weight) = (0, 0, 0);
        while self.pruned_below < target {
            let round = self.pruned_below;
            let keys: Vec<(u64, usize)> =
                self.round(round).iter().map(|(a, _)| (round, *a)).collect();
            let round_weight: u64 = self
                .round(round)
                .iter()
                .map(|(_, c)| store::weight(c.parents.len() + c.batches.len()))
                .sum();
            if certificates > 0
                && (certificates + keys.len() as u64 > budget
                    || removed_weight + round_weight > store::PRUNE_WEIGHT_MAX)
            {
                break;
            }
            removed_weight += round_weight;
            for key in keys {
                let cert = self.certs.remove(&key).unwrap();
                self.by_digest.remove(&cert.digest);
                if let Some(mark) = cert.committed {
                    self.sequence.remove(&mark.position);
                }
                for b in cert.batches {
                    if self.batches.remove(&b).is_some() {
                        batches += 1;
                    }
                }
                certificates += 1;
            }
            self.pruned_below += 1;
        }
        self.pruned_certificates += certificates;
        self.pruned_batches += batches;
        Response::Pruned(PruneReport {
            pruned_below_round: self.pruned_below,
            certificates,
            batches,
            done: self.pruned_below >= target,
        })
    }

    /// The expected `metadata` answer.
    pub fn metadata(&self) -> Metadata {
        let committed = self
            .certs
            .values()
            .filter(|c| c.committed.is_some())
            .count() as u64;
        Metadata {
            highest_round: self.highest_round(),
            certificates: self.certs.len() as u64,
            committed,
            uncommitted: self.certs.len() as u64 - committed,
            batches: self.batches.len() as u64,
            unreferenced_batches: self.batches.values().filter(|b| !b.1).count() as u64,
            last_committed_round: self.last_committed.map(|l| l.0),
            last_committed_leader: self.last_committed.map(|l| l.1),
            commits: self.commits,
            committed_total: self.next_position,
            pruned_below_round: self.pruned_below,
            pruned_certificates: self.pruned_certificates,
            pruned_batches: self.pruned_batches,
            evidence: self.evidence.len() as u64,
        }
    }

    /// The expected answer for a stored certificate.
    pub fn certificate(&self, key: (u64, usize)) -> Certificate {
        let c = &self.certs[&key];
        Certificate {
            digest: c.digest,
            round: key.0,
            author: self.names[key.1].clone(),
            parents: DigestList(c.parents.clone()),
            batches: DigestList(c.batches.clone()),
            signature: Bytes(c.signature.clone()),
            committed: c.committed,
        }
    }

    /// A valid certificate for `author` in `round` over `parents`.
    pub fn make(
        &self,
        round: u64,
        author: usize,
        parents: Vec<Digest>,
        batches: Vec<Digest>,
        sig: u64,
    ) -> NewCertificate {
        let digest = certificate_digest(round, &self.names[author], &parents, &batches);
        NewCertificate {
            round,
            author: self.names[author].clone(),
            parents: DigestList(parents),
            batches: DigestList(batches),
            signature: Bytes(sig.to_le_bytes().to_vec()),
            digest: Some(digest),
        }
    }
}

/// Reads every page of a paged certificate query.
pub fn all_pages<C: serde::de::DeserializeOwned + Clone>(
    driver: &mut dyn Driver,
    mut query: impl FnMut(Option<C>) -> Query,
) -> Vec<Certificate> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page: CertificatePage<C> =
            serde_json::from_value(driver.query(&query(after.clone()))).unwrap();
        out.extend(page.certificates);
        match page.next {
            Some(next) => after = Some(next),
            None => return out,
        }
    }
}

/// Runs the whole consistency check, page by page.
pub fn check_all(driver: &mut dyn Driver, page: Option<u64>) -> CheckReport {
    let mut resume = None;
    loop {
        let report: CheckReport = serde_json::from_value(driver.query(&Query::Check {
            resume,
            max_certificates: page,
        }))
        .unwrap();
        match report.resume {
            Some(r) if report.ok => resume = Some(r),
            _ => return report,
        }
    }
}

/// Asserts that the driver's state equals the model's, through queries.
pub fn assert_same(driver: &mut dyn Driver, model: &Model) {
    let meta: Metadata = serde_json::from_value(driver.query(&Query::Metadata)).unwrap();
    assert_eq!(meta, model.metadata(), "metadata");
    let lowest = model.pruned_below;
    for round in lowest..=model.highest_round().unwrap_or(0) {
        let got = all_pages::<String>(driver, |after| Query::ByRound {
            round,
            after,
            limit: Some(2),
        });
        let want: Vec<Certificate> = model
            .round(round)
            .iter()
            .map(|(a, _)| model.certificate((round, *a)))
            .collect();
        assert_eq!(got, want, "round {round}");
    }
    let got = all_pages::<u64>(driver, |after| Query::Committed {
        after,
        limit: Some(3),
    });
    let want: Vec<Certificate> = model
        .sequence
        .values()
        .map(|d| model.certificate(model.by_digest[d]))
        .collect();
    assert_eq!(got, want, "commit order");
    let got = all_pages::<(u64, String)>(driver, |after| Query::Uncommitted {
        after,
        limit: Some(3),
    });
    let want: Vec<Certificate> = model
        .certs
        .iter()
        .filter(|(_, c)| c.committed.is_none())
        .map(|(k, _)| model.certificate(*k))
        .collect();
    assert_eq!(got, want, "uncommitted");
    if let Some(author) = model.names.first().cloned() {
        let got = all_pages::<u64>(driver, |after| Query::ByAuthor {
            author: author.clone(),
            after,
            limit: Some(2),
        });
        let want: Vec<Certificate> = model
            .certs
            .keys()
            .filter(|k| k.1 == 0)
            .map(|k| model.certificate(*k))
            .collect();
        assert_eq!(got, want, "by author {author}");
    }
    let report = check_all(driver, Some(7));
    assert!(
        report.ok && report.complete,
        "consistency check: {report:?}"
    );
    assert_eq!(report.certificates, model.certs.len() as u64);
}

/// One step of random growth, chosen from raw numbers so that proptest can
/// shrink it.
#[derive(Debug, Clone)]
pub enum Step {
    /// Insert a valid certificate (maybe with a fresh batch).
    Insert {
        round_pick: u8,
        author_pick: u8,
        parent_mask: u64,
        batch: bool,
    },
    /// Insert certificates for several free authors of the top open round
    /// in one `insert_many`, with one defective certificate among them when
    /// `defect` is set.
    InsertMany {
        count: u8,
        parent_mask: u64,
        defect: Option<(u8, u8)>,
    },
    /// Commit some uncommitted certificate above the last committed round.
    Commit { pick: u8 },
    /// Prune with a small budget.
    Prune { budget: u8 },
    /// An insert with exactly one defect; `kind` picks which.
    Invalid { kind: u8, pick: u8 },
    /// Restart the host (crash or clean).
    Restart { crash: bool },
}

impl Model {
    /// Rounds where some author may still insert: above the pruned floor,
    /// at most one above the highest, with a quorum in the round below.
    pub fn open_rounds(&self) -> Vec<u64> {
        let top = self.highest_round().map_or(0, |h| h + 1);
        let low = if self.pruned_below == 0 {
            0
        } else {
            self.pruned_below + 1
        };
        (low..=top)
            .filter(|&r| {
                let free = self.round(r).len() < self.names.len();
                let quorum_below = r == 0 || {
                    let below: Vec<Digest> =
                        self.round(r - 1).iter().map(|(_, c)| c.digest).collect();
                    self.stake_of(&below) >= self.quorum
                };
                free && quorum_below
            })
            .collect()
    }

    pub fn pick_parents(&self, round: u64, mask: u64) -> Vec<Digest> {
        if round == 0 {
            return Vec::new();
        }
        let below = self.round(round - 1);
        let mut parents: Vec<Digest> = below
            .iter()
            .enumerate()
            .filter(|(i, _)| mask >> (i % 64) & 1 == 1)
            .map(|(_, (_, c))| c.digest)
            .collect();
        for (_, c) in &below {
            if self.stake_of(&parents) >= self.quorum {
                break;
            }
            if !parents.contains(&c.digest) {
                parents.push(c.digest);
            }
        }
        // Any order: the plugin sorts.
        parents.reverse();
        parents
    }
}

/// Applies `step` to the driver and the model and compares the answers.
pub fn apply(driver: &mut dyn Driver, model: &mut Model, step: &Step, sig: u64) {
    match *step {
        Step::Insert {
            round_pick,
            author_pick,
            parent_mask,
            batch,
        } => {
            let rounds = model.open_rounds();
            if rounds.is_empty() {
                return;
            }
            // Bias towards the top rounds, as a live DAG grows.
            let round = rounds[rounds.len() - 1 - (round_pick as usize % rounds.len().min(3))];
            let taken: BTreeSet<usize> = model.round(round).iter().map(|(a, _)| *a).collect();
            let free: Vec<usize> = (0..model.names.len())
                .filter(|a| !taken.contains(a))
                .collect();
            let author = free[author_pick as usize % free.len()];
            let mut batches = Vec::new();
            if batch {
                let payload = sig.to_be_bytes();
                let cmd = Command::StoreBatch(NewBatch {
                    author: model.names[author].clone(),
                    payload: Bytes(payload.to_vec()),
                    digest: None,
                });
                let want = model.store_batch(&model.names[author].clone(), &payload);
                let got = driver.command(&cmd);
                match (&want, &got) {
                    (Ok(d), Ok(Response::BatchStored(s))) => assert_eq!(s.digest, *d),
                    _ => assert_eq!(want.clone().err(), got.err(), "store_batch"),
                }
                if let Ok(d) = want {
                    batches.push(d);
                }
            }
            let parents = model.pick_parents(round, parent_mask);
            let cert = model.make(round, author, parents, batches, sig);
            let want = model.insert(&cert);
            assert!(
                matches!(want, Ok(Response::Inserted(_))),
                "the generator made an invalid insert: {want:?}"
            );
            assert_eq!(driver.command(&Command::Insert(cert)), want, "insert");
        }
        Step::InsertMany {
            count,
            parent_mask,
            defect,
        } => {
            let Some(&round) = model.open_rounds().last() else {
                return;
            };
            let taken: BTreeSet<usize> = model.round(round).iter().map(|(a, _)| *a).collect();
            let free: Vec<usize> = (0..model.names.len())
                .filter(|a| !taken.contains(a))
                .collect();
            let parents = model.pick_parents(round, parent_mask);
            let mut certificates: Vec<NewCertificate> = free
                .iter()
                .take(usize::from(count % 8) + 1)
                .map(|&a| model.make(round, a, parents.clone(), vec![], sig))
                .collect();
            if let Some((kind, pick)) = defect
                && let Some(bad) = invalid_insert(model, kind, pick, sig)
            {
                let at = usize::from(pick) % (certificates.len() + 1);
                certificates.insert(at, bad);
            }
            let command = Command::InsertMany { certificates };
            let want = model.apply_command(&command);
            assert_eq!(
                normalize(driver.command(&command)),
                normalize(want),
                "insert_many"
            );
        }
        Step::Commit { pick } => {
            let last = model.last_committed.map(|l| l.0);
            let candidates: Vec<Digest> = model
                .certs
                .iter()
                .filter(|(k, c)| c.committed.is_none() && last.is_none_or(|l| k.0 > l))
                .map(|(_, c)| c.digest)
                .collect();
            if candidates.is_empty() {
                return;
            }
            // Prefer low rounds so that several commits happen.
            let leader = candidates[(pick as usize % candidates.len()) / 2];
            let want = model.commit(leader);
            // Half the time with the leader's round, half searching for it.
            let round = (pick % 2 == 0).then(|| model.by_digest[&leader].0);
            assert_eq!(
                driver.command(&Command::Commit { leader, round }),
                want,
                "commit"
            );
            // Committing the same leader again is refused.
            let again = driver.command(&Command::Commit {
                leader,
                round: None,
            });
            assert_eq!(again.err().as_deref(), Some("already-committed"));
        }
        Step::Prune { budget } => {
            let max = Some(u64::from(budget % 8) + 1);
            let want = model.prune(max);
            assert_eq!(
                driver.command(&Command::Prune {
                    max_certificates: max
                }),
                Ok(want),
                "prune"
            );
        }
        Step::Invalid { kind, pick } => {
            let Some(cert) = invalid_insert(model, kind, pick, sig) else {
                return;
            };
            let want = model.insert(&cert);
            let got = driver.command(&Command::Insert(cert.clone()));
            assert_eq!(got, want, "invalid insert (kind {kind}) {cert:?}");
        }
        Step::Restart { crash } => driver.restart(crash),
    }
}

/// An insert with one defect, or `None` when the DAG is too small for it.
fn invalid_insert(model: &Model, kind: u8, pick: u8, sig: u64) -> Option<NewCertificate> {
    let stored: Vec<((u64, usize), MCert)> =
        model.certs.iter().map(|(k, c)| (*k, c.clone())).collect();
    let existing = stored.get(pick as usize % stored.len().max(1)).cloned();
    let rounds = model.open_rounds();
    let open = rounds.last().copied();
    let open_author = open.and_then(|r| {
        let taken: BTreeSet<usize> = model.round(r).iter().map(|(a, _)| *a).collect();
        (0..model.names.len()).find(|a| !taken.contains(a))
    });
    match kind % 7 {
        // A parent that does not exist.
        0 => {
            let (r, a) = (open.filter(|&r| r > 0)?, open_author?);
            let mut parents = model.pick_parents(r, u64::MAX);
            parents.push(Digest([0xEE; 32]));
            Some(model.make(r, a, parents, vec![], sig))
        }
        // Parents short of a quorum.
        1 => {
            let (r, a) = (open.filter(|&r| r > 0)?, open_author?);
            let mut parents = model.pick_parents(r, 0);
            parents.pop();
            (model.stake_of(&parents) < model.quorum)
                .then(|| model.make(r, a, parents, vec![], sig))
        }
        // Equivocation: another header for a stored (round, author).
        2 => {
            let ((r, a), c) = existing?;
            let mut batches = c.batches.clone();
            batches.push(Digest([pick; 32]));
            Some(model.make(r, a, c.parents.clone(), batches, sig))
        }
        // A wrong digest on an otherwise valid certificate.
        3 => {
            let (r, a) = (open?, open_author?);
            let mut cert = model.make(r, a, model.pick_parents(r, u64::MAX), vec![], sig);
            cert.digest = Some(Digest([pick; 32]));
            Some(cert)
        }
        // A duplicate.
        4 => {
            let ((r, a), c) = existing?;
            Some(model.make(r, a, c.parents.clone(), c.batches.clone(), sig))
        }
        // A parent from two rounds below.
        5 => {
            let (r, a) = (open.filter(|&r| r >= 2)?, open_author?);
            let mut parents = model.pick_parents(r, u64::MAX);
            let (_, old) = model.round(r - 2).first().map(|(a, c)| (*a, c.digest))?;
            parents.push(old);
            Some(model.make(r, a, parents, vec![], sig))
        }
        // A genesis certificate with a parent, or an unknown batch.
        _ => {
            let (r, a) = (open?, open_author?);
            if r == 0 {
                Some(model.make(0, a, vec![Digest([1; 32])], vec![], sig))
            } else {
                Some(model.make(
                    r,
                    a,
                    model.pick_parents(r, u64::MAX),
                    vec![Digest([2; 32])],
                    sig,
                ))
            }
        }
    }
}

impl Model {
    /// Applies any command to the model, as the plugin would.
    pub fn apply_command(&mut self, command: &Command) -> Result<Response, String> {
        match command {
            Command::StoreBatch(b) => {
                if b.digest
                    .is_some_and(|d| d != batch_digest(&b.author, &b.payload.0))
                {
                    return Err("bad-digest".into());
                }
                let digest = self.store_batch(&b.author, &b.payload.0)?;
                Ok(Response::BatchStored(keel_plugin_dag::api::BatchStored {
                    digest,
                    author: b.author.clone(),
                }))
            }
            Command::Insert(c) => self.insert(c),
            Command::InsertMany { certificates } => {
                let mut report = ManyReport::default();
                for (index, c) in (0u32..).zip(certificates) {
                    match self.insert(c) {
                        Ok(Response::Equivocation(e)) => report
                            .equivocations
                            .push(IndexedEquivocation { index, report: e }),
                        Ok(_) => report.inserted += 1,
                        Err(code) => report.refused.push(Refusal {
                            index,
                            code,
                            message: String::new(),
                        }),
                    }
                }
                Ok(Response::InsertedMany(report))
            }
            Command::Commit { leader, .. } => self.commit(*leader),
            Command::Prune { max_certificates } => Ok(self.prune(*max_certificates)),
        }
    }
}

/// A deterministic script of valid commands for `n` authors over `rounds`
/// rounds: every round each author inserts a certificate over all but one
/// certificate of the round below (every fifth one carries a fresh batch),
/// a leader is committed every second round and old rounds are pruned
/// every eighth. Returns each command with the answer the model expects.
pub fn script(n: usize, rounds: u64, prune_depth: u64) -> (Model, Vec<(Command, Response)>) {
    let mut model = Model::equal(n, prune_depth);
    let start = model.clone();
    let mut out = Vec::new();
    let push = |model: &mut Model, out: &mut Vec<(Command, Response)>, command: Command| {
        let want = model.apply_command(&command).expect("the script is valid");
        out.push((command, want));
    };
    let mut k = 0u64;
    for round in 0..rounds {
        let below: Vec<Digest> = if round == 0 {
            vec![]
        } else {
            model
                .round(round - 1)
                .iter()
                .map(|(_, c)| c.digest)
                .collect()
        };
        // Every third round arrives as one insert_many.
        let many = round % 3 == 1;
        let mut pending = Vec::new();
        for a in 0..n {
            k += 1;
            let mut parents = below.clone();
            if parents.len() > 1 && model.stake_of(&parents[1..]) >= model.quorum {
                parents.remove((round as usize + a) % parents.len());
            }
            let mut batches = vec![];
            if k.is_multiple_of(5) {
                let payload = k.to_le_bytes().to_vec();
                batches.push(batch_digest(&model.names[a], &payload));
                let b = Command::StoreBatch(NewBatch {
                    author: model.names[a].clone(),
                    payload: Bytes(payload),
                    digest: None,
                });
                push(&mut model, &mut out, b);
            }
            let cert = model.make(round, a, parents, batches, k);
            if many {
                pending.push(cert);
            } else {
                push(&mut model, &mut out, Command::Insert(cert));
            }
        }
        if many {
            push(
                &mut model,
                &mut out,
                Command::InsertMany {
                    certificates: pending,
                },
            );
        }
        if round >= 2 && round % 2 == 0 {
            let leader = model.certs[&(round, round as usize % n)].digest;
            push(
                &mut model,
                &mut out,
                Command::Commit {
                    leader,
                    round: None,
                },
            );
        }
        if round % 8 == 7 {
            push(
                &mut model,
                &mut out,
                Command::Prune {
                    max_certificates: Some(100),
                },
            );
        }
    }
    (start, out)
}

/// Strategy for one random step; `restarts` adds crash and clean restarts.
pub fn step_strategy(restarts: bool) -> BoxedStrategy<Step> {
    let restart_weight = if restarts { 1 } else { 0 };
    prop_oneof![
        6 => (any::<u8>(), any::<u8>(), any::<u64>(), prop::bool::weighted(0.2))
            .prop_map(|(round_pick, author_pick, parent_mask, batch)| Step::Insert { round_pick, author_pick, parent_mask, batch }),
        2 => (any::<u8>(), any::<u64>(), prop::option::of((any::<u8>(), any::<u8>())))
            .prop_map(|(count, parent_mask, defect)| Step::InsertMany { count, parent_mask, defect }),
        1 => any::<u8>().prop_map(|pick| Step::Commit { pick }),
        1 => any::<u8>().prop_map(|budget| Step::Prune { budget }),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(kind, pick)| Step::Invalid { kind, pick }),
        restart_weight => any::<bool>().prop_map(|crash| Step::Restart { crash }),
    ]
    .boxed()
}

/// Strategy for a committee: 1..=7 equal stakes or 1..=5 weighted authors,
/// with a prune depth of 0..=3.
pub fn committee_strategy() -> BoxedStrategy<Model> {
    prop_oneof![
        (1usize..=7, 0u64..4).prop_map(|(n, depth)| Model::equal(n, depth)),
        (prop::collection::vec(1u64..10, 1..6), 0u64..4).prop_map(|(stakes, depth)| {
            Model::weighted(
                stakes
                    .into_iter()
                    .enumerate()
                    .map(|(i, s)| (format!("w{i}"), s))
                    .collect(),
                depth,
            )
        }),
    ]
    .boxed()
}
