//! The host side of `wasi:keyvalue@0.2.0-draft2` (`store`, `atomics`,
//! `batch`), served on the same storage as `keel:plugin/tables`.
//!
//! A plugin of world `kv-plugin` imports these interfaces instead of
//! `tables`. Everything it does lands in the same place, with the same
//! rules:
//!
//! - **Buckets are tables.** `store.open(name)` checks `name` with the
//!   table-name rule (1..=64 bytes of `[a-z0-9_.-]`; anything else is
//!   `no-such-store`) and returns a handle on the calling plugin's table of
//!   that name. A key (a string) is stored as its UTF-8 bytes. The host
//!   prefixes every key with the plugin's identity exactly as for `tables`,
//!   so no bucket name reaches another plugin's keys.
//! - **Every write goes through the call's [`crate::storage::Batch`]**: it is
//!   inside the command's write set (undone if the command returns an error
//!   or traps), counted against the write-set limit, hashed into the state
//!   hash and replayed from the journal exactly like a `tables.put`.
//! - **Refusals are `error::other` values** whose message starts with a
//!   stable code: `key-too-large`, `value-too-large`, `write-set-too-large`
//!   (each with the limit in bytes), `read-only` (a write during `query` or
//!   `info`), `cursor-too-large`, `not-an-integer` and `overflow`
//!   (`increment`), `result-too-large` (`get-many`). Storage failures (I/O,
//!   corruption) trap the call, as in [`super::imports`].
//! - **`list-keys`** returns keys in ascending byte order (which is also
//!   the order of the strings by Unicode scalar value), up to
//!   [`SCAN_CHUNK_ENTRIES_MAX`] per page. The cursor is the last key of a
//!   full page when more keys follow, `none` otherwise; the next page starts
//!   strictly after the cursor. So paging sees the command's own writes and
//!   never repeats or skips a key that exists throughout, and any key string
//!   is a valid cursor ("keys after this one"). Keys that are not UTF-8
//!   (which only a `tables` version of the same plugin could have written)
//!   are skipped.
//! - **`increment`** stores the counter as 8 bytes, little-endian two's
//!   complement (`i64::to_le_bytes`); an absent key counts as 0. A value of
//!   another length is `not-an-integer`, overflow is `overflow`: both are
//!   errors, never traps, and write nothing.
//! - **CAS**: `cas.new` remembers the key's current value; `swap` writes
//!   only if the value is still the same (the plugin's own writes in
//!   between are the only thing that can change it: commands of one plugin
//!   run one at a time), otherwise it returns `cas-failed` with a new
//!   handle on the latest value.
//! - **Batch operations are all-or-nothing**: `set-many` and `delete-many`
//!   check every key, value and the write-set limit before writing, so an
//!   error leaves the bucket untouched.
//!
//! Bucket and CAS handles count against the same per-instance limit as
//! scan cursors ([`CURSORS_OPEN_MAX`]): a plugin that opens more without
//! dropping them traps.

use wasmtime::component::{HasSelf, Linker, Resource};

use super::bindings::kv::wasi::keyvalue::{atomics, batch, store};
use super::imports::{HostState, StorageAccess};
use crate::limits::{CURSORS_OPEN_MAX, SCAN_CHUNK_ENTRIES_MAX};
use crate::storage::read::{ScanDirection, ScanState};
use crate::storage::{StorageError, validate_table_name};

use std::ops::Bound;

/// An open bucket: the name of one of the calling plugin's tables.
pub struct KvBucket {
    table: String,
}

/// A compare-and-swap in progress: the key and the value it was read with.
pub struct KvCas {
    table: String,
    key: String,
    seen: Option<Vec<u8>>,
}

/// Links `wasi:keyvalue/{store,atomics,batch}@0.2.0-draft2` into `linker`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    store::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    atomics::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    batch::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    Ok(())
}

/// A key-value result: the outer error traps the call, the inner one is
/// returned to the plugin.
type KvResult<T> = wasmtime::Result<Result<T, store::Error>>;

/// One `get-many` answer: the key and its value.
type KeyValue = (String, Vec<u8>);

fn other(code: &str, detail: impl std::fmt::Display) -> store::Error {
    store::Error::Other(format!("{code}: {detail}"))
}

