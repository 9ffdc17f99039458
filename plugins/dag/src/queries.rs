//! Read-only queries and the consistency check.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use keel_guest::{Direction, Error};

use crate::api::*;
use crate::codec::{Digest, DigestList};
use crate::hash::certificate_digest_sorted;
use crate::store::*;

/// Entries per page unless the query says otherwise.
pub const PAGE_LIMIT_DEFAULT: u32 = 100;
/// Most entries per page.
pub const PAGE_LIMIT_MAX: u32 = 1000;
/// Most rounds one `by_author` page looks at (one read each).
pub const BY_AUTHOR_ROUNDS_SCANNED_MAX: u64 = 4096;
/// Most certificates one `uncommitted` page looks at.
pub const UNCOMMITTED_SCANNED_MAX: usize = 10_000;
/// Most weight (see [`CERT_WEIGHT_BASE`]) of the certificates one page or
/// one `causal_history` answer lists: bounds fuel and the answer's size
/// (about 67 bytes of JSON per digest, so about 1 MB).
pub const PAGE_WEIGHT_MAX: u64 = 15_000;
/// Ancestors listed by `causal_history` unless the query says otherwise.
pub const HISTORY_LIMIT_DEFAULT: u32 = 1000;
/// Most ancestors `causal_history` lists.
pub const HISTORY_LIMIT_MAX: u32 = 10_000;
/// Most certificates one `check` page verifies (whole rounds).
pub const CHECK_CERTIFICATES_MAX: u64 = 20_000;
/// Most weight one `check` page verifies (whole rounds; at least one).
pub const CHECK_WEIGHT_MAX: u64 = 25_000;

const _: () = assert!(PAGE_LIMIT_DEFAULT <= PAGE_LIMIT_MAX);
const _: () = assert!(HISTORY_LIMIT_DEFAULT <= HISTORY_LIMIT_MAX);

fn page_limit(limit: Option<u32>) -> usize {
    limit.unwrap_or(PAGE_LIMIT_DEFAULT).clamp(1, PAGE_LIMIT_MAX) as usize
}

/// Certificates gathered for one answer, within a count and a weight.
#[derive(Default)]
struct Page {
    certificates: Vec<Certificate>,
    weight: u64,
    full: bool,
}

impl Page {
    /// Adds one; returns true (and marks the page full) once `limit`
    /// certificates or [`PAGE_WEIGHT_MAX`] are reached.
    fn push(&mut self, c: Certificate, limit: usize) -> bool {
        self.weight += weight(c.parents.0.len() + c.batches.0.len());
        self.certificates.push(c);
        self.full = self.certificates.len() >= limit || self.weight >= PAGE_WEIGHT_MAX;
        self.full
    }
}

/// Turns stored rows into answers: author names, parent digests.
struct Answers {
    committee: Committee,
    parents: ParentDigests,
}

impl Answers {
    fn load() -> Result<Self, Error> {
        Ok(Self {
            committee: committee()?,
            parents: ParentDigests::default(),
        })
    }

    fn certificate(&mut self, key: (u64, u16), row: CertRow) -> Result<Certificate, Error> {
        let parents = self.parents.resolve(key.0, &row.parents)?;
        to_certificate(&self.committee, key, row, parents)
    }
}

fn to_certificate(
    committee: &Committee,
    key: (u64, u16),
    row: CertRow,
    parents: Vec<Digest>,
) -> Result<Certificate, Error> {
    Ok(Certificate {
        digest: row.digest,
        round: key.0,
        author: committee.name(key.1)?.to_owned(),
        parents: DigestList(parents),
        batches: row.batches,
        signature: row.signature,
        committed: row.committed,
    })
}

