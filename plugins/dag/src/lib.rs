//! The dag plugin (placeholder until its issue lands).

use keel_guest::{Error, Plugin};

/// The plugin.
pub struct Dag;

impl Plugin for Dag {
    const NAME: &'static str = "dag";
    const VERSION: &'static str = "0.0.0";
    const SCHEMA: u32 = 1;
    type Config = serde::de::IgnoredAny;
    type Command = serde::de::IgnoredAny;
    type Response = ();
    type Query = serde::de::IgnoredAny;
    type QueryResponse = ();

    fn handle(_command: Self::Command) -> Result<(), Error> {
        Err(Error::new(
            "unimplemented",
            "the dag plugin is not written yet",
        ))
    }

    fn query(_request: Self::Query) -> Result<(), Error> {
        Err(Error::new(
            "unimplemented",
            "the dag plugin is not written yet",
        ))
    }
}

keel_guest::export!(Dag);
