//! Model-based property test: random command sequences run through the
//! plugin (natively, via the Harness) and through a brute-force reference
//! model written independently of the plugin's code. After every command:
//!
//! - the plugin's answer equals the model's (same winner, lane, route and
//!   price, or the same no-match reason; an error exactly when the model
//!   refuses);
//! - a refused command left the store byte-for-byte unchanged;
//! - for every provider, utilization ≤ capacity and utilization equals the
//!   sum of units of its open (matched) jobs, as the plugin itself reports
//!   them (`open_jobs` query) and as the model counts them;
//! - the statistics equal the model's (auctions = matches + no-matches).

use std::collections::{BTreeMap, BTreeSet};

use keel_guest::testing::Harness;
use keel_plugin_auction::{
    Answer, Auction, AuctionOutcome, Command, Config, JobSpec, JobStatus, NoMatchReason, Query,
    Response,
};
use proptest::prelude::*;

const PRECISIONS: [&str; 5] = ["fp32", "fp16", "bf16", "int8", "fp64"]; // the last is invalid
const LANES: [&str; 3] = ["l0", "l1", "l2"];
const PROVIDERS: usize = 5;
const ROUTES: usize = 4;
const JOBS: usize = 16;

#[derive(Debug, Clone)]
enum Op {
    Register {
        p: usize,
        capacity: u64,
        precisions: Vec<usize>,
        price: u64,
        lanes: Vec<usize>,
    },
    UpdateCapacity {
        p: usize,
        capacity: u64,
    },
    UpdatePrice {
        p: usize,
        price: u64,
    },
    UpdateLanes {
        p: usize,
        lanes: Vec<usize>,
    },
    UpdatePrecisions {
        p: usize,
        precisions: Vec<usize>,
    },
    Deactivate {
        p: usize,
    },
    Activate {
        p: usize,
    },
    AddRoute {
        r: usize,
        lane: usize,
        cost: u64,
        latency_ms: u32,
    },
    UpdateRoute {
        r: usize,
        lane: Option<usize>,
        cost: Option<u64>,
        latency_ms: Option<u32>,
    },
    Auction {
        j: usize,
        precision: usize,
        units: u64,
        max_price: u64,
        lane: usize,
        priority: u32,
    },
    Complete {
        j: usize,
    },
    Cancel {
        j: usize,
    },
}

/// Mostly valid precisions (indices 0..4), sometimes the invalid one.
fn precision() -> impl Strategy<Value = usize> + Clone {
    prop_oneof![12 => 0..4usize, 1 => Just(4usize)]
}

/// Mostly small job sizes, sometimes the invalid 0, sometimes large.
fn units() -> impl Strategy<Value = u64> {
    prop_oneof![1 => Just(0u64), 16 => 1..12u64, 3 => 12..40u64]
}

/// Prices from a narrow band so that equal effective prices (ties) are common.
fn price() -> impl Strategy<Value = u64> {
    prop_oneof![3 => 9..11u64, 1 => 0..30u64]
}

fn op() -> impl Strategy<Value = Op> {
    let p = 0..PROVIDERS;
    let precisions = prop::collection::vec(precision(), 0..4);
    let lanes = prop::collection::vec(0..LANES.len(), 0..3);
    prop_oneof![
        2 => (p.clone(), 0..40u64, precisions.clone(), price(), lanes.clone()).prop_map(|(p, capacity, precisions, price, lanes)| Op::Register { p, capacity, precisions, price, lanes }),
        1 => (p.clone(), 0..50u64).prop_map(|(p, capacity)| Op::UpdateCapacity { p, capacity }),
        1 => (p.clone(), price()).prop_map(|(p, price)| Op::UpdatePrice { p, price }),
        1 => (p.clone(), lanes).prop_map(|(p, lanes)| Op::UpdateLanes { p, lanes }),
        1 => (p.clone(), precisions).prop_map(|(p, precisions)| Op::UpdatePrecisions { p, precisions }),
        1 => p.clone().prop_map(|p| Op::Deactivate { p }),
        1 => p.prop_map(|p| Op::Activate { p }),
        1 => (0..ROUTES, 0..LANES.len(), 0..4u64, 0..6u32).prop_map(|(r, lane, cost, latency_ms)| Op::AddRoute { r, lane, cost, latency_ms }),
        1 => (0..ROUTES, prop::option::of(0..LANES.len()), prop::option::of(0..4u64), prop::option::of(0..6u32))
            .prop_map(|(r, lane, cost, latency_ms)| Op::UpdateRoute { r, lane, cost, latency_ms }),
        14 => (0..JOBS, precision(), units(), prop_oneof![1 => 0..15u64, 4 => 15..100u64], 0..LANES.len(), prop_oneof![20 => 0..10u32, 1 => Just(10u32)])
            .prop_map(|(j, precision, units, max_price, lane, priority)| Op::Auction { j, precision, units, max_price, lane, priority }),
        5 => (0..JOBS).prop_map(|j| Op::Complete { j }),
        2 => (0..JOBS).prop_map(|j| Op::Cancel { j }),
    ]
}

