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
//! ([`super::imports::check_write`], which for reads is `check_read`), the
//! same errors and faults; a string that is not valid UTF-8 traps, as
//! lifting it into a `String` does.

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, WasmList, WasmStr};

use super::bindings::keel::plugin::tables::TableError;
use super::imports::{HostState, check_write};
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

/// A call's row, read from guest memory: its full state key, the length
/// of the plugin's key (what the write-set limit counts) and the value to
/// write, if any.
struct Row {
    full_key: RowBytes,
    key_len: usize,
    value: Option<RowBytes>,
}

/// Checks `table`, `key` and `value` in guest memory ([`check_write`]; with
/// no value it is exactly [`super::imports::check_read`]) and copies them once, into a
/// [`Row`]. `Ok(Err(_))` is a refusal the plugin sees; `Err(_)` traps.
fn lift_row(
    store: &StoreContextMut<'_, HostState>,
    table: &WasmStr,
    key: &WasmList<u8>,
    value: Option<&WasmList<u8>>,
) -> wasmtime::Result<Result<Row, TableError>> {
    let (plugin_id, limits) = (store.data().plugin_id, store.data().limits);
    let table = table.to_str(store)?;
    let key = key.as_le_slice(store);
    let value = value.map(|v| v.as_le_slice(store));
    if let Err(e) = check_write(&limits, &table, key, value) {
        return Ok(Err(e));
    }
    Ok(Ok(Row {
        full_key: state_row_key(plugin_id, &table, key),
        key_len: key.len(),
        value: value.map(RowBytes::copy_from_slice),
    }))
}

fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let mut tables = linker.instance(TABLES)?;
    tables.func_wrap("get", |mut store, (table, key): (WasmStr, WasmList<u8>)| {
        let row = match lift_row(&store, &table, &key, None)? {
            Ok(row) => row,
            Err(e) => return Ok((Err(e),)),
        };
        Ok((store.data_mut().get_row(row.full_key)?,))
    })?;
    tables.func_wrap(
        "put",
        |mut store, (table, key, value): (WasmStr, WasmList<u8>, WasmList<u8>)| {
            let row = match lift_row(&store, &table, &key, Some(&value))? {
                Ok(row) => row,
                Err(e) => return Ok((Err(e),)),
            };
            let written = store
                .data_mut()
                .write_row(row.full_key, row.key_len, row.value)?;
            Ok((written.map(|_| ()),))
        },
    )?;
    tables.func_wrap(
        "remove",
        |mut store, (table, key): (WasmStr, WasmList<u8>)| {
            let row = match lift_row(&store, &table, &key, None)? {
                Ok(row) => row,
                Err(e) => return Ok((Err(e),)),
            };
            Ok((store
                .data_mut()
                .write_row(row.full_key, row.key_len, None)?,))
        },
    )?;
    Ok(())
}
