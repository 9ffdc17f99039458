//! Commands: init, store a batch, insert a certificate, commit a leader,
//! prune. Every refusal is an `Err` (the host discards the command's
//! writes), except equivocation, which must leave evidence behind and so
//! answers `Ok` with an `equivocation` response.

use std::collections::{BTreeMap, BTreeSet};

use keel_guest::Error;

use crate::api::{
    BatchStored, CommitReport, CommittedCertificate, Config, EquivocationReport,
    IndexedEquivocation, Inserted, ManyReport, NewBatch, NewCertificate, PruneReport, Refusal,
    Response,
};
use crate::codec::{Digest, DigestList};
use crate::hash::{batch_digest, certificate_digest_sorted};
use crate::store::*;

/// Stake a certificate's parents must carry for a committee of `total`
/// stake: floor(2 × total / 3) + 1 (with equal stakes and n = 3f + 1 that is
/// 2f + 1; any two quorums then share more than total − quorum stake).
pub fn quorum_for(total: u64) -> u64 {
    (u128::from(total) * 2 / 3) as u64 + 1
}

pub(crate) fn init(config: Config) -> Result<(), Error> {
    let mut members: Vec<(String, u64)> = match (config.authors, config.committee) {
        (Some(names), None) => names.into_iter().map(|n| (n, 1)).collect(),
        (None, Some(members)) => members.into_iter().map(|m| (m.name, m.stake)).collect(),
        _ => {
            return Err(Error::invalid(
                "give exactly one of `authors` (equal stakes) or `committee` ([{\"name\": .., \"stake\": ..}])",
            ));
        }
    };
    if members.is_empty() || members.len() > AUTHORS_MAX {
        return Err(Error::invalid(format!(
            "a committee has 1..={AUTHORS_MAX} authors, not {}",
            members.len()
        )));
    }
    members.sort();
    let mut total: u64 = 0;
    for (i, (name, stake)) in members.iter().enumerate() {
        if name.is_empty() || name.len() > AUTHOR_NAME_BYTES_MAX {
            return Err(Error::invalid(format!(
                "author names are 1..={AUTHOR_NAME_BYTES_MAX} bytes, {name:?} is not"
            )));
        }
        if i > 0 && members[i - 1].0 == *name {
            return Err(Error::invalid(format!(
                "author {name:?} appears twice in the committee"
            )));
        }
        if *stake == 0 {
            return Err(Error::invalid(format!("author {name:?} has zero stake")));
        }
        total = total
            .checked_add(*stake)
            .ok_or_else(|| Error::invalid("the committee's total stake overflows u64"))?;
    }
    let quorum = quorum_for(total);
    let (names, stakes): (Vec<String>, Vec<u64>) = members.into_iter().unzip();
    for (i, name) in names.iter().enumerate() {
        AUTHORS.put(name, &(i as u16));
    }
    RULES.put(
        &(),
        &Rules {
            quorum,
            stakes: stakes.clone(),
        },
    );
    COMMITTEE.put(
        &(),
        &Committee {
            names,
            stakes,
            total,
            quorum,
            prune_depth: config.prune_depth.unwrap_or(PRUNE_DEPTH_DEFAULT),
        },
    );
    META.put(&(), &Meta::default());
    Ok(())
}

fn checked_inc(n: &mut u64, by: u64, what: &str) -> Result<(), Error> {
    *n = n
        .checked_add(by)
        .ok_or_else(|| Error::new("overflow", format!("the {what} counter would overflow")))?;
    Ok(())
}

fn checked_dec(n: &mut u64, by: u64, what: &str) -> Result<(), Error> {
    *n = n
        .checked_sub(by)
        .ok_or_else(|| corrupt(format!("the {what} counter would go below zero")))?;
    Ok(())
}

pub(crate) fn store_batch(batch: NewBatch) -> Result<Response, Error> {
    let NewBatch {
        author,
        payload,
        digest,
    } = batch;
    if payload.0.len() > BATCH_PAYLOAD_BYTES_MAX {
        return Err(Error::new(
            "too-large",
            format!(
                "a batch payload is at most {BATCH_PAYLOAD_BYTES_MAX} bytes, not {}",
                payload.0.len()
            ),
        ));
    }
    let index = author_index(&author)?;
    let computed = batch_digest(&author, &payload.0);
    if let Some(given) = digest
        && given != computed
    {
        return Err(Error::new(
            "bad-digest",
            format!("the batch's digest is {computed}, not the {given} given"),
        ));
    }
    if BATCH_HEADS.contains(&computed.0) {
        return Err(Error::new(
            "duplicate",
            format!("batch {computed} is already stored"),
        ));
    }
    let mut meta = meta()?;
    BATCHES.put(
        &computed.0,
        &BatchRow {
            author: index,
            payload,
        },
    );
    BATCHES_BY_AUTHOR.put(&(index, computed.0), &());
    UNREFERENCED.put(&computed.0, &());
    checked_inc(&mut meta.batches, 1, "batch")?;
    checked_inc(&mut meta.unreferenced, 1, "unreferenced batch")?;
    META.put(&(), &meta);
    Ok(Response::BatchStored(BatchStored {
        digest: computed,
        author,
    }))
}

