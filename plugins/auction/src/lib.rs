//! The compute auction engine: providers sell capacity units at a price per
//! unit for some numeric precisions over some network lanes; routes give
//! each lane a cost and a latency; `run_auction` matches a job to the
//! provider with the lowest effective price and reserves its capacity until
//! the job is completed or cancelled.
//!
//! Everything is an integer: capacity and job sizes in units, prices in
//! ticks per unit, latencies in milliseconds. The price formula and the
//! tie-breaks are in [`pricing`].
//!
//! # Commands
//!
//! ```json
//! {"register_provider": {"id": "p1", "capacity": 100, "precisions": ["fp16", "bf16"], "price": 12, "lanes": ["us-east", "eu"]}}
//! {"update_provider": {"id": "p1", "capacity": 120, "price": 11}}      // any of capacity, precisions, price, lanes
//! {"deactivate_provider": {"id": "p1"}}                                  // no new matches; open jobs stay
//! {"activate_provider": {"id": "p1"}}
//! {"add_route": {"id": "r1", "lane": "us-east", "cost": 2, "latency_ms": 5}}
//! {"update_route": {"id": "r1", "cost": 3}}                              // any of lane, cost, latency_ms
//! {"run_auction": {"job": {"id": "j1", "precision": "fp16", "units": 10, "max_price": 30, "preferred_lane": "us-east"}, "priority": 2}}
//! {"complete_job": {"id": "j1"}}
//! {"cancel_job": {"id": "j1"}}
//! ```
//!
//! `run_auction` answers `{"outcome": "matched", "job": "j1", "provider": "p1", "lane": "us-east",
//! "route": "r1", "unit_price": 24, "total_price": 240, "provider_utilization": 10, "provider_capacity": 120}`
//! (11 + 3 + 2 × 1 × 5 = 24 per unit: price + route cost + priority × latency weight × latency)
//! or, when no provider is eligible — a normal outcome, counted in the statistics —
//! `{"outcome": "no_match", "job": "j1", "reason": "no_capacity", "best_unit_price": null}`
//! with `reason` one of `no_provider` (no active provider supports the precision), `no_capacity`,
//! `no_route` (none of their lanes has a route) and `over_max_price` (then `best_unit_price` says
//! what the cheapest eligible provider would have charged). A job that found no match may be
//! auctioned again under the same id; any other existing id is a `duplicate-job`.
//!
//! # Who may do what
//!
//! Every command sees its caller (journaled by the host, the same on
//! replay). Without a caller — a call from inside the host, or a host with
//! no principals configured (unauthenticated, loopback-only development
//! mode) — every command is trusted, as before. With one:
//!
//! | command | who may |
//! |---|---|
//! | `register_provider` | anyone; the caller becomes the provider's owner |
//! | `update_provider` | its owner (the operator only for a provider with no owner) |
//! | `deactivate_provider`, `activate_provider` | its owner or the operator |
//! | `add_route`, `update_route` | the operator |
//! | `run_auction` | anyone; the caller becomes the job's submitter; an unmatched job is auctioned again only by its submitter or the operator |
//! | `cancel_job` | its submitter or the operator |
//! | `complete_job` | its submitter, the owner of the provider it was matched to, or the operator |
//!
//! A provider or job created without a caller has no owner: the operator
//! stands in for it. Refusals are `not-owner` and `operator-only`; they
//! change nothing. Queries are public; `provider` views carry `owner` and
//! job views `submitter` when known. See [`access`].
//!
//! # Queries
//!
//! `"stats"`, `"providers"`, `{"provider": {"id": "p1"}}`, `"routes"`, `{"job": {"id": "j1"}}`,
//! `{"open_jobs": {"provider": "p1"}}` (provider optional), `"config"`.
//!
//! # Configuration (`init`)
//!
//! `{"off_lane_penalty_bps": 1000, "latency_weight": 1}` (the defaults).
//!
//! # Storage (a command touches few rows)
//!
//! | table | key | value |
//! |---|---|---|
//! | `config` | `0u8` | [`Config`] |
//! | `providers` | provider id | capacity, utilization, precision bit set, price, lane ids, active, open jobs |
//! | `routes` | route id | lane id, cost, latency |
//! | `lane_ids` / `lane_names` | lane name / lane id | lane id / lane name (interned on first use) |
//! | `jobs` | job id | the job, its status and its award |
//! | `stats` | `0u8` | totals, per-precision tallies, no-match reasons |
//! | `lane_stats` | lane name | matches and units on that lane |
//! | `provider_owners` | provider id | the principal that registered it (only when known) |
//! | `job_submitters` | job id | the principal that first auctioned it (only when known) |
//!
//! Every auction decodes every provider, so provider rows are compact:
//! precisions as a bit set and lanes as interned `u16` ids (no strings).
//! `run_auction` reads the job id, the configuration, the preferred lane's
//! id, the statistics and the lane's tally, scans `lane_names`, `routes` and
//! `providers` (one host call per 64 rows each), and writes at most four
//! rows (provider, job, stats, lane stats); `complete_job`/`cancel_job` read
//! and write three (job, provider, stats). Cost per auction is
//! O(providers + routes); there is no index to keep in step, so a match
//! costs no extra writes.

pub mod access;
pub mod pricing;
#[cfg(not(target_arch = "wasm32"))]
pub mod workload;

use std::collections::BTreeMap;

use keel_guest::{Caller, Error, Plugin, Table, TableCodec};
use serde::{Deserialize, Serialize};

use access::{JOB_SUBMITTERS, PROVIDER_OWNERS, job_submitter, provider_owner};
use pricing::{LATENCY_WEIGHT_MAX, LaneOffer, OFF_LANE_PENALTY_BPS_MAX, PRIORITY_MAX};

