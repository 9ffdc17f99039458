//! A plugin for measuring the host: `"noop"` does nothing; `{"put3": {"id": n}}`
//! writes three rows, as a typical small state change does.

use keel_guest::{Error, Plugin, Table};
use serde::Deserialize;

const A: Table<u64, u64> = Table::new("a");
const B: Table<u64, u64> = Table::new("b");
const C: Table<u64, [u8; 32]> = Table::new("c");

/// Commands.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Does nothing.
    Noop,
    /// Writes three rows keyed by `id`.
    Put3 { id: u64 },
}

/// Queries.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Query {
    /// Number of rows in table `a`.
    Count,
}

/// The plugin.
pub struct Bench;

impl Plugin for Bench {
    const NAME: &'static str = "bench";
    const VERSION: &'static str = "1.0.0";
    const SCHEMA: u32 = 1;
    type Config = serde::de::IgnoredAny;
    type Command = Command;
    type Response = ();
    type Query = Query;
    type QueryResponse = u64;

    fn handle(command: Command) -> Result<(), Error> {
        match command {
            Command::Noop => {}
            Command::Put3 { id } => {
                A.put(&id, &keel_guest::sequence());
                B.put(&id.wrapping_mul(0x9E37_79B9_7F4A_7C15), &id);
                C.put(&id, &[7u8; 32]);
            }
        }
        Ok(())
    }

    fn query(request: Query) -> Result<u64, Error> {
        match request {
            Query::Count => Ok(A.iter().count() as u64),
        }
    }
}

keel_guest::export!(Bench);
