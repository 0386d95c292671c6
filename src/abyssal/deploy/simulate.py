"""A discrete-event simulation of a deployment under a load trace, request by request: what an
allocation of replicas (static, or moved by the :class:`~abyssal.deploy.autoscale.Autoscaler`)
costs, how busy it keeps its replicas and what latency it gives.

The model:

- **Arrivals.** In each step of the :class:`~abyssal.deploy.trace.Trace`, a Poisson number of
  requests (mean rate x step) at uniform times; each is sensitive with the step's share. All of
  one model (the profile's, or ``model=``); tiers that do not serve it are left out (not billed).
- **Replicas.** Each replica is one FIFO server; a request's service time is drawn from the
  :class:`~abyssal.deploy.profile.ServiceProfile` samples, rescaled to the tier's
  ``capacity_rps`` where the tier sets one (otherwise the profile's). A request's latency is
  its finish minus its arrival (router wait + queue + service).
- **Router.** The rules of the router (:meth:`abyssal.deploy.pool.Pool.choose`): of the tiers
  ``cfg.tiers_for(model, sensitive=...)`` allows, those with a ready replica, in routing order
  (only the first of them when ``policies.overflow`` is off); the request goes to the first
  with a replica whose requests in flight are below ``max_inflight``, to its least loaded
  replica (fewest in flight; the first on ties). With ``overflow_on_latency``, a tier whose p99
  over the answers of the last 10 s (at least 10) is over ``objective_p99_ms`` is passed over
  first, unless it is the last, and used only when no later tier has room. Each allowed tier
  passed over (saturated, over the objective, or without a ready replica, so that an empty
  tier wakes) counts one overflow; when the request waits, every allowed tier does. When every
  tier it may use is saturated, the request waits in the router's queue (FIFO; one queue for
  sensitive requests, one for the others) for the first slot a tier it may use frees, and is
  refused after ``policies.wait_s``. A sensitive request is never sent to an untrusted tier:
  it waits instead. Retries and health checks are not simulated (replicas do not fail).
- **Scaling.** With ``autoscale=True`` the same :class:`~abyssal.deploy.autoscale.Autoscaler`
  the router uses is called every ``autoscale.every_s`` seconds with each tier's
  :class:`~abyssal.deploy.autoscale.TierLoad` measured here over the interval (ready and
  starting replicas, busy share, requests waiting per ready replica and in the router's queue
  for it, p99 of the requests sent there in the interval (unknown under 10), arrival and
  overflow rates). A new replica is billed at once and serves after its
  tier's ``startup_s``; a removed one is a starting one first (newest first), else the ready one
  with the fewest in flight, which takes no new request and is billed until its last finishes.
- **Billing.** Each replica costs ``price_per_hour`` from its start to its stop; billing ends
  with the trace.

The run is seeded: allocations compared with one seed see the same arrivals and service draws.
It costs about 4 µs of CPU per request: a day of four million requests takes 15-20 s on one
core of a 2-core AMD EPYC.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from abyssal.core.errors import ConfigError
from abyssal.deploy.autoscale import Autoscaler, TierLoad
from abyssal.deploy.profile import ServiceProfile
from abyssal.deploy.spec import DeploymentConfig, TierConfig
from abyssal.deploy.trace import Trace

WINDOW_S = 60.0
"""The window of the windowed objective (share of 1-minute windows whose p99 is over it)."""

LATENCY_WINDOW_S = 10.0
"""The router's latency window: a tier's p99 is over its answers of the last this many seconds
(at least 10 answers), as in :mod:`abyssal.deploy.pool`."""

_INF = math.inf


@dataclass
class Timeline:
    """Step by step (the trace's steps), for charts.

    Attributes:
        time_s: each step's start.
        rate_rps: the trace's rate.
        arrivals_rps: requests that arrived in the step, a second.
        replicas: billed replicas (ready + starting + draining) per tier, averaged over the step.
        ready: ready replicas per tier, averaged over the step.
        utilization: busy share of the ready replicas of all tiers in the step (NaN: none ready).
        p99_ms: the p99 latency of the step's requests (refused ones count as infinite; NaN: no
            request).
    """

    time_s: np.ndarray
    rate_rps: np.ndarray
    arrivals_rps: np.ndarray
    replicas: dict[str, np.ndarray]
    ready: dict[str, np.ndarray]
    utilization: np.ndarray
    p99_ms: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        def plain(a: np.ndarray) -> list[float | None]:
            return [None if not math.isfinite(v) else round(float(v), 4) for v in a]

        return {
            "time_s": plain(self.time_s),
            "rate_rps": plain(self.rate_rps),
            "arrivals_rps": plain(self.arrivals_rps),
            "replicas": {k: plain(v) for k, v in self.replicas.items()},
            "ready": {k: plain(v) for k, v in self.ready.items()},
            "utilization": plain(self.utilization),
            "p99_ms": plain(self.p99_ms),
        }


@dataclass
class SimResult:
    """What one allocation did over a trace.

    Attributes:
        label: ``autoscaled`` or ``static``.
        autoscaled: whether the autoscaler moved the replicas.
        static_replicas: the fixed replicas per tier (static runs).
        model: the model simulated.
        duration_s: the trace's length.
        requests: requests that arrived.
        answered: requests answered.
        refused: requests refused after waiting ``policies.wait_s`` in the router.
        utilization: busy replica-seconds / billed replica-seconds while ready.
        utilization_billed: busy replica-seconds / all billed replica-seconds (starting and
            draining included).
        p50_ms, p99_ms, mean_ms: latency of answered requests.
        objective_ms: ``policies.objective_p99_ms``.
        violation_share: share of requests over the objective (refused ones included).
        window_violation_share: share of 1-minute windows (with requests) whose p99 (nearest
            rank, refused requests counted as infinite) is over the objective.
        cost: replica-hours x price, summed over tiers.
        cost_per_1k: cost per 1,000 answered requests.
        requests_per_tier: answered requests by tier.
        p99_ms_by_tier: p99 latency of each tier's answers (NaN: none).
        over_objective_by_tier: share of each tier's answers over the objective.
        sensitive_requests: sensitive requests that arrived.
        sensitive_on_untrusted: sensitive requests answered by an untrusted tier (must be 0).
        replica_hours: billed replica-hours by tier.
        cost_per_tier: cost by tier.
        replicas_started: replicas started after time 0, by tier.
        decisions: the autoscaler's decisions (time, tier, current, target, reason).
        timeline: step by step.
    """

    label: str
    autoscaled: bool
    static_replicas: dict[str, int] | None
    model: str
    duration_s: float
    requests: int
    answered: int
    refused: int
    utilization: float
    utilization_billed: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    objective_ms: float
    violation_share: float
    window_violation_share: float
    cost: float
    cost_per_1k: float
    requests_per_tier: dict[str, int]
    p99_ms_by_tier: dict[str, float]
    over_objective_by_tier: dict[str, float]
    sensitive_requests: int
    sensitive_on_untrusted: int
    replica_hours: dict[str, float]
    cost_per_tier: dict[str, float]
    replicas_started: dict[str, int]
    decisions: list[dict[str, Any]] = field(default_factory=list)
    timeline: Timeline | None = None

    def to_dict(self, timeline: bool = True) -> dict[str, Any]:
        """A JSON-able record (NaN as ``None``)."""
        out = {k: v for k, v in asdict(self).items() if k != "timeline"}
        for k, v in out.items():
            if isinstance(v, float) and not math.isfinite(v):
                out[k] = None
            elif isinstance(v, dict):
                out[k] = {
                    name: None if isinstance(x, float) and not math.isfinite(x) else x
                    for name, x in v.items()
                }
        if timeline and self.timeline is not None:
            out["timeline"] = self.timeline.to_dict()
        return out


# -- the engine ------------------------------------------------------------------------------


class _Replica:
    __slots__ = ("busy", "cancelled", "finishes", "free_at", "ready_at", "start", "stop")

    def __init__(self, start: float, ready_at: float) -> None:
        self.start = start
        self.ready_at = ready_at
        self.stop: float | None = None
        self.free_at = start
        self.finishes: deque[float] = deque()
        self.busy = 0.0
        self.cancelled = False


class _Tier:
    """One tier's replicas and counters during a run."""

    def __init__(self, cfg: TierConfig, index: int, factor: float) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.index = index
        self.factor = factor  # service-time multiplier (profile capacity / tier capacity)
        self.max_inflight = cfg.max_inflight
        self.ready: list[_Replica] = []
        self.starting: list[_Replica] = []
        self.records: list[_Replica] = []
        self.assigned = 0.0  # service seconds given to its replicas
        self.ready_s = 0.0  # integral of ready (and draining) replicas
        self.billed_s = 0.0  # integral of billed replicas
        self.last_t = 0.0
        self.interval_count = 0
        self.interval_overflow = 0
        self.interval_lat: list[float] = []
        # answers not yet returned (finish times), and those of the last LATENCY_WINDOW_S, split
        # by whether they were over the objective: the router's p99 test is a count test
        self.pending_over: list[float] = []
        self.pending_ok: list[float] = []
        self.window_over: deque[float] = deque()
        self.window_ok: deque[float] = deque()
        self.mark_busy = 0.0
        self.mark_ready_s = 0.0
        self.step_busy = 0.0
        self.step_ready_s = 0.0
        self.step_billed_s = 0.0
        self.started_later = 0

    def advance(self, t: float) -> None:
        dt = t - self.last_t
        if dt > 0:
            n = len(self.ready)
            self.ready_s += dt * n
            self.billed_s += dt * (n + len(self.starting))
            self.last_t = t

    def late(self, t: float, objective_s: float) -> bool:
        """Whether the router sees the tier over the objective at ``t``: the nearest-rank p99
        of the answers returned in the last :data:`LATENCY_WINDOW_S` (at least 10) is over it,
        i.e. at least ``n - ceil(0.99 n) + 1`` of the ``n`` were."""
        over, ok = self.pending_over, self.pending_ok
        w_over, w_ok = self.window_over, self.window_ok
        while over and over[0] <= t:
            w_over.append(heapq.heappop(over))
        while ok and ok[0] <= t:
            w_ok.append(heapq.heappop(ok))
        low = t - LATENCY_WINDOW_S
        while w_over and w_over[0] < low:
            w_over.popleft()
        while w_ok and w_ok[0] < low:
            w_ok.popleft()
        n = len(w_over) + len(w_ok)
        return n >= 10 and len(w_over) >= n - math.ceil(0.99 * n) + 1

    def busy_done(self, t: float) -> float:
        """Service seconds done by ``t`` (FIFO servers are work-conserving: what is left on a
        replica at ``t`` is ``free_at - t``)."""
        left = 0.0
        for r in self.ready:
            if r.free_at > t:
                left += r.free_at - t
        return self.assigned - left


