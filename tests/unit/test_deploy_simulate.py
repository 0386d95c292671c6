"""The simulator on small traces (seconds each): a constant load below capacity meets the
objective; a burst scales out and back in; sensitive requests never reach the public tier even
under overload; static-for-peak costs more than autoscaling over a day; cost is billed
replica-hours x price, checked by hand. And the service profile."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from abyssal.core.errors import ConfigError, DataError
from abyssal.deploy.profile import ServiceProfile, measure_service
from abyssal.deploy.simulate import simulate, static_for_peak
from abyssal.deploy.spec import (
    AutoscaleConfig,
    DeploymentConfig,
    Policies,
    ReplicaRange,
    TierConfig,
)
from abyssal.deploy.trace import Trace, diurnal


def one_tier(
    low: int, high: int, start: int | None = None, **autoscale: object
) -> DeploymentConfig:
    tier = TierConfig(name="private", kind="private", models=["m"], price_per_hour=0.9,
                      replicas=ReplicaRange(low, high, start), capacity_rps=50.0, startup_s=5.0,
                      max_inflight=16)  # fmt: skip
    return DeploymentConfig(tiers=[tier], autoscale=AutoscaleConfig(**autoscale))


def hybrid(capacity: float, objective_ms: float = 250.0, **autoscale: object) -> DeploymentConfig:
    """Like deployments/tabular.yaml: edge (1) -> private (1..3) -> public (0..4)."""
    tiers = [
        TierConfig(name="edge", kind="edge", models=["m"], replicas=ReplicaRange(1, 1),
                   price_per_hour=0.08, max_inflight=8, capacity_rps=capacity),
        TierConfig(name="private", kind="private", models=["m"], replicas=ReplicaRange(1, 3),
                   price_per_hour=0.9, max_inflight=16, capacity_rps=capacity),
        TierConfig(name="public", kind="public", models=["m"], replicas=ReplicaRange(0, 4),
                   price_per_hour=2.1, max_inflight=16, capacity_rps=capacity),
    ]  # fmt: skip
    return DeploymentConfig(
        tiers=tiers,
        policies=Policies(objective_p99_ms=objective_ms),
        autoscale=AutoscaleConfig(**autoscale),
    )


def constant(rps: float, minutes: int, share: float = 0.0) -> Trace:
    return Trace(60.0, np.full(minutes, float(rps)), share, "constant")


def test_a_constant_load_below_capacity_meets_the_objective() -> None:
    profile = ServiceProfile.synthetic(50.0, cv=0.5)
    result = simulate(one_tier(2, 2), constant(40, 10), profile, autoscale=False)
    assert result.requests == pytest.approx(24000, rel=0.03)
    assert result.answered == result.requests and result.refused == 0
    assert result.utilization == pytest.approx(0.4, abs=0.03)  # 40 rps on 2 x 50
    assert result.utilization_billed == pytest.approx(result.utilization)
    assert result.violation_share < 0.002 and result.window_violation_share == 0.0
    assert 20.0 < result.p50_ms < result.p99_ms < 250.0
    assert result.requests_per_tier == {"private": result.requests}
    assert result.timeline is not None
    assert result.timeline.replicas["private"].tolist() == [2.0] * 10
    assert np.allclose(result.timeline.utilization, 0.4, atol=0.06)


def test_a_burst_scales_out_and_back_in() -> None:
    cfg = one_tier(1, 6, every_s=5.0, in_after=3, cooldown_s=30.0)
    trace = Trace(60.0, np.array([20.0] * 3 + [150.0] * 4 + [20.0] * 8))
    result = simulate(cfg, trace, ServiceProfile.synthetic(50.0), autoscale=True)
    assert result.timeline is not None
    replicas = result.timeline.replicas["private"]
    assert replicas[:2].tolist() == [1.0, 1.0]
    assert replicas[4:7].min() >= 5.0  # 150 / (50 x 0.65) = 4.6 -> 5
    assert replicas[-1] == 1.0
    grew = [d for d in result.decisions if d["target"] > d["current"]]
    shrank = [d for d in result.decisions if d["target"] < d["current"]]
    assert grew and shrank and max(d["time_s"] for d in grew) < min(d["time_s"] for d in shrank)
    assert all(d["time_s"] >= 420 for d in shrank)  # none during the burst
    assert result.refused < 0.02 * result.requests
    # while the new replicas start, requests wait; after, the objective holds
    late = result.timeline.p99_ms[5:]
    assert (late < 250.0).all(), late
    assert result.replicas_started["private"] >= 4


@pytest.mark.parametrize("autoscale", [True, False])
def test_sensitive_requests_never_reach_the_public_tier_even_overloaded(autoscale: bool) -> None:
    cfg = hybrid(capacity=10.0, every_s=5.0)
    trace = constant(90, 4, share=0.6)  # 54 sensitive rps; edge + private carry 40 at most
    static = None if autoscale else {"edge": 1, "private": 1, "public": 4}
    result = simulate(cfg, trace, ServiceProfile.synthetic(10.0), autoscale=autoscale,
                      static_replicas=static)  # fmt: skip
    assert result.sensitive_requests > 5000
    assert result.sensitive_on_untrusted == 0
    assert result.requests_per_tier["public"] > 1000  # the others did go there
    assert result.refused > 1000  # the sensitive overload waited, then was refused
    assert result.answered + result.refused == result.requests
    assert sum(result.requests_per_tier.values()) == result.answered


def test_static_for_peak_costs_more_than_autoscaling_over_a_day() -> None:
    cfg = hybrid(capacity=2.5, objective_ms=4000.0)
    day = diurnal(step_s=300, base_rps=0.3, peak_rps=10.0, noise=0.05, seed=3)
    profile = ServiceProfile.synthetic(2.5)
    peak = static_for_peak(cfg, day, profile)
    assert peak == {"edge": 1, "private": 3, "public": 3}  # ceil(10.x / 1.625) = 7
    static = simulate(cfg, day, profile, autoscale=False, static_replicas=peak)
    auto = simulate(cfg, day, profile, autoscale=True)
    assert static.requests == auto.requests  # one seed: the same arrivals
    assert auto.cost < 0.6 * static.cost
    assert auto.cost_per_1k < 0.6 * static.cost_per_1k
    assert auto.utilization > static.utilization + 0.15
    assert static.refused == 0 and auto.refused < 0.001 * auto.requests
    assert auto.violation_share < 0.1
    assert auto.replica_hours["public"] < static.replica_hours["public"] / 4


def test_cost_is_replica_hours_times_price() -> None:
    cfg = hybrid(capacity=10.0)
    hour = constant(1, 60)
    result = simulate(cfg, hour, ServiceProfile.synthetic(10.0), autoscale=False,
                      static_replicas={"edge": 1, "private": 2, "public": 0})  # fmt: skip
    assert result.replica_hours == {"edge": 1.0, "private": 2.0, "public": 0.0}
    assert result.cost == pytest.approx(0.08 + 2 * 0.9, abs=1e-12)
    assert result.cost_per_tier == pytest.approx({"edge": 0.08, "private": 1.8, "public": 0.0})
    assert result.cost_per_1k == pytest.approx(result.cost / result.answered * 1000)


def test_cost_of_replicas_removed_by_the_autoscaler() -> None:
    # three replicas at start, nothing arrives: one goes at t=10, another at t=20
    cfg = one_tier(1, 3, start=3, every_s=10.0, in_after=1, cooldown_s=0.0, max_step=1)
    result = simulate(cfg, constant(0, 60), ServiceProfile.synthetic(50.0), autoscale=True)
    assert result.requests == 0
    assert [(d["time_s"], d["target"]) for d in result.decisions] == [(10.0, 2), (20.0, 1)]
    assert result.replica_hours["private"] == pytest.approx((3600 + 10 + 20) / 3600, abs=1e-12)
    assert result.cost == pytest.approx(0.9 * 3630 / 3600, abs=1e-12)


def test_a_woken_replica_is_billed_from_its_start_not_from_ready() -> None:
    # no replica at first: the tick at t=10 wakes one (ready at 15); the load stops at t=60,
    # so the tick at t=70 removes it: billed 60 s, though it served for 55
    cfg = one_tier(0, 1, every_s=10.0, in_after=1, cooldown_s=0.0)
    trace = Trace(60.0, np.array([2.0, 0.0]))
    result = simulate(cfg, trace, ServiceProfile.synthetic(50.0), autoscale=True)
    assert [(d["time_s"], d["target"]) for d in result.decisions] == [(10.0, 1), (70.0, 0)]
    assert result.replica_hours["private"] == pytest.approx(60 / 3600, abs=1e-12)
    assert result.cost == pytest.approx(0.9 * 60 / 3600, abs=1e-12)
    assert result.utilization_billed < result.utilization  # 5 s billed while starting
    assert result.refused > 0  # what arrived before the replica was ready waited 2 s at most


def test_a_replica_never_has_more_than_max_inflight() -> None:
    cfg = hybrid(capacity=10.0)
    cfg.tier("edge").max_inflight = 1
    cfg.tier("private").capacity_rps = 100.0
    # near-constant 100 ms at the edge: with one in flight, no edge answer ever waits
    profile = ServiceProfile.synthetic(10.0, cv=0.01)
    result = simulate(cfg, constant(30, 2), profile, autoscale=False,
                      static_replicas={"edge": 1, "private": 1, "public": 0})  # fmt: skip
    assert result.requests_per_tier["edge"] > 500 and result.requests_per_tier["private"] > 500
    assert result.p99_ms_by_tier["edge"] < 105.0
    assert result.over_objective_by_tier == {"edge": 0.0, "private": 0.0, "public": 0.0}


def test_static_for_peak_fills_trusted_tiers_first() -> None:
    cfg = hybrid(capacity=10.0)  # 6.5 rps per replica at the target
    profile = ServiceProfile.synthetic(10.0)
    assert static_for_peak(cfg, constant(50, 2), profile) == {"edge": 1, "private": 3, "public": 4}
    assert static_for_peak(cfg, constant(20, 2), profile) == {"edge": 1, "private": 3, "public": 0}
    assert static_for_peak(cfg, constant(5, 2), profile) == {"edge": 1, "private": 1, "public": 0}


def test_a_tier_over_the_objective_is_passed_over_when_overflow_on_latency() -> None:
    cfg = hybrid(capacity=50.0)
    cfg.tier("edge").capacity_rps = 2.0  # 500 ms a request: always over 250 ms
    static = {"edge": 1, "private": 2, "public": 0}
    profile = ServiceProfile.synthetic(50.0)
    on = simulate(cfg, constant(20, 5), profile, autoscale=False, static_replicas=static)
    cfg.policies.overflow_on_latency = False
    off = simulate(cfg, constant(20, 5), profile, autoscale=False, static_replicas=static)
    # off: the edge takes requests until 8 are in flight (about 4 s each)
    assert off.requests_per_tier["edge"] > 500 and off.violation_share > 0.1
    # on: passed over while 10 answers or more of the last 10 s show a p99 over the objective;
    # tried again once its window has emptied (as the router does), so it still takes some
    assert 0 < on.requests_per_tier["edge"] < 0.7 * off.requests_per_tier["edge"]
    assert on.violation_share < 0.7 * off.violation_share


def test_no_overflow_keeps_requests_on_the_first_tier() -> None:
    cfg = hybrid(capacity=10.0)
    cfg.policies.overflow = False
    result = simulate(cfg, constant(5, 2), ServiceProfile.synthetic(10.0), autoscale=False,
                      static_replicas={"edge": 1, "private": 1, "public": 1})  # fmt: skip
    assert result.requests_per_tier["edge"] == result.answered > 0
    assert result.requests_per_tier["private"] == result.requests_per_tier["public"] == 0


def test_runs_are_seeded_and_the_result_is_json() -> None:
    cfg = hybrid(capacity=10.0)
    trace = constant(8, 5, share=0.3)
    profile = ServiceProfile.synthetic(10.0)
    a = simulate(cfg, trace, profile, autoscale=True, seed=4)
    b = simulate(cfg, trace, profile, autoscale=True, seed=4)
    c = simulate(cfg, trace, profile, autoscale=True, seed=5)
    assert a.to_dict() == b.to_dict() and a.requests != c.requests
    record = json.loads(json.dumps(a.to_dict()))
    assert record["label"] == "autoscaled" and len(record["timeline"]["time_s"]) == 5
    assert set(record["timeline"]["replicas"]) == {"edge", "private", "public"}


def test_bad_arguments_are_named() -> None:
    cfg = hybrid(capacity=10.0)
    profile = ServiceProfile.synthetic(10.0)
    with pytest.raises(ConfigError, match="static_replicas is for autoscale=False"):
        simulate(cfg, constant(1, 1), profile, autoscale=True, static_replicas={"edge": 1})
    with pytest.raises(ConfigError, match=r"names \['gpu'\]"):
        simulate(cfg, constant(1, 1), profile, autoscale=False, static_replicas={"gpu": 1})
    with pytest.raises(ConfigError, match="no tier serves 'other'"):
        simulate(cfg, constant(1, 1), profile, autoscale=False, model="other")


def test_profile_round_trip_and_errors(tmp_path) -> None:
    profile = ServiceProfile.synthetic(40.0, cv=0.3, startup_s=2.5, model="m:1")
    assert profile.mean_service_ms == pytest.approx(25.0)
    assert profile.service_seconds(20.0).mean() == pytest.approx(0.05)
    back = ServiceProfile.load(profile.save(tmp_path / "profile.json"))
    assert back.capacity_rps == 40.0 and back.startup_s == 2.5 and back.model == "m:1"
    assert np.allclose(back.service_ms, profile.service_ms, atol=1e-6)
    with pytest.raises(DataError, match="no 'service_ms' field"):
        ServiceProfile.from_json('{"capacity_rps": 3}')
    with pytest.raises(DataError, match=r"unknown fields \['speed'\]"):
        ServiceProfile.from_json('{"capacity_rps": 3, "service_ms": [1], "speed": 2}')
    with pytest.raises(DataError, match="capacity_rps must be > 0"):
        ServiceProfile.from_json('{"capacity_rps": 0, "service_ms": [1]}')
    with pytest.raises(DataError, match="not JSON"):
        ServiceProfile.from_json("{")


def test_measure_service_reports_what_it_measured_and_refuses_errors() -> None:
    seen = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"model": "m:7", "predictions": [1]})

    profile = measure_service("http://replica:1", "m", {"x": 1}, seconds=0.3, concurrency=4,
                              warmup_s=0.0, startup_s=3.0,
                              transport=httpx.MockTransport(answer))  # fmt: skip
    assert profile.model == "m:7" and profile.startup_s == 3.0
    assert seen[0] == {"x": 1}
    n = profile.measured_on["requests_saturated"]
    assert profile.capacity_rps == pytest.approx(n / 0.3, rel=0.2)
    assert profile.mean_service_ms == pytest.approx(1000.0 / profile.capacity_rps)
    assert "concurrency 1" in profile.method and profile.measured_on["concurrency"] == 4
    refuse = httpx.MockTransport(lambda r: httpx.Response(422, json={"detail": "no x"}))
    with pytest.raises(DataError, match="answered 422"):
        measure_service("http://replica:1", "m", {}, seconds=0.2, transport=refuse)
