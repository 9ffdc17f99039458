//! The hot `keel:plugin/tables` calls — `get`, `put`, `remove` — linked by
//! hand over the generated ones, reading their arguments in place.
//!
//! The generated bindings lift every `string` and `list<u8>` argument into
//! a fresh `String` or `Vec<u8>` (an allocation, a copy and a free per
//! argument) only for the host to copy it again into the row's key and
//! value. Here the arguments are lifted as [`WasmStr`] and [`WasmList`]
//! (a pointer and a length into the guest's memory), checked there, and
//! copied once, straight into the row's key and value
//! ([`crate::storage::row_bytes::RowBytes`], inline when short). What the
//! plugin sees is the same: the same checks in the same order
//! ([`super::imports::check_read`], [`super::imports::check_write`]), the
//! same errors and faults; a string that is not valid UTF-8 traps, as
//! lifting it into a `String` does.

use wasmtime::component::{Linker, WasmList, WasmStr};

use super::bindings::keel::plugin::tables::TableError;
use super::imports::{HostState, check_read, check_write};
use crate::storage::keys::state_row_key;
use crate::storage::row_bytes::RowBytes;

/// The WIT instance the calls belong to.
const TABLES: &str = "keel:plugin/tables@0.1.0";

/// Links `get`, `put` and `remove` over the generated definitions (which
/// must already be in `linker`, so that the rest of the interface is).
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let linked = link(linker);
    linker.allow_shadowing(false);
    linked
}

fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let mut tables = linker.instance(TABLES)?;
    tables.func_wrap("get", |mut store, (table, key): (WasmStr, WasmList<u8>)| {
        let (plugin_id, limits) = (store.data().plugin_id, store.data().limits);
        let full_key = {
            let cx = &store;
            let table = table.to_str(cx)?;
            let key = key.as_le_slice(cx);
            if let Err(e) = check_read(&limits, &table, key) {
                return Ok((Err(e),));
            }
            state_row_key(plugin_id, &table, key)
        };
        Ok((store.data_mut().get_row(full_key)?,))
    })?;
    tables.func_wrap(
        "put",
        |mut store, (table, key, value): (WasmStr, WasmList<u8>, WasmList<u8>)| {
            let (plugin_id, limits) = (store.data().plugin_id, store.data().limits);
            let (full_key, key_len, value) = {
                let cx = &store;
                let table = table.to_str(cx)?;
                let key = key.as_le_slice(cx);
                let value = value.as_le_slice(cx);
                if let Err(e) = check_write(&limits, &table, key, Some(value)) {
                    return Ok((Err(e),));
                }
                (
                    state_row_key(plugin_id, &table, key),
                    key.len(),
                    RowBytes::copy_from_slice(value),
                )
            };
            let written = store.data_mut().write_row(full_key, key_len, Some(value))?;
            Ok((written.map(|_| ()),))
        },
    )?;
    tables.func_wrap(
        "remove",
        |mut store, (table, key): (WasmStr, WasmList<u8>)| {
            let (plugin_id, limits) = (store.data().plugin_id, store.data().limits);
            let (full_key, key_len) = {
                let cx = &store;
                let table = table.to_str(cx)?;
                let key = key.as_le_slice(cx);
                if let Err(e) = check_write(&limits, &table, key, None) {
                    return Ok((Err::<bool, TableError>(e),));
                }
                (state_row_key(plugin_id, &table, key), key.len())
            };
            Ok((store.data_mut().write_row(full_key, key_len, None)?,))
        },
    )?;
    Ok(())
}
