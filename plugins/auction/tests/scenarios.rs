//! The auction's rules, one scenario each, natively through the Harness.

use keel_guest::testing::Harness;
use keel_plugin_auction::{
    Answer, Auction, AuctionOutcome, Command, Config, JobSpec, JobStatus, NoMatchReason,
    ProviderView, Query, Released, Response, StatsView,
};
use serde_json::json;

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn register(
    h: &mut Harness<Auction>,
    id: &str,
    capacity: u64,
    precisions: &[&str],
    price: u64,
    lanes: &[&str],
) {
    h.handle(Command::RegisterProvider {
        id: id.into(),
        capacity,
        precisions: strings(precisions),
        price,
        lanes: strings(lanes),
    })
    .unwrap();
}

fn route(h: &mut Harness<Auction>, id: &str, lane: &str, cost: u64, latency_ms: u32) {
    h.handle(Command::AddRoute {
        id: id.into(),
        lane: lane.into(),
        cost,
        latency_ms,
    })
    .unwrap();
}

fn job(id: &str, precision: &str, units: u64, max_price: u64, lane: &str) -> JobSpec {
    JobSpec {
        id: id.into(),
        precision: precision.into(),
        units,
        max_price,
        preferred_lane: lane.into(),
    }
}

fn auction(h: &mut Harness<Auction>, spec: JobSpec, priority: u32) -> AuctionOutcome {
    match h
        .handle(Command::RunAuction {
            job: spec,
            priority,
        })
        .unwrap()
    {
        Response::Auction(outcome) => outcome,
        other => panic!("unexpected response {other:?}"),
    }
}

/// The winner of an auction: (provider, lane, unit price).
#[derive(Debug)]
struct Won(String, String, u64);

impl PartialEq<(&str, &str, u64)> for Won {
    fn eq(&self, other: &(&str, &str, u64)) -> bool {
        (self.0.as_str(), self.1.as_str(), self.2) == *other
    }
}

fn w(outcome: &AuctionOutcome) -> Won {
    match outcome {
        AuctionOutcome::Matched {
            provider,
            lane,
            unit_price,
            ..
        } => Won(provider.clone(), lane.clone(), *unit_price),
        other => panic!("expected a match, got {other:?}"),
    }
}

fn no_match_reason(outcome: &AuctionOutcome) -> NoMatchReason {
    match outcome {
        AuctionOutcome::NoMatch { reason, .. } => *reason,
        other => panic!("expected no match, got {other:?}"),
    }
}

fn provider(h: &Harness<Auction>, id: &str) -> ProviderView {
    match h.query(Query::Provider { id: id.into() }).unwrap() {
        Answer::Provider(p) => p,
        other => panic!("unexpected answer {other:?}"),
    }
}

fn stats(h: &Harness<Auction>) -> StatsView {
    match h.query(Query::Stats).unwrap() {
        Answer::Stats(s) => s,
        other => panic!("unexpected answer {other:?}"),
    }
}

fn close(h: &mut Harness<Auction>, command: Command) -> Released {
    match h.handle(command).unwrap() {
        Response::Released(r) => r,
        other => panic!("unexpected response {other:?}"),
    }
}

/// Two providers on one lane, one route: the usual fixture.
fn market() -> Harness<Auction> {
    let mut h = Harness::<Auction>::with_config(Config::default()).unwrap();
    register(&mut h, "cheap", 100, &["fp16", "bf16"], 10, &["us"]);
    register(
        &mut h,
        "dear",
        100,
        &["fp16", "fp32", "int8"],
        20,
        &["us", "eu"],
    );
    route(&mut h, "r-us", "us", 2, 5);
    route(&mut h, "r-eu", "eu", 1, 50);
    h
}

#[test]
fn the_cheapest_provider_wins_and_capacity_is_reserved_then_released() {
    let mut h = market();
    let outcome = auction(&mut h, job("j1", "fp16", 30, 100, "us"), 0);
    assert_eq!(
        outcome,
        AuctionOutcome::Matched {
            job: "j1".into(),
            provider: "cheap".into(),
            lane: "us".into(),
            route: "r-us".into(),
            unit_price: 12,
            total_price: 360,
            provider_utilization: 30,
            provider_capacity: 100,
        }
    );
    assert_eq!(provider(&h, "cheap").utilization, 30);
    assert_eq!(provider(&h, "cheap").free, 70);

    let released = close(&mut h, Command::CompleteJob { id: "j1".into() });
    assert_eq!(released.status, JobStatus::Completed);
    assert_eq!(released.units, 30);
    assert_eq!(released.provider_utilization, 0);
    assert_eq!(provider(&h, "cheap").utilization, 0);
    assert_eq!(provider(&h, "cheap").open_jobs, 0);

    let Answer::Job(view) = h.query(Query::Job { id: "j1".into() }).unwrap() else {
        panic!()
    };
    assert_eq!(view.status, JobStatus::Completed);
    assert_eq!(view.provider.as_deref(), Some("cheap"));
    assert_eq!(view.total_price, Some(360));
    assert!(view.closed_at_seq.is_some());
}

