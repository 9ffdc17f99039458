//! The README's example plugin: named counters.
//!
//! Commands: `{"add": {"name": "apples", "amount": 3}}`, `{"reset": {"name": "apples"}}`.
//! Queries: `{"get": {"name": "apples"}}`, `"list"`.
//!
//! # Two versions, for hot-swap
//!
//! The default build is version 1.0.0, schema 1: one table, `counts`
//! (name → value, any `i64`). Built with the cargo feature `v2` (the bundle
//! ships it as `counter-v2`) it is version 2.0.0, schema 2, which adds:
//!
//! - table `ranking`: `(value as i32, name) → ()`, every counter ordered by
//!   value, behind the query `{"top": {"n": 3}}` →
//!   `[{"name": "b", "value": 7}, {"name": "a", "value": 5}, ...]`;
//! - table `summary`: one row (key 0) `{counters, total}`, the number of
//!   counters and the sum of their values, behind the query `"summary"` →
//!   `{"counters": 2, "total": 12}`; `add` also answers the new total:
//!   `{"value": 5, "sequence": 9, "total": 12}`. The row is absent while
//!   there are no counters, so an empty plugin has the same (empty) state in
//!   both schemas.
//! - a bound: every counter stays within the `i32` range (the ranking key is
//!   an `i32`, and the total of up to 2^32 such counters always fits in an
//!   `i64`). An `add` that would leave it is refused with `out-of-range`.
//!
//! Migrations, each run by the host in one transaction with the journal
//! entry (an `Err` discards every row it wrote):
//!
//! - v2 `migrate(1)` builds `ranking` and `summary` from `counts`, scanning
//!   by name. A counter outside the `i32` range cannot be represented, so
//!   the migration fails with `out-of-range` (after writing the ranking rows
//!   of the counters before it; the host discards them and version 1 keeps
//!   running). Stale `ranking`/`summary` rows are cleared first.
//! - v1 `migrate(2)` (a rollback) drops `ranking` and `summary`: version 1
//!   would not keep them up to date, and the state hash covers every table,
//!   so after a rollback the state is exactly what version 1 alone would
//!   hold for the same counters. `counts` is the same in both schemas.
//! - `migrate(SCHEMA)` (another build of the same schema) changes nothing;
//!   any other schema is refused with `unsupported-migration`.

use keel_guest::{Error, Plugin, Table, TableCodec};
use serde::{Deserialize, Serialize};

/// name → current value.
const COUNTS: Table<String, i64> = Table::new("counts");

/// Schema 2: (value, name) → (), every counter ordered by value.
const RANKING: Table<(i32, String), ()> = Table::new("ranking");

/// Schema 2: the one row of [`SUMMARY`].
const SUMMARY_KEY: u8 = 0;

/// Schema 2: [`SUMMARY_KEY`] → the counters' count and total.
const SUMMARY: Table<u8, Summary> = Table::new("summary");

/// A state-changing command.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Adds `amount` (may be negative) to the counter `name`.
    Add { name: String, amount: i64 },
    /// Removes the counter `name`.
    Reset { name: String },
}

/// A read-only request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Query {
    /// The value of one counter (0 when absent).
    Get { name: String },
    /// Every counter, by name.
    List,
    /// Version 2: the `n` (1..=[`TOP_MAX`]) largest counters, largest first
    /// (ties: the greater name first).
    #[cfg(feature = "v2")]
    Top { n: u32 },
    /// Version 2: how many counters there are and their total.
    #[cfg(feature = "v2")]
    Summary,
}

/// Most counters one `top` query returns.
#[cfg(feature = "v2")]
pub const TOP_MAX: u32 = 1000;

/// What `add` answers.
#[derive(Debug, Serialize, PartialEq)]
pub struct Added {
    /// The counter's new value.
    pub value: i64,
    /// The sequence number the host gave this command.
    pub sequence: u64,
    /// Version 2: the total of every counter after this command.
    #[cfg(feature = "v2")]
    pub total: i64,
}

/// Schema 2's summary row.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Summary {
    /// How many counters exist.
    pub counters: u64,
    /// The sum of their values.
    pub total: i64,
}

/// One entry of a `top` answer.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Ranked {
    /// The counter's name.
    pub name: String,
    /// Its value.
    pub value: i64,
}

/// The plugin.
pub struct Counter;

