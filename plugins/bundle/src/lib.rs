//! The bundled plugins, built to WebAssembly components by this crate's
//! build script. Each constant is the absolute path of a `.wasm` component
//! file; [`ALL`] lists them by name.

include!(concat!(env!("OUT_DIR"), "/plugins.rs"));

/// The path of the bundled plugin called `name`, if there is one.
pub fn path(name: &str) -> Option<&'static str> {
    ALL.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
}