#[test]
fn precision_filters_providers() {
    let mut h = market();
    let won = w(&auction(&mut h, job("j1", "int8", 1, 100, "us"), 0));
    assert_eq!((won.0.as_str(), won.2), ("dear", 22));
}

#[test]
fn a_provider_without_enough_free_capacity_is_skipped() {
    let mut h = market();
    w(&auction(&mut h, job("a", "fp16", 90, 100, "us"), 0));
    let p = w(&auction(&mut h, job("b", "fp16", 20, 100, "us"), 0)).0;
    assert_eq!(p, "dear", "cheap has only 10 units free");
    // Exactly the free capacity fits.
    let p = w(&auction(&mut h, job("c", "fp16", 10, 100, "us"), 0)).0;
    assert_eq!(p, "cheap");
    assert_eq!(provider(&h, "cheap").free, 0);
}

#[test]
fn equal_prices_go_to_lower_utilization_then_lower_id() {
    let mut h = Harness::<Auction>::with_config(Config::default()).unwrap();
    register(&mut h, "b", 100, &["fp32"], 10, &["x"]);
    register(&mut h, "a", 100, &["fp32"], 10, &["x"]);
    route(&mut h, "r", "x", 0, 0);
    // Same price and utilization: the lower id.
    assert_eq!(w(&auction(&mut h, job("j1", "fp32", 5, 10, "x"), 0)).0, "a");
    // Now a holds 5 units: b has the lower utilization.
    assert_eq!(w(&auction(&mut h, job("j2", "fp32", 3, 10, "x"), 0)).0, "b");
    // a: 5, b: 3 → b again; then a: 5, b: 5 → a.
    assert_eq!(w(&auction(&mut h, job("j3", "fp32", 2, 10, "x"), 0)).0, "b");
    assert_eq!(w(&auction(&mut h, job("j4", "fp32", 1, 10, "x"), 0)).0, "a");
}

#[test]
fn priority_weights_route_latency() {
    let mut h = Harness::<Auction>::with_config(Config {
        off_lane_penalty_bps: 0,
        latency_weight: 1,
    })
    .unwrap();
    register(&mut h, "slow-cheap", 100, &["fp32"], 10, &["slow"]);
    register(&mut h, "fast-dear", 100, &["fp32"], 14, &["fast"]);
    route(&mut h, "r-slow", "slow", 0, 3);
    route(&mut h, "r-fast", "fast", 0, 0);
    // Priority 0: latency is free; 10 < 14.
    assert_eq!(
        w(&auction(&mut h, job("j0", "fp32", 1, 100, "slow"), 0)),
        ("slow-cheap", "slow", 10)
    );
    // Priority 1: 10 + 1×3 = 13 < 14.
    assert_eq!(
        w(&auction(&mut h, job("j1", "fp32", 1, 100, "slow"), 1)),
        ("slow-cheap", "slow", 13)
    );
    // Priority 2: 10 + 2×3 = 16 > 14: the fast lane wins.
    assert_eq!(
        w(&auction(&mut h, job("j2", "fp32", 1, 100, "slow"), 2)),
        ("fast-dear", "fast", 14)
    );
}