pub(crate) fn query(request: Query) -> Result<QueryResponse, Error> {
    Ok(match request {
        Query::Committee => QueryResponse::Committee(committee_info()?),
        Query::Metadata => QueryResponse::Metadata(metadata()?),
        Query::Certificate { digest, round } => {
            QueryResponse::Certificate(certificate(digest, round)?)
        }
        Query::ByRound {
            round,
            after,
            limit,
        } => QueryResponse::ByRound(by_round(round, after, limit)?),
        Query::ByAuthor {
            author,
            after,
            limit,
        } => QueryResponse::ByNumber(by_author(&author, after, limit)?),
        Query::Committed { after, limit } => QueryResponse::ByNumber(committed(after, limit)?),
        Query::Uncommitted { after, limit } => {
            QueryResponse::Uncommitted(uncommitted(after, limit)?)
        }
        Query::CausalHistory {
            digest,
            round,
            limit,
        } => {
            let (certificates, truncated) = causal_history(digest, round, limit)?;
            QueryResponse::History {
                certificates,
                truncated,
            }
        }
        Query::Commits { after, limit } => QueryResponse::Commits(commits(after, limit)),
        Query::Batch { digest } => QueryResponse::Batch(batch(digest)?),
        Query::BatchesByAuthor {
            author,
            after,
            limit,
        } => QueryResponse::Batches(batches_by_author(&author, after, limit)?),
        Query::UnreferencedBatches { after, limit } => {
            QueryResponse::Batches(unreferenced(after, limit))
        }
        Query::Evidence { after, limit } => QueryResponse::Evidence(evidence(after, limit)?),
        Query::Check {
            resume,
            max_certificates,
        } => QueryResponse::Check(check(resume, max_certificates)?),
    })
}

fn committee_info() -> Result<CommitteeInfo, Error> {
    let c = committee()?;
    Ok(CommitteeInfo {
        members: c
            .names
            .iter()
            .zip(&c.stakes)
            .map(|(name, stake)| Member {
                name: name.clone(),
                stake: *stake,
            })
            .collect(),
        total_stake: c.total,
        quorum: c.quorum,
        f: c.total - c.quorum.min(c.total),
        prune_depth: c.prune_depth,
    })
}

/// The metadata answer for a metadata row.
pub fn metadata_of(m: &Meta) -> Metadata {
    Metadata {
        highest_round: m.highest_round,
        certificates: m.certificates,
        committed: m.committed,
        uncommitted: m.certificates.saturating_sub(m.committed),
        batches: m.batches,
        unreferenced_batches: m.unreferenced,
        last_committed_round: m.last_committed.map(|(r, _)| r),
        last_committed_leader: m.last_committed.map(|(_, d)| d),
        commits: m.commits,
        committed_total: m.next_position,
        pruned_below_round: m.pruned_below,
        pruned_certificates: m.pruned_certificates,
        pruned_batches: m.pruned_batches,
        evidence: m.evidence,
    }
}

fn metadata() -> Result<Metadata, Error> {
    Ok(metadata_of(&meta()?))
}

fn certificate(digest: Digest, round: Option<u64>) -> Result<Option<Certificate>, Error> {
    let Some(node) = locate(&digest, round, &meta()?) else {
        return Ok(None);
    };
    let key = (node.round, node.author);
    let row = CERTS
        .get(&key)
        .ok_or_else(|| corrupt(format!("certificate {digest} is indexed but not stored")))?;
    Ok(Some(Answers::load()?.certificate(key, row)?))
}

fn by_round(
    round: u64,
    after: Option<String>,
    limit: Option<u32>,
) -> Result<CertificatePage<String>, Error> {
    let mut answers = Answers::load()?;
    let limit = page_limit(limit);
    let start = match after {
        Some(name) => Bound::Excluded((round, author_index(&name)?)),
        None => Bound::Included((round, 0)),
    };
    let mut page = Page::default();
    for (key, row) in CERTS.range((start, Bound::Included((round, u16::MAX)))) {
        if page.push(answers.certificate(key, row)?, limit) {
            break;
        }
    }
    let next = page
        .full
        .then(|| page.certificates.last().map(|c| c.author.clone()))
        .flatten();
    Ok(CertificatePage {
        certificates: page.certificates,
        next,
    })
}

