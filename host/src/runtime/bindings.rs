//! The one `bindgen!` site of the host. `with:` maps the WIT cursor
//! resource to [`super::imports::ScanCursor`]; every import is trappable so
//! host faults trap the call instead of reaching the plugin as values.

wasmtime::component::bindgen!({
    world: "plugin",
    path: "../wit",
    imports: { default: trappable },
    with: {
        "keel:plugin/tables.cursor": super::imports::ScanCursor,
    },
});

/// Host bindings of the standard key-value interfaces
/// (`wasi:keyvalue/{store,atomics,batch}@0.2.0-draft2`), served on the
/// plugin's tables by [`crate::runtime::keyvalue`]. Only the imports are
/// generated: a `kv-plugin` component exports the same `keel:plugin/guest`
/// as a `plugin` one, so `PluginPre` instantiates and calls both.
pub mod kv {
    wasmtime::component::bindgen!({
        world: "wasi:keyvalue/imports@0.2.0-draft2",
        path: "../wit",
        imports: { default: trappable },
        with: {
            "wasi:keyvalue/store.bucket": crate::runtime::keyvalue::KvBucket,
            "wasi:keyvalue/atomics.cas": crate::runtime::keyvalue::KvCas,
        },
    });
}
