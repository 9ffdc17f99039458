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