fn by_author(
    author: &str,
    after: Option<u64>,
    limit: Option<u32>,
) -> Result<CertificatePage<u64>, Error> {
    let mut answers = Answers::load()?;
    let meta = meta()?;
    let index = author_index(author)?;
    let limit = page_limit(limit);
    let mut page = Page::default();
    let Some(highest) = meta.highest_round else {
        return Ok(CertificatePage {
            certificates: Vec::new(),
            next: None,
        });
    };
    let first = match after {
        Some(r) => r.saturating_add(1).max(meta.pruned_below),
        None => meta.pruned_below,
    };
    let mut round = first;
    let mut next = None;
    while round <= highest {
        if let Some(row) = CERTS.get(&(round, index)) {
            page.push(answers.certificate((round, index), row)?, limit);
        }
        let scanned = round - first + 1;
        if round < highest && (page.full || scanned >= BY_AUTHOR_ROUNDS_SCANNED_MAX) {
            next = Some(round);
            break;
        }
        round += 1;
    }
    Ok(CertificatePage {
        certificates: page.certificates,
        next,
    })
}

fn committed(after: Option<u64>, limit: Option<u32>) -> Result<CertificatePage<u64>, Error> {
    let mut answers = Answers::load()?;
    let limit = page_limit(limit);
    let start = after.map_or(Bound::Unbounded, Bound::Excluded);
    let mut page = Page::default();
    let mut last = None;
    for (position, key) in SEQUENCE
        .range((start, Bound::Unbounded))
        .with_chunk(limit as u32)
    {
        let row = CERTS.get(&key).ok_or_else(|| {
            corrupt(format!(
                "commit position {position} names a certificate that is not stored"
            ))
        })?;
        last = Some(position);
        if page.push(answers.certificate(key, row)?, limit) {
            break;
        }
    }
    Ok(CertificatePage {
        certificates: page.certificates,
        next: if page.full { last } else { None },
    })
}

fn uncommitted(
    after: Option<(u64, String)>,
    limit: Option<u32>,
) -> Result<CertificatePage<(u64, String)>, Error> {
    let mut answers = Answers::load()?;
    let limit = page_limit(limit);
    let start = match after {
        Some((round, name)) => Bound::Excluded((round, author_index(&name)?)),
        None => Bound::Unbounded,
    };
    let mut page = Page::default();
    let mut scanned = 0usize;
    let mut last = None;
    let mut exhausted = true;
    for (key, row) in CERTS.range((start, Bound::Unbounded)).with_chunk(256) {
        scanned += 1;
        last = Some(key);
        if row.committed.is_none() {
            page.push(answers.certificate(key, row)?, limit);
        }
        if page.full || scanned >= UNCOMMITTED_SCANNED_MAX {
            exhausted = false;
            break;
        }
    }
    let next = match (exhausted, last) {
        (false, Some((round, author))) => Some((round, answers.committee.name(author)?.to_owned())),
        _ => None,
    };
    Ok(CertificatePage {
        certificates: page.certificates,
        next,
    })
}

