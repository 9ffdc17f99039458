//! Model-based test of the storage layer: random batches of random
//! commands (puts, removes, failed commands that must leave no trace),
//! random checkpoints, random reads and scans through read views, views
//! held across later batches and checkpoints, and random crashes (the
//! database dropped with its in-memory state, then reopened through the
//! write-ahead log) — all checked against an in-memory reference model.
//! Half the seeds give each plugin a resident budget of a few rows, so
//! rows are evicted after checkpoints and read through from redb.
//!
//! Reproducible by seed: `KEEL_MODEL_SEED=<n>` runs one seed,
//! `KEEL_MODEL_SEEDS=<count>` (default 12) that many from 1.

use std::collections::BTreeMap;
use std::ops::Bound;

use keel_host::state_hash::StateHash;
use keel_host::storage::read::{ScanDirection, ScanState};
use keel_host::storage::{
    CheckpointPolicy, Db, Deployment, Durability, EntryKind, JournalEntry, Outcome, PluginRecord,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const PLUGINS: [u32; 2] = [1, 2];
const TABLES: [&str; 2] = ["a", "b"];

type Model = BTreeMap<(u32, String, Vec<u8>), Vec<u8>>;

fn record(id: u32, last_sequence: u64, hash: StateHash) -> PluginRecord {
    PluginRecord {
        id,
        name: format!("p{id}"),
        deployments: vec![Deployment {
            module_hash: [0; 32],
            version: "1".into(),
            schema: 1,
            sequence: 1,
        }],
        last_sequence,
        last_timestamp_ms: last_sequence,
        state_hash: hash,
    }
}

fn key(rng: &mut StdRng) -> Vec<u8> {
    // A small key space, so that keys are written, removed and rewritten
    // across batches, layers and checkpoints.
    vec![rng.random_range(0..40u8)]
}

struct Sim {
    rng: StdRng,
    dir: tempfile::TempDir,
    db: Option<Db>,
    /// Committed state (every acknowledged batch).
    model: Model,
    /// Per plugin: last sequence and the hash the model's rows give.
    sequences: BTreeMap<u32, u64>,
    hashes: BTreeMap<u32, StateHash>,
    policy: CheckpointPolicy,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = StdRng::seed_from_u64(seed);
        let policy = CheckpointPolicy {
            // Tiny budgets and intervals: the background checkpointer runs
            // in the middle of the test's batches too.
            interval_ms: rng.random_range(1..20),
            log_bytes_max: rng.random_range(64..4096),
            // A row counts for its key and value plus 80 bytes.
            resident_bytes_max: if rng.random_bool(0.5) {
                rng.random_range(0..3000)
            } else {
                CheckpointPolicy::default().resident_bytes_max
            },
            ..CheckpointPolicy::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let mut sim = Sim {
            rng,
            dir,
            db: None,
            model: Model::new(),
            sequences: PLUGINS.iter().map(|&p| (p, 0)).collect(),
            hashes: PLUGINS.iter().map(|&p| (p, StateHash::EMPTY)).collect(),
            policy,
        };
        sim.open();
        sim
    }

    fn open(&mut self) {
        let path = self.dir.path().join("keel.redb");
        self.db = Some(Db::open_with(&path, Durability::Immediate, self.policy).unwrap());
    }

    fn db(&self) -> &Db {
        self.db.as_ref().unwrap()
    }

    /// One batch of 1..8 commands for `plugin`; each command writes 1..5
    /// rows and fails (is undone) with probability 1/4.
    fn batch(&mut self, plugin: u32) {
        let mut batch = self.db().begin_batch(plugin).unwrap();
        batch.set_state_hash(self.hashes[&plugin]);
        let mut model = self.model.clone();
        let mut sequence = self.sequences[&plugin];
        for _ in 0..self.rng.random_range(1..8) {
            batch.begin_command();
            let mut command_model = model.clone();
            for _ in 0..self.rng.random_range(1..5) {
                let table = TABLES[self.rng.random_range(0..TABLES.len())];
                let k = key(&mut self.rng);
                let mk = (plugin, table.to_owned(), k.clone());
                // Reads see the batch's own earlier writes.
                assert_eq!(
                    batch.get(plugin, table, &k).unwrap(),
                    command_model.get(&mk).cloned(),
                    "read inside a batch"
                );
                if self.rng.random_bool(0.7) {
                    let v = vec![self.rng.random::<u8>(); self.rng.random_range(0..6)];
                    let existed = batch.write(plugin, table, &k, Some(&v)).unwrap();
                    assert_eq!(existed, command_model.contains_key(&mk));
                    command_model.insert(mk, v);
                } else {
                    let existed = batch.write(plugin, table, &k, None).unwrap();
                    assert_eq!(existed, command_model.contains_key(&mk));
                    command_model.remove(&mk);
                }
            }
            sequence += 1;
            let failed = self.rng.random_bool(0.25);
            if failed {
                batch.undo_command().unwrap();
            } else {
                batch.keep_command();
                model = command_model;
            }
            batch.append_journal(
                plugin,
                &JournalEntry {
                    sequence,
                    timestamp_ms: sequence,
                    module_hash: [0; 32],
                    kind: EntryKind::Command {
                        bytes: b"{}".to_vec(),
                    },
                    outcome: if failed {
                        Outcome::Err {
                            code: "x".into(),
                            message: "undone".into(),
                        }
                    } else {
                        Outcome::Ok(b"null".to_vec())
                    },
                    caller: None,
                    new_instance: sequence % 3 == 0,
                    failed_on_kept_instance: failed && sequence % 2 == 0,
                },
            );
        }
        let hash = batch.state_hash();
        batch.put_plugin(&record(plugin, sequence, hash)).unwrap();
        if self.rng.random_bool(0.05) {
            // Abandoned: nothing of it may remain.
            batch.abort();
            return;
        }
        batch.commit_durable().unwrap();
        self.model = model;
        self.sequences.insert(plugin, sequence);
        self.hashes.insert(plugin, hash);
    }

    fn expected(&self, plugin: u32) -> BTreeMap<(String, Vec<u8>), Vec<u8>> {
        self.model
            .iter()
            .filter(|((p, _, _), _)| *p == plugin)
            .map(|((_, t, k), v)| ((t.clone(), k.clone()), v.clone()))
            .collect()
    }

    fn check(&mut self, when: &str) {
        for plugin in PLUGINS {
            let expected = self.expected(plugin);
            assert_eq!(
                self.db().dump_plugin(plugin).unwrap(),
                expected,
                "{when}: dump of {plugin}"
            );
            let mut hash = StateHash::EMPTY;
            for ((t, k), v) in &expected {
                hash.add(t, k, v);
            }
            assert_eq!(
                hash, self.hashes[&plugin],
                "{when}: the hash follows the rows"
            );
            let last = self.sequences[&plugin];
            let journal = self.db().journal(plugin, 1, u64::MAX).unwrap();
            assert_eq!(journal.len() as u64, last, "{when}: journal of {plugin}");
            assert!(
                journal
                    .iter()
                    .enumerate()
                    .all(|(i, e)| e.sequence == i as u64 + 1)
            );
            if last > 0 {
                let stored = self
                    .db()
                    .plugins()
                    .unwrap()
                    .into_iter()
                    .find(|r| r.id == plugin)
                    .expect("record");
                assert_eq!(stored.last_sequence, last, "{when}: record of {plugin}");
                assert_eq!(stored.state_hash, self.hashes[&plugin]);
            }
            // A random scan, chunk by chunk, in a random direction.
            let table = TABLES[self.rng.random_range(0..TABLES.len())];
            let lo = self.rng.random_range(0..45u8);
            let hi = self.rng.random_range(lo..50u8);
            let direction = if self.rng.random_bool(0.5) {
                ScanDirection::Forward
            } else {
                ScanDirection::Backward
            };
            let mut scan = ScanState {
                table: table.into(),
                lower: Bound::Included(vec![lo]),
                upper: Bound::Excluded(vec![hi]),
                direction,
                done: false,
            };
            let view = self.db().view(plugin).unwrap();
            assert_eq!(
                view.row_count(),
                expected.len(),
                "{when}: row count of {plugin}"
            );
            let chunk = self.rng.random_range(1..5);
            let mut got = Vec::new();
            loop {
                let rows = view.scan_chunk(plugin, &mut scan, chunk).unwrap();
                if rows.is_empty() {
                    break;
                }
                got.extend(rows);
            }
            let mut want: Vec<(Vec<u8>, Vec<u8>)> = expected
                .iter()
                .filter(|((t, k), _)| {
                    t == table && k.as_slice() >= [lo].as_slice() && k.as_slice() < [hi].as_slice()
                })
                .map(|((_, k), v)| (k.clone(), v.clone()))
                .collect();
            if direction == ScanDirection::Backward {
                want.reverse();
            }
            assert_eq!(got, want, "{when}: scan {table} [{lo}, {hi}) {direction:?}");
        }
    }

    /// A view taken now still reads the state of now after more batches
    /// and a checkpoint (which may evict rows and forget removals).
    fn held_view(&mut self, when: &str) {
        let plugin = PLUGINS[self.rng.random_range(0..PLUGINS.len())];
        let expected = self.expected(plugin);
        let view = self.db().view(plugin).unwrap();
        for _ in 0..self.rng.random_range(1..4) {
            self.batch(plugin);
        }
        self.db().checkpoint().unwrap();
        self.batch(plugin);
        assert_eq!(view.dump().unwrap(), expected, "{when}: a held view");
        for ((t, k), v) in &expected {
            assert_eq!(view.get(plugin, t, k).unwrap().as_ref(), Some(v));
        }
        assert_eq!(view.row_count(), expected.len(), "{when}: held view count");
    }

    fn crash(&mut self) {
        let db = self.db.take().unwrap();
        db.stop_background();
        drop(db);
        if self.rng.random_bool(0.3) {
            self.tear_the_log();
        }
        self.open();
    }

    /// Leaves a torn record at the end of the log, as a crash in the
    /// middle of a write does: recovery must cut it off (and later
    /// records, in a new segment, must not make it read as damage).
    fn tear_the_log(&mut self) {
        let dir = self.dir.path().join("keel.redb.wal");
        let Some(last) = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "wal"))
            .max()
        else {
            return;
        };
        let torn: Vec<u8> = (0..self.rng.random_range(1..48))
            .map(|i| if i < 4 { b"KWAL"[i] } else { self.rng.random() })
            .collect();
        // The torn write lands where the segment's records end: a
        // recycled segment has older records after them.
        let first: u64 = last
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse().ok())
            .expect("a segment is named by its first record");
        let bytes = std::fs::read(&last).unwrap();
        let (mut at, mut expected) = (0, first);
        while bytes.len() >= at + 32
            && &bytes[at..at + 4] == b"KWAL"
            && u64::from_le_bytes(bytes[at + 8..at + 16].try_into().unwrap()) == expected
        {
            at += 32 + u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
            expected += 1;
        }
        let file = std::fs::OpenOptions::new().write(true).open(last).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, &torn, at as u64).unwrap();
    }
}

