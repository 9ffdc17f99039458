//! A deterministic, realistic command stream for tests and benchmarks
//! (native builds only; the component does not contain it).
//!
//! A market of providers and routes, then a stream that keeps a few hundred
//! jobs open: mostly `run_auction` (varied precisions, sizes, prices, lanes
//! and priorities), `complete_job`/`cancel_job` of jobs that really are
//! open, and now and then a price change or a refused duplicate job. The
//! generator runs the plugin natively (a [`Harness`]) to know which jobs
//! matched, so it uses — and resets — this thread's native store: build the
//! stream before creating the Harness you compare against.

use keel_guest::testing::Harness;

use crate::{Auction, AuctionOutcome, Command, Config, JobSpec, Response};

/// Shape of the generated market and stream.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Providers registered first.
    pub providers: usize,
    /// Routes added next.
    pub routes: usize,
    /// Distinct lanes (routes cover them round-robin).
    pub lanes: usize,
    /// Open jobs the stream tends towards.
    pub open_target: usize,
}

impl Default for Shape {
    fn default() -> Self {
        Self {
            providers: 50,
            routes: 20,
            lanes: 8,
            open_target: 200,
        }
    }
}

/// SplitMix64: a tiny deterministic generator (no dependency, no clock).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..hi` (`hi > lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.range(0, 100) < percent
    }
}

const PRECISIONS: [&str; 4] = ["fp32", "fp16", "bf16", "int8"];

fn lane(i: u64) -> String {
    format!("lane-{i}")
}

/// The market: `shape.providers` providers, then `shape.routes` routes.
pub fn market(seed: u64, shape: Shape) -> Vec<Command> {
    let mut rng = Rng::new(seed);
    let lanes = shape.lanes.max(1) as u64;
    let mut out = Vec::new();
    for p in 0..shape.providers {
        let mut precisions: Vec<String> = PRECISIONS
            .iter()
            .filter(|_| rng.chance(60))
            .map(|s| s.to_string())
            .collect();
        if precisions.is_empty() {
            precisions.push(PRECISIONS[p % 4].to_owned());
        }
        let served = rng.range(1, 4);
        let lanes = (0..served).map(|_| lane(rng.range(0, lanes))).collect();
        out.push(Command::RegisterProvider {
            id: format!("prov-{p:03}"),
            capacity: rng.range(100, 1_000),
            precisions,
            price: rng.range(5, 50),
            lanes,
        });
    }
    for r in 0..shape.routes {
        out.push(Command::AddRoute {
            id: format!("route-{r:03}"),
            lane: lane(r as u64 % lanes),
            cost: rng.range(0, 10),
            latency_ms: rng.range(1, 40) as u32,
        });
    }
    out
}

/// The market followed by `commands` stream commands, generated against
/// the plugin run natively with `config`.
pub fn stream(seed: u64, shape: Shape, config: Config, commands: usize) -> Vec<Command> {
    let mut h = Harness::<Auction>::with_config(config).expect("a valid configuration");
    let mut out = market(seed, shape);
    for c in &out {
        h.handle(c.clone()).expect("the market sets up");
    }
    let mut rng = Rng::new(seed ^ 0x5EED);
    let lanes = shape.lanes.max(1) as u64;
    let mut open: Vec<String> = Vec::new();
    let mut next_job = 0u64;
    for _ in 0..commands {
        let close = !open.is_empty() && (open.len() >= shape.open_target || rng.chance(40));
        let command = if close {
            let id = open.swap_remove(rng.range(0, open.len() as u64) as usize);
            if rng.chance(90) {
                Command::CompleteJob { id }
            } else {
                Command::CancelJob { id }
            }
        } else if rng.chance(2) {
            Command::UpdateProvider {
                id: format!("prov-{:03}", rng.range(0, shape.providers.max(1) as u64)),
                capacity: None,
                precisions: None,
                price: Some(rng.range(5, 50)),
                lanes: None,
            }
        } else {
            // 1 % reuse an old id: a refused duplicate (or a retry of an unmatched job).
            let id = if next_job > 0 && rng.chance(1) {
                format!("job-{:08}", rng.range(0, next_job))
            } else {
                next_job += 1;
                format!("job-{:08}", next_job - 1)
            };
            Command::RunAuction {
                job: JobSpec {
                    id,
                    precision: PRECISIONS[rng.range(0, 4) as usize].to_owned(),
                    units: rng.range(1, 17),
                    max_price: rng.range(30, 200),
                    preferred_lane: lane(rng.range(0, lanes)),
                },
                priority: rng.range(0, 10) as u32,
            }
        };
        if let Ok(Response::Auction(AuctionOutcome::Matched { job, .. })) =
            h.handle(command.clone())
        {
            open.push(job);
        }
        out.push(command);
    }
    out
}