fn causal_history(
    digest: Digest,
    round: Option<u64>,
    limit: Option<u32>,
) -> Result<(Vec<Certificate>, bool), Error> {
    let mut answers = Answers::load()?;
    let meta = meta()?;
    let limit = limit
        .unwrap_or(HISTORY_LIMIT_DEFAULT)
        .clamp(1, HISTORY_LIMIT_MAX) as usize;
    let node = locate(&digest, round, &meta)
        .ok_or_else(|| Error::not_found(format!("no certificate {digest} is stored")))?;
    // Round by round, downwards, from the certificate to the lowest
    // retained round; each level sorted by author.
    let mut levels: Vec<Vec<Certificate>> = Vec::new();
    let mut count = 0usize;
    let mut total_weight = 0u64;
    let mut truncated = false;
    let mut round = node.round;
    let mut frontier: BTreeSet<u16> = BTreeSet::from([node.author]);
    'walk: loop {
        let mut next = BTreeSet::new();
        let mut level = Vec::new();
        for &author in &frontier {
            if count == limit || total_weight >= PAGE_WEIGHT_MAX {
                truncated = true;
                levels.push(level);
                break 'walk;
            }
            let row = CERTS.get(&(round, author)).ok_or_else(|| {
                corrupt(format!(
                    "a parent in round {round} by author {author} is not stored"
                ))
            })?;
            total_weight += row.weight();
            next.extend(crate::ops::parent_authors(&row.parents));
            level.push(answers.certificate((round, author), row)?);
            count += 1;
        }
        levels.push(level);
        if round == 0 || round <= meta.pruned_below || next.is_empty() {
            break;
        }
        round -= 1;
        frontier = next;
    }
    Ok((levels.into_iter().rev().flatten().collect(), truncated))
}

fn commits(after: Option<u64>, limit: Option<u32>) -> CommitPage {
    let limit = page_limit(limit);
    let start = after.map_or(Bound::Unbounded, Bound::Excluded);
    let commits: Vec<CommitInfo> = COMMITS
        .range((start, Bound::Unbounded))
        .with_chunk(limit as u32)
        .take(limit)
        .map(|(commit, c)| CommitInfo {
            commit,
            leader: c.leader,
            round: c.round,
            first_position: c.first_position,
            count: c.count,
        })
        .collect();
    let next = (commits.len() == limit)
        .then(|| commits.last().map(|c| c.commit))
        .flatten();
    CommitPage { commits, next }
}

fn batch(digest: Digest) -> Result<Option<Batch>, Error> {
    let Some(row) = BATCHES.get(&digest.0) else {
        return Ok(None);
    };
    Ok(Some(Batch {
        digest,
        author: committee()?.name(row.author)?.to_owned(),
        payload: row.payload,
        referenced: !UNREFERENCED.contains(&digest.0),
    }))
}

fn batches_by_author(
    author: &str,
    after: Option<Digest>,
    limit: Option<u32>,
) -> Result<BatchPage, Error> {
    let index = author_index(author)?;
    let limit = page_limit(limit);
    let start = match after {
        Some(d) => Bound::Excluded((index, d.0)),
        None => Bound::Included((index, [0; 32])),
    };
    let batches: Vec<Digest> = BATCHES_BY_AUTHOR
        .range((start, Bound::Included((index, [0xFF; 32]))))
        .with_chunk(limit as u32)
        .take(limit)
        .map(|((_, d), ())| Digest(d))
        .collect();
    let next = (batches.len() == limit)
        .then(|| batches.last().copied())
        .flatten();
    Ok(BatchPage { batches, next })
}

fn unreferenced(after: Option<Digest>, limit: Option<u32>) -> BatchPage {
    let limit = page_limit(limit);
    let start = after.map_or(Bound::Unbounded, |d| Bound::Excluded(d.0));
    let batches: Vec<Digest> = UNREFERENCED
        .range((start, Bound::Unbounded))
        .with_chunk(limit as u32)
        .take(limit)
        .map(|(d, ())| Digest(d))
        .collect();
    let next = (batches.len() == limit)
        .then(|| batches.last().copied())
        .flatten();
    BatchPage { batches, next }
}

