//! Who may do what: the perp plugin's access rule, decided from the call's
//! caller ([`keel_guest::caller`]) before the engine runs.
//!
//! Accounts are named by strings, so a caller's account is simply its
//! principal's name.
//!
//! - **No caller** (`caller() == None`: a call from inside the host, or a
//!   host with no principals configured — loopback-only development mode):
//!   every command is trusted and acts on the `user` it names, which is
//!   then required.
//! - **With a caller**:
//!   - `create_market`, `set_mark`, `apply_funding`, `liquidate` and
//!     `deposit` (collateral that comes from outside the venue: the
//!     custody side) are operator-only (`operator-only`); the operator
//!     names any `user` for `deposit` and `liquidate`;
//!   - positions and collateral belong to their caller: `withdraw`,
//!     `trade`, `open`, `increase`, `reduce`, `close` and `adjust_margin`
//!     act on the caller's own account; naming another `user` is refused
//!     (`not-owner`), the operator included.
//!
//! The `user` field may be left out: it is then the caller's principal
//! (and refused as `invalid-argument` when there is no caller). Queries
//! are open to every caller; `position` and `account` without `user` read
//! the caller's own. Every refusal is an error, so it leaves the
//! state untouched.

use keel_guest::{Caller, Error};

use crate::Command;

/// What a command needs from its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// Only a caller with the operator role.
    Operator,
    /// Only the caller, on its own account.
    Own,
}

/// The command's name, its rule, and its `user` field if it has one.
fn parts(command: &mut Command) -> (&'static str, Rule, Option<&mut String>) {
    match command {
        Command::CreateMarket { .. } => ("create_market", Rule::Operator, None),
        Command::SetMark { .. } => ("set_mark", Rule::Operator, None),
        Command::ApplyFunding { .. } => ("apply_funding", Rule::Operator, None),
        Command::Deposit { user, .. } => ("deposit", Rule::Operator, Some(user)),
        Command::Liquidate { user, .. } => ("liquidate", Rule::Operator, Some(user)),
        Command::Withdraw { user, .. } => ("withdraw", Rule::Own, Some(user)),
        Command::Trade { user, .. } => ("trade", Rule::Own, Some(user)),
        Command::Open { user, .. } => ("open", Rule::Own, Some(user)),
        Command::Increase { user, .. } => ("increase", Rule::Own, Some(user)),
        Command::Reduce { user, .. } => ("reduce", Rule::Own, Some(user)),
        Command::Close { user, .. } => ("close", Rule::Own, Some(user)),
        Command::AdjustMargin { user, .. } => ("adjust_margin", Rule::Own, Some(user)),
    }
}

/// Checks `command` against the current caller and fills in a left-out
/// `user` (see the module documentation).
pub fn authorize(command: &mut Command) -> Result<(), Error> {
    check(keel_guest::caller().as_ref(), command)
}

fn check(caller: Option<&Caller>, command: &mut Command) -> Result<(), Error> {
    let (name, rule, user) = parts(command);
    let Some(caller) = caller else {
        return match user {
            Some(user) if user.is_empty() => Err(Error::invalid(format!(
                "{name} needs a user: this call has no caller to stand for it"
            ))),
            _ => Ok(()),
        };
    };
    if rule == Rule::Operator && !caller.is_operator() {
        return Err(Error::new(
            "operator-only",
            format!(
                "{name} is operator-only; principal {:?} lacks the operator role",
                caller.principal
            ),
        ));
    }
    let Some(user) = user else { return Ok(()) };
    if user.is_empty() {
        user.clone_from(&caller.principal);
    } else if rule == Rule::Own && *user != caller.principal {
        return Err(Error::new(
            "not-owner",
            format!(
                "principal {:?} cannot {name} for user {user:?}: positions and collateral \
                 belong to their caller",
                caller.principal
            ),
        ));
    }
    Ok(())
}

/// The user a `position` or `account` query reads: the one it names, or
/// the caller's principal when it names none.
pub fn querier(user: String) -> Result<String, Error> {
    if !user.is_empty() {
        return Ok(user);
    }
    keel_guest::caller()
        .map(|c| c.principal)
        .ok_or_else(|| Error::invalid("name a user: this query has no caller"))
}