def static_for_peak(
    cfg: DeploymentConfig, trace: Trace, profile: ServiceProfile, *, model: str | None = None
) -> dict[str, int]:
    """The replicas an operator provisions for the trace's peak, all day.

    The peak step's rate is carried at ``autoscale.target_utilization`` of each replica's
    capacity (the tier's ``capacity_rps``, else the profile's): trusted tiers first, in routing
    order, each up to its ``max``; what they cannot carry goes to the untrusted tiers in routing
    order (up to their ``max``). Every tier gets at least its ``min``. Only tiers serving the
    simulated model are listed.
    """
    name = _model_of(cfg, profile, model)
    tiers = [t for t in cfg.ordered if name in t.model_names]
    target = cfg.autoscale.target_utilization
    left = trace.peak_rps
    out = {t.name: t.replicas.min for t in tiers}
    for tier in [t for t in tiers if t.trusted] + [t for t in tiers if not t.trusted]:
        per = (tier.capacity_rps or profile.capacity_rps) * target
        n = min(tier.replicas.max, max(tier.replicas.min, math.ceil(left / per - 1e-9)))
        out[tier.name] = n
        left = max(0.0, left - n * per)
    return out


def _model_of(cfg: DeploymentConfig, profile: ServiceProfile, model: str | None) -> str:
    if model is None:
        ref = profile.model.split(":", 1)[0] if profile.model else ""
        if ref in cfg.model_names:
            model = ref
        elif len(cfg.model_names) == 1:
            model = cfg.model_names[0]
        else:
            raise ConfigError(
                f"simulate: which model? the deployment serves {cfg.model_names}; pass model="
            )
    if model not in cfg.model_names:
        raise ConfigError(f"simulate: no tier serves {model!r}; models: {cfg.model_names}")
    return model