fn evidence(
    after: Option<(u64, String, Digest)>,
    limit: Option<u32>,
) -> Result<EvidencePage, Error> {
    let committee = committee()?;
    let limit = page_limit(limit);
    let start = match after {
        Some((round, name, d)) => Bound::Excluded((round, author_index(&name)?, d.0)),
        None => Bound::Unbounded,
    };
    let mut evidence = Vec::new();
    let mut total_weight = 0u64;
    for ((round, author, conflicting), row) in EVIDENCE.range((start, Bound::Unbounded)) {
        if evidence.len() == limit || total_weight >= PAGE_WEIGHT_MAX {
            break;
        }
        total_weight += weight(row.parents.0.len() + row.batches.0.len());
        let name = committee.name(author)?.to_owned();
        evidence.push(Evidence {
            round,
            author: name.clone(),
            existing: row.existing,
            conflicting: Certificate {
                digest: Digest(conflicting),
                round,
                author: name,
                parents: row.parents,
                batches: row.batches,
                signature: row.signature,
                committed: None,
            },
            sequence: row.sequence,
        });
    }
    let full = evidence.len() == limit || total_weight >= PAGE_WEIGHT_MAX;
    let next = full
        .then(|| {
            evidence
                .last()
                .map(|e| (e.round, e.author.clone(), e.conflicting.digest))
        })
        .flatten();
    Ok(EvidencePage { evidence, next })
}

/// The state a check carries from one round to the next.
struct Checker {
    committee: Committee,
    meta: Meta,
    /// Author index → (digest, committed) of the round before the current
    /// one; `None` when that round is pruned (parents cannot be checked).
    prev: Option<BTreeMap<u16, (Digest, bool)>>,
    cur: BTreeMap<u16, (Digest, bool)>,
    totals: CheckResume,
}

fn violation(code: &str, message: String, round: Option<u64>, digest: Option<Digest>) -> Violation {
    Violation {
        code: code.to_owned(),
        message,
        round,
        digest,
    }
}

