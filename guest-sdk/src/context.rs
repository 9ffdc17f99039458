//! The current call's context: sequence number, timestamp and logging.
//! Sequence and timestamp are assigned by the host when it journals the
//! command and are identical on replay: use them instead of clocks.

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

/// Writes a line to the host's log, tagged with the plugin's name.
pub fn log(level: Level, message: &str) {
    backend::log(level, message)
}
