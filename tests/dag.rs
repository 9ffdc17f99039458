//! Component-level tests of the dag plugin: the real component in a real
//! host on a real redb file. After a crash (`TestHost::crash_and_restart`)
//! and after SIGKILL of a `keel serve` process the DAG, its committed set
//! and its metadata are exactly what was acknowledged and the consistency
//! check passes; random DAG growth with restarts inserted agrees with the
//! reference model; invalid inserts are refused; the largest check, commit
//! and prune pages fit the default fuel.

#[path = "../plugins/dag/tests/model/mod.rs"]
mod model;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_plugin_dag::{Command, Digest, Query, Response};
use keel_tests::server::Server;
use keel_tests::{TestHost, plugins};
use model::{
    Driver, Model, apply, assert_same, check_all, committee_strategy, script, step_strategy,
};
use proptest::prelude::*;
use serde_json::{Value, json};

fn component() -> Vec<u8> {
    keel_tests::component(plugins::DAG)
}

/// A test host with the dag plugin deployed for `model`'s committee.
struct Host {
    t: TestHost,
}

impl Host {
    fn new(model: &Model) -> Self {
        Self::with_host(TestHost::new(), model)
    }

    fn with_host(t: TestHost, model: &Model) -> Self {
        t.deploy(&component(), Some(model.config()))
            .expect("deploying dag");
        Host { t }
    }

    fn last_sequence(&self) -> u64 {
        self.t.status("dag").last_sequence
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap()
}

impl Driver for Host {
    fn command(&mut self, command: &Command) -> Result<Response, String> {
        self.t
            .call("dag", to_json(command))
            .map(|v| serde_json::from_value(v).unwrap())
            .map_err(|e| e.code().to_owned())
    }

    fn query(&mut self, query: &Query) -> Value {
        self.t
            .query("dag", to_json(query))
            .unwrap_or_else(|e| panic!("{}: {e}", to_json(query)))
    }

    fn restart(&mut self, crash: bool) {
        if crash {
            self.t.crash_and_restart();
        } else {
            self.t.restart();
        }
    }
}

/// A `keel serve` process driven over HTTP.
struct Http<'a>(&'a Server);

impl Driver for Http<'_> {
    fn command(&mut self, command: &Command) -> Result<Response, String> {
        self.0
            .call("dag", &to_json(command))
            .map(|(_, v)| serde_json::from_value(v).unwrap())
            .map_err(|(_, body)| body["error"]["code"].as_str().unwrap_or("?").to_owned())
    }

    fn query(&mut self, query: &Query) -> Value {
        self.0
            .query("dag", &to_json(query))
            .unwrap_or_else(|e| panic!("{}: {e:?}", to_json(query)))
    }
}

/// The model after the first `n` commands of a script.
fn model_after(start: &Model, script: &[(Command, Response)], n: usize) -> Model {
    let mut m = start.clone();
    for (command, _) in &script[..n] {
        m.apply_command(command).unwrap();
    }
    m
}

/// A crash while thousands of pipelined inserts are in flight: every
/// acknowledged command is there, nothing else but a prefix of what was
/// submitted, and the restarted host holds exactly the model's DAG.
#[test]
fn crash_with_commands_in_flight_keeps_exactly_the_acknowledged_dag() {
    let (start, script) = script(4, 500, 6);
    // Small group commits, so that the crash finds most commands queued.
    let t = TestHost::with_config(|c| c.batch.max_commands = 128);
    let mut h = Host::with_host(t, &start);
    let base = h.last_sequence();
    let submit = |h: &Host, from: usize, to: usize| -> Vec<_> {
        script[from..to]
            .iter()
            .map(|(c, _)| {
                h.t.host()
                    .submit_pipelined("dag", to_json(c).to_string().as_bytes())
                    .unwrap()
            })
            .collect()
    };
    let first = 1000;
    for (rx, (_, want)) in submit(&h, 0, first).into_iter().zip(&script) {
        let receipt = rx.blocking_recv().unwrap().unwrap();
        let got: Response = serde_json::from_slice(&receipt.response).unwrap();
        assert_eq!(&got, want);
    }
    let mut in_flight = submit(&h, first, script.len());
    // Let some of them commit, then crash with the rest queued.
    for rx in in_flight.drain(..50) {
        rx.blocking_recv().unwrap().unwrap();
    }
    h.restart(true);
    let mut acknowledged = first + 50;
    for (i, rx) in in_flight.iter_mut().enumerate() {
        if let Ok(Ok(receipt)) = rx.try_recv() {
            let index = first + 50 + i;
            assert_eq!(index, acknowledged, "acknowledgements are a prefix");
            let got: Response = serde_json::from_slice(&receipt.response).unwrap();
            assert_eq!(got, script[index].1);
            acknowledged += 1;
        }
    }
    let applied = (h.last_sequence() - base) as usize;
    assert!(
        applied >= acknowledged,
        "{acknowledged} acknowledged, {applied} recovered"
    );
    assert!(
        applied < script.len(),
        "the crash came too late to prove anything"
    );
    let m = model_after(&start, &script, applied);
    assert_same(&mut h, &m);

    // The DAG keeps growing from where it stands, and the journal replays to it.
    let mut m = m;
    for (rx, (command, want)) in submit(&h, applied, script.len())
        .into_iter()
        .zip(&script[applied..])
    {
        let receipt = rx.blocking_recv().unwrap().unwrap();
        let got: Response = serde_json::from_slice(&receipt.response).unwrap();
        assert_eq!(&got, want);
        m.apply_command(command).unwrap();
    }
    h.restart(true);
    assert_same(&mut h, &m);
    assert!(
        h.t.verify_replay().iter().all(|v| v.ok()),
        "journal replay differs"
    );
    keel_tests::assert_export_round_trip(&h.t, "dag", plugins::DAG);
}

