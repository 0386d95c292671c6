"""The autoscaler: how many replicas each tier runs, decided every ``autoscale.every_s`` seconds
from what was measured over the last interval (:class:`TierLoad`), with hysteresis and cost in
mind. The router (``abyssal deploy up``) and the simulator (:mod:`abyssal.deploy.simulate`) call
the same :class:`Autoscaler`.

Rules, for each tier that :meth:`Autoscaler.decide` is given a load for (``a`` is the
deployment's ``autoscale`` section; ``current`` = ready + starting replicas):

1. **Desired replicas from load.** HPA-style ``ceil(ready * utilization / a.target_utilization)``
   when utilization is known; ``ceil((arrival_rps + overflow_rps) / (capacity_rps *
   a.target_utilization))`` when the tier's ``capacity_rps`` is known or the tier has no ready
   replica (with no capacity known, a tier without replicas wants one if anything arrives or
   overflows). When both are known the larger is taken: the rate sees demand beyond saturation
   (overflow), the utilization sees replicas slower than their measured capacity. A tier with
   nothing arriving or waiting and under :data:`IDLE_UTILIZATION` wants none (an idle replica's
   own health checks keep a little CPU busy; that must not hold it up).
2. **Growth** needs an out signal: utilization > ``a.scale_out_above``, requests waiting per
   ready replica > ``a.queue_per_replica``, the tier's p99 > ``policies.objective_p99_ms``, any
   overflow (``overflow_rps > 0``: requests that wanted the tier and went on or were refused),
   or arrivals/overflow at a tier with no replica (it wakes to at least 1). The signal must hold
   for ``a.out_after`` checks in a row. The tier grows to the desired count, and by at least one
   replica when none is starting (the signal says it is short even if the estimate does not);
   while replicas are starting it grows only if the estimate exceeds ready + starting, so a
   saturated tier does not order one more replica at every check while it waits for them.
3. **Shrinking** needs utilization < ``a.scale_in_below`` (measured, or estimated as
   ``arrival_rps / (ready * capacity_rps)``) and no out signal for ``a.in_after`` checks in a
   row, and ``a.cooldown_s`` since the tier's last change (growth or shrinking). It shrinks to the
   desired count, never below it: the remaining replicas run at or under the target utilization,
   below ``scale_out_above``, so a shrink is not undone by the next check.
4. **Steps and bounds.** A decision moves a tier by at most ``a.max_step`` replicas and keeps it
   within ``[replicas.min, replicas.max]``; a tier found outside its bounds is brought back at
   once (no streak needed).
5. **Cost.** Tiers are decided in routing order, so the cheaper tiers that come first grow
   first. A tier grows only when every strictly cheaper tier before it in routing order that
   serves one of its models is at its ``max`` with every replica ready and not changing in this
   decision: a public tier grows only from overflow that the cheaper tiers at their maximum cannot
   take (its streak keeps counting meanwhile). When shrinking, the most expensive tier goes first:
   a tier's shrink waits while a more expensive tier serving one of its models is above its
   ``min``, itself under ``a.scale_in_below`` and wanting fewer replicas than it has (its streak
   keeps counting, and it shrinks once that tier is down, cooldown permitting). A pricier tier
   that is busy, or whose load still needs its replicas, holds nothing back. Symmetrically, a
   tier does not shrink while every strictly cheaper tier before it (sharing a model; there must
   be one) is full: at its ``max`` and at or above the target utilization, or calling for
   growth. The router fills the cheaper tiers first, so the tier that takes their overflow sees
   bursts (whenever they are all saturated or over the latency objective) and idle spells
   between them; shrinking in a spell would put its load back on tiers that cannot grow.

A check that has neither signal resets both streaks; a change resets them too.
:func:`pack` places several models on one device (first-fit decreasing on their utilization
shares).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from abyssal.core.errors import ConfigError, DataError
from abyssal.deploy.spec import DeploymentConfig, TierConfig

_EPS = 1e-9
IDLE_UTILIZATION = 0.05
"""Below this busy share, with nothing arriving or waiting, a tier is idle: it wants no replica
(its minimum then holds)."""


@dataclass
class TierLoad:
    """One tier over the last interval, as measured."""

    replicas: int
    """Ready replicas."""
    starting: int = 0
    """Replicas started, not ready yet."""
    utilization: float | None = None
    """Busy share of the ready replicas (0..1); ``None``: unknown."""
    queue_per_replica: float = 0.0
    """Requests waiting per ready replica."""
    p99_ms: float | None = None
    arrival_rps: float = 0.0
    """Requests a second the tier answered or was sent."""
    overflow_rps: float = 0.0
    """Requests a second that wanted this tier but went to a later tier or were refused because
    it was saturated."""


@dataclass(frozen=True)
class ScaleDecision:
    """A tier's new replica count and why."""

    tier: str
    current: int
    """Ready + starting replicas when decided."""
    target: int
    reason: str
    """E.g. ``utilization 0.91 > 0.80 for 2 checks``."""


