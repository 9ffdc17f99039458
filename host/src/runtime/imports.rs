//! The host side of `keel:plugin/tables` and `keel:plugin/context`.
//!
//! Trap or guest error is decided here, in one place ([`fault`]): refusals a
//! plugin can act on (bad table name, key or value too large, write in a
//! query, write set too large) are WIT `table-error` values; storage
//! failures (I/O, corruption) trap the call, so the command is rolled back
//! and reported as a host fault.

use std::sync::Arc;

use wasmtime::component::{Resource, ResourceTable};

use super::bindings::keel::plugin::{context, tables};
use crate::config::Limits;
use crate::limits::{CURSORS_OPEN_MAX, LOG_LINE_BYTES_MAX, SCAN_CHUNK_ENTRIES_MAX};
use crate::storage::batch::scan_bounds;
use crate::storage::keys::state_row_key;
use crate::storage::read::{ScanDirection, ScanState};
use crate::storage::row_bytes::RowBytes;
use crate::storage::{Batch, ReadView, StorageError, validate_table_name};

/// What storage the current call may use.
pub enum StorageAccess {
    /// No storage (between calls, and during `info`).
    None,
    /// A command: reads and writes go to the batch's write transaction.
    Batch(Batch),
    /// A query: reads from a committed snapshot, writes refused.
    Read(ReadView),
}

/// The host-side state of a cursor resource: its own position, re-seeked
/// for every chunk (a redb range cannot outlive one host call).
pub struct ScanCursor {
    scan: ScanState,
}

/// Caps an instance's linear memory and remembers whether it was hit, so
/// that the resulting trap is reported as out-of-memory.
pub struct MemoryCap {
    pub(crate) max_bytes: usize,
    pub(crate) hit: bool,
    /// The largest size a memory of the current instance has been granted.
    pub(crate) largest: usize,
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.hit = true;
            return Ok(false);
        }
        self.largest = self.largest.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= crate::limits::TABLE_ELEMENTS_MAX)
    }
}

/// Everything a plugin's store holds.
pub struct HostState {
    pub(crate) plugin: Arc<str>,
    pub(crate) plugin_id: u32,
    pub(crate) storage: StorageAccess,
    pub(crate) limits: Limits,
    pub(crate) resources: ResourceTable,
    pub(crate) cursors_open: usize,
    pub(crate) memory: MemoryCap,
    /// The storage failure that trapped the current call, if any.
    pub(crate) fault: Option<StorageError>,
    /// The call's sequence and timestamp (Keel's context and the sealed WASI).
    pub(crate) clock: super::wasi::CallClock,
    /// Who made the current call (`context.caller`), set per call.
    pub(crate) caller: Option<Arc<crate::caller::Caller>>,
    wasi: wasmtime_wasi::WasiCtx,
}

impl wasmtime_wasi::WasiView for HostState {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        wasmtime_wasi::WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.resources,
        }
    }
}

impl HostState {
    pub(crate) fn new(plugin: Arc<str>, plugin_id: u32, limits: Limits) -> Self {
        let clock = super::wasi::CallClock::default();
        let wasi = super::wasi::sealed_ctx(&plugin, &clock);
        Self {
            clock,
            caller: None,
            wasi,
            plugin,
            plugin_id,
            storage: StorageAccess::None,
            memory: MemoryCap {
                max_bytes: limits.memory_bytes_max,
                hit: false,
                largest: 0,
            },
            limits,
            resources: ResourceTable::new(),
            cursors_open: 0,
            fault: None,
        }
    }

    /// Resets per-call state before a call.
    ///
    /// Cursors are not reset: a well-behaved guest drops each one (which
    /// decrements the count), and a guest that leaks them runs into
    /// [`CURSORS_OPEN_MAX`] and traps, which replaces the whole store.
    pub(crate) fn begin_call(&mut self) {
        self.memory.hit = false;
        self.fault = None;
        self.clock.begin_call();
    }

    /// Forgets everything that belonged to the previous instance (its
    /// resources: cursors, WASI streams and pollables), so that this state
    /// can serve a new instance in a new store.
    pub(crate) fn reset_for_new_instance(&mut self) {
        self.resources = ResourceTable::new();
        self.cursors_open = 0;
        self.memory.hit = false;
        self.memory.largest = 0;
        self.fault = None;
    }