def simulate(
    cfg: DeploymentConfig,
    trace: Trace,
    profile: ServiceProfile,
    *,
    autoscale: bool,
    static_replicas: Mapping[str, int] | None = None,
    seed: int = 0,
    model: str | None = None,
    label: str | None = None,
) -> SimResult:
    """Simulate ``trace`` on the deployment (see the module's docstring for the model).

    Args:
        cfg: the deployment.
        trace: the load.
        profile: one replica's service profile.
        autoscale: move replicas with the autoscaler (from each tier's initial replicas);
            ``False``: a static allocation.
        static_replicas: the static allocation's replicas per tier (default: each tier's
            initial replicas); only with ``autoscale=False``.
        seed: arrivals, sensitivity and service draws.
        model: the model simulated (default: the profile's, or the deployment's only one).
        label: the result's label (default ``autoscaled`` or ``static``).

    Raises:
        ConfigError: ``static_replicas`` with ``autoscale``, an unknown tier or a negative
            count in it, or no model to simulate.
    """
    name = _model_of(cfg, profile, model)
    served = [t for t in cfg.ordered if name in t.model_names]
    if static_replicas is not None:
        if autoscale:
            raise ConfigError("simulate: static_replicas is for autoscale=False")
        unknown = sorted(set(static_replicas) - {t.name for t in served})
        if unknown:
            raise ConfigError(
                f"simulate: static_replicas names {unknown}, not tiers serving {name!r} "
                f"({[t.name for t in served]})"
            )
        negative = {k: v for k, v in static_replicas.items() if v < 0}
        if negative:
            raise ConfigError(f"simulate: static_replicas must be >= 0, got {negative}")
    engine = _Engine(cfg, trace, profile, name, served, autoscale, static_replicas, seed)
    result = engine.run()
    result.label = label or ("autoscaled" if autoscale else "static")
    return result


