"""The router's view of the tiers: each replica's health and load, and the choice of a replica for
one request (first allowed tier in routing order that is healthy and not saturated; the least
loaded replica in it).

Everything here runs on the router's event loop; nothing blocks.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from abyssal.deploy.spec import DeploymentConfig, TierConfig

ReplicaState = Literal["starting", "ready", "down", "draining"]
LATENCY_WINDOW_S = 10.0  # a tier's p99 is over its answers of the last this many seconds
P99_EVERY_S = 0.25  # how stale a tier's p99 may be


@dataclass
class Replica:
    """One instance of the serving layer behind the router."""

    name: str
    tier: str
    url: str
    state: ReplicaState = "starting"
    inflight: int = 0
    fails: int = 0
    oks: int = 0
    answered: int = 0
    errors: int = 0
    since: float = field(default_factory=time.monotonic)  # when it entered its state
    pid: int | None = None
    # from its /v1/load: (monotonic time, busy seconds, CPU seconds) at the last reading
    busy: tuple[float, float, float] | None = None
    utilization: float | None = None
    queue: int = 0
    # per model: busy seconds at the last reading, and the busy share over the last interval
    model_busy: dict[str, float] = field(default_factory=dict)
    model_shares: dict[str, float] = field(default_factory=dict)

    def set_state(self, state: ReplicaState) -> bool:
        """Move to ``state``; whether it changed."""
        if state == self.state:
            return False
        self.state, self.since = state, time.monotonic()
        return True


@dataclass
class TierState:
    """A tier's replicas and what the router measured of it."""

    config: TierConfig
    replicas: list[Replica] = field(default_factory=list)
    latencies: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=5000))
    routed: int = 0  # requests answered by this tier
    sensitive: int = 0  # of which sensitive
    overflowed: int = 0  # requests that wanted this tier but went on (saturated)
    refused: int = 0  # requests that could use only saturated tiers and timed out waiting
    failovers: int = 0  # attempts on this tier that failed and were retried elsewhere
    _p99: tuple[float, float | None] = (float("-inf"), None)  # (when computed, value)

    @property
    def name(self) -> str:
        return self.config.name

    def ready(self) -> list[Replica]:
        return [r for r in self.replicas if r.state == "ready"]

    def p99_ms(self, now: float | None = None) -> float | None:
        """The 99th percentile of the tier's answers in the last :data:`LATENCY_WINDOW_S`,
        recomputed at most every :data:`P99_EVERY_S` (the router asks on every request, and
        sorting the window each time would cost more than the rest of the routing)."""
        now = time.monotonic() if now is None else now
        at, value = self._p99
        if 0 <= now - at < P99_EVERY_S:
            return value
        recent = sorted(ms for t, ms in self.latencies if now - t <= LATENCY_WINDOW_S)
        value = None
        if len(recent) >= 10:
            value = recent[min(len(recent) - 1, math.ceil(0.99 * len(recent)) - 1)]
        self._p99 = (now, value)
        return value

    def free(self, exclude: Iterable[str] = ()) -> Replica | None:
        """Its least loaded ready replica with room (in flight below ``max_inflight``)."""
        skip = set(exclude)
        room = [
            r for r in self.ready() if r.inflight < self.config.max_inflight and r.name not in skip
        ]
        return min(
            room, key=lambda r: (r.inflight / self.config.max_inflight, r.name), default=None
        )


@dataclass(frozen=True)
class Choice:
    """The replica a request goes to, and the tiers it passed over (saturated)."""

    replica: Replica
    tier: TierState
    passed: tuple[str, ...] = ()


class Pool:
    """The tiers of one deployment and their replicas."""

    def __init__(self, cfg: DeploymentConfig) -> None:
        self.cfg = cfg
        self.tiers = {t.name: TierState(t) for t in cfg.ordered}
        self.changed = asyncio.Condition()
        self._numbers = {t.name: itertools.count(1) for t in cfg.tiers}
        self.stateful: dict[str, bool] = {}  # model name -> whether predicting changes state

    def add(
        self, tier: str, url: str, *, pid: int | None = None, state: ReplicaState = "starting"
    ) -> Replica:
        """A new replica of ``tier`` at ``url`` (named ``<tier>-<n>``)."""
        replica = Replica(
            f"{tier}-{next(self._numbers[tier])}", tier, url.rstrip("/"), state, pid=pid
        )
        self.tiers[tier].replicas.append(replica)
        return replica

    def remove(self, replica: Replica) -> None:
        tier = self.tiers[replica.tier]
        if replica in tier.replicas:
            tier.replicas.remove(replica)

    def replicas(self) -> list[Replica]:
        return [r for t in self.tiers.values() for r in t.replicas]

    def find(self, name: str) -> Replica | None:
        return next((r for r in self.replicas() if r.name == name), None)

    async def notify(self) -> None:
        """Wake requests waiting for a replica (a slot freed, a replica came up)."""
        async with self.changed:
            self.changed.notify_all()

    def choose(self, model: str, sensitive: bool, exclude: Iterable[str] = ()) -> Choice | None:
        """Where a request goes now, or ``None`` when every tier it may use is saturated or
        down.

        Tiers are tried in routing order among those allowed (serving ``model``; trusted when
        ``sensitive``). A tier over the latency objective is passed over first when
        ``overflow_on_latency`` and taken only when nothing later has room. Without
        ``overflow``, only the first tier with a ready replica is used.
        """
        policies = self.cfg.policies
        allowed = [self.tiers[t.name] for t in self.cfg.tiers_for(model, sensitive=sensitive)]
        live = [t for t in allowed if t.ready()]
        if not policies.overflow:
            live = live[:1]
        passed: list[str] = []
        slow = []
        now = time.monotonic()
        for tier in live:
            p99 = tier.p99_ms(now)
            late = policies.overflow_on_latency and p99 is not None
            if late and p99 > policies.objective_p99_ms and tier is not live[-1]:
                slow.append(tier)
                passed.append(tier.name)
                continue
            replica = tier.free(exclude)
            if replica is not None:
                return Choice(replica, tier, tuple(passed))
            passed.append(tier.name)
        for tier in slow:
            replica = tier.free(exclude)
            if replica is not None:
                return Choice(replica, tier, tuple(p for p in passed if p != tier.name))
        return None

    def allowed_names(self, model: str, sensitive: bool) -> list[str]:
        return [t.name for t in self.cfg.tiers_for(model, sensitive=sensitive)]
