//! Errors the host returns to clients. Each has a stable code and names
//! what was wrong; [`HostError::http_status`] maps it for the HTTP API.

use crate::runtime::LoadError;
use crate::snapshot::{FormatError, SnapshotError};
use crate::storage::StorageError;

/// A refusal or failure, as a client sees it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// No plugin of that name is deployed.
    #[error("no plugin named {0:?} is deployed")]
    UnknownPlugin(String),
    /// The payload is not valid JSON.
    #[error("{what} is not valid JSON: {why}")]
    BadJson {
        /// `command` or `query`.
        what: &'static str,
        /// The parser's complaint, with line and column.
        why: String,
    },
    /// The payload is larger than the configured limit.
    #[error("{what} is {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The command was journaled as failed: the plugin refused it or it
    /// trapped. It left no trace in state.
    #[error("command {sequence} failed with {code}: {message}")]
    Rejected {
        /// The command's sequence number.
        sequence: u64,
        /// Plugin code, or a trap kind (`out-of-fuel`, ...).
        code: String,
        /// Details.
        message: String,
    },
    /// A query failed.
    #[error("query failed with {code}: {message}")]
    QueryFailed {
        /// Plugin code or trap kind.
        code: String,
        /// Details.
        message: String,
    },
    /// The plugin's queue is full; try again later.
    #[error("plugin {0:?} has too many commands waiting; retry later")]
    Overloaded(String),
    /// Storage failed; the command was NOT acknowledged.
    #[error("storage failure, nothing committed: {0}")]
    Storage(String),
    /// A component was refused.
    #[error("{0}")]
    BadComponent(#[from] LoadError),
    /// A deployment was refused (name clash, failed init or migration, ...).
    #[error("deployment refused: {0}")]
    Deploy(String),
    /// The host is shutting down.
    #[error("the host is shutting down")]
    Stopped,
    /// Missing, malformed or unknown bearer token (the reason).
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A valid credential without the right to this route or plugin.
    #[error("{0}")]
    Forbidden(String),
    /// A snapshot could not be taken, read or used.
    #[error("{0}")]
    Snapshot(#[from] crate::snapshot::SnapshotError),
}

impl From<StorageError> for HostError {
    fn from(e: StorageError) -> Self {
        HostError::Storage(e.to_string())
    }
}

impl HostError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &str {
        match self {
            HostError::UnknownPlugin(_) => "unknown-plugin",
            HostError::BadJson { .. } => "bad-json",
            HostError::TooLarge { .. } => "too-large",
            HostError::Rejected { code, .. } | HostError::QueryFailed { code, .. } => code,
            HostError::Overloaded(_) => "overloaded",
            HostError::Storage(_) => "storage-failure",
            HostError::BadComponent(_) => "bad-component",
            HostError::Deploy(_) => "deploy-refused",
            HostError::Stopped => "stopped",
            HostError::Unauthorized(_) => "unauthorized",
            HostError::Forbidden(_) => "forbidden",
            HostError::Snapshot(SnapshotError::NotFound(_)) => "not-found",
            HostError::Snapshot(SnapshotError::Format(FormatError::Damaged(_))) => {
                "snapshot-damaged"
            }
            HostError::Snapshot(_) => "snapshot-failed",
        }
    }

    /// The HTTP status for this error.
    pub fn http_status(&self) -> u16 {
        match self {
            HostError::UnknownPlugin(_) => 404,
            HostError::BadJson { .. } | HostError::BadComponent(_) => 400,
            HostError::TooLarge { .. } => 413,
            HostError::Rejected { .. } | HostError::QueryFailed { .. } | HostError::Deploy(_) => {
                422
            }
            HostError::Overloaded(_) | HostError::Stopped => 503,
            HostError::Storage(_) => 500,
            HostError::Unauthorized(_) => 401,
            HostError::Forbidden(_) => 403,
            HostError::Snapshot(SnapshotError::NotFound(_)) => 404,
            HostError::Snapshot(SnapshotError::Format(FormatError::Damaged(_))) => 422,
            HostError::Snapshot(_) => 500,
        }
    }

    /// The sequence number, when the command was journaled.
    pub fn sequence(&self) -> Option<u64> {
        match self {
            HostError::Rejected { sequence, .. } => Some(*sequence),
            _ => None,
        }
    }
}
