//! Who may do what: the spot plugin's access rule, decided from the call's
//! caller ([`keel_guest::caller`]) before the engine runs.
//!
//! Accounts are numbers (`user: u64`) and principals are names, so the
//! plugin keeps a mapping, written only by the operator: `open_account`
//! links one principal to one account (both sides unique, never relinked).
//!
//! - **No caller** (`caller() == None`: a call from inside the host, or a
//!   host with no principals configured — loopback-only development mode):
//!   every command is trusted and acts on the `user` it names, as before
//!   callers existed.
//! - **With a caller**, the acting account is the one linked to the
//!   caller's principal:
//!   - `create_market`, `deposit` (funds that come from outside the market:
//!     the custody side) and `open_account` are operator-only
//!     (`operator-only`); the operator deposits to any account;
//!   - `place` and `withdraw` act only as the caller's own account: naming
//!     another `user` is refused (`not-owner`), the operator included;
//!   - `cancel` and `cancel_all` act as the caller's own account, or, for
//!     the operator, on behalf of any account (`not-owner` otherwise);
//!   - a caller whose principal has no account yet is refused
//!     (`no-account`) on any command that needs one.
//!
//! Queries are market data and balances: anyone may read them.
//! Every refusal is an error, so it leaves the state untouched.

use keel_guest::{Caller, Error, Table};

use crate::api::{AccountView, Command, OpenAccount};

/// Principal → account (`user`).
pub const ACCOUNTS: Table<String, u64> = Table::new("accounts");
/// Account (`user`) → principal: keeps the mapping one-to-one.
pub const ACCOUNT_OWNERS: Table<u64, String> = Table::new("account_owners");

/// Longest principal name `open_account` accepts (bytes).
pub const PRINCIPAL_BYTES_MAX: usize = 128;

/// What a command needs from its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// Only a caller with the operator role.
    Operator,
    /// Only the account linked to the caller.
    Own(u64),
    /// The caller's own account, or any account for the operator.
    OwnOrOperator(u64),
}

fn rule(command: &Command) -> Rule {
    match command {
        Command::CreateMarket(_) | Command::Deposit(_) | Command::OpenAccount(_) => Rule::Operator,
        Command::Withdraw(t) => Rule::Own(t.user),
        Command::Place(p) => Rule::Own(p.user),
        Command::Cancel(c) => Rule::OwnOrOperator(c.user),
        Command::CancelAll(c) => Rule::OwnOrOperator(c.user),
    }
}

/// The account linked to `principal`, if any.
pub fn account_of(principal: &str) -> Option<u64> {
    ACCOUNTS.get(&principal.to_owned())
}

/// Refuses `command` unless the current caller may run it (see the module
/// documentation). Reads at most one row (the caller's account link).
pub fn authorize(command: &Command) -> Result<(), Error> {
    match keel_guest::caller() {
        None => Ok(()),
        Some(caller) => check(&caller, command),
    }
}

fn check(caller: &Caller, command: &Command) -> Result<(), Error> {
    let user = match rule(command) {
        Rule::Operator if caller.is_operator() => return Ok(()),
        Rule::Operator => {
            return Err(Error::new(
                "operator-only",
                format!(
                    "{} is operator-only; principal {:?} lacks the operator role",
                    command_name(command),
                    caller.principal
                ),
            ));
        }
        Rule::OwnOrOperator(_) if caller.is_operator() => return Ok(()),
        Rule::Own(user) | Rule::OwnOrOperator(user) => user,
    };
    let own = account_of(&caller.principal).ok_or_else(|| {
        Error::new(
            "no-account",
            format!(
                "principal {:?} has no account; the operator links one with open_account",
                caller.principal
            ),
        )
    })?;
    if own != user {
        return Err(Error::new(
            "not-owner",
            format!(
                "principal {:?} acts as account {own}, not {user}: {} only as itself",
                caller.principal,
                command_name(command)
            ),
        ));
    }
    Ok(())
}

fn command_name(command: &Command) -> &'static str {
    match command {
        Command::CreateMarket(_) => "create_market",
        Command::Deposit(_) => "deposit",
        Command::Withdraw(_) => "withdraw",
        Command::Place(_) => "place",
        Command::Cancel(_) => "cancel",
        Command::CancelAll(_) => "cancel_all",
        Command::OpenAccount(_) => "open_account",
    }
}

/// `open_account`: links a principal to an account, both unused.
pub fn open_account(o: OpenAccount) -> Result<AccountView, Error> {
    if o.principal.is_empty()
        || o.principal.len() > PRINCIPAL_BYTES_MAX
        || o.principal.chars().any(char::is_control)
    {
        return Err(Error::invalid(format!(
            "principal {:?} must be 1..={PRINCIPAL_BYTES_MAX} bytes without control characters",
            o.principal
        )));
    }
    if let Some(user) = ACCOUNTS.get(&o.principal) {
        return Err(Error::new(
            "account-exists",
            format!("principal {:?} already has account {user}", o.principal),
        ));
    }
    if let Some(owner) = ACCOUNT_OWNERS.get(&o.user) {
        return Err(Error::new(
            "account-taken",
            format!("account {} already belongs to principal {owner:?}", o.user),
        ));
    }
    ACCOUNTS.put(&o.principal, &o.user);
    ACCOUNT_OWNERS.put(&o.user, &o.principal);
    Ok(AccountView {
        principal: o.principal,
        user: o.user,
    })
}

/// The `account` query: the account linked to `principal`, or to the
/// caller when `principal` is absent.
pub fn account_query(principal: Option<String>) -> Result<AccountView, Error> {
    let principal = match principal.or_else(|| keel_guest::caller().map(|c| c.principal)) {
        Some(p) => p,
        None => {
            return Err(Error::invalid("name a principal: this query has no caller"));
        }
    };
    let user = account_of(&principal)
        .ok_or_else(|| Error::not_found(format!("principal {principal:?} has no account")))?;
    Ok(AccountView { principal, user })
}