impl Plugin for Counter {
    const NAME: &'static str = "counter";
    #[cfg(not(feature = "v2"))]
    const VERSION: &'static str = "1.0.0";
    #[cfg(feature = "v2")]
    const VERSION: &'static str = "2.0.0";
    #[cfg(not(feature = "v2"))]
    const SCHEMA: u32 = 1;
    #[cfg(feature = "v2")]
    const SCHEMA: u32 = 2;
    type Config = serde::de::IgnoredAny;
    type Command = Command;
    type Response = Option<Added>;
    type Query = Query;
    type QueryResponse = serde_json_value::Value;

    fn handle(command: Command) -> Result<Option<Added>, Error> {
        match command {
            Command::Add { name, amount } => add(name, amount).map(Some),
            Command::Reset { name } => {
                reset(name)?;
                Ok(None)
            }
        }
    }

    fn query(request: Query) -> Result<serde_json_value::Value, Error> {
        use serde_json_value::Value;
        Ok(match request {
            Query::Get { name } => Value::Int(COUNTS.get(&name).unwrap_or(0)),
            Query::List => Value::Map(COUNTS.iter().collect()),
            #[cfg(feature = "v2")]
            Query::Top { n } => {
                if n == 0 || n > TOP_MAX {
                    return Err(Error::invalid(format!(
                        "top n must be within 1..={TOP_MAX}, not {n}"
                    )));
                }
                Value::Ranked(
                    RANKING
                        .iter_rev()
                        .with_chunk(n)
                        .take(n as usize)
                        .map(|((value, name), ())| Ranked {
                            name,
                            value: value.into(),
                        })
                        .collect(),
                )
            }
            #[cfg(feature = "v2")]
            Query::Summary => Value::Summary(load_summary()),
        })
    }

    /// All three tables in both versions: version 1 keeps only `counts`
    /// but clears the other two on a rollback, so it can hold them.
    fn tables() -> Vec<TableCodec> {
        vec![COUNTS.codec(), RANKING.codec(), SUMMARY.codec()]
    }

    fn migrate(from_schema: u32) -> Result<(), Error> {
        match from_schema {
            s if s == Self::SCHEMA => Ok(()),
            #[cfg(not(feature = "v2"))]
            2 => {
                drop_schema_2_tables();
                Ok(())
            }
            #[cfg(feature = "v2")]
            1 => build_schema_2_tables(),
            other => Err(Error::new(
                "unsupported-migration",
                format!(
                    "counter {} (schema {}) cannot migrate from schema {other}",
                    Self::VERSION,
                    Self::SCHEMA
                ),
            )),
        }
    }
}

keel_guest::export!(Counter);

fn overflow(name: &str) -> Error {
    Error::new("overflow", format!("counter {name} would overflow"))
}

/// Version 1: adds to `counts` only.
#[cfg(not(feature = "v2"))]
fn add(name: String, amount: i64) -> Result<Added, Error> {
    let value = COUNTS
        .get(&name)
        .unwrap_or(0)
        .checked_add(amount)
        .ok_or_else(|| overflow(&name))?;
    COUNTS.put(&name, &value);
    Ok(Added {
        value,
        sequence: keel_guest::sequence(),
    })
}

/// Version 1: removes the counter.
#[cfg(not(feature = "v2"))]
fn reset(name: String) -> Result<(), Error> {
    if !COUNTS.remove(&name) {
        return Err(Error::not_found(format!("no counter named {name}")));
    }
    Ok(())
}

/// Version 1's rollback from schema 2: removes the tables only schema 2
/// keeps (`counts` is the same in both).
#[cfg(not(feature = "v2"))]
fn drop_schema_2_tables() {
    clear(RANKING);
    SUMMARY.remove(&SUMMARY_KEY);
}

/// Removes every row of `table`.
fn clear<K: keel_guest::Key, V: Serialize + serde::de::DeserializeOwned>(table: Table<K, V>) {
    let keys: Vec<K> = table.iter().map(|(k, _)| k).collect();
    for key in &keys {
        table.remove(key);
    }
}

/// The `ranking` key of a counter holding `value`, if version 2 can
/// represent it.
#[cfg(feature = "v2")]
fn rank_key(name: &str, value: i64) -> Option<(i32, String)> {
    i32::try_from(value).ok().map(|v| (v, name.to_owned()))
}

#[cfg(feature = "v2")]
fn load_summary() -> Summary {
    SUMMARY.get(&SUMMARY_KEY).unwrap_or_default()
}

