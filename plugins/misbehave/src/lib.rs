//! A test-only plugin that misbehaves on request, to prove the host's
//! atomicity and isolation. Never deploy it anywhere that matters.

use keel_guest::{Caller, Error, Plugin, Table};
use serde::{Deserialize, Serialize};

const ROWS: Table<String, String> = Table::new("rows");

/// Each command writes a row first (except `get`/`put_raw`), then misbehaves.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Writes `key` = `value` and succeeds.
    Write { key: String, value: String },
    /// Writes, then returns an error.
    WriteThenError { key: String },
    /// Writes, then traps (panics).
    WriteThenTrap { key: String },
    /// Writes, then loops forever (out of fuel / deadline).
    WriteThenSpin { key: String },
    /// Writes, then allocates without bound (out of memory).
    WriteThenAlloc { key: String },
    /// Writes, then recurses without bound (stack overflow).
    WriteThenRecurse { key: String },
    /// Allocates `mib` MiB and never frees them (a leak: the memory stays
    /// with the instance).
    Leak { mib: u32 },
    /// Writes a raw value to any table name it is given.
    PutRaw {
        table: String,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// Removes a raw key from any table name it is given.
    RemoveRaw { table: String, key: Vec<u8> },
    /// Counts in a global (linear memory, not a table) — exactly what the
    /// SDK's rules forbid — stores the count under `key` and returns it.
    /// Under the host's default instance policy each batch starts from the
    /// component's initial memory image, so this answers 1 for a batch's
    /// first command and counts on within the batch.
    BumpGlobal { key: String },
    /// Counts in the same global as [`Command::BumpGlobal`], then refuses:
    /// the count stays in memory, the row write is undone.
    BumpThenError { key: String },
    /// Answers the caller the host gave this command (`null` for none) and
    /// stores its principal (`-` for none) under `key`, so that the state
    /// depends on the caller too.
    Whoami { key: String },
}

/// Command answers (untagged: `null`, a number, or a caller).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Reply {
    /// `null`: every command but the two below.
    Nothing,
    /// [`Command::BumpGlobal`]: the count.
    Count(u64),
    /// [`Command::Whoami`]: the caller, `null` for none.
    Caller(Option<Caller>),
}

/// Queries.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Query {
    /// Reads a raw key from any table name it is given.
    GetRaw { table: String, key: Vec<u8> },
    /// Scans a whole table by any name it is given.
    ScanRaw { table: String },
    /// Every row of `rows`.
    Rows,
    /// Tries to write during a query.
    WriteInQuery,
    /// The query's caller, `null` for none.
    Whoami,
}

/// Query answers.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Answer {
    /// A raw value, if present.
    Raw(Option<Vec<u8>>),
    /// Raw entries.
    Entries(Vec<(Vec<u8>, Vec<u8>)>),
    /// Rows of `rows`.
    Rows(Vec<(String, String)>),
    /// The caller of a [`Query::Whoami`].
    Caller(Option<Caller>),
}

/// The plugin.
pub struct Misbehave;

/// State kept in linear memory across calls (see [`Command::BumpGlobal`]).
static GLOBAL_COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64, acc: &mut [u64; 16]) -> u64 {
    acc[(depth % 16) as usize] = depth;
    let mut local = *acc;
    local[0] = recurse(std::hint::black_box(depth + 1), &mut local);
    local.iter().sum()
}

fn raw_table(table: &str) -> Table<Vec<u8>, Vec<u8>> {
    // Leaking is fine in a test plugin: each name leaks once per command.
    Table::new(Box::leak(table.to_owned().into_boxed_str()))
}

impl Plugin for Misbehave {
    const NAME: &'static str = "misbehave";
    const VERSION: &'static str = "1.0.0";
    const SCHEMA: u32 = 1;
    type Config = serde::de::IgnoredAny;
    type Command = Command;
    /// `null`, except for [`Command::BumpGlobal`] and [`Command::Whoami`].
    type Response = Reply;
    type Query = Query;
    type QueryResponse = Answer;

    fn handle(command: Command) -> Result<Reply, Error> {
        match command {
            Command::Write { key, value } => ROWS.put(&key, &value),
            Command::WriteThenError { key } => {
                ROWS.put(&key, &"written".to_owned());
                return Err(Error::new("deliberate", "wrote a row, then failed"));
            }
            Command::WriteThenTrap { key } => {
                ROWS.put(&key, &"written".to_owned());
                panic!("deliberate trap after a write");
            }
            Command::WriteThenSpin { key } => {
                ROWS.put(&key, &"written".to_owned());
                let mut x = 0u64;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            Command::Leak { mib } => {
                std::mem::forget(std::hint::black_box(vec![1u8; (mib as usize) << 20]));
            }
            Command::WriteThenAlloc { key } => {
                ROWS.put(&key, &"written".to_owned());
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
                }
            }
            Command::WriteThenRecurse { key } => {
                ROWS.put(&key, &"written".to_owned());
                let mut acc = [0u64; 16];
                recurse(0, &mut acc);
            }
            Command::PutRaw { table, key, value } => raw_table(&table).try_put(&key, &value)?,
            Command::RemoveRaw { table, key } => {
                raw_table(&table).try_remove(&key)?;
            }
            Command::BumpGlobal { key } => {
                let n = GLOBAL_COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                ROWS.put(&key, &n.to_string());
                return Ok(Reply::Count(n));
            }
            Command::BumpThenError { key } => {
                let n = GLOBAL_COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                ROWS.put(&key, &n.to_string());
                return Err(Error::new(
                    "deliberate",
                    format!("counted {n}, then failed"),
                ));
            }
            Command::Whoami { key } => {
                let caller = keel_guest::caller();
                let principal = caller.as_ref().map_or("-", |c| c.principal.as_str());
                ROWS.put(&key, &principal.to_owned());
                return Ok(Reply::Caller(caller));
            }
        }
        Ok(Reply::Nothing)
    }

    fn query(request: Query) -> Result<Answer, Error> {
        Ok(match request {
            Query::GetRaw { table, key } => Answer::Raw(raw_table(&table).try_get(&key)?),
            Query::ScanRaw { table } => Answer::Entries(
                raw_table(&table)
                    .try_range(.., keel_guest::Direction::Forward)?
                    .collect(),
            ),
            Query::Rows => Answer::Rows(ROWS.iter().collect()),
            Query::WriteInQuery => {
                ROWS.try_put(&"x".to_owned(), &"y".to_owned())?;
                Answer::Raw(None)
            }
            Query::Whoami => Answer::Caller(keel_guest::caller()),
        })
    }
}

keel_guest::export!(Misbehave);