impl Checker {
    fn certificate(
        &mut self,
        (round, author): (u64, u16),
        row: &CertRow,
    ) -> Result<Option<Violation>, Error> {
        let d = row.digest;
        let at = |code: &str, message: String| -> Result<Option<Violation>, Error> {
            Ok(Some(violation(code, message, Some(round), Some(d))))
        };
        let Some(name) = self.committee.names.get(usize::from(author)) else {
            return at(
                "unknown-author",
                format!("author index {author} is outside the committee"),
            );
        };
        let committed = row.committed.is_some();
        // The parents as (author, digest, committed), when the round below is kept.
        let parents: Option<Vec<(u16, Digest, bool)>> = match (&row.parents, &self.prev) {
            (Parents::Authors(authors), _) if authors.is_empty() => Some(Vec::new()),
            (Parents::Authors(authors), prev) => {
                if authors.windows(2).any(|w| w[0] >= w[1]) {
                    return at(
                        "unsorted-parents",
                        format!("parents of {d} are not sorted and distinct"),
                    );
                }
                let Some(prev) = prev else {
                    return at(
                        "missing-parent",
                        format!(
                            "{d} names its parents by author but round {} is pruned",
                            round.wrapping_sub(1)
                        ),
                    );
                };
                let mut out = Vec::with_capacity(authors.len());
                for a in authors {
                    let Some(&(digest, parent_committed)) = prev.get(a) else {
                        return at(
                            "missing-parent",
                            format!(
                                "{d} names a parent by author {a}, who has no certificate in round {}",
                                round.wrapping_sub(1)
                            ),
                        );
                    };
                    out.push((*a, digest, parent_committed));
                }
                Some(out)
            }
            (Parents::Digests(digests), prev) => {
                if digests.0.windows(2).any(|w| w[0] >= w[1]) {
                    return at(
                        "unsorted-parents",
                        format!("parents of {d} are not sorted and distinct"),
                    );
                }
                match prev {
                    None => None,
                    Some(prev) => {
                        let mut out = Vec::with_capacity(digests.0.len());
                        for p in &digests.0 {
                            let Some((a, (_, c))) = prev.iter().find(|(_, (pd, _))| pd == p) else {
                                return at(
                                    "missing-parent",
                                    format!(
                                        "parent {p} of {d} is not in round {}",
                                        round.wrapping_sub(1)
                                    ),
                                );
                            };
                            out.push((*a, *p, *c));
                        }
                        Some(out)
                    }
                }
            }
        };
        let parent_digests: Vec<Digest> = match (&parents, &row.parents) {
            (Some(p), _) => {
                let mut v: Vec<Digest> = p.iter().map(|x| x.1).collect();
                v.sort_unstable();
                v
            }
            (None, Parents::Digests(d)) => d.0.clone(),
            (None, Parents::Authors(_)) => unreachable!("refused above"),
        };
        let computed = certificate_digest_sorted(round, name, &parent_digests, &row.batches.0);
        if computed != d {
            return at(
                "digest-mismatch",
                format!("stored digest {d}, header hashes to {computed}"),
            );
        }
        if NODES.get(&(round, d.0)) != Some(author) {
            return at(
                "index-mismatch",
                format!("the digest index does not point {d} at round {round}, author {name}"),
            );
        }
        if round == 0 {
            if !row.parents.is_empty() {
                return at(
                    "genesis-with-parents",
                    format!("genesis certificate {d} has parents"),
                );
            }
        } else if let Some(parents) = &parents {
            let mut stake: u64 = 0;
            for &(parent_author, p, parent_committed) in parents {
                stake = stake.saturating_add(
                    self.committee
                        .stakes
                        .get(usize::from(parent_author))
                        .copied()
                        .unwrap_or(0),
                );
                if committed && !parent_committed {
                    return at(
                        "committed-not-closed",
                        format!("{d} is committed but its parent {p} is not"),
                    );
                }
            }
            if stake < self.committee.quorum {
                return at(
                    "short-quorum",
                    format!(
                        "parents of {d} carry {stake} stake, quorum is {}",
                        self.committee.quorum
                    ),
                );
            }
        }
        if let Some(mark) = row.committed {
            if mark.position >= self.meta.next_position || mark.commit >= self.meta.commits {
                return at(
                    "sequence-mismatch",
                    format!("{d} has commit mark {mark:?} beyond the commit counters"),
                );
            }
            if SEQUENCE.get(&mark.position) != Some((round, author)) {
                return at(
                    "sequence-mismatch",
                    format!("commit position {} does not name {d}", mark.position),
                );
            }
            self.totals.committed += 1;
        }
        for b in &row.batches.0 {
            match BATCH_HEADS.get(&b.0) {
                None => return at("missing-batch", format!("batch {b} of {d} is not stored")),
                Some(h) if h.author != author => {
                    return at(
                        "batch-author-mismatch",
                        format!("batch {b} of {d} has another author"),
                    );
                }
                Some(_) => {}
            }
            if UNREFERENCED.contains(&b.0) {
                return at(
                    "index-mismatch",
                    format!("batch {b} is referenced by {d} but listed as unreferenced"),
                );
            }
            self.totals.batch_references += 1;
        }
        self.cur.insert(author, (d, committed));
        self.totals.certificates += 1;
        Ok(None)
    }

