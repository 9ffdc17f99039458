//! The sealed WASI 0.2 served to components from standard toolchains
//! (Rust's wasm32-wasip2 std, componentize-py, jco). Nothing a plugin can
//! observe through it differs on replay:
//!
//! - no preopened directories, no network, no name lookup, an empty
//!   environment, no arguments, stdin closed;
//! - wall and monotonic clocks read the current command's journaled
//!   timestamp (they do not move during a command);
//! - random bytes (secure and insecure) are a BLAKE3 stream keyed by the
//!   plugin's name and the command's sequence number;
//! - stdout and stderr go into the host's tracing, tagged with the plugin;
//! - timers (`subscribe-duration`, `subscribe-instant`, so `sleep` too) are
//!   ready at once: time does not pass inside a command, and a plugin
//!   cannot park its actor thread in a host call that fuel and the epoch
//!   deadline cannot interrupt.
//!
//! Keel's own Rust plugins import none of this (they are built for
//! wasm32-unknown-unknown); the host links it so that other toolchains'
//! components run too.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::clocks::{HostMonotonicClock, HostWallClock};
use wasmtime_wasi::p2::{DynPollable, OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder};

use super::imports::HostState;

use crate::limits::LOG_LINE_BYTES_MAX;

/// The current call's journaled sequence and timestamp: the one place the
/// store keeps them, read by Keel's `context` imports and shared with the
/// sealed WASI's clocks and random streams.
#[derive(Clone, Default)]
pub(crate) struct CallClock {
    sequence: Arc<AtomicU64>,
    timestamp_ms: Arc<AtomicU64>,
    /// Counts calls, so that every call's random streams start from their
    /// beginning: what a call draws depends on (plugin, sequence) only,
    /// never on what an earlier call with the same sequence drew.
    call: Arc<AtomicU64>,
}

impl CallClock {
    pub(crate) fn set(&self, sequence: u64, timestamp_ms: u64) {
        self.sequence.store(sequence, Ordering::Relaxed);
        self.timestamp_ms.store(timestamp_ms, Ordering::Relaxed);
    }

    /// Marks the start of a call (random streams restart).
    pub(crate) fn begin_call(&self) {
        self.call.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn sequence(&self) -> u64 {
        self.sequence.load(Ordering::Relaxed)
    }

    pub(crate) fn timestamp_ms(&self) -> u64 {
        self.timestamp_ms.load(Ordering::Relaxed)
    }
}

struct JournaledWallClock(Arc<AtomicU64>);

impl HostWallClock for JournaledWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::Relaxed))
    }
}

struct JournaledMonotonicClock(Arc<AtomicU64>);

impl HostMonotonicClock for JournaledMonotonicClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }
    fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed).saturating_mul(1_000_000)
    }
}

/// Deterministic random bytes: BLAKE3 XOF of (domain, plugin, sequence),
/// restarted whenever the sequence changes.
struct SealedRandom {
    plugin: Arc<str>,
    domain: &'static str,
    sequence: Arc<AtomicU64>,
    call: Arc<AtomicU64>,
    /// (call, stream): the stream of the call it was started in.
    stream: Option<(u64, blake3::OutputReader)>,
}

impl SealedRandom {
    fn reader(&mut self) -> &mut blake3::OutputReader {
        let seq = self.sequence.load(Ordering::Relaxed);
        let call = self.call.load(Ordering::Relaxed);
        if self.stream.as_ref().is_none_or(|(c, _)| *c != call) {
            let mut h = blake3::Hasher::new_derive_key("keel sealed wasi random v1");
            h.update(self.domain.as_bytes());
            h.update(&[0]);
            h.update(self.plugin.as_bytes());
            h.update(&[0]);
            h.update(&seq.to_le_bytes());
            self.stream = Some((call, h.finalize_xof()));
        }
        &mut self.stream.as_mut().expect("set above").1
    }
}

impl rand_core::TryRng for SealedRandom {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.reader().fill(&mut b);
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.reader().fill(&mut b);
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.reader().fill(dst);
        Ok(())
    }
}

/// stdout/stderr of a plugin: each write becomes a tracing event.
#[derive(Clone)]
struct TracingOutput {
    plugin: Arc<str>,
    stream: &'static str,
}

impl IsTerminal for TracingOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for TracingOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl TracingOutput {
    fn emit(&self, bytes: &[u8]) {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(LOG_LINE_BYTES_MAX)]);
        let text = text.trim_end_matches('\n');
        if !text.is_empty() {
            tracing::info!(plugin = %self.plugin, stream = self.stream, "{text}");
        }
    }
}

impl OutputStream for TracingOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.emit(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(LOG_LINE_BYTES_MAX)
    }
}

#[async_trait::async_trait]
impl Pollable for TracingOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for TracingOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.emit(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// Builds the sealed context for one plugin's store.
pub(crate) fn sealed_ctx(plugin: &Arc<str>, clock: &CallClock) -> WasiCtx {
    let random = |domain| SealedRandom {
        plugin: plugin.clone(),
        domain,
        sequence: clock.sequence.clone(),
        call: clock.call.clone(),
        stream: None,
    };
    let mut seed = [0u8; 16];
    blake3::Hasher::new_derive_key("keel sealed wasi insecure seed v1")
        .update(plugin.as_bytes())
        .finalize_xof()
        .fill(&mut seed);
    WasiCtxBuilder::new()
        .wall_clock(JournaledWallClock(clock.timestamp_ms.clone()))
        .monotonic_clock(JournaledMonotonicClock(clock.timestamp_ms.clone()))
        .secure_random(random("secure"))
        .insecure_random(random("insecure"))
        .insecure_random_seed(u128::from_le_bytes(seed))
        .stdout(TracingOutput {
            plugin: plugin.clone(),
            stream: "stdout",
        })
        .stderr(TracingOutput {
            plugin: plugin.clone(),
            stream: "stderr",
        })
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}

/// The WASI 0.2 package version whose interfaces the host defines; a
/// component importing any 0.2.x version links against them.
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// A timer that has already fired.
struct Elapsed;

#[async_trait::async_trait]
impl Pollable for Elapsed {
    async fn ready(&mut self) {}
}

fn elapsed_pollable(state: &mut HostState) -> wasmtime::Result<Resource<DynPollable>> {
    let timer = state.resources.push(Elapsed)?;
    wasmtime_wasi::p2::subscribe(&mut state.resources, timer)
}

/// Adds the sealed WASI 0.2 (synchronous bindings) to `linker`, with the
/// monotonic clock's timers replaced by ones that are ready at once.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap("subscribe-duration", |mut store, (_nanos,): (u64,)| {
        Ok((elapsed_pollable(store.data_mut())?,))
    })?;
    clock.func_wrap("subscribe-instant", |mut store, (_instant,): (u64,)| {
        Ok((elapsed_pollable(store.data_mut())?,))
    })?;
    linker.allow_shadowing(false);
    Ok(())
}