fn round_pruned(round: u64, pruned_below: u64) -> Error {
    Error::new(
        "round-pruned",
        format!(
            "round {round} cannot be inserted: rounds below {pruned_below} are pruned, so its parents cannot be checked"
        ),
    )
}

/// What inserts within one command share: the metadata (read once, written
/// once), the rules, and caches of author indices and of nodes (parents
/// shared by a round's certificates are read from storage once).
pub(crate) struct InsertContext {
    meta: Meta,
    rules: Option<Rules>,
    authors: BTreeMap<String, u16>,
    nodes: BTreeMap<Digest, Node>,
    meta_changed: bool,
}

impl InsertContext {
    pub(crate) fn load() -> Result<Self, Error> {
        Ok(Self {
            meta: meta()?,
            rules: None,
            authors: BTreeMap::new(),
            nodes: BTreeMap::new(),
            meta_changed: false,
        })
    }

    /// Writes the metadata if an insert changed it.
    pub(crate) fn finish(self) {
        if self.meta_changed {
            META.put(&(), &self.meta);
        }
    }

    fn author(&mut self, name: &str) -> Result<u16, Error> {
        if let Some(&index) = self.authors.get(name) {
            return Ok(index);
        }
        let index = author_index(name)?;
        self.authors.insert(name.to_owned(), index);
        Ok(index)
    }

    fn rules(&mut self) -> Result<&Rules, Error> {
        if self.rules.is_none() {
            self.rules = Some(rules()?);
        }
        Ok(self.rules.as_ref().expect("loaded above"))
    }

    /// The node of a parent expected in `round`: from the cache, else one
    /// read; on a miss, searches the other rounds only to tell a parent in
    /// the wrong round from a missing one.
    fn parent(&mut self, digest: &Digest, round: u64) -> Result<Node, Error> {
        if let Some(node) = self.nodes.get(digest)
            && node.round == round
        {
            return Ok(*node);
        }
        if let Some(author) = NODES.get(&(round, digest.0)) {
            let node = Node { round, author };
            self.nodes.insert(*digest, node);
            return Ok(node);
        }
        Err(match locate(digest, None, &self.meta) {
            Some(node) => Error::new(
                "parent-wrong-round",
                format!(
                    "parent {digest} is in round {}, but parents of a round-{} certificate must be in round {round}",
                    node.round,
                    round + 1
                ),
            ),
            None => Error::new(
                "missing-parent",
                format!(
                    "parent {digest} of this round-{} certificate is not stored",
                    round + 1
                ),
            ),
        })
    }