/// SIGKILL of a real `keel serve` while a client streams commands over
/// HTTP, three times: after each restart the state is the model's after
/// exactly the acknowledged commands (plus at most the one in flight).
#[test]
fn sigkill_cycles_keep_exactly_the_acknowledged_dag() {
    let (start, script) = script(4, 1500, 6);
    let script = Arc::new(script);
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[("dag", Some(start.config()))]);
    let base = server.plugin_status("dag")["last_sequence"]
        .as_u64()
        .unwrap();
    let mut next = 0usize;
    for cycle in 0..3u64 {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let (script, acked, url) =
                (script.clone(), acked.clone(), server.base_url().to_owned());
            std::thread::spawn(move || {
                let agent = ureq::Agent::new_with_defaults();
                for (i, (command, want)) in script.iter().enumerate().skip(next) {
                    let sent = agent
                        .post(format!("{url}/v1/plugins/dag/commands"))
                        .send(to_json(command).to_string().as_bytes());
                    let Ok(mut resp) = sent else { return };
                    let Ok(body) = resp.body_mut().read_json::<Value>() else {
                        return;
                    };
                    let got: Response = serde_json::from_value(body["response"].clone()).unwrap();
                    assert_eq!(&got, want, "command {i}");
                    acked.lock().unwrap().push(i);
                }
            })
        };
        std::thread::sleep(Duration::from_millis(400 + 250 * cycle));
        server.kill();
        writer.join().expect("the writer saw a wrong answer");
        let acked = acked.lock().unwrap().clone();
        assert!(
            !acked.is_empty(),
            "cycle {cycle}: nothing was acknowledged before the kill"
        );
        assert_eq!(acked, (next..next + acked.len()).collect::<Vec<_>>());

        server.restart();
        let applied = (server.plugin_status("dag")["last_sequence"]
            .as_u64()
            .unwrap()
            - base) as usize;
        let acknowledged = next + acked.len();
        assert!(
            applied == acknowledged || applied == acknowledged + 1,
            "cycle {cycle}: {acknowledged} acknowledged, {applied} recovered"
        );
        assert!(applied < script.len(), "the script ran out before the kill");
        let m = model_after(&start, &script, applied);
        assert_same(&mut Http(&server), &m);
        next = applied;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    /// Random valid growth, commits, pruning, single-defect inserts and
    /// crash or clean restarts, in the real component: every answer and the
    /// final state equal the reference model's.
    #[test]
    fn random_growth_with_restarts_matches_the_model(
        mut m in committee_strategy(),
        steps in prop::collection::vec(step_strategy(true), 1..80),
    ) {
        let mut h = Host::new(&m);
        for (i, s) in steps.iter().enumerate() {
            apply(&mut h, &mut m, s, i as u64);
        }
        assert_same(&mut h, &m);
        h.restart(true);
        assert_same(&mut h, &m);
    }
}

/// Builds `rounds` full rounds; each certificate's parents are the whole
/// round below. Returns the model and the digests by round.
fn full_rounds(h: &mut Host, m: &mut Model, rounds: u64) -> Vec<Vec<Digest>> {
    let mut dag: Vec<Vec<Digest>> = Vec::new();
    for round in 0..rounds {
        let parents = if round == 0 {
            vec![]
        } else {
            dag[round as usize - 1].clone()
        };
        let pending: Vec<_> = (0..m.names.len())
            .map(|a| {
                let cert = m.make(round, a, parents.clone(), vec![], round);
                m.insert(&cert).unwrap();
                h.t.host()
                    .submit_pipelined(
                        "dag",
                        to_json(&Command::Insert(cert)).to_string().as_bytes(),
                    )
                    .unwrap()
            })
            .collect();
        let mut this = Vec::new();
        for rx in pending {
            let receipt = rx.blocking_recv().unwrap().unwrap();
            match serde_json::from_slice(&receipt.response).unwrap() {
                Response::Inserted(i) => this.push(i.digest),
                other => panic!("{other:?}"),
            }
        }
        dag.push(this);
    }
    dag
}