#[test]
fn the_cheapest_route_of_a_lane_is_used() {
    let mut h = Harness::<Auction>::with_config(Config::default()).unwrap();
    register(&mut h, "p", 100, &["fp32"], 10, &["x"]);
    route(&mut h, "r1", "x", 5, 0);
    route(&mut h, "r2", "x", 3, 10);
    route(&mut h, "r3", "x", 3, 10);
    let AuctionOutcome::Matched {
        route, unit_price, ..
    } = auction(&mut h, job("j0", "fp32", 1, 100, "x"), 0)
    else {
        panic!()
    };
    assert_eq!(
        (route.as_str(), unit_price),
        ("r2", 13),
        "equal costs: the lower route id"
    );
    // With priority 1 the latency counts: r1 costs 5, r2 and r3 cost 13.
    let AuctionOutcome::Matched {
        route, unit_price, ..
    } = auction(&mut h, job("j1", "fp32", 1, 100, "x"), 1)
    else {
        panic!()
    };
    assert_eq!((route.as_str(), unit_price), ("r1", 15));
    // Routes can be updated.
    h.handle(Command::UpdateRoute {
        id: "r3".into(),
        lane: None,
        cost: Some(1),
        latency_ms: Some(0),
    })
    .unwrap();
    let AuctionOutcome::Matched {
        route, unit_price, ..
    } = auction(&mut h, job("j2", "fp32", 1, 100, "x"), 1)
    else {
        panic!()
    };
    assert_eq!((route.as_str(), unit_price), ("r3", 11));
}

#[test]
fn off_lane_service_pays_the_penalty_rounded_up() {
    let mut h = Harness::<Auction>::with_config(Config {
        off_lane_penalty_bps: 1_000,
        latency_weight: 1,
    })
    .unwrap();
    register(&mut h, "home", 100, &["fp32"], 12, &["home"]);
    register(&mut h, "away", 100, &["fp32"], 10, &["away"]);
    route(&mut h, "r-home", "home", 0, 0);
    route(&mut h, "r-away", "away", 1, 0);
    // away: (10 + 1) × 1.1 = 12.1 → 13 > 12: home wins on its preferred lane.
    assert_eq!(
        w(&auction(&mut h, job("j1", "fp32", 1, 100, "home"), 0)),
        ("home", "home", 12)
    );
    h.handle(Command::UpdateProvider {
        id: "away".into(),
        capacity: None,
        precisions: None,
        price: Some(9),
        lanes: None,
    })
    .unwrap();
    // away: (9 + 1) × 1.1 = 11 < 12: served off-lane.
    assert_eq!(
        w(&auction(&mut h, job("j2", "fp32", 1, 100, "home"), 0)),
        ("away", "away", 11)
    );
}

#[test]
fn a_provider_is_priced_on_its_best_lane_and_prefers_the_preferred_one_on_ties() {
    let mut h = Harness::<Auction>::with_config(Config {
        off_lane_penalty_bps: 0,
        latency_weight: 1,
    })
    .unwrap();
    register(&mut h, "p", 100, &["fp32"], 10, &["a", "b", "c"]);
    route(&mut h, "ra", "a", 5, 0);
    route(&mut h, "rb", "b", 5, 0);
    route(&mut h, "rc", "c", 7, 0);
    assert_eq!(
        w(&auction(&mut h, job("j1", "fp32", 1, 100, "b"), 0)).1,
        "b"
    );
    assert_eq!(
        w(&auction(&mut h, job("j2", "fp32", 1, 100, "c"), 0)).1,
        "a",
        "zero penalty: the cheapest lane"
    );
    assert_eq!(
        w(&auction(&mut h, job("j3", "fp32", 1, 100, "z"), 0)).1,
        "a",
        "tie: lower lane name"
    );
}

#[test]
fn max_price_is_inclusive_and_over_it_is_a_counted_no_match() {
    let mut h = market();
    let before = provider(&h, "cheap");
    let outcome = auction(&mut h, job("j1", "fp16", 1, 11, "us"), 0);
    assert_eq!(
        outcome,
        AuctionOutcome::NoMatch {
            job: "j1".into(),
            reason: NoMatchReason::OverMaxPrice,
            best_unit_price: Some(12),
        }
    );
    assert_eq!(provider(&h, "cheap"), before, "a no-match reserves nothing");
    // The same job id may be auctioned again after a no-match.
    assert_eq!(w(&auction(&mut h, job("j1", "fp16", 1, 12, "us"), 0)).2, 12);
    let s = stats(&h);
    assert_eq!((s.auctions, s.matches, s.no_matches), (2, 1, 1));
    assert_eq!(s.no_match_reasons["over_max_price"], 1);
}