/// Longest provider, route, job or lane identifier, in bytes.
pub const ID_BYTES_MAX: usize = 64;
/// Most lanes one provider may serve.
pub const LANES_PER_PROVIDER_MAX: usize = 32;
/// Longest list of precisions accepted in a command (duplicates collapse).
pub const PRECISIONS_LISTED_MAX: usize = 16;

const CONFIG: Table<u8, Config> = Table::new("config");
const PROVIDERS: Table<String, Provider> = Table::new("providers");
const ROUTES: Table<String, Route> = Table::new("routes");
const JOBS: Table<String, Job> = Table::new("jobs");
const STATS: Table<u8, Stats> = Table::new("stats");
const LANE_STATS: Table<String, Tally> = Table::new("lane_stats");
/// Lane name → lane id (dense from 0, in order of first use; never removed).
const LANE_IDS: Table<String, u16> = Table::new("lane_ids");
/// Lane id → lane name.
const LANE_NAMES: Table<u16, String> = Table::new("lane_names");
const SINGLETON: u8 = 0;

// ---------------------------------------------------------------- domain types

/// A numeric precision a provider supports and a job requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit float.
    Fp32,
    /// 16-bit float.
    Fp16,
    /// bfloat16.
    Bf16,
    /// 8-bit integer.
    Int8,
}

impl Precision {
    /// Every precision, in stored order.
    pub const ALL: [Precision; 4] = [
        Precision::Fp32,
        Precision::Fp16,
        Precision::Bf16,
        Precision::Int8,
    ];

    /// Parses a precision name; an unknown one is an `unknown-precision` error.
    pub fn parse(name: &str) -> Result<Self, Error> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| {
                Error::new(
                    "unknown-precision",
                    format!("unknown precision {name:?}: expected one of fp32, fp16, bf16, int8"),
                )
            })
    }

    /// The precision's name.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// This precision's bit in a stored precision set.
    fn bit(self) -> u8 {
        1 << (self as u8)
    }

    fn list(mask: u8) -> Vec<Precision> {
        Self::ALL
            .into_iter()
            .filter(|p| mask & p.bit() != 0)
            .collect()
    }
}

/// Operator configuration of the price formula (see [`pricing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Surcharge, in basis points, for serving a job over a lane other than its preferred one.
    pub off_lane_penalty_bps: u32,
    /// Ticks per unit charged per millisecond of route latency per priority level.
    pub latency_weight: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            off_lane_penalty_bps: 1_000,
            latency_weight: 1,
        }
    }
}

impl Config {
    fn validate(&self) -> Result<(), Error> {
        if self.off_lane_penalty_bps > OFF_LANE_PENALTY_BPS_MAX {
            return Err(Error::new(
                "invalid-config",
                format!(
                    "off_lane_penalty_bps {} exceeds {OFF_LANE_PENALTY_BPS_MAX}",
                    self.off_lane_penalty_bps
                ),
            ));
        }
        if self.latency_weight > LATENCY_WEIGHT_MAX {
            return Err(Error::new(
                "invalid-config",
                format!(
                    "latency_weight {} exceeds {LATENCY_WEIGHT_MAX}",
                    self.latency_weight
                ),
            ));
        }
        Ok(())
    }
}

/// A provider as stored. Compact, because every auction decodes every
/// provider: precisions as a bit set, lanes as interned ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Provider {
    capacity: u64,
    utilization: u64,
    /// Bit `Precision::index` set for each supported precision.
    precisions: u8,
    price: u64,
    /// Lane ids, sorted, without duplicates.
    lanes: Vec<u16>,
    active: bool,
    open_jobs: u64,
}

impl Provider {
    fn free(&self) -> u64 {
        self.capacity.saturating_sub(self.utilization)
    }

    fn view(&self, id: String, names: &[String], owner: Option<String>) -> ProviderView {
        let mut lanes: Vec<String> = self
            .lanes
            .iter()
            .map(|&l| lane_name(names, l).to_owned())
            .collect();
        lanes.sort_unstable();
        ProviderView {
            id,
            capacity: self.capacity,
            utilization: self.utilization,
            free: self.free(),
            precisions: Precision::list(self.precisions),
            price: self.price,
            lanes,
            active: self.active,
            open_jobs: self.open_jobs,
            owner,
        }
    }
}

/// A route as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Route {
    /// Lane id.
    lane: u16,
    cost: u64,
    latency_ms: u32,
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Matched; its units are reserved on the provider.
    Matched,
    /// Finished; its units were released.
    Completed,
    /// Cancelled after matching; its units were released.
    Cancelled,
    /// Its last auction found no eligible provider; it may be auctioned again.
    Unmatched,
}

/// Why an auction found no provider, by the first filter that left none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoMatchReason {
    /// No active provider supports the precision.
    NoProvider,
    /// None of those has enough free capacity.
    NoCapacity,
    /// None of those serves a lane that has a route.
    NoRoute,
    /// Every remaining offer is above the job's maximum price.
    OverMaxPrice,
}

impl NoMatchReason {
    fn index(self) -> usize {
        self as usize
    }
}

/// The provider, lane, route and price a job was matched at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Award {
    provider: String,
    lane: String,
    route: String,
    unit_price: u64,
    total_price: u128,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Job {
    precision: Precision,
    units: u64,
    max_price: u64,
    preferred_lane: String,
    priority: u32,
    status: JobStatus,
    award: Option<Award>,
    reason: Option<NoMatchReason>,
    auctioned_at_seq: u64,
    auctioned_at_ms: u64,
    closed_at_seq: Option<u64>,
}

/// Matches and units, per precision or per lane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Auctions that matched.
    pub matches: u64,
    /// Units those matches reserved.
    pub units: u128,
}

