//! Who may do what: the dag's access rule, applied to the caller the host
//! journals with every command ([`keel_guest::caller`]), before the command
//! reads or writes anything.
//!
//! - **No caller** (a call from inside the host, or a host with no
//!   principals configured — the unauthenticated, loopback-only development
//!   mode): every command is trusted, as before callers existed.
//! - **`store_batch`, `insert`, `insert_many`**: a committee author inserts
//!   only its own batches and certificates: the caller's principal must be
//!   the `author` named (and, as always, a member of the committee —
//!   `unknown-author` otherwise). An `insert_many` naming any other author
//!   is refused whole. The operator has no exception: it cannot sign for
//!   an author.
//! - **`commit`, `prune`**: operator-only (they decide the order everyone
//!   executes in and what history is kept).
//! - **Queries** are public.
//!
//! Refusals: `not-owner` (the certificate or batch names another author)
//! and `operator-only`. Like every refusal they change nothing.

use keel_guest::{Caller, Error};

use crate::api::Command;

/// Refuses `command` when `caller` may not send it (see the module docs).
pub fn check(caller: Option<&Caller>, command: &Command) -> Result<(), Error> {
    let Some(caller) = caller else { return Ok(()) };
    match command {
        Command::StoreBatch(batch) => own(caller, &batch.author, "batch"),
        Command::Insert(cert) => own(caller, &cert.author, "certificate"),
        Command::InsertMany { certificates } => {
            certificates.iter().enumerate().try_for_each(|(i, cert)| {
                own(caller, &cert.author, "certificate").map_err(|e| {
                    Error::new(
                        e.code,
                        format!("insert_many certificate {i}: {}", e.message),
                    )
                })
            })
        }
        Command::Commit { .. } => operator_only(caller, "commit"),
        Command::Prune { .. } => operator_only(caller, "prune"),
    }
}

fn own(caller: &Caller, author: &str, what: &str) -> Result<(), Error> {
    if caller.principal == author {
        return Ok(());
    }
    Err(Error::new(
        "not-owner",
        format!(
            "principal {:?} may insert only its own {what}s, not one by author {author:?}",
            caller.principal
        ),
    ))
}

fn operator_only(caller: &Caller, action: &str) -> Result<(), Error> {
    if caller.is_operator() {
        return Ok(());
    }
    Err(Error::new(
        "operator-only",
        format!(
            "{action} needs the operator role; principal {:?} does not have it",
            caller.principal
        ),
    ))
}
