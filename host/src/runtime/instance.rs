//! One plugin's instance: a `Store` with fuel, an epoch deadline and a
//! memory cap.
//!
//! A call runs either on a new instance made from the component's initial
//! memory image (the old store is dropped — its pooled memory slot is reset
//! copy-on-write, without copying the image — and a new one instantiated)
//! or on the instance of the call before, with whatever that call left in
//! linear memory. Which one is the [`InstancePolicy`]'s choice plus the
//! caller's [`PluginInstance::renew`] (the executor renews at the start of
//! each batch and wherever a replayed entry says its call ran on a new
//! instance); [`PluginInstance::ran_on_new_instance`] tells the journal
//! which it was. A trapped instance is never reused, and one whose memory
//! grew past half its cap is replaced before its next call.

use std::sync::Arc;

use wasmtime::{Store, Trap};

use super::LoadedComponent;
use super::bindings::Plugin;
use super::imports::{HostState, StorageAccess};
use crate::config::{InstancePolicy, Limits};
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
    /// Always `Some` between method calls (taken only while the instance is
    /// being replaced).
    store: Option<Store<HostState>>,
    bindings: Option<Plugin>,
    limits: Limits,
    policy: InstancePolicy,
    /// Whether the current instance has served a call (under
    /// [`InstancePolicy::Fresh`], the next call then gets a new one).
    used: bool,
    /// Whether the next call must run on a new instance ([`Self::renew`]).
    renew: bool,
    /// Whether the last call ran on an instance made for it.
    last_on_new: bool,
}

impl PluginInstance {
    /// Creates a store for `component` (instantiated lazily, on first call)
    /// whose calls get their instance as `policy` says.
    pub fn new(
        component: LoadedComponent,
        plugin: Arc<str>,
        plugin_id: u32,
        limits: Limits,
        policy: InstancePolicy,
    ) -> Self {
        let store = new_store(
            component.pre.engine(),
            HostState::new(plugin, plugin_id, limits),
        );
        Self {
            component,
            store: Some(store),
            bindings: None,
            limits,
            policy,
            used: false,
            renew: false,
            last_on_new: false,
        }
    }

    /// The next call runs on a new instance, whatever the policy.
    pub fn renew(&mut self) {
        self.renew = true;
    }

    /// Whether the last call ran on a new instance (made for it, or never
    /// called before) rather than on the instance of the call before.
    pub fn ran_on_new_instance(&self) -> bool {
        self.last_on_new
    }

    fn store(&mut self) -> &mut Store<HostState> {
        self.store
            .as_mut()
            .expect("the store is present between calls")
    }

    /// How this plugin's calls get their instance.
    pub fn policy(&self) -> InstancePolicy {
        self.policy
    }

    /// Changes the limits of the next calls (e.g. the larger budget of a
    /// `migrate`). The memory cap applies from the next growth on.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
        let data = self.store().data_mut();
        data.limits = limits;
        data.memory.max_bytes = limits.memory_bytes_max;
    }

    /// The component this instance runs.
    pub fn component(&self) -> &LoadedComponent {
        &self.component
    }

    /// Gives the instance storage for the next calls.
    pub fn set_storage(&mut self, access: StorageAccess) {
        self.store().data_mut().storage = access;
    }

    /// Takes the storage back.
    pub fn take_storage(&mut self) -> StorageAccess {
        std::mem::replace(&mut self.store().data_mut().storage, StorageAccess::None)
    }

    /// Mutable access to the batch currently lent to the instance.
    pub fn batch_mut(&mut self) -> Option<&mut crate::storage::Batch> {
        match &mut self.store().data_mut().storage {
            StorageAccess::Batch(b) => Some(b),
            _ => None,
        }
    }

    /// Sets the sequence and timestamp the next call sees.
    pub fn set_context(&mut self, sequence: u64, timestamp_ms: u64) {
        self.store().data().clock.set(sequence, timestamp_ms);
    }

    /// Sets the caller the next calls see (`context.caller`).
    pub fn set_caller(&mut self, caller: Option<Arc<crate::caller::Caller>>) {
        self.store().data_mut().caller = caller;
    }

    fn prepare(&mut self) -> Result<(), CallError> {
        if self.used && (self.renew || self.policy == InstancePolicy::Fresh || self.grown()) {
            self.replace_instance();
        }
        self.renew = false;
        self.last_on_new = !self.used;
        self.used = true;
        self.store().data_mut().begin_call();
        let limits = self.limits;
        self.store()
            .set_fuel(limits.fuel_per_call)
            .expect("fuel is enabled in the engine config");
        self.store()
            .set_epoch_deadline((limits.deadline_ms / EPOCH_TICK_MS).max(1));
        if self.bindings.is_none() {
            // Instantiation runs guest code too: it gets the same fuel and deadline.
            let bindings = self
                .component
                .pre
                .instantiate(self.store.as_mut().expect("store present"));
            match bindings {
                Ok(b) => self.bindings = Some(b),
                Err(e) => return Err(self.trapped(e)),
            }
        }
        Ok(())
    }

    /// Whether the instance's memory has grown past half its cap: it is
    /// then replaced before its next call, so that what earlier calls left
    /// in memory never makes a later call run out of it. (The journal
    /// records the new instance, so replay follows.)
    fn grown(&mut self) -> bool {
        let cap = self.limits.memory_bytes_max;
        self.store().data().memory.largest > cap / 2
    }

    /// Drops the current instance and its store; the next call instantiates
    /// a new one from the component's initial image. The host state (storage
    /// lent for the batch, the call's clock, the sealed WASI) moves into the
    /// new store; the old instance's resources do not.
    fn replace_instance(&mut self) {
        let old = self
            .store
            .take()
            .expect("the store is present between calls");
        let engine = old.engine().clone();
        let mut data = old.into_data();
        data.reset_for_new_instance();
        self.store = Some(new_store(&engine, data));
        self.bindings = None;
        self.used = false;
    }

    /// Turns a wasmtime error into a [`CallError`] and replaces the instance.
    fn trapped(&mut self, err: wasmtime::Error) -> CallError {
        let data = self.store().data_mut();
        let fault = data.fault.take();
        let oom = data.memory.hit;
        // Never reuse a trapped instance: a new one is instantiated on the next call.
        self.replace_instance();
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
            .call_info(self.store.as_mut().expect("store present"));
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
            .call_init(self.store.as_mut().expect("store present"), config);
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
            .call_handle(self.store.as_mut().expect("store present"), command);
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
            .call_query(self.store.as_mut().expect("store present"), request);
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
            .call_migrate(self.store.as_mut().expect("store present"), from_schema);
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

fn new_store(engine: &wasmtime::Engine, state: HostState) -> Store<HostState> {
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.memory);
    store
}