/// Traps the call for a storage failure, remembering it like
/// `tables` does so the executor reports a host fault.
fn fault(state: &mut HostState, err: StorageError) -> wasmtime::Error {
    let msg = format!("host storage fault: {err}");
    state.fault = Some(err);
    wasmtime::Error::msg(msg)
}

/// Counts one more open handle, trapping past [`CURSORS_OPEN_MAX`].
fn take_handle(state: &mut HostState) -> wasmtime::Result<()> {
    if state.cursors_open >= CURSORS_OPEN_MAX {
        return Err(wasmtime::Error::msg(format!(
            "more than {CURSORS_OPEN_MAX} cursors, buckets and CAS handles open in one call"
        )));
    }
    state.cursors_open += 1;
    Ok(())
}

fn release_handle(state: &mut HostState) {
    state.cursors_open = state.cursors_open.saturating_sub(1);
}

impl HostState {
    fn kv_table(&self, bucket: &Resource<KvBucket>) -> wasmtime::Result<String> {
        Ok(self.resources.get(bucket)?.table.clone())
    }

    fn kv_check_key(&self, key: &str) -> Result<(), store::Error> {
        let max = self.limits.key_bytes_max;
        if key.len() > max {
            return Err(other(
                "key-too-large",
                format_args!("the key is {} bytes, the maximum is {max}", key.len()),
            ));
        }
        Ok(())
    }

    fn kv_check_value(&self, value: &[u8]) -> Result<(), store::Error> {
        let max = self.limits.value_bytes_max;
        if value.len() > max {
            return Err(other(
                "value-too-large",
                format_args!("the value is {} bytes, the maximum is {max}", value.len()),
            ));
        }
        Ok(())
    }

    /// Checks that `incoming` more bytes fit in the command's write set and
    /// that writes are allowed at all.
    fn kv_check_write(&self, incoming: u64) -> Result<(), store::Error> {
        let max = self.limits.write_set_bytes_max;
        match &self.storage {
            StorageAccess::Batch(batch) => {
                let written = batch.command_written_bytes();
                if written.saturating_add(incoming) > max {
                    return Err(other(
                        "write-set-too-large",
                        format_args!(
                            "this command would write {} bytes, the maximum is {max}",
                            written.saturating_add(incoming)
                        ),
                    ));
                }
                Ok(())
            }
            StorageAccess::Read(_) | StorageAccess::None => Err(other(
                "read-only",
                "writes are refused during a query (or info)",
            )),
        }
    }

    /// Reads one key of the plugin's `table` (sees the command's writes).
    fn kv_get(&mut self, table: &str, key: &str) -> wasmtime::Result<Option<Vec<u8>>> {
        let plugin_id = self.plugin_id;
        let result = match &mut self.storage {
            StorageAccess::Batch(batch) => batch.get(plugin_id, table, key.as_bytes()),
            StorageAccess::Read(view) => view.get(plugin_id, table, key.as_bytes()),
            StorageAccess::None => Ok(None),
        };
        result.map_err(|e| fault(self, e))
    }

    /// Writes (`Some`) or removes (`None`) one key. The caller has checked
    /// the key, the value and the write set.
    fn kv_write(&mut self, table: &str, key: &str, value: Option<&[u8]>) -> wasmtime::Result<()> {
        let plugin_id = self.plugin_id;
        let result = match &mut self.storage {
            StorageAccess::Batch(batch) => batch.write(plugin_id, table, key.as_bytes(), value),
            // Unreachable after `kv_check_write`; refuse rather than panic.
            StorageAccess::Read(_) | StorageAccess::None => {
                return Err(wasmtime::Error::msg("key-value write outside a command"));
            }
        };
        result.map(|_| ()).map_err(|e| fault(self, e))
    }

    /// One checked write of a single key.
    fn kv_put(&mut self, table: &str, key: &str, value: Option<&[u8]>) -> KvResult<()> {
        if let Err(e) = self.kv_check_key(key) {
            return Ok(Err(e));
        }
        if let Some(v) = value
            && let Err(e) = self.kv_check_value(v)
        {
            return Ok(Err(e));
        }
        let incoming = (key.len() + value.map_or(0, <[u8]>::len)) as u64;
        if let Err(e) = self.kv_check_write(incoming) {
            return Ok(Err(e));
        }
        self.kv_write(table, key, value)?;
        Ok(Ok(()))
    }