    /// Compares what the walk saw with the counters and the indexes.
    fn totals(&self, highest_seen: Option<u64>) -> Option<Violation> {
        let m = &self.meta;
        let t = &self.totals;
        let count = |code: &str, what: &str, seen: u64, recorded: u64| {
            (seen != recorded).then(|| {
                violation(
                    code,
                    format!("{seen} {what} found, metadata says {recorded}"),
                    None,
                    None,
                )
            })
        };
        count("count-mismatch", "certificates", t.certificates, m.certificates)
            .or_else(|| count("count-mismatch", "committed certificates", t.committed, m.committed))
            .or_else(|| {
                let nodes = NODE_KEYS.iter().with_chunk(1024).count() as u64;
                count("index-mismatch", "digest index entries", nodes, m.certificates)
            })
            .or_else(|| {
                let positions = SEQUENCE_KEYS.iter().with_chunk(1024).count() as u64;
                count("index-mismatch", "commit positions", positions, m.committed)
            })
            .or_else(|| {
                let batches = BATCH_KEYS.iter().with_chunk(256).count() as u64;
                count("count-mismatch", "batches", batches, m.batches)
            })
            .or_else(|| {
                let unreferenced = UNREFERENCED.iter().with_chunk(1024).count() as u64;
                count("count-mismatch", "unreferenced batches", unreferenced, m.unreferenced)
            })
            .or_else(|| {
                count(
                    "count-mismatch",
                    "batches referenced or unreferenced",
                    t.batch_references + m.unreferenced,
                    m.batches,
                )
            })
            .or_else(|| {
                (highest_seen.is_some() && highest_seen != m.highest_round).then(|| {
                    violation(
                        "count-mismatch",
                        format!("highest round found is {highest_seen:?}, metadata says {:?}", m.highest_round),
                        None,
                        None,
                    )
                })
            })
            .or_else(|| {
                let (round, leader) = m.last_committed?;
                let ok = NODES.get(&(round, leader.0)).is_some_and(|author| {
                    CERT_HEADS.get(&(round, author)).is_some_and(|h| h.committed.is_some())
                });
                (!ok).then(|| {
                    violation(
                        "last-commit-mismatch",
                        format!("the last committed leader {leader} is not a committed certificate of round {round}"),
                        Some(round),
                        Some(leader),
                    )
                })
            })
    }
}

fn check(resume: Option<CheckResume>, max_certificates: Option<u64>) -> Result<CheckReport, Error> {
    let committee = committee()?;
    let meta = meta()?;
    let budget = max_certificates
        .unwrap_or(CHECK_CERTIFICATES_MAX)
        .clamp(1, CHECK_CERTIFICATES_MAX);
    let mut page_weight = 0u64;
    let totals = resume.unwrap_or(CheckResume {
        round: meta.pruned_below,
        certificates: 0,
        committed: 0,
        batch_references: 0,
    });
    if totals.round < meta.pruned_below {
        return Err(Error::invalid(format!(
            "rounds below {} were pruned since this check began at round {}: start the check again",
            meta.pruned_below, totals.round
        )));
    }
    let start = totals.round;
    let prev = if start > meta.pruned_below {
        let mut prev = BTreeMap::new();
        for ((_, author), head) in CERT_HEADS.prefix(&(start - 1,), Direction::Forward) {
            prev.insert(author, (head.digest, head.committed.is_some()));
        }
        Some(prev)
    } else {
        None
    };
    let mut checker = Checker {
        committee,
        meta,
        prev,
        cur: BTreeMap::new(),
        totals,
    };
    let mut round = start;
    let mut highest_seen = None;
    let report = |checker: &Checker,
                  violation: Option<Violation>,
                  complete: bool,
                  resume: Option<CheckResume>| CheckReport {
        ok: violation.is_none(),
        violation,
        certificates: checker.totals.certificates,
        complete,
        resume,
    };
    for (on_page, (key, row)) in (0u64..).zip(CERTS.range((start, 0)..).with_chunk(256)) {
        if key.0 != round {
            if key.0 != round + 1 || (checker.cur.is_empty() && round == start) {
                let v = violation(
                    "round-gap",
                    format!(
                        "round {} follows round {round} without the rounds between",
                        key.0
                    ),
                    Some(key.0),
                    Some(row.digest),
                );
                return Ok(report(&checker, Some(v), false, None));
            }
            if on_page >= budget || page_weight >= CHECK_WEIGHT_MAX {
                let mut resume = checker.totals;
                resume.round = key.0;
                return Ok(report(&checker, None, false, Some(resume)));
            }
            checker.prev = Some(std::mem::take(&mut checker.cur));
            round = key.0;
        }
        if let Some(v) = checker.certificate(key, &row)? {
            return Ok(report(&checker, Some(v), false, None));
        }
        page_weight += row.weight();
        highest_seen = Some(key.0);
    }
    let v = checker.totals(highest_seen);
    Ok(report(&checker, v, true, None))
}
