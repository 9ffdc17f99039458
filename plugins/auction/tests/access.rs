//! The auction's access rule, natively through the Harness with callers:
//! providers belong to whoever registered them, jobs to whoever auctioned
//! them, routes to the operator; every refusal changes nothing; without a
//! caller every command is trusted as before.

use keel_guest::Caller;
use keel_guest::testing::Harness;
use keel_plugin_auction::Auction;
use serde_json::{Value, json};

fn alice() -> Caller {
    Caller::new("alice", ["client"])
}

fn bob() -> Caller {
    Caller::new("bob", ["client"])
}

fn operator() -> Caller {
    Caller::new("ops", ["client", "operator"])
}

fn run(h: &mut Harness<Auction>, caller: &Caller, cmd: Value) -> Result<Value, String> {
    h.as_caller(caller)
        .handle_json(&cmd.to_string())
        .map_err(|e| e.code)
}

/// Asserts that `caller` sending `cmd` is refused with `code` and that no
/// table changed.
fn refused(h: &mut Harness<Auction>, caller: &Caller, cmd: Value, code: &str) {
    let before = h.dump();
    let got = run(h, caller, cmd.clone());
    assert_eq!(
        got,
        Err(code.to_owned()),
        "{} sending {cmd}",
        caller.principal
    );
    assert_eq!(h.dump(), before, "a refusal changed state: {cmd}");
}

fn provider_cmd(id: &str) -> Value {
    json!({"register_provider": {"id": id, "capacity": 100, "precisions": ["fp16"], "price": 10, "lanes": ["eu"]}})
}

fn job_cmd(id: &str) -> Value {
    json!({"run_auction": {"job": {"id": id, "precision": "fp16", "units": 10, "max_price": 100, "preferred_lane": "eu"}}})
}

/// A market: the operator's route, alice's provider `pa`, bob's job `jb`
/// matched to it.
fn market() -> Harness<Auction> {
    let mut h = Harness::<Auction>::new();
    run(
        &mut h,
        &operator(),
        json!({"add_route": {"id": "r1", "lane": "eu", "cost": 1, "latency_ms": 1}}),
    )
    .unwrap();
    let p = run(&mut h, &alice(), provider_cmd("pa")).unwrap();
    assert_eq!(p["owner"], "alice");
    let j = run(&mut h, &bob(), job_cmd("jb")).unwrap();
    assert_eq!(j["outcome"], "matched");
    assert_eq!(j["provider"], "pa");
    h
}

