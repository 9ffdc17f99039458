//! Errors a plugin returns and storage errors it may meet.

use std::fmt;

/// A refusal returned by a plugin: a stable kebab-case `code` a client can
/// match on and a `message` a person can act on. Returning it from
/// [`crate::Plugin::handle`] discards every write the command made.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Error {
    /// Stable machine-readable code, e.g. `insufficient-balance`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

impl Error {
    /// Builds an error from a code and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }

    /// An error with code `invalid-argument`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new("invalid-argument", message)
    }

    /// An error with code `not-found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new("not-found", message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

/// Why a storage call was refused (mirrors the WIT `table-error`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageError {
    /// The table name is empty, too long or has a byte outside `[a-z0-9_.-]`.
    InvalidTableName(String),
    /// The key exceeds the host's maximum key size (bytes).
    KeyTooLarge {
        /// The host's maximum, in bytes.
        max_bytes: u32,
    },
    /// The value exceeds the host's maximum value size (bytes).
    ValueTooLarge {
        /// The host's maximum, in bytes.
        max_bytes: u32,
    },
    /// A write was attempted in a read-only call (`query`).
    ReadOnly,
    /// The command wrote more bytes than the host allows per command.
    WriteSetTooLarge {
        /// The host's maximum, in bytes.
        max_bytes: u64,
    },
    /// A stored value could not be decoded as the table's value type.
    Decode(String),
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidTableName(name) => write!(f, "invalid table name {name:?}"),
            Self::KeyTooLarge { max_bytes } => write!(f, "key longer than {max_bytes} bytes"),
            Self::ValueTooLarge { max_bytes } => write!(f, "value longer than {max_bytes} bytes"),
            Self::ReadOnly => write!(f, "write attempted in a read-only call"),
            Self::WriteSetTooLarge { max_bytes } => {
                write!(f, "command wrote more than {max_bytes} bytes")
            }
            Self::Decode(why) => write!(f, "stored value does not decode: {why}"),
        }
    }
}

impl std::error::Error for StorageError {}

impl From<StorageError> for Error {
    fn from(err: StorageError) -> Self {
        let code = match err {
            StorageError::InvalidTableName(_) => "invalid-table-name",
            StorageError::KeyTooLarge { .. } => "key-too-large",
            StorageError::ValueTooLarge { .. } => "value-too-large",
            StorageError::ReadOnly => "read-only",
            StorageError::WriteSetTooLarge { .. } => "write-set-too-large",
            StorageError::Decode(_) => "corrupt-value",
        };
        Error::new(code, err.to_string())
    }
}