/// Runs one seed; returns the rows evicted.
fn run(seed: u64) -> u64 {
    let mut sim = Sim::new(seed);
    let mut evicted = 0;
    for step in 0..300 {
        let plugin = PLUGINS[sim.rng.random_range(0..PLUGINS.len())];
        sim.batch(plugin);
        match sim.rng.random_range(0..100) {
            0..=9 => sim.check(&format!("seed {seed} step {step}")),
            10..=13 => sim.db().checkpoint().unwrap(),
            17..=19 => sim.held_view(&format!("seed {seed} step {step}")),
            14..=16 => {
                evicted += sim.db().evicted_rows();
                sim.crash();
                sim.check(&format!("seed {seed} step {step} after a crash"));
            }
            _ => {}
        }
    }
    sim.check(&format!("seed {seed} at the end"));
    evicted += sim.db().evicted_rows();
    sim.crash();
    sim.check(&format!("seed {seed} after the last crash"));
    evicted
}

#[test]
fn storage_matches_the_model_through_batches_checkpoints_and_crashes() {
    if let Ok(seed) = std::env::var("KEEL_MODEL_SEED") {
        let evicted = run(seed.parse().expect("KEEL_MODEL_SEED is a number"));
        eprintln!("rows evicted: {evicted}");
        return;
    }
    let seeds: u64 = std::env::var("KEEL_MODEL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let mut evicted = 0;
    for seed in 1..=seeds {
        evicted += run(seed);
    }
    assert!(
        seeds < 4 || evicted > 0,
        "the tiny resident budgets evicted rows"
    );
}
