//! The native test kit: run a plugin's logic under plain `cargo test`, with
//! no wasm and no host, against an in-memory store that enforces the host's
//! rules (private tables, key/value limits, read-only queries, and
//! all-or-nothing commands: an error or a panic discards the command's
//! writes, as a trap does in the host).
//!
//! The store is per thread, and each [`Harness::new`] starts it empty, so
//! tests (which cargo runs on separate threads) do not see each other.
//!
//! ```ignore
//! let mut h = Harness::<Counter>::new();
//! h.handle(Command::Add { amount: 2 }).unwrap();
//! assert_eq!(h.query(Query::Total).unwrap(), 2);
//! ```

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::backend::native::STATE;
use crate::context::{Caller, Level};
use crate::error::Error;
use crate::plugin::{Plugin, answer_query, decode_json, encode_json};

/// Raw contents of every table: table name → key bytes → value bytes.
pub type Dump = BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>;

/// Drives one plugin natively over the in-memory store of this thread.
pub struct Harness<P: Plugin> {
    sequence: u64,
    timestamp_ms: u64,
    caller: Option<Caller>,
    _plugin: PhantomData<P>,
}

impl<P: Plugin> Default for Harness<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: Plugin> Harness<P> {
    /// A harness over an empty store. Does not call `init`.
    pub fn new() -> Self {
        STATE.with_borrow_mut(|s| *s = Default::default());
        Self {
            sequence: 0,
            timestamp_ms: 1_700_000_000_000,
            caller: None,
            _plugin: PhantomData,
        }
    }

    /// A harness over an empty store, initialised with `config` as the host
    /// does on first deployment.
    pub fn with_config(config: P::Config) -> Result<Self, Error> {
        let mut h = Self::new();
        h.run_atomic(None, || P::init(config))?;
        Ok(h)
    }

    /// Sets the timestamp the next commands see (the host uses the time it
    /// journaled the command). Each command otherwise advances it by 1 ms.
    pub fn set_timestamp_ms(&mut self, timestamp_ms: u64) {
        self.timestamp_ms = timestamp_ms;
    }

    /// Sets the caller that the next commands and queries see through
    /// [`crate::caller`], until changed (`None`, the default, as for a call
    /// from inside the host). `init` and `migrate` always run without a
    /// caller, as in the host.
    pub fn set_caller(&mut self, caller: Option<Caller>) {
        self.caller = caller;
    }

    /// Sets the caller (see [`Harness::set_caller`]) and returns the harness,
    /// to chain: `h.as_caller(&alice).handle(cmd)`.
    pub fn as_caller(&mut self, caller: &Caller) -> &mut Self {
        self.caller = Some(caller.clone());
        self
    }

    /// The caller the next calls see.
    pub fn caller(&self) -> Option<&Caller> {
        self.caller.as_ref()
    }