/// The statistics row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Stats {
    auctions: u64,
    matches: u64,
    no_matches: u64,
    volume_units: u128,
    volume_value: u128,
    completed: u64,
    cancelled: u64,
    by_precision: [Tally; 4],
    no_match_reasons: [u64; 4],
}

// ---------------------------------------------------------------- commands

/// A job offered to the auction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Unique job id.
    pub id: String,
    /// Required precision: fp32, fp16, bf16 or int8.
    pub precision: String,
    /// Capacity units to reserve (> 0).
    pub units: u64,
    /// Highest acceptable effective price per unit, in ticks.
    pub max_price: u64,
    /// The lane the job would rather run over.
    pub preferred_lane: String,
}

/// A state-changing command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Registers a new, active provider.
    RegisterProvider {
        /// Unique provider id.
        id: String,
        /// Capacity units (> 0).
        capacity: u64,
        /// Supported precisions (at least one).
        precisions: Vec<String>,
        /// Price per unit, in ticks.
        price: u64,
        /// Lanes served (at least one).
        lanes: Vec<String>,
    },
    /// Changes some of a provider's terms; open jobs keep their price.
    UpdateProvider {
        /// The provider.
        id: String,
        /// New capacity (> 0 and not below the current utilization).
        #[serde(default)]
        capacity: Option<u64>,
        /// New supported precisions.
        #[serde(default)]
        precisions: Option<Vec<String>>,
        /// New price per unit.
        #[serde(default)]
        price: Option<u64>,
        /// New lanes.
        #[serde(default)]
        lanes: Option<Vec<String>>,
    },
    /// Stops matching new jobs to the provider; its open jobs run on.
    DeactivateProvider {
        /// The provider.
        id: String,
    },
    /// Lets a deactivated provider match jobs again.
    ActivateProvider {
        /// The provider.
        id: String,
    },
    /// Adds a route to a lane.
    AddRoute {
        /// Unique route id.
        id: String,
        /// The lane it reaches.
        lane: String,
        /// Cost per unit, in ticks.
        cost: u64,
        /// Latency in milliseconds.
        latency_ms: u32,
    },
    /// Changes some of a route's fields.
    UpdateRoute {
        /// The route.
        id: String,
        /// New lane.
        #[serde(default)]
        lane: Option<String>,
        /// New cost per unit.
        #[serde(default)]
        cost: Option<u64>,
        /// New latency.
        #[serde(default)]
        latency_ms: Option<u32>,
    },
    /// Matches a job to the cheapest eligible provider (see [`pricing`]).
    RunAuction {
        /// The job.
        job: JobSpec,
        /// 0 (batch) ..= 9 (most latency-sensitive).
        #[serde(default)]
        priority: u32,
    },
    /// Marks a matched job finished and releases its units.
    CompleteJob {
        /// The job.
        id: String,
    },
    /// Cancels a matched job and releases its units.
    CancelJob {
        /// The job.
        id: String,
    },
}

// ---------------------------------------------------------------- answers

/// A provider with its utilization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderView {
    /// Provider id.
    pub id: String,
    /// Capacity units.
    pub capacity: u64,
    /// Units reserved by open jobs.
    pub utilization: u64,
    /// `capacity - utilization`.
    pub free: u64,
    /// Supported precisions.
    pub precisions: Vec<Precision>,
    /// Price per unit, in ticks.
    pub price: u64,
    /// Lanes served.
    pub lanes: Vec<String>,
    /// Whether it takes new jobs.
    pub active: bool,
    /// Matched jobs not yet completed or cancelled.
    pub open_jobs: u64,
    /// The principal that registered it (absent when registered without a caller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// A route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteView {
    /// Route id.
    pub id: String,
    /// Lane it reaches.
    pub lane: String,
    /// Cost per unit, in ticks.
    pub cost: u64,
    /// Latency in milliseconds.
    pub latency_ms: u32,
}

/// A job and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobView {
    /// Job id.
    pub id: String,
    /// Required precision.
    pub precision: Precision,
    /// Units.
    pub units: u64,
    /// Highest acceptable price per unit.
    pub max_price: u64,
    /// Preferred lane.
    pub preferred_lane: String,
    /// Priority of its last auction.
    pub priority: u32,
    /// Status.
    pub status: JobStatus,
    /// Matched provider.
    pub provider: Option<String>,
    /// Lane it was matched over.
    pub lane: Option<String>,
    /// Route it was matched over.
    pub route: Option<String>,
    /// Effective price per unit.
    pub unit_price: Option<u64>,
    /// `unit_price × units`.
    pub total_price: Option<u128>,
    /// Why its last auction found no provider.
    pub reason: Option<NoMatchReason>,
    /// Sequence number of its last auction.
    pub auctioned_at_seq: u64,
    /// Timestamp of its last auction (journaled, ms).
    pub auctioned_at_ms: u64,
    /// Sequence number of its completion or cancellation.
    pub closed_at_seq: Option<u64>,
    /// The principal that first auctioned it (absent when auctioned without a caller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitter: Option<String>,
}

impl Job {
    fn view(&self, id: String, submitter: Option<String>) -> JobView {
        let award = self.award.as_ref();
        JobView {
            id,
            precision: self.precision,
            units: self.units,
            max_price: self.max_price,
            preferred_lane: self.preferred_lane.clone(),
            priority: self.priority,
            status: self.status,
            provider: award.map(|a| a.provider.clone()),
            lane: award.map(|a| a.lane.clone()),
            route: award.map(|a| a.route.clone()),
            unit_price: award.map(|a| a.unit_price),
            total_price: award.map(|a| a.total_price),
            reason: self.reason,
            auctioned_at_seq: self.auctioned_at_seq,
            auctioned_at_ms: self.auctioned_at_ms,
            closed_at_seq: self.closed_at_seq,
            submitter,
        }
    }
}