#[test]
fn no_match_reasons_name_the_filter_that_emptied_the_field() {
    let mut h = Harness::<Auction>::with_config(Config::default()).unwrap();
    assert_eq!(
        no_match_reason(&auction(&mut h, job("a", "fp32", 1, 100, "x"), 0)),
        NoMatchReason::NoProvider
    );
    register(&mut h, "p", 10, &["fp32"], 1, &["x"]);
    assert_eq!(
        no_match_reason(&auction(&mut h, job("b", "fp32", 11, 100, "x"), 0)),
        NoMatchReason::NoCapacity
    );
    assert_eq!(
        no_match_reason(&auction(&mut h, job("c", "fp32", 1, 100, "x"), 0)),
        NoMatchReason::NoRoute
    );
    route(&mut h, "r", "x", 1, 0);
    assert_eq!(
        no_match_reason(&auction(&mut h, job("d", "fp32", 1, 1, "x"), 0)),
        NoMatchReason::OverMaxPrice
    );
    h.handle(Command::DeactivateProvider { id: "p".into() })
        .unwrap();
    assert_eq!(
        no_match_reason(&auction(&mut h, job("e", "fp32", 1, 100, "x"), 0)),
        NoMatchReason::NoProvider
    );
    let s = stats(&h);
    assert_eq!((s.auctions, s.matches, s.no_matches), (5, 0, 5));
    assert_eq!(s.no_match_reasons["no_provider"], 2);
    assert_eq!(s.no_match_reasons["no_capacity"], 1);
    assert_eq!(s.no_match_reasons["no_route"], 1);
    let Answer::Job(view) = h.query(Query::Job { id: "c".into() }).unwrap() else {
        panic!()
    };
    assert_eq!(
        (view.status, view.reason),
        (JobStatus::Unmatched, Some(NoMatchReason::NoRoute))
    );
}

#[test]
fn statistics_count_by_precision_and_lane() {
    let mut h = market();
    w(&auction(&mut h, job("j1", "fp16", 5, 100, "us"), 0));
    w(&auction(&mut h, job("j2", "fp32", 7, 100, "eu"), 0));
    w(&auction(&mut h, job("j3", "fp16", 1, 100, "us"), 0));
    auction(&mut h, job("j4", "fp16", 1, 1, "us"), 0);
    close(&mut h, Command::CompleteJob { id: "j1".into() });
    close(&mut h, Command::CancelJob { id: "j2".into() });
    let s = stats(&h);
    assert_eq!((s.auctions, s.matches, s.no_matches), (4, 3, 1));
    assert_eq!((s.completed, s.cancelled, s.open_jobs), (1, 1, 1));
    assert_eq!(s.volume_units, 13);
    // j1: 5 × 12, j2: 7 × (20 + 1), j3: 1 × 12
    assert_eq!(s.volume_value, 60 + 147 + 12);
    assert_eq!(s.by_precision["fp16"].matches, 2);
    assert_eq!(s.by_precision["fp16"].units, 6);
    assert_eq!(s.by_precision["fp32"].matches, 1);
    assert_eq!(s.by_precision["int8"].matches, 0);
    assert_eq!(s.by_lane["us"].matches, 2);
    assert_eq!(s.by_lane["eu"].units, 7);
    assert_eq!(s.by_lane.len(), 2);
}

#[test]
fn deactivated_providers_take_no_new_jobs_but_finish_open_ones() {
    let mut h = market();
    w(&auction(&mut h, job("j1", "fp16", 5, 100, "us"), 0));
    h.handle(Command::DeactivateProvider { id: "cheap".into() })
        .unwrap();
    assert_eq!(
        w(&auction(&mut h, job("j2", "fp16", 5, 100, "us"), 0)).0,
        "dear"
    );
    assert_eq!(provider(&h, "cheap").utilization, 5);
    close(&mut h, Command::CompleteJob { id: "j1".into() });
    assert_eq!(provider(&h, "cheap").utilization, 0);
    h.handle(Command::ActivateProvider { id: "cheap".into() })
        .unwrap();
    assert_eq!(
        w(&auction(&mut h, job("j3", "fp16", 5, 100, "us"), 0)).0,
        "cheap"
    );
}

#[test]
fn capacity_cannot_drop_below_utilization() {
    let mut h = market();
    w(&auction(&mut h, job("j1", "fp16", 40, 100, "us"), 0));
    let before = h.dump();
    let err = h
        .handle(Command::UpdateProvider {
            id: "cheap".into(),
            capacity: Some(39),
            precisions: None,
            price: None,
            lanes: None,
        })
        .unwrap_err();
    assert_eq!(err.code, "capacity-below-utilization");
    assert_eq!(h.dump(), before);
    h.handle(Command::UpdateProvider {
        id: "cheap".into(),
        capacity: Some(40),
        precisions: None,
        price: None,
        lanes: None,
    })
    .unwrap();
    assert_eq!(provider(&h, "cheap").free, 0);
}

