#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod backend;
pub mod context;
mod error;
pub mod key;
mod plugin;
pub mod table;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

#[doc(hidden)]
pub mod bindings {
    //! The one `wit_bindgen::generate!` site of Keel. Plugins never call it.
    wit_bindgen::generate!({
        world: "plugin",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_keel_world",
        default_bindings_module: "keel_guest::bindings",
    });
}

pub use context::{Level, log, sequence, timestamp_ms};
pub use error::{Error, StorageError};
pub use key::{Key, KeyDecodeError};
pub use plugin::{Adapter, Plugin};
pub use table::{Direction, Scan, Table};

/// Re-exported so that plugins derive `Serialize`/`Deserialize` without
/// naming serde in their own manifest.
pub use serde;

/// Exports a type implementing [`Plugin`] as the component's `guest`
/// interface. Call it once, at the root of a plugin crate:
///
/// ```ignore
/// struct Counter;
/// impl keel_guest::Plugin for Counter { /* ... */ }
/// keel_guest::export!(Counter);
/// ```
#[macro_export]
macro_rules! export {
    ($plugin:ty) => {
        // Natively (tests, benchmarks) there is no component to export from.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type KeelPluginAdapter = $crate::Adapter<$plugin>;
            $crate::bindings::__export_keel_world!(KeelPluginAdapter with_types_in $crate::bindings);
        };
    };
}
