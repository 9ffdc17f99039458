//! One plugin's live instance: a `Store` with fuel, an epoch deadline and a
//! memory cap, re-instantiated whenever a call traps (a trapped instance is
//! never reused).

use std::sync::Arc;

use wasmtime::{Store, Trap};

use super::LoadedComponent;
use super::bindings::Plugin;
use super::imports::{HostState, StorageAccess};
use crate::config::Limits;
use crate::limits::{EPOCH_TICK_MS, RESPONSE_SIZE_BYTES_MAX};
use crate::storage::StorageError;

/// Why a call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The plugin refused: its own code and message.
    #[error("{code}: {message}")]
    Guest {
        /// The plugin's code.
        code: String,
        /// The plugin's message.
        message: String,
    },
    /// The call trapped; `code` is `trap`, `out-of-fuel`, `deadline-exceeded`,
    /// `out-of-memory` or `stack-overflow`. The instance was replaced.
    #[error("{code}: {message}")]
    Trap {
        /// Which limit or fault.
        code: &'static str,
        /// Details.
        message: String,
    },
    /// Storage failed under the call: the batch must be abandoned.
    #[error("host storage fault: {0}")]
    Fault(StorageError),
}

impl CallError {
    /// The stable code of this error.
    pub fn code(&self) -> &str {
        match self {
            CallError::Guest { code, .. } => code,
            CallError::Trap { code, .. } => code,
            CallError::Fault(_) => "storage-fault",
        }
    }

    /// The message of this error.
    pub fn message(&self) -> String {
        match self {
            CallError::Guest { message, .. } | CallError::Trap { message, .. } => message.clone(),
            CallError::Fault(e) => e.to_string(),
        }
    }
}

/// What `info` returned.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PluginInfo {
    /// Name.
    pub name: String,
    /// Version string.
    pub version: String,
    /// Schema number.
    pub schema: u32,
}

/// A plugin's instance and store.
pub struct PluginInstance {
    component: LoadedComponent,
    store: Store<HostState>,
    bindings: Option<Plugin>,
    limits: Limits,
    plugin: Arc<str>,
    plugin_id: u32,
}

impl PluginInstance {
    /// Creates a store for `component` (instantiated lazily, on first call).
    pub fn new(
        engine: &wasmtime::Engine,
        component: LoadedComponent,
        plugin: Arc<str>,
        plugin_id: u32,
        limits: Limits,
    ) -> Self {
        let store = new_store(engine, plugin.clone(), plugin_id, limits);
        Self {
            component,
            store,
            bindings: None,
            limits,
            plugin,
            plugin_id,
        }
    }