#[test]
fn invalid_inserts_are_refused_and_change_nothing() {
    let mut m = Model::equal(4, 50);
    let mut h = Host::new(&m);
    let dag = full_rounds(&mut h, &mut m, 3);
    let refused = |h: &mut Host, cert: keel_plugin_dag::NewCertificate, code: &str| {
        let (hash, tables, seq) = (h.t.state_hash("dag"), h.t.tables("dag"), h.last_sequence());
        let err =
            h.t.call("dag", to_json(&Command::Insert(cert)))
                .unwrap_err();
        assert_eq!(err.code(), code, "{err}");
        assert_eq!(
            err.sequence(),
            Some(seq + 1),
            "a refused command is journaled"
        );
        assert_eq!(h.t.state_hash("dag"), hash, "{code} changed the state hash");
        assert_eq!(h.t.tables("dag"), tables, "{code} changed the tables");
    };
    let mut parents = dag[2][..3].to_vec();
    parents.push(Digest([0xAB; 32]));
    refused(&mut h, m.make(3, 0, parents, vec![], 1), "missing-parent");
    refused(
        &mut h,
        m.make(3, 0, dag[2][..2].to_vec(), vec![], 1),
        "short-quorum",
    );
    let mut bad = m.make(3, 0, dag[2].clone(), vec![], 1);
    bad.digest = Some(Digest([7; 32]));
    refused(&mut h, bad, "bad-digest");
    refused(&mut h, m.make(2, 3, dag[1].clone(), vec![], 1), "duplicate");
    let mut wrong_round = dag[2][..3].to_vec();
    wrong_round.push(dag[0][3]);
    refused(
        &mut h,
        m.make(3, 0, wrong_round, vec![], 1),
        "parent-wrong-round",
    );

    // Equivocation: refused, the DAG unchanged, the evidence recorded and kept.
    let certs_before = h.query(&Query::ByRound {
        round: 2,
        after: None,
        limit: None,
    });
    let conflicting = m.make(2, 1, dag[1][1..].to_vec(), vec![], 77);
    let r = h.command(&Command::Insert(conflicting.clone())).unwrap();
    assert_eq!(Ok(r.clone()), m.insert(&conflicting));
    assert!(
        matches!(r, Response::Equivocation(ref e) if e.existing == dag[2][1] && e.first_report)
    );
    h.restart(true);
    let certs_after = h.query(&Query::ByRound {
        round: 2,
        after: None,
        limit: None,
    });
    assert_eq!(certs_before, certs_after);
    let evidence = h.query(&Query::Evidence {
        after: None,
        limit: None,
    });
    assert_eq!(
        evidence["evidence"][0]["conflicting"]["digest"],
        json!(conflicting.digest.unwrap().to_hex())
    );
    assert_same(&mut h, &m);
}

/// The biggest single calls — a check page, a certificate page, a causal
/// history, a commit and a prune at their maximum weight — fit in half the
/// default fuel (200 M), for a large committee (n = 50, every certificate
/// over all 50 parents) and a small one (n = 4, where the fixed cost per
/// certificate dominates). Fuel counts wasm instructions: deterministic.
#[test]
fn the_largest_calls_fit_half_the_default_fuel() {
    use keel_plugin_dag::store::{COMMIT_WEIGHT_MAX, PRUNE_WEIGHT_MAX, weight};
    for n in [50usize, 4] {
        let t = TestHost::with_config(|c| c.limits.fuel_per_call = 100_000_000);
        let mut m = Model::equal(n, 0);
        let mut h = Host::with_host(t, &m);
        let (genesis, w) = (weight(0), weight(n));
        // Weight of the history of a round-r leader (genesis certificates have no parents).
        let history = |r: u64| n as u64 * genesis + (r - 1) * n as u64 * w + w;
        // The highest leader whose whole history fits one commit.
        let leader_round = (1..)
            .take_while(|&r| history(r) <= COMMIT_WEIGHT_MAX)
            .last()
            .unwrap();
        let dag = full_rounds(&mut h, &mut m, leader_round + 2);
        let report = check_all(&mut h, None);
        assert!(report.ok && report.complete, "n={n}: {report:?}");
        for query in [
            Query::Uncommitted {
                after: None,
                limit: Some(1000),
            },
            Query::CausalHistory {
                digest: dag[leader_round as usize + 1][0],
                round: None,
                limit: Some(10_000),
            },
        ] {
            let answer = h.query(&query);
            assert!(
                answer.to_string().len() < 4 << 20,
                "n={n}: answer too large"
            );
        }
        let too_far = dag[leader_round as usize + 1][0];
        assert_eq!(
            h.command(&Command::Commit {
                leader: too_far,
                round: None
            })
            .unwrap_err(),
            "commit-too-large"
        );
        let leader = dag[leader_round as usize][0];
        let r = h
            .command(&Command::Commit {
                leader,
                round: None,
            })
            .unwrap();
        assert_eq!(Ok(r), m.commit(leader));
        // Depth 0: every round below the leader's, just under the prune budget.
        assert!(history(leader_round) - w <= PRUNE_WEIGHT_MAX);
        let r = h
            .command(&Command::Prune {
                max_certificates: None,
            })
            .unwrap();
        assert_eq!(r, m.prune(None));
        assert_eq!(
            m.pruned_below, leader_round,
            "n={n}: one prune removed every round below the leader"
        );
        assert_same(&mut h, &m);
    }
}

