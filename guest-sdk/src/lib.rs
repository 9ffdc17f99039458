#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

#[cfg(any(test, all(target_arch = "wasm32", not(target_feature = "atomics"))))]
mod alloc;
#[cfg(any(test, all(target_arch = "wasm32", not(target_feature = "atomics"))))]
mod arena;
mod backend;
pub mod context;
mod error;
#[doc(hidden)]
pub mod export;
#[cfg(not(target_arch = "wasm32"))]
pub mod fixture;
pub mod key;
mod plugin;
pub mod table;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

#[doc(hidden)]
pub mod bindings {
    //! The one `wit_bindgen::generate!` site of Keel. Plugins never call it.
    //!
    //! The exports are written by [`crate::export!`] (see `export.rs`), not
    //! by wit-bindgen's export macro, so the world's type section (imports
    //! and exports) is emitted here, in this crate, and kept in the final
    //! module by [`link_component_type`].
    wit_bindgen::generate!({
        world: "plugin",
        path: "../wit",
    });

    /// Makes the linker keep this crate's `component-type` custom section
    /// (the world `wasm-component-ld` turns the module into a component of).
    /// The exports call it.
    #[inline(never)]
    pub fn link_component_type() {
        __link_custom_section_describing_imports();
    }
}

/// Inside a component (single-threaded wasm), small blocks are recycled
/// through a bounded cache in front of a bump arena inside the initial
/// memory and then the standard allocator (see `alloc.rs`, `arena.rs`). A plugin must not declare its own global allocator.
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: alloc::CachingAlloc = alloc::CachingAlloc::new();

pub use context::{Caller, Level, caller, log, sequence, timestamp_ms};
pub use error::{Error, StorageError};
pub use key::{Key, KeyDecodeError};
pub use plugin::{Adapter, Plugin};
pub use table::{Direction, Scan, Table, TableCodec};

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
        $crate::__export_guest!($crate::Adapter<$plugin>);
    };
}