    /// The next chunk of `scan`, from the batch or the read view.
    fn kv_scan(
        &mut self,
        scan: &mut ScanState,
        max: usize,
    ) -> wasmtime::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let plugin_id = self.plugin_id;
        let result = match &mut self.storage {
            StorageAccess::Batch(batch) => batch.scan_chunk(plugin_id, scan, max),
            StorageAccess::Read(view) => view.scan_chunk(plugin_id, scan, max),
            StorageAccess::None => Ok(Vec::new()),
        };
        result.map_err(|e| fault(self, e))
    }

    fn kv_new_cas(&mut self, table: String, key: String) -> KvResult<Resource<KvCas>> {
        if let Err(e) = self.kv_check_key(&key) {
            return Ok(Err(e));
        }
        let seen = self.kv_get(&table, &key)?;
        take_handle(self)?;
        Ok(Ok(self.resources.push(KvCas { table, key, seen })?))
    }
}

impl store::Host for HostState {
    fn open(&mut self, identifier: String) -> KvResult<Resource<KvBucket>> {
        if validate_table_name(&identifier).is_err() {
            return Ok(Err(store::Error::NoSuchStore));
        }
        take_handle(self)?;
        Ok(Ok(self.resources.push(KvBucket { table: identifier })?))
    }
}

impl store::HostBucket for HostState {
    fn get(&mut self, bucket: Resource<KvBucket>, key: String) -> KvResult<Option<Vec<u8>>> {
        let table = self.kv_table(&bucket)?;
        if let Err(e) = self.kv_check_key(&key) {
            return Ok(Err(e));
        }
        Ok(Ok(self.kv_get(&table, &key)?))
    }

    fn set(&mut self, bucket: Resource<KvBucket>, key: String, value: Vec<u8>) -> KvResult<()> {
        let table = self.kv_table(&bucket)?;
        self.kv_put(&table, &key, Some(&value))
    }

    fn delete(&mut self, bucket: Resource<KvBucket>, key: String) -> KvResult<()> {
        let table = self.kv_table(&bucket)?;
        self.kv_put(&table, &key, None)
    }

    fn exists(&mut self, bucket: Resource<KvBucket>, key: String) -> KvResult<bool> {
        let table = self.kv_table(&bucket)?;
        if let Err(e) = self.kv_check_key(&key) {
            return Ok(Err(e));
        }
        Ok(Ok(self.kv_get(&table, &key)?.is_some()))
    }

    fn list_keys(
        &mut self,
        bucket: Resource<KvBucket>,
        cursor: Option<String>,
    ) -> KvResult<store::KeyResponse> {
        let table = self.kv_table(&bucket)?;
        let lower = match cursor {
            Some(after) if after.len() > self.limits.key_bytes_max => {
                return Ok(Err(other(
                    "cursor-too-large",
                    format_args!(
                        "a cursor is a key returned by list-keys, at most {} bytes",
                        self.limits.key_bytes_max
                    ),
                )));
            }
            Some(after) => Bound::Excluded(after.into_bytes()),
            None => Bound::Unbounded,
        };
        let mut scan = ScanState {
            table,
            lower,
            upper: Bound::Unbounded,
            direction: ScanDirection::Forward,
            done: false,
        };
        let page_max = SCAN_CHUNK_ENTRIES_MAX as usize;
        let mut keys: Vec<String> = Vec::new();
        while keys.len() < page_max {
            let chunk = self.kv_scan(&mut scan, page_max - keys.len())?;
            if chunk.is_empty() {
                break;
            }
            keys.extend(
                chunk
                    .into_iter()
                    .filter_map(|(k, _)| String::from_utf8(k).ok()),
            );
        }
        // A full page gets a cursor iff at least one more key follows.
        let cursor = match keys.last() {
            Some(last) if keys.len() == page_max && !self.kv_scan(&mut scan, 1)?.is_empty() => {
                Some(last.clone())
            }
            _ => None,
        };
        Ok(Ok(store::KeyResponse { keys, cursor }))
    }

    fn drop(&mut self, bucket: Resource<KvBucket>) -> wasmtime::Result<()> {
        self.resources.delete(bucket)?;
        release_handle(self);
        Ok(())
    }
}