    /// The sequence number of the last command run.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    fn run_atomic<T>(
        &mut self,
        caller: Option<Caller>,
        f: impl FnOnce() -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.sequence += 1;
        self.timestamp_ms += 1;
        let (seq, ts) = (self.sequence, self.timestamp_ms);
        STATE.with_borrow_mut(|s| {
            s.undo = Some(Vec::new());
            s.read_only = false;
            s.sequence = seq;
            s.timestamp_ms = ts;
            s.caller = caller;
        });
        let outcome = match catch_unwind(AssertUnwindSafe(f)) {
            Ok(result) => result,
            Err(panic) => {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".to_owned());
                Err(Error::new("trap", why))
            }
        };
        STATE.with_borrow_mut(|s| {
            let undo = s.undo.take().unwrap_or_default();
            if outcome.is_err() {
                for (table, key, old) in undo.into_iter().rev() {
                    let t = s.tables.entry(table).or_default();
                    match old {
                        Some(v) => t.insert(key, v),
                        None => t.remove(&key),
                    };
                }
            }
            s.tables.retain(|_, t| !t.is_empty());
        });
        outcome
    }

    /// Replays a recorded fixture (see [`crate::fixture`]) through `P`
    /// on a fresh store: `init` with the recorded configuration (or the
    /// recorded rows before the first command), then every command with
    /// its recorded sequence, timestamp and caller, each answer compared
    /// with production's. An error is a fixture that does not parse or a
    /// state that does not load.
    pub fn replay_fixture(text: &str) -> Result<crate::fixture::FixtureReport, String> {
        use crate::fixture::{Divergence, FixtureReport, Recorded, parse, same, state_rows};
        let fixture = parse(text)?;
        let mut h = Self::new();
        if let Some(init) = &fixture.header.init {
            let config: P::Config = serde_json::from_value(init.clone())
                .map_err(|e| format!("the recorded init configuration: {e}"))?;
            h.sequence = 0;
            if let Some(ts) = fixture.header.init_timestamp_ms {
                h.timestamp_ms = ts.saturating_sub(1);
            }
            h.run_atomic(None, || P::init(config))
                .map_err(|e| format!("init failed: {}: {}", e.code, e.message))?;
        }
        let rows = state_rows(&fixture.header)?;
        STATE.with_borrow_mut(|s| {
            for (table, key, value) in rows {
                s.tables.entry(table).or_default().insert(key, value);
            }
        });
        let mut report = FixtureReport {
            plugin: fixture.header.plugin.clone(),
            replayed: 0,
            divergences: Vec::new(),
        };
        for c in fixture.commands {
            h.sequence = c.sequence.saturating_sub(1);
            h.timestamp_ms = c.timestamp_ms.saturating_sub(1);
            h.caller = c.caller.clone();
            let got = match h.handle_json(&c.command.to_string()) {
                Ok(v) => Recorded::Ok(v),
                Err(e) => Recorded::Err {
                    code: e.code,
                    message: e.message,
                },
            };
            report.replayed += 1;
            if !same(&c.outcome, &got) {
                report.divergences.push(Divergence {
                    sequence: c.sequence,
                    command: c.command,
                    expected: c.outcome,
                    got,
                });
            }
        }
        Ok(report)
    }

    /// Runs a command atomically: on error or panic its writes are undone.
    pub fn handle(&mut self, command: P::Command) -> Result<P::Response, Error> {
        self.run_atomic(self.caller.clone(), || P::handle(command))
    }

    /// Runs a command given as JSON, exactly as the component receives it.
    pub fn handle_json(&mut self, command: &str) -> Result<serde_json::Value, Error> {
        let bytes = self.run_atomic(self.caller.clone(), || {
            let command = decode_json("command", command.as_bytes())?;
            encode_json(&P::handle(command)?)
        })?;
        Ok(serde_json::from_slice(&bytes).expect("plugin responses are JSON"))
    }

    /// Runs `migrate(from_schema)` atomically.
    pub fn migrate(&mut self, from_schema: u32) -> Result<(), Error> {
        self.run_atomic(None, || P::migrate(from_schema))
    }

    /// Answers a query; any write it attempts is refused.
    pub fn query(&self, request: P::Query) -> Result<P::QueryResponse, Error> {
        STATE.with_borrow_mut(|s| {
            s.read_only = true;
            s.sequence = 0;
            s.caller = self.caller.clone();
        });
        let result = catch_unwind(AssertUnwindSafe(|| P::query(request)))
            .unwrap_or_else(|_| Err(Error::new("trap", "query panicked")));
        STATE.with_borrow_mut(|s| s.read_only = false);
        result
    }

    /// Answers a query given as JSON.
    pub fn query_json(&self, request: &str) -> Result<serde_json::Value, Error> {
        let request = decode_json("query", request.as_bytes())?;
        let response = self.query(request)?;
        Ok(serde_json::to_value(response).expect("plugin responses are JSON"))
    }

    /// Answers a query given as raw bytes exactly as the component does,
    /// the SDK's reserved queries included (see [`Plugin::tables`]); the
    /// answer is the JSON the host receives. Any write is refused.
    pub fn query_bytes(&self, request: &[u8]) -> Result<Vec<u8>, Error> {
        STATE.with_borrow_mut(|s| {
            s.read_only = true;
            s.sequence = 0;
            s.caller = self.caller.clone();
        });
        let result = catch_unwind(AssertUnwindSafe(|| answer_query::<P>(request)))
            .unwrap_or_else(|_| Err(Error::new("trap", "query panicked")));
        STATE.with_borrow_mut(|s| s.read_only = false);
        result
    }

    /// Checks that every stored row belongs to a table declared in
    /// [`Plugin::tables`], decodes to JSON, and encodes back from that JSON
    /// (as text, as an export file holds it) to the same bytes. Returns the
    /// number of rows checked, or the first failure.
    pub fn check_declared_tables(&self) -> Result<usize, String> {
        let codecs = P::tables();
        let mut rows = 0;
        for (table, entries) in self.dump() {
            let codec = codecs
                .iter()
                .find(|c| c.name() == table)
                .ok_or_else(|| format!("table {table} is not declared in {}::tables()", P::NAME))?;
            for (key, value) in entries {
                let (k, v) = codec
                    .decode(&key, &value)
                    .map_err(|e| format!("table {table}, key {key:?}: {e}"))?;
                let (k, v) = (k.to_string(), v.to_string());
                let parse = |text: &str| serde_json::from_str::<serde_json::Value>(text);
                let again = codec
                    .encode(&parse(&k).expect("JSON"), &parse(&v).expect("JSON"))
                    .map_err(|e| format!("table {table}, key {k}: {e}"))?;
                if again != (key, value) {
                    return Err(format!(
                        "table {table}, key {k}: the JSON {v} encodes to other bytes"
                    ));
                }
                rows += 1;
            }
        }
        Ok(rows)
    }

    /// A copy of every table's raw contents, to compare states.
    pub fn dump(&self) -> Dump {
        STATE.with_borrow(|s| s.tables.clone())
    }

    /// Log lines written so far, oldest first.
    pub fn logs(&self) -> Vec<(Level, String)> {
        STATE.with_borrow(|s| s.logs.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Table;

    const SEEN: Table<u64, Option<Caller>> = Table::new("seen");

    /// Records the caller of each command and `init`/`migrate`, answers it.
    struct Echo;

    impl Plugin for Echo {
        const NAME: &'static str = "echo";
        const VERSION: &'static str = "1";
        const SCHEMA: u32 = 1;
        type Config = ();
        type Command = ();
        type Response = Option<Caller>;
        type Query = ();
        type QueryResponse = Option<Caller>;

        fn init(_: ()) -> Result<(), Error> {
            SEEN.put(&0, &crate::caller());
            Ok(())
        }

        fn handle(_: ()) -> Result<Option<Caller>, Error> {
            SEEN.put(&crate::sequence(), &crate::caller());
            Ok(crate::caller())
        }

        fn query(_: ()) -> Result<Option<Caller>, Error> {
            Ok(crate::caller())
        }

        fn migrate(_: u32) -> Result<(), Error> {
            SEEN.put(&u64::MAX, &crate::caller());
            Ok(())
        }
    }

    #[test]
    fn commands_and_queries_see_the_caller_the_harness_sets() {
        let alice = Caller::new("alice", ["client"]);
        let op = Caller::new("ops", ["client", "operator"]);
        assert!(op.is_operator() && !alice.is_operator());
        assert!(alice.has_role("client") && !alice.has_role("Client"));

        let mut h = Harness::<Echo>::with_config(()).unwrap();
        h.set_caller(Some(alice.clone()));
        assert_eq!(h.handle(()).unwrap(), Some(alice.clone()));
        assert_eq!(h.query(()).unwrap(), Some(alice.clone()));
        assert_eq!(h.as_caller(&op).handle(()).unwrap(), Some(op.clone()));
        assert_eq!(h.query_json("null").unwrap()["principal"], "ops");
        h.migrate(1).unwrap();
        h.set_caller(None);
        assert_eq!(h.handle(()).unwrap(), None);
        // init and migrate run without a caller, whatever the harness holds.
        let seen: Vec<_> = SEEN.iter().collect();
        assert_eq!(
            seen,
            vec![
                (0, None),
                (2, Some(alice)),
                (3, Some(op)),
                (5, None),
                (u64::MAX, None)
            ]
        );
    }
}