/// A market to start from: some valid providers and routes, so that most
/// random auctions have a field to choose from.
fn setup() -> impl Strategy<Value = Vec<Op>> {
    let provider = (
        5..40u64,
        prop::collection::btree_set(0..4usize, 2..=4),
        price(),
        prop::collection::btree_set(0..LANES.len(), 1..3),
    );
    let route = (0..3u64, 0..4u32);
    (
        prop::collection::vec(provider, 2..=PROVIDERS),
        prop::collection::vec(route, 2..=ROUTES),
    )
        .prop_map(|(providers, routes)| {
            let mut ops = Vec::new();
            for (p, (capacity, precisions, price, lanes)) in providers.into_iter().enumerate() {
                ops.push(Op::Register {
                    p,
                    capacity,
                    precisions: precisions.into_iter().collect(),
                    price,
                    lanes: lanes.into_iter().collect(),
                });
            }
            for (r, (cost, latency_ms)) in routes.into_iter().enumerate() {
                let lane = r % LANES.len();
                ops.push(Op::AddRoute {
                    r,
                    lane,
                    cost,
                    latency_ms,
                });
            }
            ops
        })
}

/// A whole test case: a setup, then random commands.
fn scenario() -> impl Strategy<Value = Vec<Op>> {
    (setup(), prop::collection::vec(op(), 1..80)).prop_map(|(mut ops, more)| {
        ops.extend(more);
        ops
    })
}

fn pid(p: usize) -> String {
    format!("p{p}")
}
fn rid(r: usize) -> String {
    format!("r{r}")
}
fn jid(j: usize) -> String {
    format!("j{j}")
}
fn names(list: &[usize], table: &[&str]) -> Vec<String> {
    list.iter().map(|&i| table[i].to_owned()).collect()
}

fn command(op: &Op) -> Command {
    match op.clone() {
        Op::Register {
            p,
            capacity,
            precisions,
            price,
            lanes,
        } => Command::RegisterProvider {
            id: pid(p),
            capacity,
            precisions: names(&precisions, &PRECISIONS),
            price,
            lanes: names(&lanes, &LANES),
        },
        Op::UpdateCapacity { p, capacity } => Command::UpdateProvider {
            id: pid(p),
            capacity: Some(capacity),
            precisions: None,
            price: None,
            lanes: None,
        },
        Op::UpdatePrice { p, price } => Command::UpdateProvider {
            id: pid(p),
            capacity: None,
            precisions: None,
            price: Some(price),
            lanes: None,
        },
        Op::UpdateLanes { p, lanes } => Command::UpdateProvider {
            id: pid(p),
            capacity: None,
            precisions: None,
            price: None,
            lanes: Some(names(&lanes, &LANES)),
        },
        Op::UpdatePrecisions { p, precisions } => Command::UpdateProvider {
            id: pid(p),
            capacity: None,
            precisions: Some(names(&precisions, &PRECISIONS)),
            price: None,
            lanes: None,
        },
        Op::Deactivate { p } => Command::DeactivateProvider { id: pid(p) },
        Op::Activate { p } => Command::ActivateProvider { id: pid(p) },
        Op::AddRoute {
            r,
            lane,
            cost,
            latency_ms,
        } => Command::AddRoute {
            id: rid(r),
            lane: LANES[lane].into(),
            cost,
            latency_ms,
        },
        Op::UpdateRoute {
            r,
            lane,
            cost,
            latency_ms,
        } => Command::UpdateRoute {
            id: rid(r),
            lane: lane.map(|l| LANES[l].into()),
            cost,
            latency_ms,
        },
        Op::Auction {
            j,
            precision,
            units,
            max_price,
            lane,
            priority,
        } => Command::RunAuction {
            job: JobSpec {
                id: jid(j),
                precision: PRECISIONS[precision].into(),
                units,
                max_price,
                preferred_lane: LANES[lane].into(),
            },
            priority,
        },
        Op::Complete { j } => Command::CompleteJob { id: jid(j) },
        Op::Cancel { j } => Command::CancelJob { id: jid(j) },
    }
}