    /// Changes the limits of the next calls (e.g. the larger budget of a
    /// `migrate`). The memory cap applies from the next growth on.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
        let data = self.store.data_mut();
        data.limits = limits;
        data.memory.max_bytes = limits.memory_bytes_max;
    }

    /// The component this instance runs.
    pub fn component(&self) -> &LoadedComponent {
        &self.component
    }

    /// Gives the instance storage for the next calls.
    pub fn set_storage(&mut self, access: StorageAccess) {
        self.store.data_mut().storage = access;
    }

    /// Takes the storage back.
    pub fn take_storage(&mut self) -> StorageAccess {
        std::mem::replace(&mut self.store.data_mut().storage, StorageAccess::None)
    }

    /// Mutable access to the batch currently lent to the instance.
    pub fn batch_mut(&mut self) -> Option<&mut crate::storage::Batch> {
        match &mut self.store.data_mut().storage {
            StorageAccess::Batch(b) => Some(b),
            _ => None,
        }
    }

    /// Sets the sequence and timestamp the next call sees.
    pub fn set_context(&mut self, sequence: u64, timestamp_ms: u64) {
        self.store.data().clock.set(sequence, timestamp_ms);
    }

    fn prepare(&mut self) -> Result<(), CallError> {
        self.store.data_mut().begin_call();
        self.store
            .set_fuel(self.limits.fuel_per_call)
            .expect("fuel is enabled in the engine config");
        self.store
            .set_epoch_deadline((self.limits.deadline_ms / EPOCH_TICK_MS).max(1));
        if self.bindings.is_none() {
            // Instantiation runs guest code too: it gets the same fuel and deadline.
            let bindings = self.component.pre.instantiate(&mut self.store);
            match bindings {
                Ok(b) => self.bindings = Some(b),
                Err(e) => return Err(self.trapped(e)),
            }
        }
        Ok(())
    }

    /// Turns a wasmtime error into a [`CallError`] and replaces the store.
    fn trapped(&mut self, err: wasmtime::Error) -> CallError {
        let data = self.store.data_mut();
        let fault = data.fault.take();
        let oom = data.memory.hit;
        let storage = std::mem::replace(&mut data.storage, StorageAccess::None);
        let clock = data.clock.clone();
        // Never reuse a trapped instance: a fresh store, instantiated on the next call.
        self.store = new_store(
            self.store.engine(),
            self.plugin.clone(),
            self.plugin_id,
            self.limits,
        );
        self.bindings = None;
        let data = self.store.data_mut();
        data.storage = storage;
        data.clock.set(clock.sequence(), clock.timestamp_ms());
        if let Some(fault) = fault {
            return CallError::Fault(fault);
        }
        let message = format!("{err:#}");
        let code = match err.downcast_ref::<Trap>() {
            _ if oom => "out-of-memory",
            Some(Trap::OutOfFuel) => "out-of-fuel",
            Some(Trap::Interrupt) => "deadline-exceeded",
            Some(Trap::StackOverflow) => "stack-overflow",
            _ => "trap",
        };
        let message = match code {
            "out-of-memory" => format!(
                "instance memory would exceed the {}-byte cap ({message})",
                self.limits.memory_bytes_max
            ),
            "out-of-fuel" => format!(
                "the call used all {} units of fuel",
                self.limits.fuel_per_call
            ),
            "deadline-exceeded" => format!(
                "the call ran past the {} ms deadline",
                self.limits.deadline_ms
            ),
            _ => message,
        };
        CallError::Trap { code, message }
    }

    fn finish<T>(
        &mut self,
        result: wasmtime::Result<Result<T, GuestError>>,
    ) -> Result<T, CallError> {
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(CallError::Guest {
                code: e.code,
                message: e.message,
            }),
            Err(e) => Err(self.trapped(e)),
        }
    }

    /// Calls `info`.
    pub fn info(&mut self) -> Result<PluginInfo, CallError> {
        self.prepare()?;
        let result = self
            .bindings
            .as_ref()
            .expect("instantiated in prepare")
            .keel_plugin_guest()
            .call_info(&mut self.store);
        let info = self.finish(result.map(Ok))?;
        Ok(PluginInfo {
            name: info.name,
            version: info.version,
            schema: info.schema,
        })
    }

    /// Calls `init(config)`.
    pub fn init(&mut self, config: &[u8]) -> Result<(), CallError> {
        self.prepare()?;
        let result = self
            .bindings
            .as_ref()
            .expect("instantiated in prepare")
            .keel_plugin_guest()
            .call_init(&mut self.store, config);
        self.finish(result)
    }

    /// Calls `handle(command)`.
    pub fn handle(&mut self, command: &[u8]) -> Result<Vec<u8>, CallError> {
        self.prepare()?;
        let result = self
            .bindings
            .as_ref()
            .expect("instantiated in prepare")
            .keel_plugin_guest()
            .call_handle(&mut self.store, command);
        let response = self.finish(result)?;
        check_response(response)
    }

    /// Calls `query(request)`.
    pub fn query(&mut self, request: &[u8]) -> Result<Vec<u8>, CallError> {
        self.prepare()?;
        let result = self
            .bindings
            .as_ref()
            .expect("instantiated in prepare")
            .keel_plugin_guest()
            .call_query(&mut self.store, request);
        let response = self.finish(result)?;
        check_response(response)
    }

    /// Calls `migrate(from_schema)`.
    pub fn migrate(&mut self, from_schema: u32) -> Result<(), CallError> {
        self.prepare()?;
        let result = self
            .bindings
            .as_ref()
            .expect("instantiated in prepare")
            .keel_plugin_guest()
            .call_migrate(&mut self.store, from_schema);
        self.finish(result)
    }
}

type GuestError = super::bindings::exports::keel::plugin::guest::Error;

fn check_response(response: Vec<u8>) -> Result<Vec<u8>, CallError> {
    if response.len() > RESPONSE_SIZE_BYTES_MAX {
        return Err(CallError::Guest {
            code: "response-too-large".into(),
            message: format!(
                "the plugin's response is {} bytes, over the {RESPONSE_SIZE_BYTES_MAX}-byte limit",
                response.len()
            ),
        });
    }
    Ok(response)
}

fn new_store(
    engine: &wasmtime::Engine,
    plugin: Arc<str>,
    plugin_id: u32,
    limits: Limits,
) -> Store<HostState> {
    let mut store = Store::new(engine, HostState::new(plugin, plugin_id, limits));
    store.limiter(|s| &mut s.memory);
    store
}
