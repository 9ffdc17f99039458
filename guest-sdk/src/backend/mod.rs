//! Raw byte storage: the host's imports inside a component, an in-memory
//! model natively (the test kit). Both behave the same for a plugin.

#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod native;
#[cfg(not(target_arch = "wasm32"))]
pub(crate) use native::*;

#[cfg(target_arch = "wasm32")]
mod wasm;
#[cfg(target_arch = "wasm32")]
pub(crate) use wasm::*;

/// One raw key/value pair.
pub(crate) type RawEntry = (Vec<u8>, Vec<u8>);
