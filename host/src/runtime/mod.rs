//! The wasmtime side: one engine, compiled components cached on disk,
//! and per-plugin instances with fuel, deadlines and memory caps.

mod bindings;
pub mod cache;
pub mod imports;
pub mod instance;
pub mod keyvalue;
mod table_calls;
mod wasi;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use cache::LoadError;
pub use imports::HostState;
pub use instance::{CallError, PluginInstance};

use crate::limits::{
    EPOCH_TICK_MS, POOL_COMPONENT_INSTANCES_MAX, POOL_CORE_INSTANCES_MAX, POOL_MEMORIES_MAX,
    POOL_MEMORY_KEEP_RESIDENT_BYTES, POOL_TABLES_MAX, TABLE_ELEMENTS_MAX, WASM_STACK_BYTES_MAX,
};

/// A validated, compiled component ready to instantiate.
#[derive(Clone)]
pub struct LoadedComponent {
    /// BLAKE3 of the component bytes.
    pub hash: [u8; 32],
    /// The original bytes (stored in the database, content-addressed).
    pub bytes: Arc<[u8]>,
    pub(crate) pre: bindings::PluginPre<HostState>,
}

/// The engine, the linker with Keel's imports, and the component cache.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    cache: cache::ComponentCache,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Release);
    }
}

/// The engine configuration. Precompiled artifacts are only valid for an
/// engine built from exactly this, so the cache is keyed by it.
pub(crate) fn engine_config() -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(WASM_STACK_BYTES_MAX)
        .concurrency_support(false)
        .parallel_compilation(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config()));
    config
}

/// The instance pool. A plugin's calls each get a new instance (see
/// `instance.rs`), so instantiation must be cheap: the pool keeps memory
/// slots mapped with the component's initial image copy-on-write, and on
/// kernels with PAGEMAP_SCAN (Linux 6.7+) resets only the pages a call
/// dirtied, in place, so the next instance starts without page faults.
fn pooling_config() -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(POOL_COMPONENT_INSTANCES_MAX)
        .total_core_instances(POOL_CORE_INSTANCES_MAX)
        .total_memories(POOL_MEMORIES_MAX)
        .total_tables(POOL_TABLES_MAX)
        .table_elements(TABLE_ELEMENTS_MAX);
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        pool.pagemap_scan(Enabled::Yes)
            .linear_memory_keep_resident(POOL_MEMORY_KEEP_RESIDENT_BYTES)
            .table_keep_resident(TABLE_ELEMENTS_MAX * 8);
    }
    pool
}

impl Runtime {
    /// Builds the engine and starts the epoch ticker (the wall-clock backstop).
    pub fn new(cache_dir: &Path) -> anyhow::Result<Runtime> {
        let engine = Engine::new(&engine_config())
            .map_err(|e| anyhow::anyhow!("creating the wasm engine: {e}"))?;
        let mut linker = Linker::new(&engine);
        bindings::Plugin::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )
        .map_err(|e| anyhow::anyhow!("linking host imports: {e}"))?;
        table_calls::add_to_linker(&mut linker)
            .map_err(|e| anyhow::anyhow!("linking the table calls: {e}"))?;
        wasi::add_to_linker(&mut linker)
            .map_err(|e| anyhow::anyhow!("linking the sealed WASI: {e}"))?;
        keyvalue::add_to_linker(&mut linker)
            .map_err(|e| anyhow::anyhow!("linking wasi:keyvalue: {e}"))?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            std::thread::Builder::new()
                .name("keel-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        std::thread::sleep(Duration::from_millis(EPOCH_TICK_MS));
                        engine.increment_epoch();
                    }
                })?;
        }
        let cache = cache::ComponentCache::new(cache_dir, &engine)?;
        Ok(Runtime {
            engine,
            linker,
            cache,
            ticker_stop,
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Validates and compiles (or loads from cache) a component.
    pub fn load(&self, bytes: &[u8]) -> Result<LoadedComponent, LoadError> {
        let hash = *blake3::hash(bytes).as_bytes();
        let component: Component = self.cache.get_or_compile(&self.engine, &hash, bytes)?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Imports(format!("{e:#}")))?;
        let pre = bindings::PluginPre::new(instance_pre)
            .map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        Ok(LoadedComponent {
            hash,
            bytes: bytes.into(),
            pre,
        })
    }
}
