//! The README's example plugin: named counters.
//!
//! Commands: `{"add": {"name": "apples", "amount": 3}}`, `{"reset": {"name": "apples"}}`.
//! Queries: `{"get": {"name": "apples"}}`, `"list"`.

use keel_guest::{Error, Plugin, Table};
use serde::{Deserialize, Serialize};

/// name → current value.
const COUNTS: Table<String, i64> = Table::new("counts");

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
}

/// What `add` answers.
#[derive(Debug, Serialize, PartialEq)]
pub struct Added {
    /// The counter's new value.
    pub value: i64,
    /// The sequence number the host gave this command.
    pub sequence: u64,
}

/// The plugin.
pub struct Counter;

impl Plugin for Counter {
    const NAME: &'static str = "counter";
    const VERSION: &'static str = "1.0.0";
    const SCHEMA: u32 = 1;
    type Config = serde::de::IgnoredAny;
    type Command = Command;
    type Response = Option<Added>;
    type Query = Query;
    type QueryResponse = serde_json_value::Value;

    fn handle(command: Command) -> Result<Option<Added>, Error> {
        match command {
            Command::Add { name, amount } => {
                let value = COUNTS
                    .get(&name)
                    .unwrap_or(0)
                    .checked_add(amount)
                    .ok_or_else(|| {
                        Error::new("overflow", format!("counter {name} would overflow"))
                    })?;
                COUNTS.put(&name, &value);
                Ok(Some(Added {
                    value,
                    sequence: keel_guest::sequence(),
                }))
            }
            Command::Reset { name } => {
                if !COUNTS.remove(&name) {
                    return Err(Error::not_found(format!("no counter named {name}")));
                }
                Ok(None)
            }
        }
    }

    fn query(request: Query) -> Result<serde_json_value::Value, Error> {
        Ok(match request {
            Query::Get { name } => serde_json_value::Value::Int(COUNTS.get(&name).unwrap_or(0)),
            Query::List => serde_json_value::Value::Map(COUNTS.iter().collect()),
        })
    }
}

keel_guest::export!(Counter);

/// The two shapes a query answer takes.
mod serde_json_value {
    use serde::Serialize;
    use std::collections::BTreeMap;

    /// A single counter or all of them.
    #[derive(Debug, Serialize, PartialEq)]
    #[serde(untagged)]
    pub enum Value {
        /// One counter's value.
        Int(i64),
        /// Every counter.
        Map(BTreeMap<String, i64>),
    }
}

#[cfg(test)]
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
}