// ------------------------------------------------------------ the reference model

#[derive(Debug, Clone)]
struct MProvider {
    capacity: u64,
    utilization: u64,
    precisions: BTreeSet<usize>,
    price: u64,
    lanes: BTreeSet<String>,
    active: bool,
}

#[derive(Debug, Clone)]
struct MRoute {
    lane: String,
    cost: u64,
    latency_ms: u32,
}

#[derive(Debug, Clone)]
struct MJob {
    status: JobStatus,
    provider: Option<String>,
    units: u64,
}

#[derive(Debug, Default)]
struct Model {
    cfg: Config,
    providers: BTreeMap<String, MProvider>,
    routes: BTreeMap<String, MRoute>,
    jobs: BTreeMap<String, MJob>,
    auctions: u64,
    matches: u64,
    no_matches: u64,
    volume_units: u128,
    volume_value: u128,
}

/// What the model expects a command to do.
#[derive(Debug, PartialEq)]
enum Expect {
    Refused,
    Done,
    Auction(AuctionOutcome),
}

fn valid_precisions(list: &[usize]) -> Option<BTreeSet<usize>> {
    (!list.is_empty() && list.iter().all(|&i| i < 4)).then(|| list.iter().copied().collect())
}

fn valid_lanes(list: &[usize]) -> Option<BTreeSet<String>> {
    (!list.is_empty()).then(|| list.iter().map(|&i| LANES[i].to_owned()).collect())
}

impl Model {
    fn apply(&mut self, op: &Op) -> Expect {
        match op {
            Op::Register {
                p,
                capacity,
                precisions,
                price,
                lanes,
            } => {
                let (Some(precisions), Some(lanes)) =
                    (valid_precisions(precisions), valid_lanes(lanes))
                else {
                    return Expect::Refused;
                };
                if *capacity == 0 || self.providers.contains_key(&pid(*p)) {
                    return Expect::Refused;
                }
                self.providers.insert(
                    pid(*p),
                    MProvider {
                        capacity: *capacity,
                        utilization: 0,
                        precisions,
                        price: *price,
                        lanes,
                        active: true,
                    },
                );
                Expect::Done
            }
            Op::UpdateCapacity { p, capacity } => match self.providers.get_mut(&pid(*p)) {
                Some(m) if *capacity > 0 && *capacity >= m.utilization => {
                    m.capacity = *capacity;
                    Expect::Done
                }
                _ => Expect::Refused,
            },
            Op::UpdatePrice { p, price } => match self.providers.get_mut(&pid(*p)) {
                Some(m) => {
                    m.price = *price;
                    Expect::Done
                }
                None => Expect::Refused,
            },
            Op::UpdateLanes { p, lanes } => {
                match (self.providers.get_mut(&pid(*p)), valid_lanes(lanes)) {
                    (Some(m), Some(lanes)) => {
                        m.lanes = lanes;
                        Expect::Done
                    }
                    _ => Expect::Refused,
                }
            }
            Op::UpdatePrecisions { p, precisions } => {
                match (
                    self.providers.get_mut(&pid(*p)),
                    valid_precisions(precisions),
                ) {
                    (Some(m), Some(precisions)) => {
                        m.precisions = precisions;
                        Expect::Done
                    }
                    _ => Expect::Refused,
                }
            }
            Op::Deactivate { p } | Op::Activate { p } => match self.providers.get_mut(&pid(*p)) {
                Some(m) => {
                    m.active = matches!(op, Op::Activate { .. });
                    Expect::Done
                }
                None => Expect::Refused,
            },
            Op::AddRoute {
                r,
                lane,
                cost,
                latency_ms,
            } => {
                if self.routes.contains_key(&rid(*r)) {
                    return Expect::Refused;
                }
                self.routes.insert(
                    rid(*r),
                    MRoute {
                        lane: LANES[*lane].into(),
                        cost: *cost,
                        latency_ms: *latency_ms,
                    },
                );
                Expect::Done
            }
            Op::UpdateRoute {
                r,
                lane,
                cost,
                latency_ms,
            } => {
                let Some(m) = self.routes.get_mut(&rid(*r)) else {
                    return Expect::Refused;
                };
                if lane.is_none() && cost.is_none() && latency_ms.is_none() {
                    return Expect::Refused;
                }
                if let Some(l) = lane {
                    m.lane = LANES[*l].into();
                }
                if let Some(c) = cost {
                    m.cost = *c;
                }
                if let Some(l) = latency_ms {
                    m.latency_ms = *l;
                }
                Expect::Done
            }
            Op::Auction {
                j,
                precision,
                units,
                max_price,
                lane,
                priority,
            } => self.auction(*j, *precision, *units, *max_price, LANES[*lane], *priority),
            Op::Complete { j } | Op::Cancel { j } => {
                let Some(job) = self.jobs.get_mut(&jid(*j)) else {
                    return Expect::Refused;
                };
                if job.status != JobStatus::Matched {
                    return Expect::Refused;
                }
                job.status = if matches!(op, Op::Complete { .. }) {
                    JobStatus::Completed
                } else {
                    JobStatus::Cancelled
                };
                let p = self
                    .providers
                    .get_mut(job.provider.as_ref().unwrap())
                    .unwrap();
                p.utilization -= job.units;
                Expect::Done
            }
        }
    }