/// Stores the summary row, or removes it when there are no counters.
#[cfg(feature = "v2")]
fn store_summary(summary: &Summary) {
    if summary.counters == 0 {
        SUMMARY.remove(&SUMMARY_KEY);
    } else {
        SUMMARY.put(&SUMMARY_KEY, summary);
    }
}

/// A stored counter version 2 cannot represent: only possible if schema 2
/// tables were written by something else than this code.
#[cfg(feature = "v2")]
fn corrupt(name: &str, value: i64) -> Error {
    Error::new(
        "corrupt-state",
        format!("counter {name} holds {value}, outside the 32-bit range schema 2 guarantees"),
    )
}

/// Version 2: adds within the `i32` range, keeping `ranking` and `summary`
/// up to date.
#[cfg(feature = "v2")]
fn add(name: String, amount: i64) -> Result<Added, Error> {
    let old = COUNTS.get(&name);
    let value = old
        .unwrap_or(0)
        .checked_add(amount)
        .ok_or_else(|| overflow(&name))?;
    let new_key = rank_key(&name, value).ok_or_else(|| {
        Error::new(
            "out-of-range",
            format!(
                "counter {name} would become {value}, outside the range version 2 supports ({}..={})",
                i32::MIN,
                i32::MAX
            ),
        )
    })?;
    let mut summary = load_summary();
    match old {
        Some(old) => {
            let old_key = rank_key(&name, old).ok_or_else(|| corrupt(&name, old))?;
            RANKING.remove(&old_key);
            // Both values are within i32, so the difference fits an i64.
            summary.total = summary
                .total
                .checked_add(value - old)
                .ok_or_else(|| overflow("total"))?;
        }
        None => {
            summary.counters += 1;
            summary.total = summary
                .total
                .checked_add(value)
                .ok_or_else(|| overflow("total"))?;
        }
    }
    RANKING.put(&new_key, &());
    COUNTS.put(&name, &value);
    store_summary(&summary);
    Ok(Added {
        value,
        sequence: keel_guest::sequence(),
        total: summary.total,
    })
}

/// Version 2: removes the counter and its ranking entry, updates the summary.
#[cfg(feature = "v2")]
fn reset(name: String) -> Result<(), Error> {
    let Some(old) = COUNTS.take(&name) else {
        return Err(Error::not_found(format!("no counter named {name}")));
    };
    let old_key = rank_key(&name, old).ok_or_else(|| corrupt(&name, old))?;
    RANKING.remove(&old_key);
    let mut summary = load_summary();
    summary.counters = summary.counters.saturating_sub(1);
    summary.total = summary
        .total
        .checked_sub(old)
        .ok_or_else(|| overflow("total"))?;
    store_summary(&summary);
    Ok(())
}

/// Version 2's `migrate(1)`: builds `ranking` and `summary` from `counts`.
/// Fails, with every row it wrote discarded by the host, on a counter
/// outside the `i32` range.
#[cfg(feature = "v2")]
fn build_schema_2_tables() -> Result<(), Error> {
    // Rows a version 1 that did not drop them may have left behind would
    // be stale: start from nothing.
    clear(RANKING);
    SUMMARY.remove(&SUMMARY_KEY);
    let mut summary = Summary::default();
    for (name, value) in COUNTS.iter() {
        let key = rank_key(&name, value).ok_or_else(|| {
            Error::new(
                "out-of-range",
                format!(
                    "counter {name} holds {value}, outside the range version 2 supports \
                     ({}..={}); bring it within range (or reset it) with version 1, then \
                     deploy version 2 again",
                    i32::MIN,
                    i32::MAX
                ),
            )
        })?;
        RANKING.put(&key, &());
        summary.counters += 1;
        summary.total = summary
            .total
            .checked_add(value)
            .ok_or_else(|| overflow("total"))?;
    }
    store_summary(&summary);
    keel_guest::log(
        keel_guest::Level::Info,
        &format!(
            "migrated {} counters to schema 2 (total {})",
            summary.counters, summary.total
        ),
    );
    Ok(())
}

/// The shapes a query answer takes.
mod serde_json_value {
    use serde::Serialize;
    use std::collections::BTreeMap;

    /// A single counter, all of them, or (version 2) a ranking or summary.
    #[derive(Debug, Serialize, PartialEq)]
    #[serde(untagged)]
    pub enum Value {
        /// One counter's value.
        Int(i64),
        /// Every counter.
        Map(BTreeMap<String, i64>),
        /// The largest counters, largest first.
        #[cfg(feature = "v2")]
        Ranked(Vec<super::Ranked>),
        /// The number of counters and their total.
        #[cfg(feature = "v2")]
        Summary(super::Summary),
    }
}
#[cfg(all(test, not(feature = "v2")))]
mod tests {
    use super::*;
    use keel_guest::testing::Harness;