    /// Records a storage failure and turns it into a trap.
    fn fault(&mut self, err: StorageError) -> wasmtime::Error {
        let msg = format!("host storage fault: {err}");
        self.fault = Some(err);
        wasmtime::Error::msg(msg)
    }
}

pub(crate) type TableResult<T> = wasmtime::Result<Result<T, tables::TableError>>;

/// Checks a read's table name and key size, before anything is copied.
pub(crate) fn check_read(
    limits: &Limits,
    table: &str,
    key: &[u8],
) -> Result<(), tables::TableError> {
    validate_table_name(table).map_err(tables::TableError::InvalidTableName)?;
    if key.len() > limits.key_bytes_max {
        return Err(tables::TableError::KeyTooLarge(limits.key_bytes_max as u32));
    }
    Ok(())
}

/// Checks a write's table name, key size and value size (`None`: a
/// removal), before anything is copied.
pub(crate) fn check_write(
    limits: &Limits,
    table: &str,
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<(), tables::TableError> {
    check_read(limits, table, key)?;
    if let Some(v) = value
        && v.len() > limits.value_bytes_max
    {
        return Err(tables::TableError::ValueTooLarge(
            limits.value_bytes_max as u32,
        ));
    }
    Ok(())
}

impl HostState {
    /// Reads a row by full state key (checked with [`check_read`]).
    pub(crate) fn get_row(&mut self, full_key: RowBytes) -> TableResult<Option<Vec<u8>>> {
        let result = match &mut self.storage {
            StorageAccess::Batch(batch) => batch.get_row(full_key),
            StorageAccess::Read(view) => view.get_row(&full_key),
            StorageAccess::None => return Ok(Ok(None)),
        };
        result.map(Ok).map_err(|e| self.fault(e))
    }

    /// Writes (`Some`) or removes (`None`) a row by full state key (checked
    /// with [`check_write`]; `key_len` is the plugin's key's length), within
    /// the command's write-set limit; returns whether a value was there.
    pub(crate) fn write_row(
        &mut self,
        full_key: RowBytes,
        key_len: usize,
        value: Option<RowBytes>,
    ) -> TableResult<bool> {
        let max = self.limits.write_set_bytes_max;
        let StorageAccess::Batch(batch) = &mut self.storage else {
            return Ok(Err(tables::TableError::ReadOnly));
        };
        let incoming = (key_len + value.as_ref().map_or(0, |v| v.len())) as u64;
        if batch.command_written_bytes() + incoming > max {
            return Ok(Err(tables::TableError::WriteSetTooLarge(max)));
        }
        batch
            .write_row(full_key, key_len, value)
            .map(Ok)
            .map_err(|e| self.fault(e))
    }

    /// Checks and writes (`Some`) or removes (`None`) `key` of `table`.
    fn write(&mut self, table: &str, key: &[u8], value: Option<&[u8]>) -> TableResult<bool> {
        if let Err(e) = check_write(&self.limits, table, key, value) {
            return Ok(Err(e));
        }
        let full_key = state_row_key(self.plugin_id, table, key);
        self.write_row(full_key, key.len(), value.map(RowBytes::copy_from_slice))
    }
}

/// The generated bindings' entry points. `get`, `put` and `remove` are
/// linked over by [`super::table_calls`], which reads their arguments in
/// place; these serve the same calls for anything linked without it.
impl tables::Host for HostState {
    fn get(&mut self, table: String, key: Vec<u8>) -> TableResult<Option<Vec<u8>>> {
        if let Err(e) = check_read(&self.limits, &table, &key) {
            return Ok(Err(e));
        }
        self.get_row(state_row_key(self.plugin_id, &table, &key))
    }

    fn put(&mut self, table: String, key: Vec<u8>, value: Vec<u8>) -> TableResult<()> {
        Ok(self.write(&table, &key, Some(&value))?.map(|_| ()))
    }

    fn remove(&mut self, table: String, key: Vec<u8>) -> TableResult<bool> {
        self.write(&table, &key, None)
    }

    fn scan(
        &mut self,
        table: String,
        start: Option<Vec<u8>>,
        end: Option<Vec<u8>>,
        direction: tables::Direction,
    ) -> TableResult<Resource<ScanCursor>> {
        if let Err(e) = validate_table_name(&table) {
            return Ok(Err(tables::TableError::InvalidTableName(e)));
        }
        for bound in [&start, &end].into_iter().flatten() {
            if bound.len() > self.limits.key_bytes_max + 1 {
                return Ok(Err(tables::TableError::KeyTooLarge(
                    self.limits.key_bytes_max as u32,
                )));
            }
        }
        if self.cursors_open >= CURSORS_OPEN_MAX {
            anyhow_trap(format!(
                "more than {CURSORS_OPEN_MAX} cursors open in one call"
            ))?;
        }
        let (lower, upper) = scan_bounds(start, end);
        let cursor = ScanCursor {
            scan: ScanState {
                table,
                lower,
                upper,
                direction: match direction {
                    tables::Direction::Forward => ScanDirection::Forward,
                    tables::Direction::Backward => ScanDirection::Backward,
                },
                done: false,
            },
        };
        self.cursors_open += 1;
        Ok(Ok(self.resources.push(cursor)?))
    }
}

fn anyhow_trap(msg: String) -> wasmtime::Result<()> {
    Err(wasmtime::Error::msg(msg))
}

impl tables::HostCursor for HostState {
    fn next(
        &mut self,
        cursor: Resource<ScanCursor>,
        max: u32,
    ) -> wasmtime::Result<Vec<tables::Entry>> {
        // Clamp the guest's number: at least one, at most the host's chunk limit.
        let max = max.clamp(1, SCAN_CHUNK_ENTRIES_MAX) as usize;
        let plugin_id = self.plugin_id;
        // The cursor's position is advanced in place (no copy of its table
        // name and bounds per chunk). After a storage fault the call traps
        // and the instance, cursor included, is not used again.
        let scan = &mut self.resources.get_mut(&cursor)?.scan;
        let chunk = match &mut self.storage {
            StorageAccess::Batch(batch) => batch.scan_chunk(plugin_id, scan, max),
            StorageAccess::Read(view) => view.scan_chunk(plugin_id, scan, max),
            StorageAccess::None => Ok(Vec::new()),
        };
        let chunk = chunk.map_err(|e| self.fault(e))?;
        Ok(chunk
            .into_iter()
            .map(|(key, value)| tables::Entry { key, value })
            .collect())
    }

    fn drop(&mut self, cursor: Resource<ScanCursor>) -> wasmtime::Result<()> {
        self.resources.delete(cursor)?;
        self.cursors_open = self.cursors_open.saturating_sub(1);
        Ok(())
    }
}

impl context::Host for HostState {
    fn sequence(&mut self) -> wasmtime::Result<u64> {
        Ok(self.clock.sequence())
    }

    fn timestamp_ms(&mut self) -> wasmtime::Result<u64> {
        Ok(self.clock.timestamp_ms())
    }

    fn caller(&mut self) -> wasmtime::Result<Option<context::Identity>> {
        Ok(self.caller.as_deref().map(|c| context::Identity {
            principal: c.principal.clone(),
            roles: c.roles.clone(),
        }))
    }

    fn log(&mut self, level: context::Level, message: String) -> wasmtime::Result<()> {
        let mut message = message;
        if message.len() > LOG_LINE_BYTES_MAX {
            let mut cut = LOG_LINE_BYTES_MAX;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str("…[truncated]");
        }
        let plugin = &*self.plugin;
        let seq = self.clock.sequence();
        match level {
            context::Level::Trace => tracing::trace!(plugin, seq, "{message}"),
            context::Level::Debug => tracing::debug!(plugin, seq, "{message}"),
            context::Level::Info => tracing::info!(plugin, seq, "{message}"),
            context::Level::Warn => tracing::warn!(plugin, seq, "{message}"),
            context::Level::Error => tracing::error!(plugin, seq, "{message}"),
        }
        Ok(())
    }
}