@dataclass
class _State:
    out_streak: int = 0
    in_streak: int = 0
    last_change: float = -math.inf


@dataclass
class _Look:
    """One tier's check: its signals and estimate, before the cost rules."""

    tier: TierConfig
    load: TierLoad
    current: int
    desired: int | None
    out_reasons: list[str]
    in_reason: str | None
    utilization: float | None


class Autoscaler:
    """Replicas per tier from live measurements; keeps hysteresis state between calls (one
    instance per deployment, called every ``autoscale.every_s`` seconds). See the module's
    docstring for the rules.

    Example:
        >>> scaler = Autoscaler(cfg)  # doctest: +SKIP
        >>> scaler.decide(now, {"private": TierLoad(replicas=2, utilization=0.93)})
        [ScaleDecision(tier='private', current=2, target=3,
                       reason='utilization 0.93 > 0.80 for 1 check')]
    """

    def __init__(self, cfg: DeploymentConfig) -> None:
        self.cfg = cfg
        self.settings = cfg.autoscale
        self._state = {t.name: _State() for t in cfg.tiers}

    def decide(self, now: float, loads: Mapping[str, TierLoad]) -> list[ScaleDecision]:
        """The tiers whose replica count should change now (others are left out), in routing
        order.

        Args:
            now: seconds on any monotonic clock (the cooldown is measured on it).
            loads: the tiers measured over the last interval, by name; a tier left out is not
                decided (nor does it hold others back).

        Raises:
            ConfigError: a load names no tier of the deployment.
        """
        unknown = sorted(set(loads) - set(self._state))
        if unknown:
            raise ConfigError(
                f"autoscaler: loads for unknown tiers {unknown}; tiers: {list(self._state)}"
            )
        if not self.settings.enabled:
            return []
        looks = {t.name: self._look(t, loads[t.name]) for t in self.cfg.ordered if t.name in loads}
        for look in looks.values():
            state = self._state[look.tier.name]
            if look.out_reasons:
                state.out_streak, state.in_streak = state.out_streak + 1, 0
            elif look.in_reason is not None:
                state.out_streak, state.in_streak = 0, state.in_streak + 1
            else:
                state.out_streak = state.in_streak = 0
        targets: dict[str, int] = {}
        decisions = []
        for name, look in looks.items():  # routing order: cheaper tiers placed first grow first
            target, reason = self._target(now, look, looks, targets)
            targets[name] = target
            if target != look.current:
                state = self._state[name]
                state.out_streak = state.in_streak = 0
                state.last_change = now
                decisions.append(ScaleDecision(name, look.current, target, reason))
        return decisions

    # -- one tier ------------------------------------------------------------------------------

    def _look(self, tier: TierConfig, load: TierLoad) -> _Look:
        a = self.settings
        _check_load(tier.name, load)
        current = load.replicas + load.starting
        demand = load.arrival_rps + load.overflow_rps
        utilization = load.utilization
        if utilization is None and tier.capacity_rps and load.replicas > 0:
            utilization = min(1.0, load.arrival_rps / (load.replicas * tier.capacity_rps))
        estimates = []
        idle = load.utilization is None or load.utilization < IDLE_UTILIZATION
        if demand <= 0 and load.queue_per_replica <= 0 and idle:
            # nothing arrived, nothing waits: an idle replica still shows a little CPU (its
            # health checks, its event loop), which must not keep it up forever
            estimates.append(0)
        elif load.utilization is not None and load.replicas > 0:
            estimates.append(_ceil(load.replicas * load.utilization / a.target_utilization))
        if tier.capacity_rps is not None:
            estimates.append(_ceil(demand / (tier.capacity_rps * a.target_utilization)))
        elif load.replicas == 0:
            estimates.append(1 if demand > 0 else 0)
        desired = max(estimates) if estimates else None

        out = []
        if utilization is not None and load.replicas > 0 and utilization > a.scale_out_above:
            out.append(f"utilization {utilization:.2f} > {a.scale_out_above:.2f}")
        if load.replicas > 0 and load.queue_per_replica > a.queue_per_replica:
            out.append(f"queue {load.queue_per_replica:.1f}/replica > {a.queue_per_replica:g}")
        objective = self.cfg.policies.objective_p99_ms
        if load.p99_ms is not None and load.p99_ms > objective:
            out.append(f"p99 {load.p99_ms:.0f} ms > {objective:g} ms")
        if load.overflow_rps > 0:
            out.append(f"overflow {load.overflow_rps:.2f} rps")
        if current == 0 and demand > 0 and load.overflow_rps <= 0:
            out.append(f"{demand:.2f} rps and no replica")
        in_reason = None
        if (
            not out
            and load.replicas > 0
            and utilization is not None
            and utilization < a.scale_in_below
        ):
            in_reason = f"utilization {utilization:.2f} < {a.scale_in_below:.2f}"
        return _Look(tier, load, current, desired, out, in_reason, utilization)

    def _target(
        self, now: float, look: _Look, looks: Mapping[str, _Look], targets: Mapping[str, int]
    ) -> tuple[int, str]:
        a, tier, current = self.settings, look.tier, look.current
        low, high = tier.replicas.min, tier.replicas.max
        state = self._state[tier.name]
        if current < low:
            return min(low, current + a.max_step), f"below min {low}"
        if current > high:
            return max(high, current - a.max_step), f"above max {high}"
        if look.out_reasons and state.out_streak >= a.out_after:
            held = self._cheaper_not_full(tier, looks, targets)
            if held is not None:
                return current, f"held: cheaper tier {held} can still grow"
            want = look.desired if look.desired is not None else current
            if look.load.starting == 0:
                want = max(want, current + 1)
            target = min(high, want, current + a.max_step)
            checks = "check" if state.out_streak == 1 else "checks"
            return max(target, current), (
                f"{'; '.join(look.out_reasons)} for {state.out_streak} {checks}"
            )
        if (
            look.in_reason is not None
            and state.in_streak >= a.in_after
            and now - state.last_change >= a.cooldown_s
            and look.desired is not None
            and look.desired < current
        ):
            if self._pricier_shrinking(tier, looks) is not None:
                return current, "held: a more expensive tier shrinks first"
            full = self._cheaper_full(tier, looks)
            if full is not None:
                return current, f"held: cheaper tiers full ({full})"
            target = max(low, look.desired, current - a.max_step)
            checks = "check" if state.in_streak == 1 else "checks"
            return min(target, current), f"{look.in_reason} for {state.in_streak} {checks}"
        return current, "steady"

    def _cheaper_before(
        self, tier: TierConfig, looks: Mapping[str, _Look]
    ) -> Iterator[tuple[TierConfig, _Look]]:
        """The strictly cheaper tiers before ``tier`` in routing order that share a model with
        it and were measured, with their looks."""
        models = set(tier.model_names)
        for other in self.cfg.ordered:
            if other.name == tier.name:
                return
            look = looks.get(other.name)
            if (
                look is not None
                and other.price_per_hour < tier.price_per_hour
                and models & set(other.model_names)
            ):
                yield other, look

    def _cheaper_not_full(
        self, tier: TierConfig, looks: Mapping[str, _Look], targets: Mapping[str, int]
    ) -> str | None:
        """The first strictly cheaper tier before ``tier`` in routing order (sharing a model)
        that is not at its maximum with every replica ready, or ``None``."""
        for other, look in self._cheaper_before(tier, looks):
            full = other.replicas.max
            if (
                look.load.replicas < full
                or look.load.starting > 0
                or targets.get(other.name, look.current) != look.current
            ):
                return other.name
        return None

    def _cheaper_full(self, tier: TierConfig, looks: Mapping[str, _Look]) -> str | None:
        """The strictly cheaper tiers before ``tier`` in routing order (sharing a model), when
        there are some and every one is full: at its maximum and at or above the target
        utilization, or calling for growth. ``tier`` takes what they cannot; ``None`` when one
        of them has room (or there are none)."""
        target = self.settings.target_utilization
        full = []
        for other, look in self._cheaper_before(tier, looks):
            busy = look.out_reasons or (look.utilization is not None and look.utilization >= target)
            if look.current < other.replicas.max or not busy:
                return None
            full.append(other.name)
        return ", ".join(full) or None

    def _pricier_shrinking(self, tier: TierConfig, looks: Mapping[str, _Look]) -> str | None:
        """A more expensive tier (sharing a model) above its minimum, itself under
        ``scale_in_below`` and with fewer replicas desired than it has: it shrinks before
        ``tier``; ``None`` if none."""
        models = set(tier.model_names)
        for name, look in looks.items():
            other = look.tier
            if (
                other.price_per_hour > tier.price_per_hour
                and models & set(other.model_names)
                and look.current > other.replicas.min
                and look.in_reason is not None
                and look.desired is not None
                and look.desired < look.current
            ):
                return name
        return None


