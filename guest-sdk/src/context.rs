//! The current call's context: sequence number, timestamp, caller and
//! logging. Sequence, timestamp and caller are assigned by the host when it
//! journals the command and are identical on replay: use them instead of
//! clocks, and the caller instead of a user name taken from the command.

use crate::backend;

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Very detailed diagnostics.
    Trace,
    /// Diagnostics.
    Debug,
    /// Normal events.
    Info,
    /// Something unexpected that was handled.
    Warn,
    /// Something failed.
    Error,
}

/// The current command's sequence number (per plugin, from 1; 0 in queries).
pub fn sequence() -> u64 {
    backend::sequence()
}

/// The current command's journaled timestamp in milliseconds since the Unix epoch.
pub fn timestamp_ms() -> u64 {
    backend::timestamp_ms()
}

/// Who made a call: the principal the host authenticated and its roles.
///
/// Access rules compare [`Caller::principal`] with the owner a plugin
/// stored (e.g. an order's owner) and check roles with
/// [`Caller::has_role`] / [`Caller::is_operator`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Caller {
    /// The principal's name, unique within a host.
    pub principal: String,
    /// Its roles (e.g. `client`, `operator`, `admin`).
    pub roles: Vec<String>,
}

/// The role of the principal that runs a market (creates markets, sets
/// prices, credits deposits) in Keel's domain plugins.
pub const OPERATOR_ROLE: &str = "operator";

impl Caller {
    /// A caller named `principal` with `roles` (for tests).
    pub fn new<R: Into<String>>(
        principal: impl Into<String>,
        roles: impl IntoIterator<Item = R>,
    ) -> Self {
        Self {
            principal: principal.into(),
            roles: roles.into_iter().map(Into::into).collect(),
        }
    }

    /// Whether the caller holds `role` (exact, case-sensitive match).
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Whether the caller holds the [`OPERATOR_ROLE`].
    pub fn is_operator(&self) -> bool {
        self.has_role(OPERATOR_ROLE)
    }
}

/// The caller of the current call: for a command it is journaled with the
/// command and identical on replay; queries see their caller too. `None`
/// when the call came from inside the host (`init`, `migrate`), from a host
/// with no principals configured, or from a front end that named nobody.
pub fn caller() -> Option<Caller> {
    backend::caller()
}

/// Writes a line to the host's log, tagged with the plugin's name.
pub fn log(level: Level, message: &str) {
    backend::log(level, message)
}