class _Engine:
    def __init__(
        self,
        cfg: DeploymentConfig,
        trace: Trace,
        profile: ServiceProfile,
        model: str,
        served: list[TierConfig],
        autoscale: bool,
        static_replicas: Mapping[str, int] | None,
        seed: int,
    ) -> None:
        self.cfg, self.trace, self.profile, self.model = cfg, trace, profile, model
        self.autoscale = autoscale
        self.static_replicas = dict(static_replicas) if static_replicas is not None else None
        self.tiers = [
            _Tier(t, k, profile.capacity_rps / t.capacity_rps if t.capacity_rps else 1.0)
            for k, t in enumerate(served)
        ]
        by_name = {t.name: t for t in self.tiers}
        open_tiers = [by_name[t.name] for t in cfg.tiers_for(model, sensitive=False)]
        sens_tiers = [by_name[t.name] for t in cfg.tiers_for(model, sensitive=True)]
        self.routes = (open_tiers, sens_tiers)  # by sensitivity (False, True)
        self.overflow = cfg.policies.overflow
        self.objective_s = cfg.policies.objective_p99_ms / 1000.0
        self.on_latency = cfg.policies.overflow and cfg.policies.overflow_on_latency
        self.wait_s = cfg.policies.wait_s
        self.end = trace.duration_s
        self.seed = seed
        self.queues: tuple[deque[int], deque[int]] = (deque(), deque())
        self.events: list[tuple[float, int, _Tier, _Replica]] = []
        self.seq = 0
        self.scaler = Autoscaler(cfg) if autoscale else None
        self.decisions: list[dict[str, Any]] = []

    # -- requests ------------------------------------------------------------------------

    def _draw(self) -> None:
        rng = np.random.default_rng(self.seed)
        tr = self.trace
        counts = rng.poisson(tr.rates * tr.step_s)
        n = int(counts.sum())
        starts = np.repeat(tr.times, counts)
        times = np.sort(starts + rng.random(n) * tr.step_s)
        sensitive = rng.random(n) < np.repeat(tr.shares, counts)
        samples = self.profile.service_seconds()
        service = samples[rng.integers(0, samples.size, n)]
        self.n = n
        self.arrival = times
        self.sensitive = sensitive
        self.counts = counts
        self.arr_list: list[float] = times.tolist()
        self.sens_list: list[bool] = sensitive.tolist()
        self.svc_list: list[float] = service.tolist()
        self.lat = array("d", bytes(8 * n))
        self.tier_of = array("b", bytes(n))  # tier index + 1; 0: refused

    def _dispatch(self, k: int, tier: _Tier, r: _Replica, t: float) -> None:
        svc = self.svc_list[k] * tier.factor
        start = r.free_at if r.free_at > t else t
        fin = start + svc
        r.free_at = fin
        r.finishes.append(fin)
        r.busy += svc
        tier.assigned += svc
        lat = fin - self.arr_list[k]
        self.lat[k] = lat
        self.tier_of[k] = tier.index + 1
        tier.interval_count += 1
        tier.interval_lat.append(lat)
        if self.on_latency:
            heapq.heappush(tier.pending_over if lat > self.objective_s else tier.pending_ok, fin)

    @staticmethod
    def _free(tier: _Tier, t: float) -> _Replica | None:
        """The tier's least loaded ready replica with room (the first on ties), or ``None``."""
        best = None
        best_n = tier.max_inflight
        for r in tier.ready:
            f = r.finishes
            while f and f[0] <= t:
                f.popleft()
            if len(f) < best_n:
                best, best_n = r, len(f)
        return best

    def _route(self, k: int, t: float) -> None:
        """The router's choice (:meth:`abyssal.deploy.pool.Pool.choose`): the tiers allowed,
        those with a ready replica ("live") in routing order (only the first without
        overflow); a live tier over the objective that is not the last is passed over first
        and used only when nothing later has room. Every allowed tier not chosen before the
        chosen one, or every one when none has room, counts an overflow."""
        sens = self.sens_list[k]
        route = self.routes[sens]
        live = [tier for tier in route if tier.ready]
        if not self.overflow:
            live = live[:1]
        slow = None
        if live:
            last = live[-1]
            for tier in live:
                if self.on_latency and tier is not last and tier.late(t, self.objective_s):
                    if slow is None:
                        slow = [tier]
                    else:
                        slow.append(tier)
                    continue
                r = self._free(tier, t)
                if r is not None:
                    self._dispatch(k, tier, r, t)
                    self._passed(route, tier)
                    return
            if slow is not None:
                for tier in slow:
                    r = self._free(tier, t)
                    if r is not None:
                        self._dispatch(k, tier, r, t)
                        for other in route:
                            if other is not tier:
                                other.interval_overflow += 1
                        return
        for tier in route:
            tier.interval_overflow += 1
        self.queues[sens].append(k)

    @staticmethod
    def _passed(route: list[_Tier], chosen: _Tier) -> None:
        for tier in route:
            if tier is chosen:
                return
            tier.interval_overflow += 1

    def _refuse(self, k: int) -> None:
        self.lat[k] = _INF
        self.tier_of[k] = 0

    def _drain(self, until: float) -> None:
        """Serve the router's queues from the slots that free up to ``until``."""
        queues, arr = self.queues, self.arr_list
        while queues[0] or queues[1]:
            best_t, best = _INF, None
            for sens in (False, True):
                q = queues[sens]
                if not q:
                    continue
                route = self.routes[sens]
                if not self.overflow:
                    route = [t for t in route if t.ready][:1]
                for tier in route:
                    for r in tier.ready:
                        f = r.finishes
                        free = f[0] if len(f) >= tier.max_inflight else r.ready_at
                        if free < best_t or (
                            free == best_t and best is not None and arr[q[0]] < arr[best[2][0]]
                        ):
                            best_t, best = free, (tier, r, q)
            if best is None or best_t > until:
                return
            tier, r, q = best
            while q and arr[q[0]] + self.wait_s < best_t:
                self._refuse(q.popleft())
            if not q:
                continue
            now = max(best_t, arr[q[0]])
            f = r.finishes
            while f and f[0] <= now:
                f.popleft()
            self._dispatch(q.popleft(), tier, r, now)

    def _expire(self, t: float) -> None:
        for q in self.queues:
            while q and self.arr_list[q[0]] + self.wait_s < t:
                self._refuse(q.popleft())

    # -- replicas ------------------------------------------------------------------------

    def _start(self, tier: _Tier, t: float, startup_s: float) -> None:
        tier.advance(t)
        r = _Replica(t, t + startup_s)
        tier.records.append(r)
        if startup_s <= 0:
            tier.ready.append(r)
        else:
            tier.starting.append(r)
            self.seq += 1
            heapq.heappush(self.events, (r.ready_at, self.seq, tier, r))

    def _remove(self, tier: _Tier, t: float) -> None:
        tier.advance(t)
        if tier.starting:
            r = tier.starting.pop()
            r.cancelled = True
            r.stop = t
            return
        for r in tier.ready:
            f = r.finishes
            while f and f[0] <= t:
                f.popleft()
        if not tier.ready:
            return
        r = min(reversed(tier.ready), key=lambda x: len(x.finishes))
        tier.ready.remove(r)
        r.stop = max(t, r.free_at)
        drain = min(r.stop, self.end) - t
        tier.ready_s += drain
        tier.billed_s += drain

    def _ready(self, tier: _Tier, r: _Replica) -> None:
        if r.cancelled:
            return
        tier.advance(r.ready_at)
        tier.starting.remove(r)
        tier.ready.append(r)

    # -- measurements --------------------------------------------------------------------

    def _tick(self, t: float, last: float) -> None:
        self._expire(t)
        interval = t - last
        loads = {}
        for tier in self.tiers:
            tier.advance(t)
            done = tier.busy_done(t)
            d_busy = done - tier.mark_busy
            d_ready = tier.ready_s - tier.mark_ready_s
            tier.mark_busy, tier.mark_ready_s = done, tier.ready_s
            waiting = 0
            for r in tier.ready:
                f = r.finishes
                while f and f[0] <= t:
                    f.popleft()
                if len(f) > 1:
                    waiting += len(f) - 1
            for sens in (False, True):
                if tier in self.routes[sens]:
                    waiting += len(self.queues[sens])
            lats = tier.interval_lat
            p99 = float(np.percentile(lats, 99)) * 1000.0 if len(lats) >= 10 else None
            loads[tier.name] = TierLoad(
                replicas=len(tier.ready),
                starting=len(tier.starting),
                utilization=min(1.0, max(0.0, d_busy / d_ready)) if d_ready > 0 else None,
                queue_per_replica=waiting / max(1, len(tier.ready)),
                p99_ms=p99,
                arrival_rps=tier.interval_count / interval,
                overflow_rps=tier.interval_overflow / interval,
            )
            tier.interval_count = tier.interval_overflow = 0
            tier.interval_lat = []
        assert self.scaler is not None
        by_name = {tier.name: tier for tier in self.tiers}
        for d in self.scaler.decide(t, loads):
            tier = by_name[d.tier]
            record = {"time_s": t, "tier": d.tier, "current": d.current, "target": d.target}
            self.decisions.append({**record, "reason": d.reason})
            current = len(tier.ready) + len(tier.starting)
            for _ in range(d.target - current):
                self._start(tier, t, tier.cfg.startup_s)
                tier.started_later += 1
            for _ in range(current - d.target):
                self._remove(tier, t)

    def _step(self, t: float, k: int, out: dict[str, Any]) -> None:
        busy = ready = 0.0
        for tier in self.tiers:
            tier.advance(t)
            tier.late(t, self.objective_s)  # keeps the latency window's heaps short
            done = tier.busy_done(t)
            busy += done - tier.step_busy
            ready += tier.ready_s - tier.step_ready_s
            out["replicas"][tier.name][k] = (tier.billed_s - tier.step_billed_s) / self.trace.step_s
            out["ready"][tier.name][k] = (tier.ready_s - tier.step_ready_s) / self.trace.step_s
            tier.step_busy, tier.step_ready_s, tier.step_billed_s = (
                done,
                tier.ready_s,
                tier.billed_s,
            )
        out["utilization"][k] = min(1.0, busy / ready) if ready > 0 else math.nan

    # -- the run -------------------------------------------------------------------------

    def _static(self) -> dict[str, int]:
        if self.static_replicas is not None:
            return {t.name: int(self.static_replicas.get(t.name, 0)) for t in self.tiers}
        return {t.name: t.cfg.replicas.initial for t in self.tiers}

    def run(self) -> SimResult:
        self._draw()
        for tier in self.tiers:
            for _ in range(self._static()[tier.name]):
                self._start(tier, 0.0, 0.0)
        trace = self.trace
        steps = trace.steps
        timeline: dict[str, Any] = {
            "replicas": {t.name: np.zeros(steps) for t in self.tiers},
            "ready": {t.name: np.zeros(steps) for t in self.tiers},
            "utilization": np.zeros(steps),
        }
        every = self.cfg.autoscale.every_s
        end = self.end
        tick_k, step_k = 1, 1
        next_tick = every if self.scaler is not None and every < end else _INF
        next_step = trace.step_s
        last_tick = 0.0
        arr, events, queues = self.arr_list, self.events, self.queues
        i, n = 0, self.n
        route, drain = self._route, self._drain
        while True:
            ready_t = events[0][0] if events and events[0][0] <= end else _INF
            barrier = min(next_tick, next_step, ready_t)
            # the arrivals before the next scheduled event
            while i < n and arr[i] < barrier:
                if queues[0] or queues[1]:
                    drain(arr[i])
                route(i, arr[i])
                i += 1
            if queues[0] or queues[1]:
                drain(barrier)
            if barrier == _INF:
                break
            if ready_t == barrier:
                _, _, tier, r = heapq.heappop(events)
                self._ready(tier, r)
            elif next_step == barrier:
                self._step(next_step, step_k - 1, timeline)
                step_k += 1
                next_step = step_k * trace.step_s if step_k <= steps else _INF
            else:
                self._tick(next_tick, last_tick)
                last_tick = next_tick
                tick_k += 1
                next_tick = tick_k * every if tick_k * every < end else _INF
        # the queues' last requests: served from the slots that free after the end, or refused
        self._drain(_INF)
        while queues[0] or queues[1]:
            for q in queues:
                while q:
                    self._refuse(q.popleft())
        return self._result(timeline)

    def _result(self, tl: dict[str, Any]) -> SimResult:
        cfg, trace, end = self.cfg, self.trace, self.end
        for tier in self.tiers:
            tier.advance(end)
        lat = np.frombuffer(self.lat, dtype=np.float64) if self.n else np.zeros(0)
        tier_of = np.frombuffer(self.tier_of, dtype=np.int8) if self.n else np.zeros(0, np.int8)
        answered_mask = tier_of > 0
        answered = int(answered_mask.sum())
        ok = lat[answered_mask]
        objective = cfg.policies.objective_p99_ms
        over = int((lat * 1000.0 > objective).sum())  # refused: infinite
        busy = sum(t.busy_done(end) for t in self.tiers)
        ready_s = sum(t.ready_s for t in self.tiers)
        hours, cost_by = {}, {}
        for tier in self.tiers:
            billed = sum(
                max(0.0, min(r.stop if r.stop is not None else end, end) - r.start)
                for r in tier.records
            )
            hours[tier.name] = billed / 3600.0
            cost_by[tier.name] = billed / 3600.0 * tier.cfg.price_per_hour
        billed_s = sum(hours.values()) * 3600.0
        cost = sum(cost_by.values())
        untrusted = [t.index + 1 for t in self.tiers if not t.cfg.trusted]
        sens_untrusted = int((self.sensitive & np.isin(tier_of, untrusted)).sum())
        by_tier_p99, by_tier_over = {}, {}
        for t in self.tiers:
            mine = lat[tier_of == t.index + 1]
            by_tier_p99[t.name] = float(np.percentile(mine, 99)) * 1000.0 if mine.size else math.nan
            by_tier_over[t.name] = float((mine * 1000.0 > objective).mean()) if mine.size else 0.0
        window = _window_p99(self.arrival, lat, WINDOW_S)
        step_p99 = _window_p99(self.arrival, lat, trace.step_s, bins=trace.steps)
        windows = window[~np.isnan(window)]
        timeline = Timeline(
            time_s=trace.times,
            rate_rps=trace.rates.copy(),
            arrivals_rps=self.counts / trace.step_s,
            replicas=tl["replicas"],
            ready=tl["ready"],
            utilization=tl["utilization"],
            p99_ms=step_p99 * 1000.0,
        )
        return SimResult(
            label="",
            autoscaled=self.scaler is not None,
            static_replicas=None if self.scaler is not None else self._static(),
            model=self.model,
            duration_s=end,
            requests=self.n,
            answered=answered,
            refused=self.n - answered,
            utilization=busy / ready_s if ready_s > 0 else math.nan,
            utilization_billed=busy / billed_s if billed_s > 0 else math.nan,
            p50_ms=float(np.percentile(ok, 50)) * 1000.0 if ok.size else math.nan,
            p99_ms=float(np.percentile(ok, 99)) * 1000.0 if ok.size else math.nan,
            mean_ms=float(ok.mean()) * 1000.0 if ok.size else math.nan,
            objective_ms=objective,
            violation_share=over / self.n if self.n else 0.0,
            window_violation_share=float((windows * 1000.0 > objective).mean())
            if windows.size
            else 0.0,
            cost=cost,
            cost_per_1k=cost / answered * 1000.0 if answered else math.nan,
            requests_per_tier={t.name: int((tier_of == t.index + 1).sum()) for t in self.tiers},
            p99_ms_by_tier=by_tier_p99,
            over_objective_by_tier=by_tier_over,
            sensitive_requests=int(self.sensitive.sum()),
            sensitive_on_untrusted=sens_untrusted,
            replica_hours=hours,
            cost_per_tier=cost_by,
            replicas_started={t.name: t.started_later for t in self.tiers},
            decisions=self.decisions,
            timeline=timeline,
        )


def _window_p99(
    arrival: np.ndarray, lat: np.ndarray, width: float, bins: int | None = None
) -> np.ndarray:
    """The nearest-rank p99 latency (s) of the requests arriving in each window of ``width``
    seconds; NaN for a window without requests."""
    if arrival.size == 0:
        return np.full(bins or 0, np.nan)
    win = np.floor(arrival / width).astype(np.int64)
    size = int(win.max()) + 1 if bins is None else bins
    win = np.minimum(win, size - 1)
    order = np.lexsort((lat, win))
    sorted_lat = lat[order]
    counts = np.bincount(win, minlength=size)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    out = np.full(size, np.nan)
    has = counts > 0
    rank = np.ceil(0.99 * counts[has]).astype(np.int64) - 1
    out[has] = sorted_lat[starts[has] + rank]
    return out