/// Each refusal: its error code, and the store is byte-for-byte unchanged.
#[test]
fn invalid_commands_are_clear_errors_that_change_nothing() {
    let mut h = market();
    w(&auction(&mut h, job("taken", "fp16", 5, 100, "us"), 0));
    w(&auction(&mut h, job("finished", "fp16", 5, 100, "us"), 0));
    close(
        &mut h,
        Command::CompleteJob {
            id: "finished".into(),
        },
    );
    let job_json = |id: &str, precision: &str, units: u64| json!({"run_auction": {"job": {"id": id, "precision": precision, "units": units, "max_price": 100, "preferred_lane": "us"}, "priority": 1}});
    let long = "x".repeat(65);
    let refusals = [
        (job_json("new", "fp16", 0), "invalid-units"),
        (job_json("new", "fp64", 1), "unknown-precision"),
        (job_json("new", "FP16", 1), "unknown-precision"),
        (job_json("taken", "fp16", 1), "duplicate-job"),
        (job_json("finished", "fp16", 1), "duplicate-job"),
        (job_json("", "fp16", 1), "invalid-job-id"),
        (job_json(&long, "fp16", 1), "invalid-job-id"),
        (
            json!({"run_auction": {"job": {"id": "new", "precision": "fp16", "units": 1, "max_price": 100, "preferred_lane": "us"}, "priority": 10}}),
            "invalid-priority",
        ),
        (
            json!({"run_auction": {"job": {"id": "new", "precision": "fp16", "units": 1, "max_price": 100, "preferred_lane": ""}}}),
            "invalid-lane",
        ),
        (
            json!({"run_auction": {"job": {"id": "new", "precision": "fp16", "units": 1, "max_price": 100, "preferred_lane": "us", "colour": 1}}}),
            "bad-command",
        ),
        (
            json!({"run_auction": {"job": {"id": "new", "precision": "fp16", "units": -1, "max_price": 100, "preferred_lane": "us"}}}),
            "bad-command",
        ),
        (json!({"complete_job": {"id": "nope"}}), "unknown-job"),
        (json!({"complete_job": {"id": "finished"}}), "job-not-open"),
        (json!({"cancel_job": {"id": "finished"}}), "job-not-open"),
        (
            json!({"register_provider": {"id": "cheap", "capacity": 1, "precisions": ["fp16"], "price": 1, "lanes": ["us"]}}),
            "provider-exists",
        ),
        (
            json!({"register_provider": {"id": "new", "capacity": 0, "precisions": ["fp16"], "price": 1, "lanes": ["us"]}}),
            "invalid-capacity",
        ),
        (
            json!({"register_provider": {"id": "new", "capacity": 1, "precisions": ["fp16", "fp8"], "price": 1, "lanes": ["us"]}}),
            "unknown-precision",
        ),
        (
            json!({"register_provider": {"id": "new", "capacity": 1, "precisions": [], "price": 1, "lanes": ["us"]}}),
            "invalid-precisions",
        ),
        (
            json!({"register_provider": {"id": "new", "capacity": 1, "precisions": ["fp16"], "price": 1, "lanes": []}}),
            "invalid-lanes",
        ),
        (
            json!({"update_provider": {"id": "ghost", "price": 1}}),
            "unknown-provider",
        ),
        (
            json!({"update_provider": {"id": "cheap"}}),
            "invalid-argument",
        ),
        (
            json!({"update_provider": {"id": "cheap", "capacity": 4}}),
            "capacity-below-utilization",
        ),
        (
            json!({"deactivate_provider": {"id": "ghost"}}),
            "unknown-provider",
        ),
        (
            json!({"add_route": {"id": "r-us", "lane": "us", "cost": 1, "latency_ms": 1}}),
            "route-exists",
        ),
        (
            json!({"update_route": {"id": "ghost", "cost": 1}}),
            "unknown-route",
        ),
        (json!({"update_route": {"id": "r-us"}}), "invalid-argument"),
        (json!({"launch_rockets": {}}), "bad-command"),
    ];
    for (command, code) in refusals {
        let before = h.dump();
        let err = h.handle_json(&command.to_string()).unwrap_err();
        assert_eq!(err.code, code, "{command}: {err}");
        assert!(!err.message.is_empty());
        assert_eq!(h.dump(), before, "{command} changed the store");
    }
    assert_eq!(stats(&h).auctions, 2, "refused auctions are not auctions");
}

