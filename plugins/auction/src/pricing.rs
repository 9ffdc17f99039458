//! The effective-price formula and the ranking of offers: pure integer
//! functions, no storage, so that they are tested on their own and the
//! plugin's `run_auction` only gathers inputs and applies them.
//!
//! All prices are integer ticks per unit of capacity. For a job with
//! `priority` p and a provider P reached over lane L by route r:
//!
//! ```text
//! route_cost(r)  = r.cost + p × latency_weight × r.latency_ms
//! lane_cost(L)   = min over the routes r of lane L of route_cost(r)   (ties: lower route id)
//! base(P, L)     = P.price + lane_cost(L)
//! unit(P, L)     = base(P, L)                                           if L is the job's preferred lane
//!                = ceil(base(P, L) × (10 000 + off_lane_penalty_bps) / 10 000)   otherwise
//! unit(P)        = min over the lanes L that P serves and that have a route of unit(P, L)
//!                  (ties: the preferred lane, then the lower lane name)
//! ```
//!
//! So priority buys speed: each priority level charges `latency_weight`
//! ticks per unit for every millisecond of route latency, which makes
//! high-priority jobs prefer (and pay for) fast routes, while priority 0
//! ranks on price and route cost alone. A lane other than the preferred one
//! is allowed but carries a surcharge of `off_lane_penalty_bps` basis
//! points, rounded up.
//!
//! The winner is the eligible provider with the lowest `(unit(P),
//! utilization, id)`; the job pays `unit(P) × units`. Every quantity is
//! bounded by the validation limits below, so the arithmetic fits `u128`
//! without overflow; it is checked anyway.

use std::cmp::Ordering;

/// Highest accepted job priority.
pub const PRIORITY_MAX: u32 = 9;
/// Highest accepted off-lane penalty, in basis points (1000 %).
pub const OFF_LANE_PENALTY_BPS_MAX: u32 = 100_000;
/// Highest accepted latency weight, in ticks per unit per millisecond per priority level.
pub const LATENCY_WEIGHT_MAX: u32 = 1_000_000;
/// One hundred percent, in basis points.
pub const BPS_ONE: u128 = 10_000;

// route_cost ≤ 2^64 + 9 × 2^20 × 2^32 < 2^65; base < 2^66; base × (10^4 + 10^5) < 2^83.
const _: () = assert!(
    PRIORITY_MAX < 16 && LATENCY_WEIGHT_MAX < (1 << 20) && OFF_LANE_PENALTY_BPS_MAX < (1 << 17)
);

/// Cost per unit of one route for a job of `priority`.
pub fn route_cost(cost: u64, latency_ms: u32, priority: u32, latency_weight: u32) -> Option<u128> {
    u128::from(priority)
        .checked_mul(u128::from(latency_weight))?
        .checked_mul(u128::from(latency_ms))?
        .checked_add(u128::from(cost))
}

/// Effective price per unit of a provider priced `provider_price` over a
/// lane whose cheapest route costs `lane_cost`.
pub fn unit_price(
    provider_price: u64,
    lane_cost: u128,
    preferred: bool,
    off_lane_penalty_bps: u32,
) -> Option<u128> {
    let base = u128::from(provider_price).checked_add(lane_cost)?;
    if preferred {
        return Some(base);
    }
    let scaled = base.checked_mul(BPS_ONE.checked_add(u128::from(off_lane_penalty_bps))?)?;
    Some(scaled.div_ceil(BPS_ONE))
}

/// How one provider would serve a job: over which lane and route, at what price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneOffer<'a> {
    /// Effective price per unit.
    pub unit_price: u128,
    /// Whether `lane` is the job's preferred lane.
    pub preferred: bool,
    /// The lane.
    pub lane: &'a str,
    /// The cheapest route of that lane.
    pub route: &'a str,
}

impl LaneOffer<'_> {
    /// Order among one provider's lanes: price, then the preferred lane, then lane name.
    pub fn rank(&self, other: &Self) -> Ordering {
        self.unit_price
            .cmp(&other.unit_price)
            .then(other.preferred.cmp(&self.preferred))
            .then(self.lane.cmp(other.lane))
    }
}

/// Order among providers' offers: price, then lower utilization, then id.
pub fn rank_providers(a: (u128, u64, &str), b: (u128, u64, &str)) -> Ordering {
    a.cmp(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_zero_ignores_latency() {
        assert_eq!(route_cost(7, 1000, 0, 5), Some(7));
        assert_eq!(route_cost(7, 10, 3, 2), Some(7 + 3 * 2 * 10));
    }

    #[test]
    fn off_lane_penalty_rounds_up() {
        assert_eq!(unit_price(10, 5, true, 1000), Some(15));
        // 15 × 1.1 = 16.5 → 17
        assert_eq!(unit_price(10, 5, false, 1000), Some(17));
        assert_eq!(unit_price(100, 0, false, 1000), Some(110));
        assert_eq!(unit_price(0, 0, false, 1000), Some(0));
    }

    #[test]
    fn extremes_do_not_overflow() {
        let lane = route_cost(u64::MAX, u32::MAX, PRIORITY_MAX, LATENCY_WEIGHT_MAX).unwrap();
        assert!(unit_price(u64::MAX, lane, false, OFF_LANE_PENALTY_BPS_MAX).is_some());
    }

    #[test]
    fn lane_ties_prefer_the_preferred_lane_then_the_name() {
        let a = LaneOffer {
            unit_price: 10,
            preferred: false,
            lane: "a",
            route: "r1",
        };
        let b = LaneOffer {
            unit_price: 10,
            preferred: true,
            lane: "b",
            route: "r2",
        };
        let c = LaneOffer {
            unit_price: 9,
            preferred: false,
            lane: "c",
            route: "r3",
        };
        assert_eq!(a.rank(&b), Ordering::Greater);
        assert_eq!(c.rank(&b), Ordering::Less);
        let a2 = LaneOffer {
            lane: "a2",
            ..a.clone()
        };
        assert_eq!(a.rank(&a2), Ordering::Less);
    }

    #[test]
    fn provider_ties_go_to_lower_utilization_then_id() {
        assert_eq!(rank_providers((5, 10, "b"), (5, 20, "a")), Ordering::Less);
        assert_eq!(
            rank_providers((5, 10, "b"), (5, 10, "a")),
            Ordering::Greater
        );
        assert_eq!(rank_providers((4, 99, "z"), (5, 0, "a")), Ordering::Less);
    }
}