/// The outcome of `run_auction`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum AuctionOutcome {
    /// The job was matched and its units reserved.
    Matched {
        /// Job id.
        job: String,
        /// Winning provider.
        provider: String,
        /// Lane served over.
        lane: String,
        /// Route used.
        route: String,
        /// Effective price per unit.
        unit_price: u64,
        /// `unit_price × units`.
        total_price: u128,
        /// The provider's utilization after the reservation.
        provider_utilization: u64,
        /// The provider's capacity.
        provider_capacity: u64,
    },
    /// No provider was eligible; nothing was reserved.
    NoMatch {
        /// Job id.
        job: String,
        /// The first filter that left no provider.
        reason: NoMatchReason,
        /// With `over_max_price`: the lowest effective price on offer.
        best_unit_price: Option<u128>,
    },
}

/// What `complete_job` and `cancel_job` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Released {
    /// Job id.
    pub job: String,
    /// Its new status.
    pub status: JobStatus,
    /// The provider it ran on.
    pub provider: String,
    /// Units released.
    pub units: u64,
    /// The provider's utilization after the release.
    pub provider_utilization: u64,
}

/// What a command answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Response {
    /// `run_auction`.
    Auction(AuctionOutcome),
    /// `complete_job`, `cancel_job`.
    Released(Released),
    /// Provider commands: the provider after the change.
    Provider(ProviderView),
    /// Route commands: the route after the change.
    Route(RouteView),
}

/// The statistics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsView {
    /// Auctions run (matched + no match; refused commands are not auctions).
    pub auctions: u64,
    /// Auctions that matched.
    pub matches: u64,
    /// Auctions that found no provider.
    pub no_matches: u64,
    /// Units matched, in total.
    pub volume_units: u128,
    /// Value matched (`Σ unit_price × units`), in ticks.
    pub volume_value: u128,
    /// Matched jobs completed.
    pub completed: u64,
    /// Matched jobs cancelled.
    pub cancelled: u64,
    /// Matched jobs still open (`matches - completed - cancelled`).
    pub open_jobs: u64,
    /// Matches by precision (every precision listed).
    pub by_precision: BTreeMap<String, Tally>,
    /// Matches by lane (lanes with at least one match).
    pub by_lane: BTreeMap<String, Tally>,
    /// No-matches by reason (every reason listed).
    pub no_match_reasons: BTreeMap<String, u64>,
}

/// A read-only request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Query {
    /// The statistics.
    Stats,
    /// Every provider with its utilization, by id.
    Providers,
    /// One provider.
    Provider {
        /// Provider id.
        id: String,
    },
    /// Every route, by id.
    Routes,
    /// One job's status.
    Job {
        /// Job id.
        id: String,
    },
    /// Matched jobs not yet closed, by id, optionally of one provider.
    /// Scans every job ever auctioned: an audit query, not a hot path.
    OpenJobs {
        /// Only this provider's jobs.
        #[serde(default)]
        provider: Option<String>,
    },
    /// The price-formula configuration.
    Config,
}

/// What a query answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Answer {
    /// `stats`.
    Stats(StatsView),
    /// `providers`.
    Providers(Vec<ProviderView>),
    /// `provider`.
    Provider(ProviderView),
    /// `routes`.
    Routes(Vec<RouteView>),
    /// `job`.
    Job(JobView),
    /// `open_jobs`.
    Jobs(Vec<JobView>),
    /// `config`.
    Config(Config),
}

// ---------------------------------------------------------------- the plugin

/// The plugin.
pub struct Auction;

impl Plugin for Auction {
    const NAME: &'static str = "auction";
    const VERSION: &'static str = "1.0.0";
    const SCHEMA: u32 = 1;
    type Config = Config;
    type Command = Command;
    type Response = Response;
    type Query = Query;
    type QueryResponse = Answer;

    fn init(config: Config) -> Result<(), Error> {
        config.validate()?;
        CONFIG.put(&SINGLETON, &config);
        Ok(())
    }

    fn handle(command: Command) -> Result<Response, Error> {
        let caller = keel_guest::caller();
        let caller = caller.as_ref();
        match command {
            Command::RegisterProvider {
                id,
                capacity,
                precisions,
                price,
                lanes,
            } => register_provider(caller, id, capacity, &precisions, price, &lanes),
            Command::UpdateProvider {
                id,
                capacity,
                precisions,
                price,
                lanes,
            } => update_provider(
                caller,
                id,
                capacity,
                precisions.as_deref(),
                price,
                lanes.as_deref(),
            ),
            Command::DeactivateProvider { id } => set_active(caller, id, false),
            Command::ActivateProvider { id } => set_active(caller, id, true),
            Command::AddRoute {
                id,
                lane,
                cost,
                latency_ms,
            } => {
                access::operator_only(caller, "add_route")?;
                add_route(id, lane, cost, latency_ms)
            }
            Command::UpdateRoute {
                id,
                lane,
                cost,
                latency_ms,
            } => {
                access::operator_only(caller, "update_route")?;
                update_route(id, lane, cost, latency_ms)
            }
            Command::RunAuction { job, priority } => {
                run_auction(caller, job, priority).map(Response::Auction)
            }
            Command::CompleteJob { id } => {
                close_job(caller, id, JobStatus::Completed).map(Response::Released)
            }
            Command::CancelJob { id } => {
                close_job(caller, id, JobStatus::Cancelled).map(Response::Released)
            }
        }
    }

