"""The autoscaler: growth from utilization, queue, latency and overflow after ``out_after``
checks; shrinking only after ``in_after`` checks and the cooldown; bounds and steps; no flapping
on a load that oscillates around the thresholds; cost: the cheapest tiers grow first, the public
tier only from what the cheaper tiers at their maximum cannot take, the most expensive tier
shrinks first. And :func:`pack`."""

from __future__ import annotations

import itertools
import math

import pytest

from abyssal.core.errors import ConfigError, DataError
from abyssal.deploy.autoscale import Autoscaler, ScaleDecision, TierLoad, pack
from abyssal.deploy.spec import (
    AutoscaleConfig,
    DeploymentConfig,
    Policies,
    ReplicaRange,
    TierConfig,
)


def one_tier(
    low: int = 1, high: int = 8, capacity: float | None = None, **autoscale: object
) -> DeploymentConfig:
    tier = TierConfig(name="private", kind="private", models=["m"],
                      replicas=ReplicaRange(min=low, max=high), price_per_hour=1.0,
                      capacity_rps=capacity)  # fmt: skip
    return DeploymentConfig(tiers=[tier], autoscale=AutoscaleConfig(**autoscale))


def hybrid(**autoscale: object) -> DeploymentConfig:
    """edge (1) -> private (1..3) -> public (0..4), 10 requests a second per replica."""
    tiers = [
        TierConfig(name="edge", kind="edge", models=["m"], replicas=ReplicaRange(1, 1),
                   price_per_hour=0.08, capacity_rps=10.0),
        TierConfig(name="private", kind="private", models=["m"], replicas=ReplicaRange(1, 3),
                   price_per_hour=0.9, capacity_rps=10.0),
        TierConfig(name="public", kind="public", models=["m"], replicas=ReplicaRange(0, 4),
                   price_per_hour=2.1, capacity_rps=10.0),
    ]  # fmt: skip
    return DeploymentConfig(tiers=tiers, autoscale=AutoscaleConfig(**autoscale))


def only(decisions: list[ScaleDecision]) -> ScaleDecision:
    assert len(decisions) == 1, decisions
    return decisions[0]


def test_grows_on_utilization_only_after_out_after_checks() -> None:
    scaler = Autoscaler(one_tier(out_after=2))
    hot = {"private": TierLoad(replicas=2, utilization=0.91)}
    assert scaler.decide(0.0, hot) == []
    d = only(scaler.decide(5.0, hot))
    # HPA: ceil(2 * 0.91 / 0.65) = 3
    assert (d.tier, d.current, d.target) == ("private", 2, 3)
    assert d.reason == "utilization 0.91 > 0.80 for 2 checks"


def test_a_calm_check_resets_the_out_streak() -> None:
    scaler = Autoscaler(one_tier(out_after=2))
    for k in range(10):
        u = 0.91 if k % 2 == 0 else 0.7
        assert scaler.decide(5.0 * k, {"private": TierLoad(replicas=2, utilization=u)}) == []


@pytest.mark.parametrize(
    ("load", "word"),
    [
        (TierLoad(replicas=2, utilization=0.5, queue_per_replica=6.0), "queue 6.0/replica > 4"),
        (TierLoad(replicas=2, utilization=0.5, p99_ms=400.0), "p99 400 ms > 250 ms"),
        (TierLoad(replicas=2, utilization=0.5, overflow_rps=0.4), "overflow 0.40 rps"),
    ],
)
def test_queue_latency_and_overflow_each_add_a_replica(load: TierLoad, word: str) -> None:
    d = only(Autoscaler(one_tier()).decide(0.0, {"private": load}))
    # the estimate (ceil(2 * 0.5 / 0.65) = 2) does not call for more; the signal adds one
    assert (d.current, d.target) == (2, 3)
    assert d.reason.startswith(word) and d.reason.endswith("for 1 check")


def test_a_quiet_tier_is_left_alone() -> None:
    quiet = TierLoad(replicas=2, utilization=0.6, queue_per_replica=1.0, p99_ms=100.0)
    assert Autoscaler(one_tier()).decide(0.0, {"private": quiet}) == []