#[test]
fn the_documented_json_examples_work() {
    let mut h = Harness::<Auction>::new();
    let commands = [
        r#"{"register_provider": {"id": "p1", "capacity": 100, "precisions": ["fp16", "bf16"], "price": 12, "lanes": ["us-east", "eu"]}}"#,
        r#"{"update_provider": {"id": "p1", "capacity": 120, "price": 11}}"#,
        r#"{"deactivate_provider": {"id": "p1"}}"#,
        r#"{"activate_provider": {"id": "p1"}}"#,
        r#"{"add_route": {"id": "r1", "lane": "us-east", "cost": 2, "latency_ms": 5}}"#,
        r#"{"update_route": {"id": "r1", "cost": 3}}"#,
    ];
    for c in commands {
        h.handle_json(c).unwrap();
    }
    let matched = h
        .handle_json(r#"{"run_auction": {"job": {"id": "j1", "precision": "fp16", "units": 10, "max_price": 30, "preferred_lane": "us-east"}, "priority": 2}}"#)
        .unwrap();
    // 11 + 3 + 2 × 1 × 5 = 24 per unit.
    assert_eq!(
        matched,
        json!({"outcome": "matched", "job": "j1", "provider": "p1", "lane": "us-east", "route": "r1",
               "unit_price": 24, "total_price": 240, "provider_utilization": 10, "provider_capacity": 120})
    );
    let none = h
        .handle_json(r#"{"run_auction": {"job": {"id": "j2", "precision": "int8", "units": 1, "max_price": 30, "preferred_lane": "eu"}}}"#)
        .unwrap();
    assert_eq!(
        none,
        json!({"outcome": "no_match", "job": "j2", "reason": "no_provider", "best_unit_price": null})
    );
    let providers = h.query_json(r#""providers""#).unwrap();
    assert_eq!(providers[0]["utilization"], 10);
    assert_eq!(providers[0]["free"], 110);
    assert_eq!(providers[0]["precisions"], json!(["fp16", "bf16"]));
    let stats = h.query_json(r#""stats""#).unwrap();
    assert_eq!(
        stats["by_precision"]["fp16"],
        json!({"matches": 1, "units": 10})
    );
    assert_eq!(
        stats["by_lane"]["us-east"],
        json!({"matches": 1, "units": 10})
    );
    assert_eq!(stats["no_match_reasons"]["no_provider"], 1);
    assert_eq!(
        h.query_json(r#"{"job": {"id": "j1"}}"#).unwrap()["status"],
        "matched"
    );
    assert_eq!(
        h.query_json(r#"{"open_jobs": {"provider": "p1"}}"#)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        h.query_json(r#"{"open_jobs": {}}"#)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(h.query_json(r#""routes""#).unwrap()[0]["cost"], 3);
    assert_eq!(
        h.query_json(r#""config""#).unwrap(),
        json!({"off_lane_penalty_bps": 1000, "latency_weight": 1})
    );
    h.handle_json(r#"{"complete_job": {"id": "j1"}}"#).unwrap();
    assert_eq!(h.query_json(r#"{"open_jobs": {}}"#).unwrap(), json!([]));
    let err = h.query_json(r#"{"job": {"id": "nope"}}"#).unwrap_err();
    assert_eq!(err.code, "unknown-job");
}

#[test]
fn invalid_configuration_is_refused() {
    let err = Harness::<Auction>::with_config(Config {
        off_lane_penalty_bps: 1_000_000,
        latency_weight: 1,
    })
    .err()
    .unwrap();
    assert_eq!(err.code, "invalid-config");
}

#[test]
fn the_benchmark_workload_matches_most_jobs_and_closes_them() {
    use keel_plugin_auction::workload::{Shape, stream};
    let commands = stream(7, Shape::default(), Config::default(), 3_000);
    let mut h = Harness::<Auction>::with_config(Config::default()).unwrap();
    let mut refused = 0;
    for c in commands {
        if h.handle(c).is_err() {
            refused += 1;
        }
    }
    let s = stats(&h);
    assert!(s.matches * 10 > s.auctions * 8, "{s:?}");
    assert!(
        s.no_matches > 0 && s.completed > 0 && s.cancelled > 0,
        "{s:?}"
    );
    assert!(refused > 0 && refused < 30, "{refused} refusals");
    assert!(s.open_jobs <= 200, "{s:?}");
    assert_eq!(
        s.by_lane.values().map(|t| t.matches).sum::<u64>(),
        s.matches
    );
}
