//! [`Caller`]: who made a call, as the plugin sees it through
//! `keel:plugin/context.caller`.
//!
//! A front end (the HTTP API, a test, an embedding program) names the caller
//! when it submits a command or a query through the [`crate::Host`] API.
//! For a command the caller is journaled with it (see
//! `storage/journal.rs`), so replay runs every command with the caller it
//! had. `None` means the call came from inside the host: `init` at deploy,
//! `migrate`, an unauthenticated host, or a front end that named nobody.

use serde::{Deserialize, Serialize};

/// The authenticated principal behind a command or query, and its roles.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Caller {
    /// The principal's name, as the host's configuration names it.
    pub principal: String,
    /// Its roles (e.g. `client`, `operator`, `admin`), in configuration order.
    pub roles: Vec<String>,
}

impl Caller {
    /// A caller named `principal` with `roles`.
    pub fn new<R: Into<String>>(
        principal: impl Into<String>,
        roles: impl IntoIterator<Item = R>,
    ) -> Self {
        Self {
            principal: principal.into(),
            roles: roles.into_iter().map(Into::into).collect(),
        }
    }

    /// Whether the caller holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

impl From<&crate::auth::Principal> for Caller {
    /// The caller an authenticated HTTP request carries to the plugin.
    fn from(p: &crate::auth::Principal) -> Self {
        Self {
            principal: p.name.clone(),
            roles: p.roles.iter().map(|r| r.as_str().to_owned()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_matched_exactly() {
        let c = Caller::new("alice", ["client", "operator"]);
        assert!(c.has_role("operator"));
        assert!(!c.has_role("admin"));
        assert!(!c.has_role("Operator"));
    }
}