def test_replicas_starting_are_not_ordered_again() -> None:
    scaler = Autoscaler(one_tier())
    waiting = TierLoad(replicas=2, starting=1, utilization=0.95, queue_per_replica=9.0)
    # ceil(2 * 0.95 / 0.65) = 3 = ready + starting: nothing more until they are ready
    assert scaler.decide(0.0, {"private": waiting}) == []
    # ... unless the estimate asks for more than ready + starting
    rates = Autoscaler(one_tier(capacity=10.0))
    d = only(rates.decide(0.0, {"private": TierLoad(2, 1, 1.0, 9.0, None, 20.0, 25.0)}))
    assert d.target == math.ceil(45.0 / (10.0 * 0.65))  # 7


def test_capacity_sizes_from_arrivals_plus_overflow_and_max_step_caps_it() -> None:
    scaler = Autoscaler(one_tier(capacity=10.0, max_step=2))
    load = TierLoad(replicas=1, utilization=1.0, arrival_rps=10.0, overflow_rps=30.0)
    d = only(scaler.decide(0.0, {"private": load}))
    assert (d.current, d.target) == (1, 3)  # wants ceil(40 / 6.5) = 7, two at a time
    assert "overflow 30.00 rps" in d.reason and "utilization 1.00 > 0.80" in d.reason


def test_bounds() -> None:
    scaler = Autoscaler(one_tier(low=2, high=3, capacity=10.0))
    flood = TierLoad(replicas=3, utilization=1.0, arrival_rps=30.0, overflow_rps=100.0)
    assert scaler.decide(0.0, {"private": flood}) == []  # at max already
    below = only(Autoscaler(one_tier(low=2, high=3)).decide(0.0, {"private": TierLoad(1)}))
    assert (below.target, below.reason) == (2, "below min 2")
    above = only(Autoscaler(one_tier(low=1, high=3)).decide(0.0, {"private": TierLoad(5, 1)}))
    assert (above.current, above.target, above.reason) == (6, 3, "above max 3")
    idle = Autoscaler(one_tier(low=2, high=8, in_after=1, cooldown_s=0.0))
    d = only(idle.decide(0.0, {"private": TierLoad(replicas=6, utilization=0.05)}))
    assert d.target == 2  # ceil(6 * 0.05 / 0.65) = 1, kept at min 2


def test_an_empty_tier_wakes_to_one_when_requests_come() -> None:
    scaler = Autoscaler(one_tier(low=0))
    d = only(scaler.decide(0.0, {"private": TierLoad(replicas=0, arrival_rps=0.5)}))
    assert (d.current, d.target) == (0, 1) and "no replica" in d.reason
    d = only(Autoscaler(one_tier(low=0)).decide(0.0, {"private": TierLoad(0, overflow_rps=2.0)}))
    assert d.target == 1 and "overflow" in d.reason
    assert Autoscaler(one_tier(low=0)).decide(0.0, {"private": TierLoad(replicas=0)}) == []


def test_shrinks_only_after_in_after_checks_and_the_cooldown() -> None:
    scaler = Autoscaler(one_tier(in_after=3, cooldown_s=30.0, every_s=5.0))
    grown = only(scaler.decide(0.0, {"private": TierLoad(replicas=2, utilization=0.95)}))
    assert grown.target == 3
    shrunk_at = []
    for k in range(1, 12):
        now = 5.0 * k
        for d in scaler.decide(now, {"private": TierLoad(replicas=3, utilization=0.1)}):
            shrunk_at.append((now, d.target, d.reason))
    # three low checks by t=15, but the cooldown after the change at t=0 holds it until t=30
    assert shrunk_at == [(30.0, 1, "utilization 0.10 < 0.40 for 6 checks")]


def test_one_busier_check_restarts_the_in_streak() -> None:
    scaler = Autoscaler(one_tier(in_after=3, cooldown_s=0.0))
    loads = [0.1, 0.1, 0.5, 0.1, 0.1, 0.1]
    out = [scaler.decide(5.0 * k, {"private": TierLoad(replicas=4, utilization=u)})
           for k, u in enumerate(loads)]  # fmt: skip
    assert out[:5] == [[], [], [], [], []]
    assert only(out[5]).target == 1  # ceil(4 * 0.1 / 0.65)


def closed_loop(scaler: Autoscaler, rates: list[float], replicas: int, cap: float) -> list[int]:
    """Each check sees utilization rate / (replicas * cap); decisions apply at once."""
    history = []
    for k, rate in enumerate(rates):
        u = min(1.0, rate / (replicas * cap))
        for d in scaler.decide(5.0 * k, {"private": TierLoad(replicas=replicas, utilization=u)}):
            replicas = d.target
        history.append(replicas)
    return history