    fn query(request: Query) -> Result<Answer, Error> {
        Ok(match request {
            Query::Stats => Answer::Stats(stats_view()),
            Query::Providers => {
                let names = lane_names();
                let mut owners: BTreeMap<String, String> = PROVIDER_OWNERS.iter().collect();
                Answer::Providers(
                    PROVIDERS
                        .iter()
                        .map(|(id, p)| {
                            let owner = owners.remove(&id);
                            p.view(id, &names, owner)
                        })
                        .collect(),
                )
            }
            Query::Provider { id } => {
                let provider = load_provider(&id)?;
                let owner = provider_owner(&id);
                Answer::Provider(provider.view(id, &lane_names(), owner))
            }
            Query::Routes => {
                let names = lane_names();
                Answer::Routes(
                    ROUTES
                        .iter()
                        .map(|(id, r)| route_view(id, &r, &names))
                        .collect(),
                )
            }
            Query::Job { id } => {
                let job = JOBS.get(&id).ok_or_else(|| unknown("job", &id))?;
                let submitter = job_submitter(&id);
                Answer::Job(job.view(id, submitter))
            }
            Query::OpenJobs { provider } => Answer::Jobs(
                JOBS.iter()
                    .filter(|(_, j)| j.status == JobStatus::Matched)
                    .filter(|(_, j)| match (&provider, &j.award) {
                        (None, _) => true,
                        (Some(p), Some(a)) => *p == a.provider,
                        (Some(_), None) => false,
                    })
                    .map(|(id, j)| {
                        let submitter = job_submitter(&id);
                        j.view(id, submitter)
                    })
                    .collect(),
            ),
            Query::Config => Answer::Config(config()),
        })
    }

    fn tables() -> Vec<TableCodec> {
        vec![
            CONFIG.codec(),
            PROVIDERS.codec(),
            ROUTES.codec(),
            JOBS.codec(),
            STATS.codec(),
            LANE_STATS.codec(),
            LANE_IDS.codec(),
            LANE_NAMES.codec(),
            PROVIDER_OWNERS.codec(),
            JOB_SUBMITTERS.codec(),
        ]
    }
}

keel_guest::export!(Auction);

// ---------------------------------------------------------------- validation

fn check_id(kind: &str, id: &str) -> Result<(), Error> {
    if id.is_empty() || id.len() > ID_BYTES_MAX || id.chars().any(char::is_control) {
        return Err(Error::new(
            format!("invalid-{kind}-id"),
            format!("{kind} id {id:?} must be 1..={ID_BYTES_MAX} bytes without control characters"),
        ));
    }
    Ok(())
}

fn check_lane(lane: &str) -> Result<(), Error> {
    if lane.is_empty() || lane.len() > ID_BYTES_MAX || lane.chars().any(char::is_control) {
        return Err(Error::new(
            "invalid-lane",
            format!("lane {lane:?} must be 1..={ID_BYTES_MAX} bytes without control characters"),
        ));
    }
    Ok(())
}

fn parse_precisions(names: &[String]) -> Result<u8, Error> {
    if names.is_empty() || names.len() > PRECISIONS_LISTED_MAX {
        return Err(Error::new(
            "invalid-precisions",
            format!(
                "a provider lists 1..={PRECISIONS_LISTED_MAX} precisions, got {}",
                names.len()
            ),
        ));
    }
    let mut mask = 0;
    for name in names {
        mask |= Precision::parse(name)?.bit();
    }
    Ok(mask)
}

