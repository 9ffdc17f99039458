//! The dag plugin's logic, natively (no wasm, no host): the JSON API, every
//! refusal, commit order, pruning, the consistency check against injected
//! corruption, and a property test of random DAG growth against the
//! reference model in `model/`.

mod model;

use keel_guest::testing::Harness;
use keel_plugin_dag::api::{CheckReport, CommitteeInfo, Metadata};
use keel_plugin_dag::store::{self, CERTS, NODES};
use keel_plugin_dag::{
    Bytes, Command, Config, Dag, Digest, NewBatch, NewCertificate, Query, Response,
    certificate_digest, quorum_for,
};
use model::{Driver, Model, apply, assert_same, check_all, committee_strategy, step_strategy};
use proptest::prelude::*;
use serde_json::{Value, json};

/// The harness, driven through JSON exactly as the component is.
struct Native(Harness<Dag>);

impl Native {
    fn new(model: &Model) -> Self {
        let config: Config = serde_json::from_value(model.config()).unwrap();
        Native(Harness::with_config(config).unwrap())
    }
}

impl Driver for Native {
    fn command(&mut self, command: &Command) -> Result<Response, String> {
        let text = serde_json::to_string(command).unwrap();
        self.0
            .handle_json(&text)
            .map(|v| serde_json::from_value(v).unwrap())
            .map_err(|e| e.code)
    }

    fn query(&mut self, query: &Query) -> Value {
        let text = serde_json::to_string(query).unwrap();
        self.0
            .query_json(&text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
    }
}

fn inserted(r: Result<Response, String>) -> Digest {
    match r {
        Ok(Response::Inserted(i)) => i.digest,
        other => panic!("expected an insert, got {other:?}"),
    }
}

/// A DAG with `rounds` full rounds of `n` authors, each certificate over
/// every certificate of the round below. Returns digests by round.
fn full_dag(d: &mut Native, m: &mut Model, rounds: u64) -> Vec<Vec<Digest>> {
    let mut out: Vec<Vec<Digest>> = Vec::new();
    for round in 0..rounds {
        let parents = if round == 0 {
            vec![]
        } else {
            out[round as usize - 1].clone()
        };
        let mut this = Vec::new();
        for a in 0..m.names.len() {
            let cert = m.make(round, a, parents.clone(), vec![], round * 100 + a as u64);
            let want = m.insert(&cert);
            let got = d.command(&Command::Insert(cert));
            assert_eq!(got, want);
            this.push(inserted(got));
        }
        out.push(this);
    }
    out
}

fn meta(d: &mut Native) -> Metadata {
    serde_json::from_value(d.query(&Query::Metadata)).unwrap()
}

fn check(d: &mut Native) -> CheckReport {
    check_all(d, None)
}

#[test]
fn quorum_is_two_thirds_of_stake_plus_one() {
    assert_eq!(quorum_for(1), 1);
    assert_eq!(quorum_for(3), 3);
    assert_eq!(quorum_for(4), 3);
    assert_eq!(quorum_for(7), 5);
    assert_eq!(quorum_for(10), 7);
    assert_eq!(quorum_for(50), 34);
    assert_eq!(
        quorum_for(u64::MAX),
        (u128::from(u64::MAX) * 2 / 3) as u64 + 1
    );
    let mut d = Native::new(&Model::weighted(
        vec![("big".into(), 5), ("small".into(), 1), ("mid".into(), 3)],
        10,
    ));
    let info: CommitteeInfo = serde_json::from_value(d.query(&Query::Committee)).unwrap();
    assert_eq!(info.total_stake, 9);
    assert_eq!(info.quorum, 7);
    assert_eq!(info.f, 2);
    let names: Vec<&str> = info.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        ["big", "mid", "small"],
        "authors are ordered by name"
    );
}