def test_no_flapping_on_a_load_oscillating_around_the_thresholds() -> None:
    # around scale_out_above at 2 replicas (utilization 0.75 / 0.85): one step out, then calm
    up = closed_loop(Autoscaler(one_tier(cooldown_s=0.0, in_after=2)), [15, 17] * 50, 2, 10)
    assert up[0] == 2 and set(up[1:]) == {3}
    # around scale_in_below at 2 replicas (0.35 / 0.45): never shrinks
    down = closed_loop(Autoscaler(one_tier(cooldown_s=0.0, in_after=2)), [7, 9] * 50, 2, 10)
    assert set(down) == {2}
    # a slow swing across both thresholds: changes go one way at a time, no back and forth
    swing = [20 + 12 * math.sin(k / 15) for k in range(300)]
    history = closed_loop(Autoscaler(one_tier(cooldown_s=30.0)), swing, 3, 10)
    changes = [b - a for a, b in itertools.pairwise(history) if b != a]
    reversals = sum(1 for a, b in itertools.pairwise(changes) if (a > 0) != (b > 0))
    assert 0 < len(changes) <= 12 and reversals <= 6, changes


def test_cheaper_tiers_grow_first_and_public_only_from_what_they_cannot_take() -> None:
    scaler = Autoscaler(hybrid())
    # private (2 of 3) overflows, and so does the edge; public sees the overflow too
    loads = {
        "edge": TierLoad(1, 0, 1.0, 3.0, 300.0, 10.0, 20.0),
        "private": TierLoad(2, 0, 1.0, 5.0, 300.0, 20.0, 10.0),
        "public": TierLoad(0, 0, None, 0.0, None, 0.0, 10.0),
    }
    d = only(scaler.decide(0.0, loads))
    assert (d.tier, d.current, d.target) == ("private", 2, 3)
    # private at its max but its new replica is not ready: public still waits
    loads["private"] = TierLoad(2, 1, 1.0, 5.0, 300.0, 20.0, 10.0)
    assert scaler.decide(5.0, loads) == []
    # private at its max, all ready, still overflowing: public grows from that overflow
    loads["private"] = TierLoad(3, 0, 1.0, 5.0, 300.0, 30.0, 6.0)
    loads["public"] = TierLoad(0, 0, None, 0.0, None, 0.0, 6.0)
    d = only(scaler.decide(10.0, loads))
    assert (d.tier, d.current, d.target) == ("public", 0, 1)  # ceil(6 / 6.5)


def test_the_most_expensive_tier_shrinks_first() -> None:
    scaler = Autoscaler(hybrid(in_after=1, cooldown_s=0.0, max_step=1))
    replicas = {"edge": 1, "private": 3, "public": 2}
    order = []
    for k in range(10):
        loads = {n: TierLoad(replicas=r, utilization=0.05, arrival_rps=0.5 * r)
                 for n, r in replicas.items()}  # fmt: skip
        loads["public"] = TierLoad(replicas=replicas["public"], utilization=0.0)
        for d in scaler.decide(5.0 * k, loads):
            replicas[d.tier] = d.target
            order.append((d.tier, d.target))
    assert order == [("public", 1), ("public", 0), ("private", 2), ("private", 1)]


@pytest.mark.parametrize(
    "public",
    [
        TierLoad(replicas=2, utilization=0.7, arrival_rps=14.0),  # busy
        TierLoad(replicas=1, utilization=0.1, arrival_rps=1.0),  # idle, but needs its one
    ],
)
def test_an_expensive_tier_that_will_not_shrink_does_not_hold_a_cheaper_one(
    public: TierLoad,
) -> None:
    scaler = Autoscaler(hybrid(in_after=1, cooldown_s=0.0))
    loads = {"private": TierLoad(replicas=3, utilization=0.1, arrival_rps=3.0), "public": public}
    d = only(scaler.decide(0.0, loads))
    assert (d.tier, d.target) == ("private", 1)


