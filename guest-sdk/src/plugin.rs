//! The [`Plugin`] trait a plugin implements, and the adapter that turns it
//! into the component's exported `guest` interface.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::exports::keel::plugin::guest as wit;
use crate::error::Error;

/// A Keel plugin: typed commands in, typed responses out.
///
/// A plugin holds no state of its own: everything it keeps lives in its
/// [`crate::Table`]s, so that its behaviour is a deterministic function of
/// (stored state, command) and the journal replays it exactly. Commands,
/// queries and responses cross the host boundary as JSON.
pub trait Plugin {
    /// Short name, `[a-z0-9_-]`, unique within a host.
    const NAME: &'static str;
    /// Human version string.
    const VERSION: &'static str;
    /// Storage schema number; raise it when the stored layout changes and
    /// handle the old one in [`Plugin::migrate`].
    const SCHEMA: u32;

    /// Operator configuration given to [`Plugin::init`].
    type Config: DeserializeOwned;
    /// A state-changing command.
    type Command: DeserializeOwned;
    /// What a command returns.
    type Response: Serialize;
    /// A read-only request.
    type Query: DeserializeOwned;
    /// What a query returns.
    type QueryResponse: Serialize;

    /// Called once when the plugin is first deployed. Default: nothing.
    fn init(_config: Self::Config) -> Result<(), Error> {
        Ok(())
    }

    /// Applies a command. On `Err`, every write it made is discarded.
    fn handle(command: Self::Command) -> Result<Self::Response, Error>;

    /// Answers a read-only request from committed state.
    fn query(request: Self::Query) -> Result<Self::QueryResponse, Error>;

    /// Converts stored state written by schema `from_schema`. Default:
    /// accepts only the same schema.
    fn migrate(from_schema: u32) -> Result<(), Error> {
        if from_schema == Self::SCHEMA {
            Ok(())
        } else {
            Err(Error::new(
                "unsupported-migration",
                format!(
                    "{} schema {} cannot migrate from schema {from_schema}",
                    Self::NAME,
                    Self::SCHEMA
                ),
            ))
        }
    }
}

/// Decodes a JSON payload, naming what was wrong on failure.
pub fn decode_json<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::new(format!("bad-{what}"), format!("{what} does not parse: {e}")))
}

/// Encodes a response as JSON.
pub fn encode_json<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value)
        .map_err(|e| Error::new("bad-response", format!("response does not serialize: {e}")))
}

/// Connects a [`Plugin`] to the generated bindings; used by [`crate::export!`].
pub struct Adapter<P>(PhantomData<P>);

impl From<Error> for wit::Error {
    fn from(e: Error) -> Self {
        wit::Error {
            code: e.code,
            message: e.message,
        }
    }
}

impl<P: Plugin> wit::Guest for Adapter<P> {
    fn info() -> wit::PluginInfo {
        wit::PluginInfo {
            name: P::NAME.to_owned(),
            version: P::VERSION.to_owned(),
            schema: P::SCHEMA,
        }
    }

    fn init(config: Vec<u8>) -> Result<(), wit::Error> {
        let config = if config.is_empty() {
            b"{}".as_slice()
        } else {
            &config
        };
        Ok(P::init(decode_json("config", config)?)?)
    }

    fn handle(command: Vec<u8>) -> Result<Vec<u8>, wit::Error> {
        let response = P::handle(decode_json("command", &command)?)?;
        Ok(encode_json(&response)?)
    }

    fn query(request: Vec<u8>) -> Result<Vec<u8>, wit::Error> {
        let response = P::query(decode_json("query", &request)?)?;
        Ok(encode_json(&response)?)
    }

    fn migrate(from_schema: u32) -> Result<(), wit::Error> {
        Ok(P::migrate(from_schema)?)
    }
}
