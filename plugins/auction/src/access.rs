//! Who may do what: the auction's access rule, applied to the caller the
//! host journals with every command ([`keel_guest::caller`]).
//!
//! - **No caller** (a call from inside the host, or a host with no
//!   principals configured — the unauthenticated, loopback-only development
//!   mode): every command is trusted, as before callers existed.
//! - **Providers** belong to the principal that registered them. Only the
//!   owner changes a provider's terms (`update_provider`); the owner or the
//!   operator activates and deactivates it (the operator takes a failing
//!   provider off the market). A provider registered without a caller has
//!   no owner: the operator stands in for it.
//! - **Routes** are the market's network: `add_route` and `update_route`
//!   are operator-only.
//! - **Jobs** belong to the principal that first auctioned them. The
//!   submitter or the operator cancels a job or auctions an unmatched one
//!   again; `complete_job` is also open to the owner of the provider the job
//!   was matched to (it did the work). A job auctioned without a caller has
//!   no submitter: the operator stands in for it.
//! - **Queries** are public: every caller sees the whole market.
//!
//! Refusals: `operator-only` (the command needs the `operator` role) and
//! `not-owner` (the provider or job belongs to another principal). Like
//! every refusal they change nothing.
//!
//! Owners live in their own tables (`provider_owners`, `job_submitters`),
//! written only when a caller is known, so that provider rows stay as
//! compact as before (every auction decodes every provider) and rows
//! written before callers existed still decode.

use keel_guest::{Caller, Error, Table};

/// Provider id → the principal that registered it.
pub(crate) const PROVIDER_OWNERS: Table<String, String> = Table::new("provider_owners");
/// Job id → the principal that first auctioned it.
pub(crate) const JOB_SUBMITTERS: Table<String, String> = Table::new("job_submitters");

/// Refuses a caller without the `operator` role; no caller is trusted.
pub(crate) fn operator_only(caller: Option<&Caller>, action: &str) -> Result<(), Error> {
    match caller {
        Some(c) if !c.is_operator() => Err(Error::new(
            "operator-only",
            format!(
                "{action} needs the operator role; principal {:?} does not have it",
                c.principal
            ),
        )),
        _ => Ok(()),
    }
}

/// Lets `caller` act on a `kind` (provider, job) `id` owned by `owner`:
/// no caller is trusted; the owner may; the operator may when
/// `operator_may` or when nobody owns it. Anyone else is `not-owner`.
pub(crate) fn owner_or_operator(
    caller: Option<&Caller>,
    kind: &str,
    id: &str,
    owner: Option<&str>,
    operator_may: bool,
    action: &str,
) -> Result<(), Error> {
    let Some(c) = caller else { return Ok(()) };
    if owner == Some(c.principal.as_str()) {
        return Ok(());
    }
    if c.is_operator() && (operator_may || owner.is_none()) {
        return Ok(());
    }
    Err(not_owner(c, kind, id, owner, action))
}

/// The `not-owner` refusal.
pub(crate) fn not_owner(
    caller: &Caller,
    kind: &str,
    id: &str,
    owner: Option<&str>,
    action: &str,
) -> Error {
    let whose = match owner {
        Some(o) => format!("belongs to {o:?}"),
        None => "has no owner (only the operator manages it)".to_owned(),
    };
    Error::new(
        "not-owner",
        format!(
            "{kind} {id:?} {whose}; principal {:?} may not {action} it",
            caller.principal
        ),
    )
}

/// The owner of provider `id`, if it was registered by a caller.
pub(crate) fn provider_owner(id: &str) -> Option<String> {
    PROVIDER_OWNERS.get(&id.to_owned())
}

/// The submitter of job `id`, if it was auctioned by a caller.
pub(crate) fn job_submitter(id: &str) -> Option<String> {
    JOB_SUBMITTERS.get(&id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_in_one_table() {
        let alice = Caller::new("alice", ["client"]);
        let op = Caller::new("ops", ["client", "operator"]);
        let alice_owns = Some("alice");
        // No caller: trusted.
        assert!(owner_or_operator(None, "job", "j", alice_owns, false, "x").is_ok());
        assert!(operator_only(None, "x").is_ok());
        // The owner may; another client may not.
        assert!(owner_or_operator(Some(&alice), "job", "j", alice_owns, false, "x").is_ok());
        let bob = Caller::new("bob", ["client"]);
        let e = owner_or_operator(Some(&bob), "job", "j", alice_owns, true, "x").unwrap_err();
        assert_eq!(e.code, "not-owner");
        // The operator: only where the rule lets it, or when nobody owns it.
        assert!(owner_or_operator(Some(&op), "job", "j", alice_owns, true, "x").is_ok());
        assert!(owner_or_operator(Some(&op), "job", "j", alice_owns, false, "x").is_err());
        assert!(owner_or_operator(Some(&op), "job", "j", None, false, "x").is_ok());
        assert!(owner_or_operator(Some(&alice), "job", "j", None, true, "x").is_err());
        assert_eq!(
            operator_only(Some(&alice), "x").unwrap_err().code,
            "operator-only"
        );
        assert!(operator_only(Some(&op), "x").is_ok());
    }
}