def test_the_overflow_tier_keeps_its_replicas_while_the_cheaper_tier_is_full() -> None:
    idle_public = TierLoad(replicas=3, utilization=0.0)
    for busy, shrinks in ((0.9, False), (0.7, False), (0.5, True)):
        scaler = Autoscaler(hybrid(in_after=2, cooldown_s=0.0))
        loads = {
            "edge": TierLoad(1, utilization=0.95),
            "private": TierLoad(replicas=3, utilization=busy, arrival_rps=30.0 * busy),
            "public": idle_public,
        }
        decided = [scaler.decide(t, loads) for t in (0.0, 5.0)]
        assert decided[0] == []
        if shrinks:  # private under the target (0.65): it can take the public tier's load back
            d = only(decided[1])
            assert (d.tier, d.target) == ("public", 0)
        else:
            assert decided[1] == [], busy
    # private not at its max: it can grow, so the public tier shrinks
    scaler = Autoscaler(hybrid(in_after=1, cooldown_s=0.0))
    loads = {"private": TierLoad(2, utilization=0.9, arrival_rps=18.0), "public": idle_public}
    assert ("public", 0) in [(d.tier, d.target) for d in scaler.decide(0.0, loads)]
    # the edge (max 1) full holds the private tier, not the public one while private has room
    scaler = Autoscaler(hybrid(in_after=1, cooldown_s=0.0))
    loads = {
        "edge": TierLoad(1, utilization=0.9),
        "private": TierLoad(3, utilization=0.3, arrival_rps=9.0),
        "public": idle_public,
    }
    assert scaler.decide(0.0, loads) == [
        ScaleDecision("public", 3, 0, "utilization 0.00 < 0.40 for 1 check")
    ]


def test_unknown_tier_bad_values_and_disabled() -> None:
    with pytest.raises(ConfigError, match=r"unknown tiers \['gpu'\]"):
        Autoscaler(one_tier()).decide(0.0, {"gpu": TierLoad(1)})
    with pytest.raises(ConfigError, match="arrival_rps"):
        Autoscaler(one_tier()).decide(0.0, {"private": TierLoad(1, arrival_rps=float("nan"))})
    off = Autoscaler(one_tier(enabled=False))
    assert off.decide(0.0, {"private": TierLoad(replicas=1, utilization=1.0)}) == []


def test_objective_comes_from_the_policies() -> None:
    cfg = one_tier()
    cfg.policies = Policies(objective_p99_ms=500.0)
    assert (
        Autoscaler(cfg).decide(0.0, {"private": TierLoad(2, utilization=0.5, p99_ms=400.0)}) == []
    )


def test_pack_first_fit_decreasing() -> None:
    assert pack({"a": 0.6, "b": 0.5, "c": 0.4, "d": 0.3}) == [["a", "c"], ["b", "d"]]
    assert pack({"big": 1.7, "x": 0.2, "y": 0.2}) == [["big"], ["x", "y"]]
    assert pack({"a": 0.3, "b": 0.3, "c": 0.3}, capacity=0.65) == [["a", "b"], ["c"]]
    assert pack({"a": 0.5, "b": 0.5}) == [["a", "b"]]  # exactly full fits
    assert pack({}) == []


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "0.3", None])
def test_pack_refuses_a_bad_load_by_name(bad: object) -> None:
    with pytest.raises(DataError, match="model 'fraud'"):
        pack({"text": 0.2, "fraud": bad})  # type: ignore[dict-item]


def test_pack_refuses_a_bad_capacity() -> None:
    with pytest.raises(ConfigError, match="capacity"):
        pack({"a": 0.1}, capacity=0.0)


def test_an_idle_tier_goes_down_to_its_minimum_despite_background_cpu() -> None:
    """A live replica with no requests still reads a little CPU (health checks): with nothing
    arriving, the public tier (min 0) empties and private returns to its minimum."""
    scaler = Autoscaler(hybrid(in_after=2, cooldown_s=0.0))
    idle = {
        "edge": TierLoad(replicas=1, utilization=0.004),
        "private": TierLoad(replicas=2, utilization=0.003),
        "public": TierLoad(replicas=1, utilization=0.003),
    }
    targets = {}
    for k in range(8):
        for d in scaler.decide(float(k), idle):
            targets[d.tier] = d.target
            idle[d.tier] = TierLoad(replicas=d.target, utilization=0.003)
    assert targets == {"public": 0, "private": 1}
    # a little CPU with requests still arriving is not idle: one replica stays
    busy = Autoscaler(one_tier(low=0, in_after=1, cooldown_s=0.0))
    load = {"private": TierLoad(replicas=1, utilization=0.01, arrival_rps=0.5)}
    assert all(busy.decide(float(k), load) == [] for k in range(5))