    /// Validates and stores one certificate. An `Err` is a refusal that
    /// wrote nothing (every check runs before the first write); an
    /// equivocation writes its evidence and answers `Ok`.
    pub(crate) fn insert(&mut self, cert: NewCertificate) -> Result<Response, Error> {
        let NewCertificate {
            round,
            author,
            mut parents,
            batches,
            signature,
            digest,
        } = cert;
        if parents.0.len() > AUTHORS_MAX || batches.0.len() > BATCHES_PER_CERTIFICATE_MAX {
            return Err(Error::new(
                "too-large",
                format!(
                    "a certificate has at most {AUTHORS_MAX} parents and {BATCHES_PER_CERTIFICATE_MAX} batches, not {} and {}",
                    parents.0.len(),
                    batches.0.len()
                ),
            ));
        }
        if signature.0.len() > SIGNATURE_BYTES_MAX {
            return Err(Error::new(
                "too-large",
                format!(
                    "a signature is at most {SIGNATURE_BYTES_MAX} bytes, not {}",
                    signature.0.len()
                ),
            ));
        }
        let author_ix = self.author(&author)?;
        parents.0.sort_unstable();
        if let Some(w) = parents.0.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::new(
                "duplicate-parent",
                format!("parent {} is listed twice", w[0]),
            ));
        }
        if batches.0.len() > 1 {
            let mut sorted = batches.0.clone();
            sorted.sort_unstable();
            if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
                return Err(Error::new(
                    "duplicate-batch",
                    format!("batch {} is listed twice", w[0]),
                ));
            }
        }
        let computed = certificate_digest_sorted(round, &author, &parents.0, &batches.0);
        if let Some(given) = digest
            && given != computed
        {
            return Err(Error::new(
                "bad-digest",
                format!("the header's digest is {computed}, not the {given} given"),
            ));
        }
        let pruned_below = self.meta.pruned_below;
        if (round == 0 && pruned_below > 0) || (round > 0 && round - 1 < pruned_below) {
            return Err(round_pruned(round, pruned_below));
        }
        if let Some(existing) = CERT_HEADS.get(&(round, author_ix)) {
            if existing.digest == computed {
                return Err(Error::new(
                    "duplicate",
                    format!(
                        "certificate {computed} (round {round}, author {author}) is already stored"
                    ),
                ));
            }
            return record_equivocation(
                &mut self.meta,
                &mut self.meta_changed,
                Equivocation {
                    round,
                    author,
                    author_ix,
                    existing: existing.digest,
                    conflicting: computed,
                    parents,
                    batches,
                    signature,
                },
            );
        }
        let mut parent_authors = Vec::with_capacity(parents.0.len());
        if round == 0 {
            if !parents.0.is_empty() {
                return Err(Error::new(
                    "genesis-with-parents",
                    "a round-0 (genesis) certificate has no parents",
                ));
            }
        } else {
            let mut stake: u64 = 0;
            for p in &parents.0 {
                let node = self.parent(p, round - 1)?;
                let weight = self
                    .rules()?
                    .stakes
                    .get(usize::from(node.author))
                    .copied()
                    .ok_or_else(|| {
                        corrupt(format!(
                            "parent {p} has an author index outside the committee"
                        ))
                    })?;
                stake = stake.saturating_add(weight);
                parent_authors.push(node.author);
            }
            parent_authors.sort_unstable();
            let quorum = self.rules()?.quorum;
            if stake < quorum {
                return Err(Error::new(
                    "short-quorum",
                    format!(
                        "the parents carry {stake} stake, a quorum is {quorum} (floor(2 x total / 3) + 1)"
                    ),
                ));
            }
        }
        for b in &batches.0 {
            let head = BATCH_HEADS
                .get(&b.0)
                .ok_or_else(|| Error::new("missing-batch", format!("batch {b} is not stored")))?;
            if head.author != author_ix {
                return Err(Error::new(
                    "batch-author-mismatch",
                    format!("batch {b} was created by another author than {author}"),
                ));
            }
            if !UNREFERENCED.contains(&b.0) {
                return Err(Error::new(
                    "batch-already-referenced",
                    format!("batch {b} is already referenced by another certificate"),
                ));
            }
        }
        // Every check passed: write.
        for b in &batches.0 {
            UNREFERENCED.remove(&b.0);
        }
        checked_dec(
            &mut self.meta.unreferenced,
            batches.0.len() as u64,
            "unreferenced batch",
        )?;
        let node = Node {
            round,
            author: author_ix,
        };
        NODES.put(&(round, computed.0), &author_ix);
        self.nodes.insert(computed, node);
        CERTS.put(
            &(round, author_ix),
            &CertRow {
                digest: computed,
                committed: None,
                parents: Parents::Authors(parent_authors),
                batches,
                signature,
            },
        );
        checked_inc(&mut self.meta.certificates, 1, "certificate")?;
        self.meta.highest_round = Some(self.meta.highest_round.map_or(round, |h| h.max(round)));
        self.meta_changed = true;
        Ok(Response::Inserted(Inserted {
            digest: computed,
            round,
        }))
    }
}

pub(crate) fn insert(cert: NewCertificate) -> Result<Response, Error> {
    let mut ctx = InsertContext::load()?;
    let response = ctx.insert(cert)?;
    ctx.finish();
    Ok(response)
}