/// Validates a provider's lanes, then interns them; returns sorted lane ids.
fn parse_lanes(lanes: &[String]) -> Result<Vec<u16>, Error> {
    if lanes.is_empty() || lanes.len() > LANES_PER_PROVIDER_MAX {
        return Err(Error::new(
            "invalid-lanes",
            format!(
                "a provider serves 1..={LANES_PER_PROVIDER_MAX} lanes, got {}",
                lanes.len()
            ),
        ));
    }
    for lane in lanes {
        check_lane(lane)?;
    }
    let mut out = lanes
        .iter()
        .map(|l| intern_lane(l))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn check_capacity(capacity: u64) -> Result<(), Error> {
    if capacity == 0 {
        return Err(Error::new(
            "invalid-capacity",
            "capacity must be at least 1 unit",
        ));
    }
    Ok(())
}

fn unknown(kind: &str, id: &str) -> Error {
    Error::new(
        format!("unknown-{kind}"),
        format!("no {kind} with id {id:?}"),
    )
}

fn overflow(what: &str) -> Error {
    Error::new("overflow", format!("{what} would overflow"))
}

// ---------------------------------------------------------------- storage helpers

fn config() -> Config {
    CONFIG.get(&SINGLETON).unwrap_or_default()
}

fn load_provider(id: &str) -> Result<Provider, Error> {
    check_id("provider", id)?;
    PROVIDERS
        .get(&id.to_owned())
        .ok_or_else(|| unknown("provider", id))
}

/// The lane id of `name`, creating it on first use.
fn intern_lane(name: &str) -> Result<u16, Error> {
    check_lane(name)?;
    let name = name.to_owned();
    if let Some(id) = LANE_IDS.get(&name) {
        return Ok(id);
    }
    let id = match LANE_NAMES.last() {
        None => 0,
        Some((last, _)) => last.checked_add(1).ok_or_else(|| {
            Error::new(
                "too-many-lanes",
                format!("lane {name:?} would exceed {} lanes", u16::MAX),
            )
        })?,
    };
    LANE_IDS.put(&name, &id);
    LANE_NAMES.put(&id, &name);
    Ok(id)
}

/// Every lane name, indexed by lane id. One scan.
fn lane_names() -> Vec<String> {
    let mut names = Vec::new();
    for (id, name) in LANE_NAMES.iter() {
        let i = usize::from(id);
        if names.len() <= i {
            names.resize(i + 1, String::new());
        }
        names[i] = name;
    }
    names
}

fn lane_name(names: &[String], id: u16) -> &str {
    names.get(usize::from(id)).map_or("", String::as_str)
}

fn route_view(id: String, r: &Route, names: &[String]) -> RouteView {
    RouteView {
        id,
        lane: lane_name(names, r.lane).to_owned(),
        cost: r.cost,
        latency_ms: r.latency_ms,
    }
}

fn stats_view() -> StatsView {
    let s = STATS.get(&SINGLETON).unwrap_or_default();
    let reasons = [
        NoMatchReason::NoProvider,
        NoMatchReason::NoCapacity,
        NoMatchReason::NoRoute,
        NoMatchReason::OverMaxPrice,
    ];
    StatsView {
        auctions: s.auctions,
        matches: s.matches,
        no_matches: s.no_matches,
        volume_units: s.volume_units,
        volume_value: s.volume_value,
        completed: s.completed,
        cancelled: s.cancelled,
        open_jobs: s
            .matches
            .saturating_sub(s.completed)
            .saturating_sub(s.cancelled),
        by_precision: Precision::ALL
            .iter()
            .map(|p| (p.name().to_owned(), s.by_precision[p.index()]))
            .collect(),
        by_lane: LANE_STATS.iter().collect(),
        no_match_reasons: reasons
            .iter()
            .map(|r| {
                let name = match r {
                    NoMatchReason::NoProvider => "no_provider",
                    NoMatchReason::NoCapacity => "no_capacity",
                    NoMatchReason::NoRoute => "no_route",
                    NoMatchReason::OverMaxPrice => "over_max_price",
                };
                (name.to_owned(), s.no_match_reasons[r.index()])
            })
            .collect(),
    }
}

// ---------------------------------------------------------------- providers and routes

fn register_provider(
    caller: Option<&Caller>,
    id: String,
    capacity: u64,
    precisions: &[String],
    price: u64,
    lanes: &[String],
) -> Result<Response, Error> {
    check_id("provider", &id)?;
    check_capacity(capacity)?;
    let precisions = parse_precisions(precisions)?;
    if PROVIDERS.contains(&id) {
        return Err(Error::new(
            "provider-exists",
            format!("provider {id:?} is already registered; use update_provider"),
        ));
    }
    // Last: it interns new lane names (a later refusal would undo that too).
    let lanes = parse_lanes(lanes)?;
    let provider = Provider {
        capacity,
        utilization: 0,
        precisions,
        price,
        lanes,
        active: true,
        open_jobs: 0,
    };
    PROVIDERS.put(&id, &provider);
    let owner = caller.map(|c| c.principal.clone());
    if let Some(owner) = &owner {
        PROVIDER_OWNERS.put(&id, owner);
    }
    Ok(Response::Provider(provider.view(id, &lane_names(), owner)))
}

fn update_provider(
    caller: Option<&Caller>,
    id: String,
    capacity: Option<u64>,
    precisions: Option<&[String]>,
    price: Option<u64>,
    lanes: Option<&[String]>,
) -> Result<Response, Error> {
    let mut provider = load_provider(&id)?;
    let owner = provider_owner(&id);
    access::owner_or_operator(caller, "provider", &id, owner.as_deref(), false, "update")?;
    if capacity.is_none() && precisions.is_none() && price.is_none() && lanes.is_none() {
        return Err(Error::invalid(
            "update_provider needs at least one of capacity, precisions, price, lanes",
        ));
    }
    if let Some(capacity) = capacity {
        check_capacity(capacity)?;
        if capacity < provider.utilization {
            return Err(Error::new(
                "capacity-below-utilization",
                format!(
                    "provider {id:?} has {} units reserved by open jobs; capacity cannot drop to {capacity}",
                    provider.utilization
                ),
            ));
        }
        provider.capacity = capacity;
    }
    if let Some(precisions) = precisions {
        provider.precisions = parse_precisions(precisions)?;
    }
    if let Some(price) = price {
        provider.price = price;
    }
    if let Some(lanes) = lanes {
        provider.lanes = parse_lanes(lanes)?;
    }
    PROVIDERS.put(&id, &provider);
    Ok(Response::Provider(provider.view(id, &lane_names(), owner)))
}

fn set_active(caller: Option<&Caller>, id: String, active: bool) -> Result<Response, Error> {
    let mut provider = load_provider(&id)?;
    let owner = provider_owner(&id);
    let action = if active { "activate" } else { "deactivate" };
    access::owner_or_operator(caller, "provider", &id, owner.as_deref(), true, action)?;
    if provider.active != active {
        provider.active = active;
        PROVIDERS.put(&id, &provider);
    }
    Ok(Response::Provider(provider.view(id, &lane_names(), owner)))
}

fn add_route(id: String, lane: String, cost: u64, latency_ms: u32) -> Result<Response, Error> {
    check_id("route", &id)?;
    check_lane(&lane)?;
    if ROUTES.contains(&id) {
        return Err(Error::new(
            "route-exists",
            format!("route {id:?} already exists; use update_route"),
        ));
    }
    let route = Route {
        lane: intern_lane(&lane)?,
        cost,
        latency_ms,
    };
    ROUTES.put(&id, &route);
    Ok(Response::Route(route_view(id, &route, &lane_names())))
}

fn update_route(
    id: String,
    lane: Option<String>,
    cost: Option<u64>,
    latency_ms: Option<u32>,
) -> Result<Response, Error> {
    check_id("route", &id)?;
    let mut route = ROUTES.get(&id).ok_or_else(|| unknown("route", &id))?;
    if lane.is_none() && cost.is_none() && latency_ms.is_none() {
        return Err(Error::invalid(
            "update_route needs at least one of lane, cost, latency_ms",
        ));
    }
    if let Some(lane) = lane {
        route.lane = intern_lane(&lane)?;
    }
    if let Some(cost) = cost {
        route.cost = cost;
    }
    if let Some(latency_ms) = latency_ms {
        route.latency_ms = latency_ms;
    }
    ROUTES.put(&id, &route);
    Ok(Response::Route(route_view(id, &route, &lane_names())))
}

// ---------------------------------------------------------------- the auction

/// The best provider so far: (unit price, utilization, id) and its offer.
struct Best {
    unit_price: u128,
    utilization: u64,
    id: String,
    provider: Provider,
    lane: String,
    route: String,
}

fn run_auction(
    caller: Option<&Caller>,
    spec: JobSpec,
    priority: u32,
) -> Result<AuctionOutcome, Error> {
    // Validate everything before reading or writing any state.
    check_id("job", &spec.id)?;
    let precision = Precision::parse(&spec.precision)?;
    if spec.units == 0 {
        return Err(Error::new(
            "invalid-units",
            format!("job {:?} asks for 0 units", spec.id),
        ));
    }
    check_lane(&spec.preferred_lane)?;
    if priority > PRIORITY_MAX {
        return Err(Error::new(
            "invalid-priority",
            format!("priority {priority} is above the maximum {PRIORITY_MAX}"),
        ));
    }
    let existing = JOBS.get(&spec.id);
    if let Some(existing) = &existing
        && existing.status != JobStatus::Unmatched
    {
        return Err(Error::new(
            "duplicate-job",
            format!(
                "job {:?} already exists with status {:?}; only an unmatched job may be auctioned again",
                spec.id, existing.status
            ),
        ));
    }
    if existing.is_some() {
        // Auctioning an unmatched job again: its submitter's (or the operator's) call.
        let submitter = job_submitter(&spec.id);
        access::owner_or_operator(
            caller,
            "job",
            &spec.id,
            submitter.as_deref(),
            true,
            "auction again",
        )?;
    } else if let Some(c) = caller {
        JOB_SUBMITTERS.put(&spec.id, &c.principal);
    }
    let cfg = config();

    // A lane nobody has named has no id: then no offer is on the preferred lane.
    let preferred_lane = LANE_IDS.get(&spec.preferred_lane);
    let names = lane_names();

    // The cheapest route of every lane for this priority (ties: lower route id, as scanned).
    let mut lane_costs: Vec<Option<(u128, String)>> = vec![None; names.len()];
    for (route_id, route) in ROUTES.iter() {
        let cost = pricing::route_cost(route.cost, route.latency_ms, priority, cfg.latency_weight)
            .ok_or_else(|| overflow("route cost"))?;
        let lane = usize::from(route.lane);
        if lane_costs.len() <= lane {
            lane_costs.resize(lane + 1, None);
        }
        match &lane_costs[lane] {
            Some((best, _)) if *best <= cost => {}
            _ => lane_costs[lane] = Some((cost, route_id)),
        }
    }

    // One pass over the providers, counting how many pass each filter so
    // that a no-match can say which filter emptied the field.
    let (mut supporting, mut with_capacity, mut reachable) = (0u64, 0u64, 0u64);
    let mut best: Option<Best> = None;
    for (id, provider) in PROVIDERS.iter() {
        if !provider.active || provider.precisions & precision.bit() == 0 {
            continue;
        }
        supporting += 1;
        if provider.free() < spec.units {
            continue;
        }
        with_capacity += 1;
        let mut offer: Option<LaneOffer<'_>> = None;
        for &lane in &provider.lanes {
            let Some(Some((lane_cost, route))) = lane_costs.get(usize::from(lane)) else {
                continue;
            };
            let preferred = Some(lane) == preferred_lane;
            let unit_price = pricing::unit_price(
                provider.price,
                *lane_cost,
                preferred,
                cfg.off_lane_penalty_bps,
            )
            .ok_or_else(|| overflow("unit price"))?;
            let candidate = LaneOffer {
                unit_price,
                preferred,
                lane: lane_name(&names, lane),
                route,
            };
            if offer.as_ref().is_none_or(|o| candidate.rank(o).is_lt()) {
                offer = Some(candidate);
            }
        }
        let Some(offer) = offer else { continue };
        reachable += 1;
        let better = best.as_ref().is_none_or(|b| {
            pricing::rank_providers(
                (offer.unit_price, provider.utilization, &id),
                (b.unit_price, b.utilization, &b.id),
            )
            .is_lt()
        });
        if better {
            let (lane, route) = (offer.lane.to_owned(), offer.route.to_owned());
            best = Some(Best {
                unit_price: offer.unit_price,
                utilization: provider.utilization,
                id,
                provider,
                lane,
                route,
            });
        }
    }

    let mut stats = STATS.get(&SINGLETON).unwrap_or_default();
    stats.auctions = stats
        .auctions
        .checked_add(1)
        .ok_or_else(|| overflow("auction count"))?;
    let (sequence, now_ms) = (keel_guest::sequence(), keel_guest::timestamp_ms());
    let mut job = Job {
        precision,
        units: spec.units,
        max_price: spec.max_price,
        preferred_lane: spec.preferred_lane,
        priority,
        status: JobStatus::Unmatched,
        award: None,
        reason: None,
        auctioned_at_seq: sequence,
        auctioned_at_ms: now_ms,
        closed_at_seq: None,
    };

    let best_on_offer = best.as_ref().map(|b| b.unit_price);
    let affordable = best.filter(|b| b.unit_price <= u128::from(spec.max_price));
    let Some(Best {
        unit_price,
        id: provider_id,
        mut provider,
        lane,
        route,
        ..
    }) = affordable
    else {
        let reason = if supporting == 0 {
            NoMatchReason::NoProvider
        } else if with_capacity == 0 {
            NoMatchReason::NoCapacity
        } else if reachable == 0 {
            NoMatchReason::NoRoute
        } else {
            NoMatchReason::OverMaxPrice
        };
        let best_unit_price = best_on_offer.filter(|_| reason == NoMatchReason::OverMaxPrice);
        stats.no_matches = stats
            .no_matches
            .checked_add(1)
            .ok_or_else(|| overflow("no-match count"))?;
        let slot = &mut stats.no_match_reasons[reason.index()];
        *slot = slot
            .checked_add(1)
            .ok_or_else(|| overflow("no-match count"))?;
        job.reason = Some(reason);
        STATS.put(&SINGLETON, &stats);
        JOBS.put(&spec.id, &job);
        return Ok(AuctionOutcome::NoMatch {
            job: spec.id,
            reason,
            best_unit_price,
        });
    };

    // The price is at most max_price, so it fits u64, and the total fits u128.
    let unit_price = u64::try_from(unit_price).map_err(|_| overflow("unit price"))?;
    let total_price = u128::from(unit_price) * u128::from(spec.units);
    provider.utilization = provider
        .utilization
        .checked_add(spec.units)
        .filter(|u| *u <= provider.capacity)
        .ok_or_else(|| overflow("provider utilization"))?;
    provider.open_jobs = provider
        .open_jobs
        .checked_add(1)
        .ok_or_else(|| overflow("open job count"))?;

    stats.matches = stats
        .matches
        .checked_add(1)
        .ok_or_else(|| overflow("match count"))?;
    stats.volume_units = stats
        .volume_units
        .checked_add(u128::from(spec.units))
        .ok_or_else(|| overflow("volume"))?;
    stats.volume_value = stats
        .volume_value
        .checked_add(total_price)
        .ok_or_else(|| overflow("volume"))?;
    add_tally(&mut stats.by_precision[precision.index()], spec.units)?;
    let mut lane_tally = LANE_STATS.get(&lane).unwrap_or_default();
    add_tally(&mut lane_tally, spec.units)?;

    job.status = JobStatus::Matched;
    job.award = Some(Award {
        provider: provider_id.clone(),
        lane: lane.clone(),
        route: route.clone(),
        unit_price,
        total_price,
    });

    PROVIDERS.put(&provider_id, &provider);
    JOBS.put(&spec.id, &job);
    STATS.put(&SINGLETON, &stats);
    LANE_STATS.put(&lane, &lane_tally);
    Ok(AuctionOutcome::Matched {
        job: spec.id,
        provider: provider_id,
        lane,
        route,
        unit_price,
        total_price,
        provider_utilization: provider.utilization,
        provider_capacity: provider.capacity,
    })
}

fn add_tally(tally: &mut Tally, units: u64) -> Result<(), Error> {
    tally.matches = tally
        .matches
        .checked_add(1)
        .ok_or_else(|| overflow("match count"))?;
    tally.units = tally
        .units
        .checked_add(u128::from(units))
        .ok_or_else(|| overflow("volume"))?;
    Ok(())
}

fn close_job(caller: Option<&Caller>, id: String, status: JobStatus) -> Result<Released, Error> {
    check_id("job", &id)?;
    let mut job = JOBS.get(&id).ok_or_else(|| unknown("job", &id))?;
    if job.status != JobStatus::Matched {
        return Err(Error::new(
            "job-not-open",
            format!(
                "job {id:?} is {:?}; only a matched job can be completed or cancelled",
                job.status
            ),
        ));
    }
    let award = job.award.as_ref().ok_or_else(|| {
        Error::new(
            "inconsistent-state",
            format!("matched job {id:?} has no award"),
        )
    })?;
    let provider_id = award.provider.clone();
    if let Some(c) = caller {
        let submitter = job_submitter(&id);
        let allowed = match status {
            // The provider that did the work may report it finished.
            JobStatus::Completed => {
                provider_owner(&provider_id).as_deref() == Some(c.principal.as_str())
            }
            _ => false,
        };
        if !allowed {
            let action = match status {
                JobStatus::Completed => "complete",
                _ => "cancel",
            };
            access::owner_or_operator(Some(c), "job", &id, submitter.as_deref(), true, action)?;
        }
    }
    let mut provider = PROVIDERS.get(&provider_id).ok_or_else(|| {
        Error::new(
            "inconsistent-state",
            format!("job {id:?} names unknown provider {provider_id:?}"),
        )
    })?;
    let inconsistent = || {
        Error::new(
            "inconsistent-state",
            format!("provider {provider_id:?} holds fewer units than job {id:?} reserved"),
        )
    };
    provider.utilization = provider
        .utilization
        .checked_sub(job.units)
        .ok_or_else(inconsistent)?;
    provider.open_jobs = provider.open_jobs.checked_sub(1).ok_or_else(inconsistent)?;

    let mut stats = STATS.get(&SINGLETON).unwrap_or_default();
    let counter = match status {
        JobStatus::Completed => &mut stats.completed,
        _ => &mut stats.cancelled,
    };
    *counter = counter
        .checked_add(1)
        .ok_or_else(|| overflow("job count"))?;

    job.status = status;
    job.closed_at_seq = Some(keel_guest::sequence());
    PROVIDERS.put(&provider_id, &provider);
    JOBS.put(&id, &job);
    STATS.put(&SINGLETON, &stats);
    Ok(Released {
        job: id,
        status,
        provider: provider_id,
        units: job.units,
        provider_utilization: provider.utilization,
    })
}