#[test]
fn bad_configurations_are_refused() {
    for config in [
        json!({}),
        json!({"authors": []}),
        json!({"authors": ["a", "a"]}),
        json!({"authors": ["a"], "committee": [{"name": "b", "stake": 1}]}),
        json!({"committee": [{"name": "a", "stake": 0}]}),
        json!({"committee": [{"name": "a", "stake": u64::MAX}, {"name": "b", "stake": 1}]}),
        json!({"authors": [""]}),
    ] {
        let config: Config = serde_json::from_value(config.clone()).unwrap();
        assert!(
            Harness::<Dag>::with_config(config.clone()).is_err(),
            "{config:?} was accepted"
        );
    }
    assert!(serde_json::from_value::<Config>(json!({"authors": ["a"], "extra": 1})).is_err());
    // A plugin deployed without a committee answers with an actionable error.
    let h = Harness::<Dag>::new();
    let err = h.query_json(r#""metadata""#).unwrap_err();
    assert_eq!(err.code, "not-configured");
}

#[test]
fn the_json_api_uses_hex_and_refuses_unknown_fields() {
    let mut h = Harness::<Dag>::with_config(
        serde_json::from_value(json!({"authors": ["a", "b", "c", "d"]})).unwrap(),
    )
    .unwrap();
    let batch = h
        .handle_json(r#"{"store_batch": {"author": "a", "payload": "00ff"}}"#)
        .unwrap();
    let batch_digest = batch["batch_stored"]["digest"].as_str().unwrap().to_owned();
    assert_eq!(
        batch_digest,
        keel_plugin_dag::batch_digest("a", &[0, 0xff]).to_hex()
    );
    let genesis = certificate_digest(0, "a", &[], &[Digest::from_hex(&batch_digest).unwrap()]);
    let cmd = json!({"insert": {"round": 0, "author": "a", "batches": [batch_digest], "signature": "abcd", "digest": genesis.to_hex()}});
    let r = h.handle_json(&cmd.to_string()).unwrap();
    assert_eq!(
        r,
        json!({"inserted": {"digest": genesis.to_hex(), "round": 0}})
    );
    let cert = h
        .query_json(&json!({"certificate": {"digest": genesis.to_hex()}}).to_string())
        .unwrap();
    assert_eq!(
        cert,
        json!({"digest": genesis.to_hex(), "round": 0, "author": "a", "parents": [], "batches": [batch_digest],
               "signature": "abcd", "committed": null})
    );
    let missing = h
        .query_json(&json!({"certificate": {"digest": "00".repeat(32)}}).to_string())
        .unwrap();
    assert_eq!(missing, Value::Null);
    // With its round, one read; with a wrong round, not found.
    let hinted = h
        .query_json(&json!({"certificate": {"digest": genesis.to_hex(), "round": 0}}).to_string())
        .unwrap();
    assert_eq!(hinted, cert);
    let wrong = h
        .query_json(&json!({"certificate": {"digest": genesis.to_hex(), "round": 1}}).to_string())
        .unwrap();
    assert_eq!(wrong, Value::Null);
    let batch = h
        .query_json(&json!({"batch": {"digest": batch_digest}}).to_string())
        .unwrap();
    assert_eq!(
        batch,
        json!({"digest": batch_digest, "author": "a", "payload": "00ff", "referenced": true})
    );

    let err = h
        .handle_json(r#"{"insert": {"round": 0, "author": "b", "extra": 1}}"#)
        .unwrap_err();
    assert_eq!(err.code, "bad-command");
    let err = h
        .handle_json(r#"{"commit": {"leader": "xyz"}}"#)
        .unwrap_err();
    assert_eq!(err.code, "bad-command");
    assert!(
        err.message.contains("hex") || err.message.contains("odd"),
        "{}",
        err.message
    );
    let err = h
        .handle_json(r#"{"commit": {"leader": "abcd"}}"#)
        .unwrap_err();
    assert!(err.message.contains("32 bytes"), "{}", err.message);
    let err = h.query_json(r#"{"metadata": {}}"#).unwrap_err();
    assert_eq!(err.code, "bad-query");
}

#[test]
fn grows_commits_in_order_and_answers_queries() {
    let mut m = Model::equal(4, 50);
    let mut d = Native::new(&m);
    let dag = full_dag(&mut d, &mut m, 6);
    assert_eq!(meta(&mut d).highest_round, Some(5));
    assert_eq!(meta(&mut d).certificates, 24);

    // Commit a round-2 leader: rounds 0 and 1 entirely, then the leader.
    let leader = dag[2][1];
    let r = d
        .command(&Command::Commit {
            leader,
            round: None,
        })
        .unwrap();
    assert_eq!(Ok(r.clone()), m.commit(leader));
    let Response::Committed(report) = r else {
        panic!()
    };
    assert_eq!(report.certificates.len(), 9);
    let order: Vec<(u64, String)> = report
        .certificates
        .iter()
        .map(|c| (c.round, c.author.clone()))
        .collect();
    assert_eq!(
        order[..4],
        [
            (0, "v00".into()),
            (0, "v01".into()),
            (0, "v02".into()),
            (0, "v03".into())
        ]
    );
    assert_eq!(order[8], (2, "v01".into()));
    assert_eq!(
        report
            .certificates
            .iter()
            .map(|c| c.position)
            .collect::<Vec<_>>(),
        (0..9).collect::<Vec<_>>()
    );

    // Never twice; never backwards.
    assert_eq!(
        d.command(&Command::Commit {
            leader,
            round: None
        })
        .unwrap_err(),
        "already-committed"
    );
    assert_eq!(
        d.command(&Command::Commit {
            leader: dag[2][0],
            round: None
        })
        .unwrap_err(),
        "stale-leader"
    );
    assert_eq!(
        d.command(&Command::Commit {
            leader: dag[1][0],
            round: None
        })
        .unwrap_err(),
        "already-committed"
    );
    assert_eq!(
        d.command(&Command::Commit {
            leader: Digest([9; 32]),
            round: None,
        })
        .unwrap_err(),
        "not-found"
    );

    // The next leader commits only what is new: the rest of round 2, round 3, itself.
    let leader = dag[4][3];
    let r = d
        .command(&Command::Commit {
            leader,
            round: None,
        })
        .unwrap();
    assert_eq!(Ok(r.clone()), m.commit(leader));
    let Response::Committed(report) = r else {
        panic!()
    };
    assert_eq!(report.commit, 1);
    assert_eq!(report.certificates.len(), 3 + 4 + 1);
    assert_eq!(report.certificates[0].position, 9);

    // Causal history of a round-2 certificate: 4 + 4 + itself, by round then author.
    let history = d.query(&Query::CausalHistory {
        digest: dag[2][0],
        round: None,
        limit: None,
    });
    assert_eq!(history["truncated"], json!(false));
    let rounds: Vec<u64> = history["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["round"].as_u64().unwrap())
        .collect();
    assert_eq!(rounds, [0, 0, 0, 0, 1, 1, 1, 1, 2]);
    let cut = d.query(&Query::CausalHistory {
        digest: dag[5][0],
        round: None,
        limit: Some(6),
    });
    assert_eq!(cut["truncated"], json!(true));
    assert_eq!(cut["certificates"].as_array().unwrap().len(), 6);

    let commits = d.query(&Query::Commits {
        after: None,
        limit: None,
    });
    assert_eq!(commits["commits"][1]["leader"], json!(leader.to_hex()));
    assert_eq!(commits["commits"][1]["first_position"], json!(9));
    assert_same(&mut d, &m);
}

#[test]
fn every_invalid_insert_is_refused_and_changes_nothing() {
    let mut m = Model::equal(4, 50);
    let mut d = Native::new(&m);
    let dag = full_dag(&mut d, &mut m, 3);
    let before = d.0.dump();
    let refused = |d: &mut Native, cert: NewCertificate, code: &str| {
        let before = d.0.dump();
        assert_eq!(d.command(&Command::Insert(cert)).unwrap_err(), code);
        assert_eq!(
            d.0.dump(),
            before,
            "a refused {code} insert changed the state"
        );
    };
    // Missing parent.
    let mut parents = dag[2][..3].to_vec();
    parents.push(Digest([0xAB; 32]));
    refused(&mut d, m.make(3, 0, parents, vec![], 1), "missing-parent");
    // Short quorum: 2 of 4 equal stakes.
    refused(
        &mut d,
        m.make(3, 0, dag[2][..2].to_vec(), vec![], 1),
        "short-quorum",
    );
    // A parent two rounds down.
    let mut parents = dag[2][..3].to_vec();
    parents.push(dag[1][0]);
    refused(
        &mut d,
        m.make(3, 0, parents, vec![], 1),
        "parent-wrong-round",
    );
    // Bad digest.
    let mut cert = m.make(3, 0, dag[2][..3].to_vec(), vec![], 1);
    cert.digest = Some(Digest([7; 32]));
    refused(&mut d, cert, "bad-digest");
    // Duplicate (same header; the signature is not part of the digest).
    refused(
        &mut d,
        m.make(2, 1, dag[1].clone(), vec![], 999),
        "duplicate",
    );
    // Duplicate parent, genesis with parents, unknown author, unknown batch.
    refused(
        &mut d,
        m.make(
            3,
            0,
            vec![dag[2][0], dag[2][0], dag[2][1], dag[2][2]],
            vec![],
            1,
        ),
        "duplicate-parent",
    );
    let mut stranger = m.make(3, 0, dag[2].clone(), vec![], 1);
    stranger.author = "mallory".into();
    stranger.digest = None;
    refused(&mut d, stranger, "unknown-author");
    refused(
        &mut d,
        m.make(3, 0, dag[2].clone(), vec![Digest([3; 32])], 1),
        "missing-batch",
    );
    assert_eq!(d.0.dump(), before);
    assert!(check(&mut d).ok);
}

#[test]
fn genesis_has_no_parents() {
    let mut m = Model::equal(4, 50);
    let mut d = Native::new(&m);
    let cert = m.make(0, 0, vec![], vec![], 1);
    let g = inserted(d.command(&Command::Insert(cert.clone())));
    assert_eq!(
        Ok(Response::Inserted(keel_plugin_dag::api::Inserted {
            digest: g,
            round: 0
        })),
        m.insert(&cert)
    );
    let with_parent = m.make(0, 1, vec![g], vec![], 1);
    assert_eq!(
        d.command(&Command::Insert(with_parent)).unwrap_err(),
        "genesis-with-parents"
    );
}

#[test]
fn genesis_equivocation_is_detected_before_parent_rules() {
    let mut m = Model::equal(4, 50);
    let mut d = Native::new(&m);
    full_dag(&mut d, &mut m, 1);
    // Round 0 already has v00; another v00 genesis with parents is equivocation.
    let mut cert = m.make(0, 0, vec![], vec![Digest([5; 32])], 7);
    cert.digest = None;
    let r = d.command(&Command::Insert(cert.clone())).unwrap();
    assert!(matches!(r, Response::Equivocation(_)), "{r:?}");
}

#[test]
fn equivocation_is_refused_but_recorded_as_evidence() {
    let mut m = Model::equal(4, 50);
    let mut d = Native::new(&m);
    let dag = full_dag(&mut d, &mut m, 3);
    let tables_before = d.0.dump();
    // v00 signs a second round-2 header over a different parent set.
    let conflicting = m.make(2, 0, dag[1][1..].to_vec(), vec![], 42);
    let want = m.insert(&conflicting);
    let got = d.command(&Command::Insert(conflicting.clone())).unwrap();
    assert_eq!(Ok(got.clone()), want);
    let Response::Equivocation(report) = got else {
        panic!("{got:?}")
    };
    assert_eq!(report.existing, dag[2][0]);
    assert!(report.first_report);
    // The DAG is unchanged: only the evidence and its counter were written.
    let after = d.0.dump();
    for (table, rows) in &tables_before {
        if table != "meta" {
            assert_eq!(after.get(table), Some(rows), "table {table} changed");
        }
    }
    assert_eq!(after["evidence"].len(), 1);
    assert_eq!(meta(&mut d).evidence, 1);
    assert_eq!(meta(&mut d).certificates, 12);
    let stored = d.query(&Query::Certificate {
        digest: report.conflicting,
        round: None,
    });
    assert_eq!(stored, Value::Null);
    let evidence = d.query(&Query::Evidence {
        after: None,
        limit: None,
    });
    assert_eq!(
        evidence["evidence"][0]["existing"],
        json!(dag[2][0].to_hex())
    );
    assert_eq!(
        evidence["evidence"][0]["conflicting"]["signature"],
        json!(hex(&42u64.to_le_bytes()))
    );
    assert_eq!(evidence["evidence"][0]["sequence"], json!(d.0.sequence()));
    // Reported again: nothing new is recorded.
    let again = d.command(&Command::Insert(conflicting.clone())).unwrap();
    assert!(
        matches!(again, Response::Equivocation(ref r) if !r.first_report),
        "{again:?}"
    );
    assert_eq!(meta(&mut d).evidence, 1);
    assert!(check(&mut d).ok);
}

fn hex(bytes: &[u8]) -> String {
    keel_plugin_dag::codec::to_hex(bytes)
}

#[test]
fn batches_are_stored_referenced_once_and_listed() {
    let m = Model::equal(4, 50);
    let mut d = Native::new(&m);
    let store_batch = |d: &mut Native, author: &str, payload: &[u8]| match d.command(
        &Command::StoreBatch(NewBatch {
            author: author.into(),
            payload: Bytes(payload.to_vec()),
            digest: None,
        }),
    ) {
        Ok(Response::BatchStored(b)) => b.digest,
        other => panic!("{other:?}"),
    };
    let b1 = store_batch(&mut d, "v00", b"one");
    let b2 = store_batch(&mut d, "v00", b"two");
    let b3 = store_batch(&mut d, "v01", b"three");
    let dup = d.command(&Command::StoreBatch(NewBatch {
        author: "v00".into(),
        payload: Bytes(b"one".to_vec()),
        digest: None,
    }));
    assert_eq!(dup.unwrap_err(), "duplicate");
    let wrong = d.command(&Command::StoreBatch(NewBatch {
        author: "v00".into(),
        payload: Bytes(b"four".to_vec()),
        digest: Some(b1),
    }));
    assert_eq!(wrong.unwrap_err(), "bad-digest");

    // A certificate may reference only its author's unreferenced batches.
    let mismatch = m.make(0, 0, vec![], vec![b3], 1);
    assert_eq!(
        d.command(&Command::Insert(mismatch)).unwrap_err(),
        "batch-author-mismatch"
    );
    let dup_batch = m.make(0, 0, vec![], vec![b1, b1], 1);
    assert_eq!(
        d.command(&Command::Insert(dup_batch)).unwrap_err(),
        "duplicate-batch"
    );
    inserted(d.command(&Command::Insert(m.make(0, 0, vec![], vec![b1], 1))));
    let twice = m.make(0, 1, vec![], vec![b3], 1);
    inserted(d.command(&Command::Insert(twice)));
    let reuse = m.make(1, 0, vec![], vec![b1], 1);
    assert_eq!(
        d.command(&Command::Insert(reuse)).unwrap_err(),
        "short-quorum"
    );

    let by_author = d.query(&Query::BatchesByAuthor {
        author: "v00".into(),
        after: None,
        limit: None,
    });
    let mut want = vec![b1.to_hex(), b2.to_hex()];
    want.sort();
    assert_eq!(by_author["batches"], json!(want));
    let unreferenced = d.query(&Query::UnreferencedBatches {
        after: None,
        limit: None,
    });
    assert_eq!(unreferenced["batches"], json!([b2.to_hex()]));
    let md = meta(&mut d);
    assert_eq!((md.batches, md.unreferenced_batches), (3, 1));
    assert!(check(&mut d).ok);
}

#[test]
fn a_batch_is_referenced_by_one_certificate_only() {
    let m = Model::equal(1, 50);
    let mut d = Native::new(&m);
    let Ok(Response::BatchStored(b)) = d.command(&Command::StoreBatch(NewBatch {
        author: "v00".into(),
        payload: Bytes(vec![1]),
        digest: None,
    })) else {
        panic!()
    };
    let g = inserted(d.command(&Command::Insert(m.make(0, 0, vec![], vec![b.digest], 1))));
    let again = m.make(1, 0, vec![g], vec![b.digest], 1);
    assert_eq!(
        d.command(&Command::Insert(again)).unwrap_err(),
        "batch-already-referenced"
    );
}

#[test]
fn pruning_removes_old_committed_rounds_with_their_batches() {
    let mut m = Model::equal(4, 2);
    let mut d = Native::new(&m);
    // Round 0 certificates each carry a batch.
    let mut dag: Vec<Vec<Digest>> = vec![vec![]];
    for a in 0..4 {
        let payload = [a as u8];
        let b = m.store_batch(&m.names[a].clone(), &payload).unwrap();
        d.command(&Command::StoreBatch(NewBatch {
            author: m.names[a].clone(),
            payload: Bytes(payload.to_vec()),
            digest: None,
        }))
        .unwrap();
        let cert = m.make(0, a, vec![], vec![b], a as u64);
        assert_eq!(d.command(&Command::Insert(cert.clone())), m.insert(&cert));
        dag[0].push(cert.digest.unwrap());
    }
    for round in 1..8u64 {
        let mut this = Vec::new();
        for a in 0..4 {
            // Only three parents: one round-0 certificate stays uncommitted-by-some.
            let cert = m.make(round, a, dag[round as usize - 1][..3].to_vec(), vec![], 0);
            assert_eq!(d.command(&Command::Insert(cert.clone())), m.insert(&cert));
            this.push(cert.digest.unwrap());
        }
        dag.push(this);
    }
    // Nothing committed: nothing to prune.
    assert_eq!(
        d.command(&Command::Prune {
            max_certificates: None
        }),
        Ok(m.prune(None))
    );
    assert_eq!(meta(&mut d).pruned_certificates, 0);
    let leader = dag[5][0];
    assert_eq!(
        d.command(&Command::Commit {
            leader,
            round: None
        }),
        m.commit(leader)
    );
    // Depth 2 below round 5: rounds 0..=2 go, with budget 5 one round (4) at a time.
    let r = d
        .command(&Command::Prune {
            max_certificates: Some(5),
        })
        .unwrap();
    assert_eq!(Ok(r.clone()), Ok::<_, String>(m.prune(Some(5))));
    let Response::Pruned(p) = r else { panic!() };
    assert_eq!(
        (p.pruned_below_round, p.certificates, p.batches, p.done),
        (1, 4, 4, false)
    );
    let r = d
        .command(&Command::Prune {
            max_certificates: None,
        })
        .unwrap();
    assert_eq!(Ok(r.clone()), Ok::<_, String>(m.prune(None)));
    let Response::Pruned(p) = r else { panic!() };
    assert_eq!((p.pruned_below_round, p.certificates, p.done), (3, 8, true));
    let md = meta(&mut d);
    assert_eq!(
        (
            md.pruned_certificates,
            md.pruned_batches,
            md.batches,
            md.certificates
        ),
        (12, 4, 0, 20)
    );
    assert_eq!(
        d.query(&Query::Certificate {
            digest: dag[0][0],
            round: None
        }),
        Value::Null
    );
    // Round 3 is the floor: its parents are gone, so a new round-3 certificate cannot be checked.
    let late = m.make(3, 3, dag[2][..3].to_vec(), vec![], 0);
    assert_eq!(d.command(&Command::Insert(late.clone())), m.insert(&late));
    assert_eq!(
        d.command(&Command::Insert(late)).unwrap_err(),
        "round-pruned"
    );
    // The DAG above the floor still grows and commits.
    let cert = m.make(8, 0, dag[7].clone(), vec![], 0);
    assert_eq!(d.command(&Command::Insert(cert.clone())), m.insert(&cert));
    let leader = cert.digest.unwrap();
    assert_eq!(
        d.command(&Command::Commit {
            leader,
            round: None
        }),
        m.commit(leader)
    );
    assert_same(&mut d, &m);
}

#[test]
fn the_check_reports_the_first_violation() {
    type Corruption = Box<dyn Fn(&[Vec<Digest>])>;
    let corruptions: Vec<(&str, Corruption)> = vec![
        (
            "missing-parent",
            Box::new(|dag: &[Vec<Digest>]| {
                let author = NODES.get(&(1, dag[1][2].0)).unwrap();
                CERTS.remove(&(1, author));
                NODES.remove(&(1, dag[1][2].0));
                let mut m = store::META.get(&()).unwrap();
                m.certificates -= 1;
                store::META.put(&(), &m);
            }),
        ),
        (
            "digest-mismatch",
            Box::new(|_: &[Vec<Digest>]| {
                let mut row = CERTS.get(&(2, 1)).unwrap();
                match &mut row.parents {
                    store::Parents::Authors(a) => a.pop(),
                    store::Parents::Digests(d) => d.0.pop().map(|_| 0),
                };
                CERTS.put(&(2, 1), &row);
            }),
        ),
        (
            "committed-not-closed",
            Box::new(|_: &[Vec<Digest>]| {
                let mut row = CERTS.get(&(3, 0)).unwrap();
                row.committed = Some(store::CommitMark {
                    commit: 0,
                    position: 0,
                });
                CERTS.put(&(3, 0), &row);
            }),
        ),
        (
            "index-mismatch",
            Box::new(|dag: &[Vec<Digest>]| {
                NODES.put(&(2, dag[2][2].0), &0);
            }),
        ),
        (
            "count-mismatch",
            Box::new(|_: &[Vec<Digest>]| {
                let mut m = store::META.get(&()).unwrap();
                m.certificates += 1;
                store::META.put(&(), &m);
            }),
        ),
    ];
    for (code, corrupt) in corruptions {
        let mut m = Model::equal(4, 50);
        let mut d = Native::new(&m);
        let dag = full_dag(&mut d, &mut m, 5);
        let leader = dag[2][3];
        d.command(&Command::Commit {
            leader,
            round: None,
        })
        .unwrap();
        assert!(check(&mut d).ok);
        corrupt(&dag);
        for page in [None, Some(3)] {
            let report = check_all(&mut d, page);
            assert!(!report.ok, "{code} went unnoticed");
            assert_eq!(report.violation.as_ref().unwrap().code, code, "{report:?}");
        }
    }
}

#[test]
fn weighted_quorum_counts_stake_not_certificates() {
    let mut m = Model::weighted(
        vec![
            ("a".into(), 5),
            ("b".into(), 1),
            ("c".into(), 1),
            ("d".into(), 1),
        ],
        50,
    );
    let mut d = Native::new(&m);
    let dag = full_dag(&mut d, &mut m, 1);
    // quorum = floor(16 / 3) + 1 = 6: "a" plus any one other suffices; b+c+d does not.
    assert_eq!(m.quorum, 6);
    let ok = m.make(1, 1, vec![dag[0][0], dag[0][3]], vec![], 0);
    assert_eq!(d.command(&Command::Insert(ok.clone())), m.insert(&ok));
    let short = m.make(1, 2, dag[0][1..].to_vec(), vec![], 0);
    assert_eq!(
        d.command(&Command::Insert(short)).unwrap_err(),
        "short-quorum"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random valid growth, commits, pruning and single-defect inserts: the
    /// plugin answers every command exactly as the model does, and ends in
    /// the model's state with a passing consistency check.
    #[test]
    fn random_growth_matches_the_model(
        mut m in committee_strategy(),
        steps in prop::collection::vec(step_strategy(false), 1..120),
    ) {
        let mut d = Native::new(&m);
        for (i, s) in steps.iter().enumerate() {
            apply(&mut d, &mut m, s, i as u64);
        }
        assert_same(&mut d, &m);
    }
}

#[test]
fn the_scripted_workload_runs_as_the_model_expects() {
    let (m, script) = model::script(4, 40, 4);
    let mut d = Native::new(&m);
    let mut m = m;
    for (command, want) in &script {
        assert_eq!(d.command(command).as_ref(), Ok(want));
        m.apply_command(command).unwrap();
    }
    assert!(m.pruned_below > 0 && m.commits > 10 && !m.batches.is_empty());
    assert_same(&mut d, &m);
}

#[test]
fn insert_many_answers_each_certificate_and_lists_only_exceptions() {
    let mut m = Model::equal(4, 50);
    let mut d = Native::new(&m);
    let genesis: Vec<NewCertificate> = (0..4)
        .map(|a| m.make(0, a, vec![], vec![], a as u64))
        .collect();
    let digests: Vec<Digest> = genesis.iter().map(|c| c.digest.unwrap()).collect();
    let mut certificates = genesis.clone();
    // Round 1 in the same command, over round-0 certificates inserted just before.
    certificates.push(m.make(1, 0, digests[..3].to_vec(), vec![], 9));
    // A refusal (short quorum) and an equivocation (another round-0 header by v01).
    certificates.push(m.make(1, 1, digests[..2].to_vec(), vec![], 9));
    certificates.push(m.make(0, 1, vec![], vec![Digest([4; 32])], 9));
    let command = Command::InsertMany { certificates };
    let want = m.apply_command(&command);
    let before = meta(&mut d);
    let got = d.command(&command);
    assert_eq!(model::normalize(got.clone()), model::normalize(want));
    let Ok(Response::InsertedMany(report)) = got else {
        panic!("{got:?}")
    };
    assert_eq!(report.inserted, 5);
    assert_eq!(
        (report.refused[0].index, report.refused[0].code.as_str()),
        (5, "short-quorum")
    );
    assert!(
        report.refused[0].message.contains("quorum"),
        "{}",
        report.refused[0].message
    );
    assert_eq!(report.equivocations[0].index, 6);
    assert_eq!(report.equivocations[0].report.existing, digests[1]);
    let after = meta(&mut d);
    assert_eq!(
        (after.certificates, after.evidence),
        (before.certificates + 5, 1)
    );
    let json = d.0.handle_json(
        &serde_json::to_string(&Command::InsertMany {
            certificates: vec![],
        })
        .unwrap(),
    );
    assert_eq!(
        json.unwrap(),
        json!({"inserted_many": {"inserted": 0, "refused": [], "equivocations": []}})
    );
    assert_same(&mut d, &m);
}
