//! Isolation: one plugin's load, or heavy queries, must not slow another
//! plugin's commands (or the same plugin's commands).
//!
//! 1. `counter` commands from one client, one at a time: alone, then while
//!    four clients send `misbehave` commands that write and then spin until
//!    their fuel runs out.
//! 2. `spot` deposits from one client: alone, then while eight clients loop
//!    the `book` query (its largest page, 10,000 orders) on a book of
//!    `KEEL_BENCH_BOOK` resting orders.
//!
//! Output rows are stable: `scenario  commands  p50 µs  p99 µs  max µs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use keel_plugin_spot::api::{Command, CreateMarket, OrderKind, Place, Side, Transfer};
use keel_tests::bench::{env, submit_all};
use keel_tests::{TestHost, plugins};

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Sends `make(i)` to `plugin` one at a time for `seconds`; returns the
/// latencies in µs.
fn closed_loop(
    t: &TestHost,
    plugin: &str,
    seconds: f64,
    make: impl Fn(u64) -> Vec<u8>,
) -> Vec<f64> {
    let mut out = Vec::new();
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed().as_secs_f64() < seconds {
        let t0 = Instant::now();
        let _ = t.host().submit(plugin, &make(i));
        out.push(t0.elapsed().as_secs_f64() * 1e6);
        i += 1;
    }
    out.sort_by(f64::total_cmp);
    out
}

fn row(label: &str, lat: &[f64]) {
    println!(
        "{label:<58} {:>8} {:>10.1} {:>10.1} {:>10.1}",
        lat.len(),
        pct(lat, 0.5),
        pct(lat, 0.99),
        lat.last().copied().unwrap_or(0.0)
    );
}

/// Runs `load` on `clients` threads until the returned guard is dropped.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<u64>>,
}

impl Load {
    fn start(clients: usize, load: impl Fn(u64) + Send + Sync + 'static) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let load = Arc::new(load);
        let threads = (0..clients)
            .map(|c| {
                let stop = stop.clone();
                let load = load.clone();
                std::thread::spawn(move || {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        load(c as u64 * 1_000_000 + n);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        // Let the load reach its steady state.
        std::thread::sleep(Duration::from_millis(300));
        Load { stop, threads }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.threads.into_iter().map(|t| t.join().unwrap()).sum()
    }
}

fn spinner_scenario(seconds: f64) {
    let t = Arc::new(TestHost::new());
    t.deploy_file(plugins::COUNTER);
    t.deploy_file(plugins::MISBEHAVE);
    let inc = |_| br#"{"add":1}"#.to_vec();
    row("counter alone", &closed_loop(&t, "counter", seconds, inc));
    let host = t.clone();
    let load = Load::start(4, move |i| {
        let cmd = format!(r#"{{"write_then_spin":{{"key":"k{i}"}}}}"#);
        let _ = host.host().submit("misbehave", cmd.as_bytes());
    });
    row(
        "counter while 4 clients spin misbehave out of fuel",
        &closed_loop(&t, "counter", seconds, inc),
    );
    let spun = load.finish();
    println!("  ({spun} spinning commands ran meanwhile)");
}

fn book_scenario(seconds: f64, orders: usize) {
    let t = Arc::new(TestHost::with_config(|c| {
        c.limits.fuel_per_call = 20_000_000_000;
    }));
    t.deploy_file(plugins::SPOT);
    let mut setup = vec![Command::CreateMarket(CreateMarket {
        market: 1,
        base: "B1".into(),
        quote: "USD".into(),
        tick_size: 1,
        lot_size: 1,
        min_size: 1,
    })];
    // A user may hold 1000 open orders: spread the book over users.
    let users = (orders as u64).div_ceil(900).max(1);
    for user in 1..=users {
        setup.push(Command::Deposit(Transfer {
            user,
            asset: "USD".into(),
            amount: 1 << 60,
        }));
    }
    for i in 0..orders as u64 {
        setup.push(Command::Place(Place {
            user: 1 + i / 900,
            market: 1,
            side: Side::Buy,
            kind: OrderKind::Limit,
            price: Some(1_000 + i),
            qty: 1,
        }));
    }
    let setup: Vec<Vec<u8>> = setup
        .iter()
        .map(|c| serde_json::to_vec(c).unwrap())
        .collect();
    submit_all(t.host(), "spot", &setup);
    let deposit = |i: u64| {
        serde_json::to_vec(&Command::Deposit(Transfer {
            user: 1 + i % 100,
            asset: "USD".into(),
            amount: 1,
        }))
        .unwrap()
    };
    row(
        "spot deposit alone",
        &closed_loop(&t, "spot", seconds, deposit),
    );
    let host = t.clone();
    let load = Load::start(8, move |_| {
        let _ = host
            .host()
            .query("spot", br#"{"book":{"market":1,"limit":10000}}"#);
    });
    row(
        &format!("spot deposit while 8 clients loop book ({orders} orders)"),
        &closed_loop(&t, "spot", seconds, deposit),
    );
    let queries = load.finish();
    println!("  ({queries} book queries answered meanwhile)");
}

fn main() {
    let seconds = env("KEEL_BENCH_SECONDS", 3) as f64;
    let orders = env("KEEL_BENCH_BOOK", 20_000);
    println!("isolation benchmark: 2 cores, one client in a closed loop, {seconds} s per row");
    println!(
        "{:<58} {:>8} {:>10} {:>10} {:>10}",
        "scenario", "commands", "p50 µs", "p99 µs", "max µs"
    );
    spinner_scenario(seconds);
    book_scenario(seconds, orders);
}