    /// Brute force: every (provider, lane, route) triple is an offer; the
    /// lowest by (unit price, utilization, provider id, off-lane, lane,
    /// route cost, route id) wins.
    fn auction(
        &mut self,
        j: usize,
        precision: usize,
        units: u64,
        max_price: u64,
        preferred: &str,
        priority: u32,
    ) -> Expect {
        if precision >= 4 || units == 0 || priority > 9 {
            return Expect::Refused;
        }
        if self
            .jobs
            .get(&jid(j))
            .is_some_and(|job| job.status != JobStatus::Unmatched)
        {
            return Expect::Refused;
        }
        type Offer = (u128, u64, String, bool, String, u128, String);
        let (mut supporting, mut with_capacity, mut reachable) = (0, 0, 0);
        let mut offers: Vec<Offer> = Vec::new();
        for (id, p) in &self.providers {
            if !p.active || !p.precisions.contains(&precision) {
                continue;
            }
            supporting += 1;
            if p.capacity - p.utilization < units {
                continue;
            }
            with_capacity += 1;
            let before = offers.len();
            for lane in &p.lanes {
                for (route_id, r) in self.routes.iter().filter(|(_, r)| r.lane == *lane) {
                    let route_cost = u128::from(r.cost)
                        + u128::from(priority)
                            * u128::from(self.cfg.latency_weight)
                            * u128::from(r.latency_ms);
                    let base = u128::from(p.price) + route_cost;
                    let off_lane = lane != preferred;
                    let unit = if off_lane {
                        (base * (10_000 + u128::from(self.cfg.off_lane_penalty_bps)))
                            .div_ceil(10_000)
                    } else {
                        base
                    };
                    offers.push((
                        unit,
                        p.utilization,
                        id.clone(),
                        off_lane,
                        lane.clone(),
                        route_cost,
                        route_id.clone(),
                    ));
                }
            }
            if offers.len() > before {
                reachable += 1;
            }
        }
        self.auctions += 1;
        let best = offers.into_iter().min();
        let job_id = jid(j);
        match best {
            Some((unit, _, provider, _, lane, _, route)) if unit <= u128::from(max_price) => {
                let p = self.providers.get_mut(&provider).unwrap();
                p.utilization += units;
                self.matches += 1;
                self.volume_units += u128::from(units);
                self.volume_value += unit * u128::from(units);
                self.jobs.insert(
                    job_id.clone(),
                    MJob {
                        status: JobStatus::Matched,
                        provider: Some(provider.clone()),
                        units,
                    },
                );
                Expect::Auction(AuctionOutcome::Matched {
                    job: job_id,
                    provider,
                    lane,
                    route,
                    unit_price: u64::try_from(unit).unwrap(),
                    total_price: unit * u128::from(units),
                    provider_utilization: p.utilization,
                    provider_capacity: p.capacity,
                })
            }
            best => {
                let reason = if supporting == 0 {
                    NoMatchReason::NoProvider
                } else if with_capacity == 0 {
                    NoMatchReason::NoCapacity
                } else if reachable == 0 {
                    NoMatchReason::NoRoute
                } else {
                    NoMatchReason::OverMaxPrice
                };
                self.no_matches += 1;
                self.jobs.insert(
                    job_id.clone(),
                    MJob {
                        status: JobStatus::Unmatched,
                        provider: None,
                        units,
                    },
                );
                Expect::Auction(AuctionOutcome::NoMatch {
                    job: job_id,
                    reason,
                    best_unit_price: best.map(|b| b.0),
                })
            }
        }
    }
}

