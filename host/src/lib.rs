//! The Keel host library: everything the `keel` binary, the HTTP server and
//! the tests use. See ARCHITECTURE.md at the repository root for the map.

pub mod actor;
pub mod auth;
pub mod caller;
pub mod cli;
pub mod config;
pub mod dry_run;
pub mod error;
pub mod executor;
pub mod export;
pub mod fixture;
pub mod host;
pub mod http;
pub mod limits;
pub mod progress;
pub mod query;
pub mod runtime;
pub mod snapshot;
pub mod state_hash;
pub mod storage;

pub use caller::Caller;
pub use config::{HostConfig, InstancePolicy, Limits};
pub use error::HostError;
pub use host::{Host, HostStatus, PluginStatus};
pub use storage::Durability;
pub mod priority;
pub mod recover;
pub mod replay;
pub mod restore;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod undo;