/// The access rule through the real host with different callers (see
/// `keel_plugin_dag::access`): an author inserting another's certificate or
/// batch, or a client committing or pruning, is refused and the state hash
/// does not move; each author inserts its own and the operator commits and
/// prunes; the result agrees with the model and replay reproduces every
/// caller.
#[test]
fn authors_insert_only_their_own_and_only_the_operator_commits_and_prunes() {
    use keel_host::Caller;

    let mut m = Model::equal(4, 0);
    let mut h = Host::new(&m);
    let names = m.names.clone();
    let author = |i: usize| Caller::new(names[i].clone(), ["client"]);
    let operator = Caller::new("ops", ["client", "operator"]);
    let refused = |h: &Host, caller: &Caller, cmd: &Command, code: &str| {
        let hash = h.t.state_hash("dag");
        let err = h.t.call_as("dag", caller, to_json(cmd)).unwrap_err();
        assert_eq!(
            err.code(),
            code,
            "{} sending {}: {err}",
            caller.principal,
            to_json(cmd)
        );
        assert_eq!(h.t.state_hash("dag"), hash, "{code} changed the state hash");
    };
    let run = |h: &Host, m: &mut Model, caller: &Caller, cmd: Command| {
        let want = m.apply_command(&cmd);
        let got =
            h.t.call_as("dag", caller, to_json(&cmd))
                .map(|v| serde_json::from_value::<Response>(v).unwrap())
                .map_err(|e| e.code().to_owned());
        assert_eq!(got, want, "{} sending {}", caller.principal, to_json(&cmd));
        got.unwrap()
    };

    // Genesis: each author its own.
    let mut genesis = Vec::new();
    for i in 0..names.len() {
        let cert = m.make(0, i, vec![], vec![], i as u64);
        // Another author, and the operator, may not insert it.
        refused(
            &h,
            &author((i + 1) % names.len()),
            &Command::Insert(cert.clone()),
            "not-owner",
        );
        refused(&h, &operator, &Command::Insert(cert.clone()), "not-owner");
        match run(&h, &mut m, &author(i), Command::Insert(cert)) {
            Response::Inserted(ins) => genesis.push(ins.digest),
            other => panic!("{other:?}"),
        }
    }
    // Batches belong to their author too.
    let batch = keel_plugin_dag::NewBatch {
        author: names[0].clone(),
        payload: keel_plugin_dag::Bytes(vec![1, 2, 3]),
        digest: None,
    };
    refused(
        &h,
        &author(1),
        &Command::StoreBatch(batch.clone()),
        "not-owner",
    );
    run(&h, &mut m, &author(0), Command::StoreBatch(batch));
    // insert_many naming another author is refused whole.
    let round1: Vec<_> = (0..names.len())
        .map(|i| m.make(1, i, genesis.clone(), vec![], 10 + i as u64))
        .collect();
    refused(
        &h,
        &author(0),
        &Command::InsertMany {
            certificates: round1[..2].to_vec(),
        },
        "not-owner",
    );
    let leader = match run(
        &h,
        &mut m,
        &author(0),
        Command::InsertMany {
            certificates: round1[..1].to_vec(),
        },
    ) {
        Response::InsertedMany(r) => {
            assert_eq!(r.inserted, 1);
            round1[0].digest.expect("the model gives digests")
        }
        other => panic!("{other:?}"),
    };
    // Commit and prune: the operator's.
    let commit = Command::Commit {
        leader,
        round: None,
    };
    let prune = Command::Prune {
        max_certificates: None,
    };
    for i in 0..names.len() {
        refused(&h, &author(i), &commit, "operator-only");
        refused(&h, &author(i), &prune, "operator-only");
    }
    run(&h, &mut m, &operator, commit);
    run(&h, &mut m, &operator, prune);
    assert_same(&mut h, &m);
    let verdicts = h.t.verify_replay();
    assert!(verdicts.iter().all(|v| v.ok()), "{verdicts:?}");
}
