//! Fixed cost per command through the host, in memory: the bench plugin's
//! no-op command called as a component (fuel, deadline, marshalling, the
//! wasm call and JSON decoding inside the guest), next to the same plugin
//! code called natively (JSON decoding included), and the full pipeline
//! (queue, batch, journal entry, relaxed commit) per command.
//!
//! Every call carries a caller (as an authenticated request does).
//! Component calls are measured on a new instance from the initial memory
//! image for every call (policy `fresh`; under the default `batch` only a
//! batch's first command pays this) and on one instance for every call
//! (`reuse`; what the other commands of a batch cost).
//!
//! `cargo bench -p keel-host --bench command_path` (calls: KEEL_BENCH_CALLS).

#[path = "stats.rs"]
mod stats;

use std::hint::black_box;
use std::time::Instant;

use keel_guest::bindings::exports::keel::plugin::guest::Guest as _;
use keel_host::runtime::{PluginInstance, Runtime};
use keel_host::testkit::TestHost;
use keel_host::{Caller, InstancePolicy};
use stats::{Latencies, env_usize, per_second};

const NOOP: &[u8] = b"\"noop\"";

fn main() {
    let calls = env_usize("KEEL_BENCH_CALLS", 200_000);
    // Every call carries a caller, as an authenticated HTTP request does.
    let caller = Caller::new("bench-client", ["client", "operator"]);
    let caller_arc = std::sync::Arc::new(caller.clone());
    let cache = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(cache.path()).unwrap();
    let bytes = std::fs::read(keel_plugins::BENCH).unwrap();
    let component = runtime.load(&bytes).unwrap();
    let instance = |policy| {
        PluginInstance::new(
            component.clone(),
            "bench".into(),
            1,
            Default::default(),
            policy,
        )
    };

    // Native: the same Adapter code path the component runs, compiled natively.
    let mut native = Vec::with_capacity(calls);
    for _ in 0..calls / 10 {
        black_box(keel_guest::Adapter::<keel_plugin_bench::Bench>::handle(
            NOOP.to_vec(),
        ))
        .unwrap();
    }
    for _ in 0..calls {
        let t = Instant::now();
        black_box(keel_guest::Adapter::<keel_plugin_bench::Bench>::handle(
            black_box(NOOP.to_vec()),
        ))
        .unwrap();
        native.push(t.elapsed().as_nanos() as u64);
    }

    // Component: one call each, no storage, under each instance policy.
    let component_calls = |policy| {
        let mut instance = instance(policy);
        let mut wasm = Vec::with_capacity(calls);
        for _ in 0..calls / 10 {
            instance.handle(NOOP).unwrap();
        }
        for i in 0..calls {
            instance.set_context(i as u64, 0);
            let t = Instant::now();
            instance.set_caller(Some(caller_arc.clone()));
            black_box(instance.handle(black_box(NOOP))).unwrap();
            wasm.push(t.elapsed().as_nanos() as u64);
        }
        Latencies::new(wasm)
    };
    let fresh = component_calls(InstancePolicy::Fresh);
    let wasm = component_calls(InstancePolicy::Reuse);

    // Whole pipeline in memory (relaxed durability: no fsync), pipelined.
    let t = TestHost::with_config(|c| c.durability = keel_host::Durability::Relaxed);
    t.deploy(&bytes, None).unwrap();
    let host = t.host();
    let pipeline_calls = calls.min(100_000);
    let start = Instant::now();
    let mut pending = std::collections::VecDeque::new();
    for _ in 0..pipeline_calls {
        pending.push_back(
            host.submit_pipelined_as("bench", NOOP, Some(caller.clone()))
                .unwrap(),
        );
        if pending.len() >= 4096 {
            pending
                .pop_front()
                .unwrap()
                .blocking_recv()
                .unwrap()
                .unwrap();
        }
    }
    for rx in pending {
        rx.blocking_recv().unwrap().unwrap();
    }
    let pipeline = start.elapsed();

    let native = Latencies::new(native);
    println!(
        "command path, no-op command, {calls} calls (machine: {} cores)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!("{:<44} {:>10} {:>10}", "", "p50 µs", "p99 µs");
    println!(
        "{:<44} {:>10.3} {:>10.3}",
        "native call (JSON decode + handle)",
        native.p50_us(),
        native.p99_us()
    );
    println!(
        "{:<44} {:>10.3} {:>10.3}",
        "component call, reused instance",
        wasm.p50_us(),
        wasm.p99_us()
    );
    println!(
        "{:<44} {:>10.3}",
        "extra cost of the host, reuse, p50 (goal <= 0.5)",
        wasm.p50_us() - native.p50_us()
    );
    println!(
        "{:<44} {:>10.3} {:>10.3}",
        "component call, fresh instance per call",
        fresh.p50_us(),
        fresh.p99_us()
    );
    println!(
        "{:<44} {:>10.3} {:>10.3}",
        "extra cost of the host, fresh",
        fresh.p50_us() - native.p50_us(),
        fresh.p99_us() - native.p99_us()
    );
    println!(
        "full pipeline, relaxed durability: {:.0} commands/s = {:.2} µs/command (queue, batch, journal, commit)",
        per_second(pipeline_calls, pipeline),
        pipeline.as_secs_f64() * 1e6 / pipeline_calls as f64
    );
}