#[test]
fn a_provider_is_managed_by_its_owner_only() {
    let mut h = market();
    for cmd in [
        json!({"update_provider": {"id": "pa", "price": 1}}),
        json!({"deactivate_provider": {"id": "pa"}}),
        json!({"activate_provider": {"id": "pa"}}),
    ] {
        refused(&mut h, &bob(), cmd, "not-owner");
    }
    // The operator may not reprice another's capacity...
    refused(
        &mut h,
        &operator(),
        json!({"update_provider": {"id": "pa", "price": 1}}),
        "not-owner",
    );
    // ...but may take it off the market and back.
    let off = run(
        &mut h,
        &operator(),
        json!({"deactivate_provider": {"id": "pa"}}),
    )
    .unwrap();
    assert_eq!(off["active"], false);
    let on = run(&mut h, &alice(), json!({"activate_provider": {"id": "pa"}})).unwrap();
    assert_eq!(on["active"], true);
    let updated = run(
        &mut h,
        &alice(),
        json!({"update_provider": {"id": "pa", "price": 7}}),
    )
    .unwrap();
    assert_eq!(updated["price"], 7);
    assert_eq!(updated["owner"], "alice");
    // Registering over another's id is still `provider-exists`, not a takeover.
    refused(&mut h, &bob(), provider_cmd("pa"), "provider-exists");
    let view = h
        .as_caller(&bob())
        .query_json(r#"{"provider": {"id": "pa"}}"#)
        .unwrap();
    assert_eq!(view["owner"], "alice");
}

#[test]
fn routes_are_operator_only() {
    let mut h = market();
    refused(
        &mut h,
        &alice(),
        json!({"add_route": {"id": "r2", "lane": "us", "cost": 0, "latency_ms": 0}}),
        "operator-only",
    );
    refused(
        &mut h,
        &alice(),
        json!({"update_route": {"id": "r1", "cost": 0}}),
        "operator-only",
    );
    run(
        &mut h,
        &operator(),
        json!({"update_route": {"id": "r1", "cost": 2}}),
    )
    .unwrap();
}

#[test]
fn a_job_is_cancelled_by_its_submitter_or_the_operator() {
    let mut h = market();
    // alice owns the provider but did not submit the job: she may not cancel it.
    refused(
        &mut h,
        &alice(),
        json!({"cancel_job": {"id": "jb"}}),
        "not-owner",
    );
    let carol = Caller::new("carol", ["client"]);
    refused(
        &mut h,
        &carol,
        json!({"cancel_job": {"id": "jb"}}),
        "not-owner",
    );
    refused(
        &mut h,
        &carol,
        json!({"complete_job": {"id": "jb"}}),
        "not-owner",
    );
    let view = h.query_json(r#"{"job": {"id": "jb"}}"#).unwrap();
    assert_eq!(view["submitter"], "bob");
    assert_eq!(view["status"], "matched");
    let cancelled = run(&mut h, &bob(), json!({"cancel_job": {"id": "jb"}})).unwrap();
    assert_eq!(cancelled["status"], "cancelled");

    // The operator cancels anyone's job.
    run(&mut h, &bob(), job_cmd("jb2")).unwrap();
    let cancelled = run(&mut h, &operator(), json!({"cancel_job": {"id": "jb2"}})).unwrap();
    assert_eq!(cancelled["status"], "cancelled");
}

#[test]
fn a_job_is_completed_by_its_submitter_its_provider_or_the_operator() {
    let mut h = market();
    // The provider's owner reports the work done.
    let done = run(&mut h, &alice(), json!({"complete_job": {"id": "jb"}})).unwrap();
    assert_eq!(done["status"], "completed");
    run(&mut h, &bob(), job_cmd("jb2")).unwrap();
    let done = run(&mut h, &bob(), json!({"complete_job": {"id": "jb2"}})).unwrap();
    assert_eq!(done["status"], "completed");
    run(&mut h, &bob(), job_cmd("jb3")).unwrap();
    let done = run(&mut h, &operator(), json!({"complete_job": {"id": "jb3"}})).unwrap();
    assert_eq!(done["status"], "completed");
}

#[test]
fn an_unmatched_job_is_auctioned_again_only_by_its_submitter_or_the_operator() {
    let mut h = market();
    let over = json!({"run_auction": {"job": {"id": "jx", "precision": "fp16", "units": 10, "max_price": 1, "preferred_lane": "eu"}}});
    assert_eq!(
        run(&mut h, &bob(), over.clone()).unwrap()["outcome"],
        "no_match"
    );
    refused(&mut h, &alice(), job_cmd("jx"), "not-owner");
    assert_eq!(run(&mut h, &bob(), over).unwrap()["outcome"], "no_match");
    let again = run(&mut h, &operator(), job_cmd("jx")).unwrap();
    assert_eq!(again["outcome"], "matched");
    // The submitter stays the one who first auctioned it.
    let view = h.query_json(r#"{"job": {"id": "jx"}}"#).unwrap();
    assert_eq!(view["submitter"], "bob");
}

#[test]
fn what_was_created_without_a_caller_is_managed_by_the_operator() {
    let mut h = Harness::<Auction>::new();
    h.set_caller(None);
    h.handle_json(&provider_cmd("p0").to_string()).unwrap();
    h.handle_json(r#"{"add_route": {"id": "r1", "lane": "eu", "cost": 1, "latency_ms": 1}}"#)
        .unwrap();
    h.handle_json(&job_cmd("j0").to_string()).unwrap();
    let view = h.query_json(r#"{"provider": {"id": "p0"}}"#).unwrap();
    assert!(view.get("owner").is_none(), "no owner field: {view}");
    refused(
        &mut h,
        &alice(),
        json!({"update_provider": {"id": "p0", "price": 1}}),
        "not-owner",
    );
    refused(
        &mut h,
        &alice(),
        json!({"cancel_job": {"id": "j0"}}),
        "not-owner",
    );
    run(
        &mut h,
        &operator(),
        json!({"update_provider": {"id": "p0", "price": 1}}),
    )
    .unwrap();
    run(&mut h, &operator(), json!({"cancel_job": {"id": "j0"}})).unwrap();
}

#[test]
fn without_a_caller_every_command_is_trusted() {
    let mut h = market();
    h.set_caller(None);
    for cmd in [
        json!({"update_provider": {"id": "pa", "price": 3}}),
        json!({"deactivate_provider": {"id": "pa"}}),
        json!({"activate_provider": {"id": "pa"}}),
        json!({"add_route": {"id": "r2", "lane": "us", "cost": 0, "latency_ms": 0}}),
        json!({"cancel_job": {"id": "jb"}}),
    ] {
        h.handle_json(&cmd.to_string())
            .unwrap_or_else(|e| panic!("{cmd}: {e:?}"));
    }
    // And a job auctioned without a caller records no submitter.
    h.handle_json(&job_cmd("j-anon").to_string()).unwrap();
    let view = h.query_json(r#"{"job": {"id": "j-anon"}}"#).unwrap();
    assert!(view.get("submitter").is_none(), "{view}");
}