def _ceil(x: float) -> int:
    return max(0, math.ceil(x - _EPS))


def _check_load(tier: str, load: TierLoad) -> None:
    if load.replicas < 0 or load.starting < 0:
        raise ConfigError(f"autoscaler: tier {tier}: replicas and starting must be >= 0")
    for name in ("queue_per_replica", "arrival_rps", "overflow_rps"):
        value = getattr(load, name)
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"autoscaler: tier {tier}: {name}={value!r}, expected >= 0")
    for name in ("utilization", "p99_ms"):
        value = getattr(load, name)
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"autoscaler: tier {tier}: {name}={value!r}, expected >= 0 or None")


def pack(loads: Mapping[str, float], capacity: float = 1.0) -> list[list[str]]:
    """Models placed on devices, several to a device: first-fit decreasing on each model's
    utilization share (the busy share of one device it needs).

    Models are taken from the heaviest down (ties by name) and each goes on the first device
    where it fits (sum of shares <= ``capacity``), or on a new device. A model heavier than
    ``capacity`` gets a device of its own (it needs more replicas, not packing).

    Args:
        loads: each model's share, e.g. ``{"fraud": 0.3, "text": 0.5}``.
        capacity: the share one device may carry (1.0: fully busy; 0.65 for headroom).

    Returns:
        Devices, each the list of its models' names, heaviest first.

    Raises:
        DataError: a load that is negative, NaN or infinite (named).
        ConfigError: ``capacity`` not > 0.

    Example:
        >>> pack({"a": 0.6, "b": 0.5, "c": 0.4, "d": 0.3})
        [['a', 'c'], ['b', 'd']]
    """
    if not (math.isfinite(capacity) and capacity > 0):
        raise ConfigError(f"pack: capacity must be > 0, got {capacity!r}")
    for name, value in loads.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not math.isfinite(value)
            or value < 0
        ):
            raise DataError(
                f"pack: the load of model {name!r} is {value!r}; expected a finite number >= 0"
            )
    devices: list[list[str]] = []
    used: list[float] = []
    for name, value in sorted(loads.items(), key=lambda kv: (-kv[1], kv[0])):
        for k, total in enumerate(used):
            if total + value <= capacity + _EPS:
                devices[k].append(name)
                used[k] += value
                break
        else:
            devices.append([name])
            used.append(float(value))
    return devices
