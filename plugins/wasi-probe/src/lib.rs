//! A test-only plugin built for wasm32-wasip2 (placeholder).

use keel_guest::{Error, Plugin};

/// The plugin.
pub struct WasiProbe;

impl Plugin for WasiProbe {
    const NAME: &'static str = "wasi-probe";
    const VERSION: &'static str = "0.0.0";
    const SCHEMA: u32 = 1;
    type Config = serde::de::IgnoredAny;
    type Command = serde::de::IgnoredAny;
    type Response = ();
    type Query = serde::de::IgnoredAny;
    type QueryResponse = ();

    fn handle(_command: Self::Command) -> Result<(), Error> {
        Ok(())
    }

    fn query(_request: Self::Query) -> Result<(), Error> {
        Ok(())
    }
}

keel_guest::export!(WasiProbe);
