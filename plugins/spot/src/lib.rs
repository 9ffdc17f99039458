//! The spot plugin (placeholder until its issue lands).

use keel_guest::{Error, Plugin};

/// The plugin.
pub struct Spot;

impl Plugin for Spot {
    const NAME: &'static str = "spot";
    const VERSION: &'static str = "0.0.0";
    const SCHEMA: u32 = 1;
    type Config = serde::de::IgnoredAny;
    type Command = serde::de::IgnoredAny;
    type Response = ();
    type Query = serde::de::IgnoredAny;
    type QueryResponse = ();

    fn handle(_command: Self::Command) -> Result<(), Error> {
        Err(Error::new("unimplemented", "the spot plugin is not written yet"))
    }

    fn query(_request: Self::Query) -> Result<(), Error> {
        Err(Error::new("unimplemented", "the spot plugin is not written yet"))
    }
}

keel_guest::export!(Spot);