    #[test]
    fn add_then_get() {
        let mut h = Harness::<Counter>::new();
        let added = h
            .handle(Command::Add {
                name: "a".into(),
                amount: 2,
            })
            .unwrap();
        assert_eq!(
            added,
            Some(Added {
                value: 2,
                sequence: 1
            })
        );
        h.handle(Command::Add {
            name: "a".into(),
            amount: 3,
        })
        .unwrap();
        assert_eq!(
            h.query(Query::Get { name: "a".into() }).unwrap(),
            serde_json_value::Value::Int(5)
        );
    }

    #[test]
    fn overflow_is_refused_and_changes_nothing() {
        let mut h = Harness::<Counter>::new();
        h.handle(Command::Add {
            name: "a".into(),
            amount: i64::MAX,
        })
        .unwrap();
        let before = h.dump();
        let err = h
            .handle(Command::Add {
                name: "a".into(),
                amount: 1,
            })
            .unwrap_err();
        assert_eq!(err.code, "overflow");
        assert_eq!(h.dump(), before);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut h = Harness::<Counter>::new();
        let err = h
            .handle_json(r#"{"add":{"name":"a","amount":1,"extra":true}}"#)
            .unwrap_err();
        assert_eq!(err.code, "bad-command");
        assert!(err.message.contains("extra"), "{}", err.message);
    }
    #[test]
    fn rollback_from_schema_2_drops_the_schema_2_tables() {
        let mut h = Harness::<Counter>::new();
        h.handle(Command::Add {
            name: "a".into(),
            amount: 4,
        })
        .unwrap();
        let v1_state = h.dump();
        // What version 2 would have added next to `counts`.
        RANKING.put(&(4, "a".to_owned()), &());
        SUMMARY.put(
            &SUMMARY_KEY,
            &Summary {
                counters: 1,
                total: 4,
            },
        );
        assert_ne!(h.dump(), v1_state);
        h.migrate(2).unwrap();
        assert_eq!(h.dump(), v1_state);
        assert_eq!(
            h.query(Query::Get { name: "a".into() }).unwrap(),
            serde_json_value::Value::Int(4)
        );
    }

    #[test]
    fn migrate_from_the_same_schema_changes_nothing_and_others_are_refused() {
        let mut h = Harness::<Counter>::new();
        h.handle(Command::Add {
            name: "a".into(),
            amount: 1,
        })
        .unwrap();
        let before = h.dump();
        h.migrate(1).unwrap();
        assert_eq!(h.dump(), before);
        let err = h.migrate(3).unwrap_err();
        assert_eq!(err.code, "unsupported-migration");
        assert_eq!(h.dump(), before);
    }

    #[test]
    fn version_2_queries_are_unknown_to_version_1() {
        let h = Harness::<Counter>::new();
        let err = h.query_json(r#""summary""#).unwrap_err();
        assert_eq!(err.code, "bad-query");
        let err = h.query_json(r#"{"top":{"n":1}}"#).unwrap_err();
        assert_eq!(err.code, "bad-query");
    }

    #[test]
    fn rows_convert_to_json_and_back_through_the_reserved_queries() {
        let mut h = Harness::<Counter>::new();
        h.handle(Command::Add {
            name: "apples".into(),
            amount: 3,
        })
        .unwrap();
        // The row as stored: "apples" 00 00 → bincode zigzag varint of 3.
        assert_eq!(h.dump()["counts"][b"apples\0\0".as_slice()], [6]);
        let answer =
            |request: &str| String::from_utf8(h.query_bytes(request.as_bytes()).unwrap()).unwrap();
        assert_eq!(
            answer(
                r#"{"keel.decode_rows":[{"table":"counts","key":"YXBwbGVzAAA=","value":"Bg=="}]}"#
            ),
            r#"[{"key":"apples","value":3}]"#
        );
        assert_eq!(
            answer(r#"{"keel.encode_rows":[{"table":"counts","key":"apples","value":3}]}"#),
            r#"[{"key":"YXBwbGVzAAA=","value":"Bg=="}]"#
        );
        assert_eq!(h.check_declared_tables(), Ok(1));
        // Version 1 also declares the tables it clears on a rollback.
        let names: Vec<_> = Counter::tables().iter().map(|t| t.name()).collect();
        assert_eq!(names, ["counts", "ranking", "summary"]);
    }
}

#[cfg(all(test, feature = "v2"))]
mod v2_tests {
    use super::*;
    use keel_guest::testing::Harness;
    use proptest::prelude::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    /// Writes `counts` as version 1 leaves it (its only table).
    fn seed_v1(counts: &[(&str, i64)]) {
        for (name, value) in counts {
            COUNTS.put(&(*name).to_owned(), value);
        }
    }

    fn add(h: &mut Harness<Counter>, name: &str, amount: i64) -> Result<Added, Error> {
        h.handle(Command::Add {
            name: name.into(),
            amount,
        })
        .map(|a| a.expect("add answers"))
    }

    #[test]
    fn is_version_2() {
        assert_eq!(Counter::VERSION, "2.0.0");
        assert_eq!(Counter::SCHEMA, 2);
    }

    #[test]
    fn migrate_from_1_builds_ranking_and_summary() {
        let mut h = Harness::<Counter>::new();
        seed_v1(&[("a", 5), ("b", -3), ("c", 7), ("d", 5)]);
        h.migrate(1).unwrap();
        assert_eq!(
            h.query_json(r#""summary""#).unwrap(),
            json!({"counters": 4, "total": 14})
        );
        assert_eq!(
            h.query_json(r#"{"top":{"n":3}}"#).unwrap(),
            json!([
                {"name": "c", "value": 7},
                {"name": "d", "value": 5},
                {"name": "a", "value": 5},
            ])
        );
        let all: Vec<_> = RANKING.iter().map(|(k, ())| k).collect();
        assert_eq!(
            all,
            vec![
                (-3, "b".to_owned()),
                (5, "a".to_owned()),
                (5, "d".to_owned()),
                (7, "c".to_owned())
            ]
        );
        // `counts` itself is unchanged.
        assert_eq!(
            h.query_json(r#""list""#).unwrap(),
            json!({"a": 5, "b": -3, "c": 7, "d": 5})
        );
        let logs = h.logs();
        assert!(
            logs.iter().any(|(_, l)| l.contains("migrated 4 counters")),
            "{logs:?}"
        );
    }

    #[test]
    fn every_table_version_2_writes_is_declared() {
        let mut h = Harness::<Counter>::new();
        seed_v1(&[("a", 5), ("b", -3)]);
        h.migrate(1).unwrap();
        h.handle_json(r#"{"add": {"name": "c", "amount": 7}}"#)
            .unwrap();
        assert_eq!(h.dump().len(), 3);
        // 3 counters, 3 ranking rows, 1 summary row.
        assert_eq!(h.check_declared_tables(), Ok(7));
        let answer = h
            .query_bytes(
                br#"{"keel.decode_rows":[{"table":"summary","key":"AA==","value":"AxQ="}]}"#,
            )
            .unwrap();
        assert_eq!(answer, br#"[{"key":0,"value":{"counters":3,"total":10}}]"#);
    }

    #[test]
    fn migrate_of_an_empty_plugin_writes_nothing() {
        let mut h = Harness::<Counter>::new();
        h.migrate(1).unwrap();
        assert!(h.dump().is_empty(), "{:?}", h.dump());
    }

    #[test]
    fn migrate_refuses_an_unrepresentable_counter_and_leaves_state_untouched() {
        for bad in [i64::from(i32::MAX) + 1, i64::from(i32::MIN) - 1, i64::MAX] {
            let mut h = Harness::<Counter>::new();
            // "z" sorts last: the ranking rows of "a" and "b" are written
            // before the migration fails.
            seed_v1(&[("a", 1), ("b", 2), ("z", bad)]);
            let before = h.dump();
            let err = h.migrate(1).unwrap_err();
            assert_eq!(err.code, "out-of-range");
            assert!(
                err.message.contains("counter z") && err.message.contains(&bad.to_string()),
                "{}",
                err.message
            );
            assert_eq!(h.dump(), before);
        }
    }

    #[test]
    fn migrate_clears_stale_schema_2_rows() {
        let mut h = Harness::<Counter>::new();
        seed_v1(&[("a", 1)]);
        RANKING.put(&(99, "gone".to_owned()), &());
        SUMMARY.put(
            &SUMMARY_KEY,
            &Summary {
                counters: 7,
                total: 99,
            },
        );
        h.migrate(1).unwrap();
        assert_eq!(
            h.query_json(r#"{"top":{"n":10}}"#).unwrap(),
            json!([{"name": "a", "value": 1}])
        );
        assert_eq!(
            h.query_json(r#""summary""#).unwrap(),
            json!({"counters": 1, "total": 1})
        );
    }

    #[test]
    fn migrate_from_2_changes_nothing_and_others_are_refused() {
        let mut h = Harness::<Counter>::new();
        add(&mut h, "a", 3).unwrap();
        let before = h.dump();
        h.migrate(2).unwrap();
        assert_eq!(h.dump(), before);
        for from in [0, 3] {
            let err = h.migrate(from).unwrap_err();
            assert_eq!(err.code, "unsupported-migration");
            assert_eq!(h.dump(), before);
        }
    }

    #[test]
    fn add_and_reset_keep_ranking_and_summary_up_to_date() {
        let mut h = Harness::<Counter>::new();
        let a = add(&mut h, "a", 5).unwrap();
        assert_eq!((a.value, a.sequence, a.total), (5, 1, 5));
        assert_eq!(add(&mut h, "b", 10).unwrap().total, 15);
        assert_eq!(add(&mut h, "a", -8).unwrap().total, 7);
        assert_eq!(
            h.handle_json(r#"{"add":{"name":"c","amount":1}}"#).unwrap(),
            json!({"value": 1, "sequence": 4, "total": 8})
        );
        assert_eq!(
            h.query_json(r#"{"top":{"n":2}}"#).unwrap(),
            json!([{"name": "b", "value": 10}, {"name": "c", "value": 1}])
        );
        h.handle(Command::Reset { name: "b".into() }).unwrap();
        assert_eq!(
            h.query_json(r#""summary""#).unwrap(),
            json!({"counters": 2, "total": -2})
        );
        h.handle(Command::Reset { name: "a".into() }).unwrap();
        h.handle(Command::Reset { name: "c".into() }).unwrap();
        assert_eq!(
            h.query_json(r#""summary""#).unwrap(),
            json!({"counters": 0, "total": 0})
        );
        assert!(h.dump().is_empty(), "{:?}", h.dump());
        let err = h.handle(Command::Reset { name: "a".into() }).unwrap_err();
        assert_eq!(err.code, "not-found");
    }

    #[test]
    fn out_of_range_adds_are_refused_and_change_nothing() {
        let mut h = Harness::<Counter>::new();
        add(&mut h, "a", i64::from(i32::MAX)).unwrap();
        add(&mut h, "b", i64::from(i32::MIN)).unwrap();
        let before = h.dump();
        for (name, amount) in [("a", 1), ("b", -1), ("c", i64::MAX), ("a", i64::MAX)] {
            let err = add(&mut h, name, amount).unwrap_err();
            assert!(
                err.code == "out-of-range" || err.code == "overflow",
                "{err:?}"
            );
            assert_eq!(h.dump(), before);
        }
        assert_eq!(
            h.query_json(r#""summary""#).unwrap(),
            json!({"counters": 2, "total": -1})
        );
    }

    #[test]
    fn top_bounds_are_enforced() {
        let h = Harness::<Counter>::new();
        for n in [0, TOP_MAX + 1] {
            let err = h.query(Query::Top { n }).unwrap_err();
            assert_eq!(err.code, "invalid-argument", "{err:?}");
        }
        assert_eq!(h.query_json(r#"{"top":{"n":5}}"#).unwrap(), json!([]));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever version 1 left in `counts` (within range), migrating
        /// yields exactly the state version 2 builds by itself from the
        /// same counters.
        #[test]
        fn migrate_equals_what_version_2_builds(
            ops in prop::collection::vec((0u8..6, -1000i64..1000, any::<bool>()), 0..40)
        ) {
            // Version 1's state after these commands: name → value.
            let mut counts = BTreeMap::new();
            for (k, amount, reset) in &ops {
                let name = format!("k{k}");
                if *reset {
                    counts.remove(&name);
                } else {
                    *counts.entry(name).or_insert(0i64) += amount;
                }
            }
            let mut migrated = Harness::<Counter>::new();
            for (name, value) in &counts {
                COUNTS.put(name, value);
            }
            migrated.migrate(1).unwrap();
            let after_migrate = migrated.dump();

            let mut native = Harness::<Counter>::new();
            for (name, value) in &counts {
                add(&mut native, name, *value).unwrap();
            }
            prop_assert_eq!(native.dump(), after_migrate);
        }
    }
}