pub(crate) fn insert_many(certificates: Vec<NewCertificate>) -> Result<Response, Error> {
    if certificates.len() > INSERT_MANY_CERTIFICATES_MAX {
        return Err(Error::new(
            "too-large",
            format!(
                "insert_many takes at most {INSERT_MANY_CERTIFICATES_MAX} certificates, not {}",
                certificates.len()
            ),
        ));
    }
    let mut ctx = InsertContext::load()?;
    let mut report = ManyReport::default();
    for (index, cert) in (0u32..).zip(certificates) {
        match ctx.insert(cert) {
            Ok(Response::Equivocation(e)) => report
                .equivocations
                .push(IndexedEquivocation { index, report: e }),
            Ok(_) => report.inserted += 1,
            Err(e) => report.refused.push(Refusal {
                index,
                code: e.code,
                message: e.message,
            }),
        }
    }
    ctx.finish();
    Ok(Response::InsertedMany(report))
}

struct Equivocation {
    round: u64,
    author: String,
    author_ix: u16,
    existing: Digest,
    conflicting: Digest,
    parents: DigestList,
    batches: DigestList,
    signature: crate::codec::Bytes,
}

fn record_equivocation(
    meta: &mut Meta,
    meta_changed: &mut bool,
    e: Equivocation,
) -> Result<Response, Error> {
    let key = (e.round, e.author_ix, e.conflicting.0);
    let first_report = !EVIDENCE.contains(&key);
    if first_report {
        EVIDENCE.put(
            &key,
            &EvidenceRow {
                existing: e.existing,
                parents: e.parents,
                batches: e.batches,
                signature: e.signature,
                sequence: keel_guest::sequence(),
            },
        );
        checked_inc(&mut meta.evidence, 1, "evidence")?;
        *meta_changed = true;
        keel_guest::log(
            keel_guest::Level::Warn,
            &format!(
                "equivocation by {} in round {}: {} and {}",
                e.author, e.round, e.existing, e.conflicting
            ),
        );
    }
    Ok(Response::Equivocation(EquivocationReport {
        round: e.round,
        author: e.author,
        existing: e.existing,
        conflicting: e.conflicting,
        first_report,
    }))
}

/// The author indices of stored parents; none for explicit digests (the
/// lowest retained round, whose parents are pruned).
pub(crate) fn parent_authors(parents: &Parents) -> BTreeSet<u16> {
    match parents {
        Parents::Authors(a) => a.iter().copied().collect(),
        Parents::Digests(_) => BTreeSet::new(),
    }
}

pub(crate) fn commit(leader: Digest, round_hint: Option<u64>) -> Result<Response, Error> {
    let mut meta = meta()?;
    let node = locate(&leader, round_hint, &meta)
        .ok_or_else(|| Error::not_found(format!("no certificate {leader} is stored")))?;
    let leader_row = CERTS
        .get(&(node.round, node.author))
        .ok_or_else(|| corrupt(format!("certificate {leader} is indexed but not stored")))?;
    if let Some(mark) = leader_row.committed {
        return Err(Error::new(
            "already-committed",
            format!(
                "certificate {leader} was committed by commit #{} (position {})",
                mark.commit, mark.position
            ),
        ));
    }
    if let Some((last_round, last_leader)) = meta.last_committed
        && node.round <= last_round
    {
        return Err(Error::new(
            "stale-leader",
            format!(
                "leader {leader} is in round {}, but leader {last_leader} of round {last_round} is already committed: \
                 leaders are committed in increasing rounds",
                node.round
            ),
        ));
    }
    // Walk the uncommitted causal history round by round, downwards. The
    // committed set is closed under parents, so a committed certificate's
    // history need not be visited.
    let mut levels: Vec<Vec<((u64, u16), CertRow)>> = Vec::new();
    let mut count = 1usize;
    let mut total_weight = leader_row.weight();
    let mut frontier = parent_authors(&leader_row.parents);
    levels.push(vec![((node.round, node.author), leader_row)]);
    let mut round = node.round;
    while !frontier.is_empty() && round > meta.pruned_below {
        round -= 1;
        let mut level = Vec::new();
        let mut next = BTreeSet::new();
        for &author in &frontier {
            let key = (round, author);
            let row = CERTS.get(&key).ok_or_else(|| {
                corrupt(format!(
                    "a parent in round {round} by author {author} is not stored"
                ))
            })?;
            if row.committed.is_some() {
                continue;
            }
            next.extend(parent_authors(&row.parents));
            total_weight += row.weight();
            level.push((key, row));
        }
        count += level.len();
        if count > COMMIT_CERTIFICATES_MAX || total_weight > COMMIT_WEIGHT_MAX {
            return Err(Error::new(
                "commit-too-large",
                format!(
                    "leader {leader} has more uncommitted history than one commit may mark \
                     ({COMMIT_CERTIFICATES_MAX} certificates or weight {COMMIT_WEIGHT_MAX}, reached {count} and \
                     {total_weight} by round {round}): commit earlier leaders first"
                ),
            ));
        }
        level.sort_unstable_by_key(|(key, _)| *key);
        levels.push(level);
        frontier = next;
    }
    let committee = committee()?;
    let number = meta.commits;
    let first_position = meta.next_position;
    let mut certificates = Vec::with_capacity(count);
    for (position, (key, mut row)) in (first_position..).zip(levels.into_iter().rev().flatten()) {
        row.committed = Some(CommitMark {
            commit: number,
            position,
        });
        SEQUENCE.put(&position, &key);
        CERTS.put(&key, &row);
        certificates.push(CommittedCertificate {
            position,
            round: key.0,
            author: committee.name(key.1)?.to_owned(),
            digest: row.digest,
        });
    }
    let count = count as u64;
    COMMITS.put(
        &number,
        &CommitRow {
            leader,
            round: node.round,
            first_position,
            count,
        },
    );
    checked_inc(&mut meta.commits, 1, "commit")?;
    checked_inc(&mut meta.next_position, count, "position")?;
    checked_inc(&mut meta.committed, count, "committed")?;
    meta.last_committed = Some((node.round, leader));
    META.put(&(), &meta);
    Ok(Response::Committed(CommitReport {
        commit: number,
        leader,
        round: node.round,
        certificates,
    }))
}