// ------------------------------------------------------------ the property

fn check_invariants(h: &Harness<Auction>, model: &Model) -> Result<(), TestCaseError> {
    let Answer::Providers(providers) = h.query(Query::Providers).unwrap() else {
        panic!()
    };
    let Answer::Jobs(open) = h.query(Query::OpenJobs { provider: None }).unwrap() else {
        panic!()
    };
    prop_assert_eq!(providers.len(), model.providers.len());
    for p in &providers {
        prop_assert!(p.utilization <= p.capacity, "{p:?}");
        prop_assert_eq!(p.free, p.capacity - p.utilization);
        let mine: Vec<_> = open
            .iter()
            .filter(|j| j.provider.as_deref() == Some(p.id.as_str()))
            .collect();
        let reserved: u64 = mine.iter().map(|j| j.units).sum();
        prop_assert_eq!(
            p.utilization,
            reserved,
            "provider {} vs its open jobs",
            p.id
        );
        prop_assert_eq!(p.open_jobs, mine.len() as u64);
        let m = &model.providers[&p.id];
        prop_assert_eq!(
            (p.capacity, p.utilization, p.price, p.active),
            (m.capacity, m.utilization, m.price, m.active)
        );
        let model_reserved: u64 = model
            .jobs
            .values()
            .filter(|j| {
                j.status == JobStatus::Matched && j.provider.as_deref() == Some(p.id.as_str())
            })
            .map(|j| j.units)
            .sum();
        prop_assert_eq!(p.utilization, model_reserved);
    }
    let Answer::Stats(s) = h.query(Query::Stats).unwrap() else {
        panic!()
    };
    prop_assert_eq!(s.auctions, s.matches + s.no_matches);
    prop_assert_eq!(
        (
            s.auctions,
            s.matches,
            s.no_matches,
            s.volume_units,
            s.volume_value
        ),
        (
            model.auctions,
            model.matches,
            model.no_matches,
            model.volume_units,
            model.volume_value
        )
    );
    prop_assert_eq!(s.open_jobs, open.len() as u64);
    let by_precision: u64 = s.by_precision.values().map(|t| t.matches).sum();
    let by_lane: u64 = s.by_lane.values().map(|t| t.matches).sum();
    prop_assert_eq!((by_precision, by_lane), (s.matches, s.matches));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn plugin_matches_the_reference_model(
        penalty in prop_oneof![Just(0u32), Just(1_000u32), 0..5_000u32],
        weight in 0..3u32,
        ops in scenario(),
    ) {
        let cfg = Config { off_lane_penalty_bps: penalty, latency_weight: weight };
        let mut h = Harness::<Auction>::with_config(cfg).unwrap();
        let mut model = Model { cfg, ..Model::default() };
        for op in &ops {
            let before = h.dump();
            let got = h.handle(command(op));
            let expected = model.apply(op);
            match (&expected, got) {
                (Expect::Refused, Err(_)) => prop_assert_eq!(&h.dump(), &before, "refused {:?} changed the store", op),
                (Expect::Done, Ok(Response::Provider(_) | Response::Route(_) | Response::Released(_))) => {}
                (Expect::Auction(want), Ok(Response::Auction(got))) => prop_assert_eq!(want, &got, "{:?}", op),
                (expected, got) => prop_assert!(false, "{:?}: model {:?}, plugin {:?}", op, expected, got),
            }
            check_invariants(&h, &model)?;
        }
    }
}