impl atomics::Host for HostState {
    fn increment(&mut self, bucket: Resource<KvBucket>, key: String, delta: i64) -> KvResult<i64> {
        let table = self.kv_table(&bucket)?;
        if let Err(e) = self.kv_check_key(&key) {
            return Ok(Err(e));
        }
        let current = match self.kv_get(&table, &key)? {
            None => 0,
            Some(bytes) => match <[u8; 8]>::try_from(bytes.as_slice()) {
                Ok(b) => i64::from_le_bytes(b),
                Err(_) => {
                    return Ok(Err(other(
                        "not-an-integer",
                        format_args!(
                            "the value of {key:?} is {} bytes, a counter is 8 bytes (i64, little-endian)",
                            bytes.len()
                        ),
                    )));
                }
            },
        };
        let Some(new) = current.checked_add(delta) else {
            return Ok(Err(other(
                "overflow",
                format_args!("{current} + {delta} does not fit in an i64"),
            )));
        };
        self.kv_put(&table, &key, Some(&new.to_le_bytes()))
            .map(|r| r.map(|()| new))
    }

    fn swap(
        &mut self,
        cas: Resource<KvCas>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        // `swap` consumes the handle.
        let KvCas { table, key, seen } = self.resources.delete(cas)?;
        release_handle(self);
        let now = self.kv_get(&table, &key)?;
        if now != seen {
            take_handle(self)?;
            let fresh = self.resources.push(KvCas {
                table,
                key,
                seen: now,
            })?;
            return Ok(Err(atomics::CasError::CasFailed(fresh)));
        }
        Ok(self
            .kv_put(&table, &key, Some(&value))?
            .map_err(atomics::CasError::StoreError))
    }
}

impl atomics::HostCas for HostState {
    fn new(&mut self, bucket: Resource<KvBucket>, key: String) -> KvResult<Resource<KvCas>> {
        let table = self.kv_table(&bucket)?;
        self.kv_new_cas(table, key)
    }

    fn current(&mut self, cas: Resource<KvCas>) -> KvResult<Option<Vec<u8>>> {
        Ok(Ok(self.resources.get(&cas)?.seen.clone()))
    }

    fn drop(&mut self, cas: Resource<KvCas>) -> wasmtime::Result<()> {
        self.resources.delete(cas)?;
        release_handle(self);
        Ok(())
    }
}

impl batch::Host for HostState {
    fn get_many(
        &mut self,
        bucket: Resource<KvBucket>,
        keys: Vec<String>,
    ) -> KvResult<Vec<Option<KeyValue>>> {
        let table = self.kv_table(&bucket)?;
        for key in &keys {
            if let Err(e) = self.kv_check_key(key) {
                return Ok(Err(e));
            }
        }
        // The answer is copied into the plugin's memory: refuse one that
        // could not fit there rather than build it.
        let max = self.limits.memory_bytes_max;
        let mut total = 0usize;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let value = self.kv_get(&table, &key)?;
            total = total.saturating_add(key.len() + value.as_ref().map_or(0, Vec::len));
            if total > max {
                return Ok(Err(other(
                    "result-too-large",
                    format_args!(
                        "the values asked for exceed {max} bytes, the plugin's memory limit"
                    ),
                )));
            }
            out.push(value.map(|v| (key, v)));
        }
        Ok(Ok(out))
    }

    fn set_many(
        &mut self,
        bucket: Resource<KvBucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> KvResult<()> {
        let table = self.kv_table(&bucket)?;
        let mut incoming = 0u64;
        for (key, value) in &key_values {
            if let Err(e) = self
                .kv_check_key(key)
                .and_then(|()| self.kv_check_value(value))
            {
                return Ok(Err(e));
            }
            incoming = incoming.saturating_add((key.len() + value.len()) as u64);
        }
        if let Err(e) = self.kv_check_write(incoming) {
            return Ok(Err(e));
        }
        for (key, value) in &key_values {
            self.kv_write(&table, key, Some(value))?;
        }
        Ok(Ok(()))
    }

    fn delete_many(&mut self, bucket: Resource<KvBucket>, keys: Vec<String>) -> KvResult<()> {
        let table = self.kv_table(&bucket)?;
        let mut incoming = 0u64;
        for key in &keys {
            if let Err(e) = self.kv_check_key(key) {
                return Ok(Err(e));
            }
            incoming = incoming.saturating_add(key.len() as u64);
        }
        if let Err(e) = self.kv_check_write(incoming) {
            return Ok(Err(e));
        }
        for key in &keys {
            self.kv_write(&table, key, None)?;
        }
        Ok(Ok(()))
    }
}