pub(crate) fn prune(max_certificates: Option<u64>) -> Result<Response, Error> {
    let mut meta = meta()?;
    let depth = committee()?.prune_depth;
    let budget = max_certificates
        .unwrap_or(PRUNE_CERTIFICATES_DEFAULT)
        .clamp(1, PRUNE_CERTIFICATES_MAX);
    let target = meta
        .last_committed
        .map_or(0, |(round, _)| round.saturating_sub(depth));
    let (mut certificates, mut batches, mut removed_weight) = (0u64, 0u64, 0u64);
    let mut round = meta.pruned_below;
    // Digests by author of the last round removed: the new lowest round's
    // parents, written out explicitly once they are gone.
    let mut last_removed: BTreeMap<u16, Digest> = BTreeMap::new();
    while round < target {
        let rows: Vec<((u64, u16), CertRow)> = CERTS
            .prefix(&(round,), keel_guest::Direction::Forward)
            .collect();
        let round_weight: u64 = rows.iter().map(|(_, r)| r.weight()).sum();
        if certificates > 0
            && (certificates + rows.len() as u64 > budget
                || removed_weight + round_weight > PRUNE_WEIGHT_MAX)
        {
            break;
        }
        removed_weight += round_weight;
        last_removed.clear();
        for (key, row) in &rows {
            CERTS.remove(key);
            NODES.remove(&(key.0, row.digest.0));
            last_removed.insert(key.1, row.digest);
            if let Some(mark) = row.committed {
                SEQUENCE.remove(&mark.position);
                checked_dec(&mut meta.committed, 1, "committed")?;
            }
            for b in &row.batches.0 {
                if let Some(batch) = BATCH_HEADS.get(&b.0) {
                    BATCHES.remove(&b.0);
                    BATCHES_BY_AUTHOR.remove(&(batch.author, b.0));
                    batches += 1;
                }
            }
        }
        certificates += rows.len() as u64;
        round += 1;
    }
    if round > meta.pruned_below {
        // The new lowest round keeps its parents as digests.
        let rows: Vec<((u64, u16), CertRow)> = CERTS
            .prefix(&(round,), keel_guest::Direction::Forward)
            .collect();
        for (key, mut row) in rows {
            if let Parents::Authors(authors) = &row.parents {
                let mut digests = authors
                    .iter()
                    .map(|a| {
                        last_removed.get(a).copied().ok_or_else(|| {
                            corrupt(format!(
                                "parent of round {} by author {a} is not stored",
                                key.0
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                digests.sort_unstable();
                row.parents = Parents::Digests(DigestList(digests));
                CERTS.put(&key, &row);
            }
        }
    }
    checked_dec(&mut meta.certificates, certificates, "certificate")?;
    checked_dec(&mut meta.batches, batches, "batch")?;
    checked_inc(
        &mut meta.pruned_certificates,
        certificates,
        "pruned certificate",
    )?;
    checked_inc(&mut meta.pruned_batches, batches, "pruned batch")?;
    meta.pruned_below = round;
    META.put(&(), &meta);
    Ok(Response::Pruned(PruneReport {
        pruned_below_round: round,
        certificates,
        batches,
        done: round >= target,
    }))
}
