"""A SYNTHETIC transaction stream whose fraud drifts: new ring tactics appear over the months.

Nothing here is real data: every user, merchant, device and payment is drawn from a seeded random
generator, so the same ``seed`` gives the same stream on any machine.

The honest population is the one of :mod:`abyssal.solutions.fraud.synthetic` (favourite
merchants with daily, weekly and pay-day rhythms, sprees, households and kiosks that share
devices, transfers to friends, bill splits and settle-up circles), over the whole period and
stationary: only the fraud changes. The period is ``months`` blocks of 30 days from ``start``.

Every month ``rings_per_month`` NEW rings are recruited among users who were never in a ring, and
each acts only within its month. A ring follows one **tactic**; ``schedule`` says in which month
each tactic first appears. Once a newer tactic has appeared, older ones recruit fewer rings (the
weight of a tactic halves with every later tactic that has appeared), so the mix moves towards
the newest. The default schedule (for 6 months; :func:`default_schedule` spreads the same
tactics over other lengths):

- month 0, ``"cycle"`` and ``"collector"``: the rings of ``synthetic`` (money round the ring, or
  round and then to one collector, then cash-outs at the ring's one or two mule merchants), in
  three to six bursts within the month, each ring acting from one or two devices its members
  share;
- month 2, ``"fan_out"``: in two to five bursts, a recruiter pays three to seven mules within a
  day (amounts drawn like honest transfers), and each mule cashes out one to four times a few
  hours later at ordinary merchants, many different ones; everyone uses devices of their own;
- month 4, ``"slow_burn"``: three to six members pass small amounts (around 10, below honest
  transfers) round the ring five to ten times over three to seven days, and after each round
  about half of them buy at the ring's two or three popular, ordinary merchants; everyone uses
  devices of their own.

With 4 rings a month that is 3 ``cycle`` and 1 ``collector`` in months 0 and 1, 3 ``fan_out``
and 1 ``cycle`` in months 2 and 3, 2 ``slow_burn``, 1 ``fan_out`` and 1 ``cycle`` in months 4
and 5 (see :func:`ring_plan`). No later ring shares a device or pays a mule merchant.

Lone stolen-card sprees (tactic ``"lone_spree"``) go on over the whole period. Labels are 1 on the
fraudulent transactions only; ring members and lone fraudsters keep their honest activity.

Where the signal lives: a model that learned the first months leans on shared devices and mule
merchants, which the later tactics lack, so it misses part of them. What every tactic keeps is
relational: money moving among a few accounts that then buy within hours of each other (and, for
``slow_burn``, at the same merchants), which a model can learn once labelled examples exist.

At the defaults (6 months, 3,000 users): about 228,000 transactions, 0.4 to 1% of each month's
fraudulent, generated in about half a second.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import pandas as pd

from abyssal.core.errors import ConfigError
from abyssal.solutions.fraud.synthetic import (
    _DAY,
    _HOUR,
    _assemble,
    _concat,
    _event_times,
    _group_transfers,
    _ids,
    _kiosk_purchases,
    _lone_sprees,
    _one_ring_burst,
    _part,
    _populate,
    _purchases,
    _Ring,
    _spend,
    _sprees,
    _start_seconds,
    _transfers,
    _World,
)

MONTH_DAYS = 30
LONE_TACTIC = "lone_spree"
_FADE = 0.5  # a tactic's weight is multiplied by this for every later tactic that has appeared


@dataclass(frozen=True)
class _Tactic:
    sizes: tuple[int, int]  # smallest and largest number of members
    weight: float  # share of the rings before any later tactic appears
    shares_devices: bool  # members act from one or two shared devices and cash out at mules


_TACTICS = {
    "cycle": _Tactic((3, 8), 0.7, True),
    "collector": _Tactic((3, 8), 0.3, True),
    "fan_out": _Tactic((4, 8), 1.0, False),
    "slow_burn": _Tactic((3, 6), 1.0, False),
}
TACTICS: tuple[str, ...] = tuple(_TACTICS)


def default_schedule(months: int) -> dict[str, int]:
    """The default schedule for a stream of ``months`` months: ``cycle`` and ``collector`` from
    month 0, ``fan_out`` from a third of the way in and ``slow_burn`` from two thirds (never
    before month 1): months 2 and 4 of six, month 1 for both in a stream of two.

    Example:
        >>> default_schedule(6)
        {'cycle': 0, 'collector': 0, 'fan_out': 2, 'slow_burn': 4}
    """
    fan_out = max(1, months // 3)
    return {
        "cycle": 0,
        "collector": 0,
        "fan_out": fan_out,
        "slow_burn": max(fan_out, 2 * months // 3),
    }


DEFAULT_SCHEDULE: Mapping[str, int] = MappingProxyType(default_schedule(6))


@dataclass(frozen=True)
class DriftRing:
    """A ring the drifting stream planted: the ground truth, with its month and tactic.

    Attributes:
        ring_id: 0-based ring number, in order of months.
        month: the 0-based month the ring acts in (and only in).
        tactic: one of :data:`TACTICS`.
        members: the ring's user ids, sorted (for ``"fan_out"`` the recruiter is among them).
        devices: the device ids the members share (empty for tactics that share none).
        merchants: the merchants the ring cashes out at: mule merchants for ``"cycle"`` and
            ``"collector"``, ordinary ones for the later tactics.
    """

    ring_id: int
    month: int
    tactic: str
    members: tuple[str, ...]
    devices: tuple[str, ...]
    merchants: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class DriftingStream:
    """What :func:`generate_drifting_stream` returns.

    Attributes:
        transactions: the columns and dtypes of ``generate_transactions(...).transactions``
            (``label`` 1 = fraudulent transaction), sorted by time, ids numbered in that order.
        tactic: (T,) str, aligned with ``transactions``: the tactic of each fraudulent row
            (a ring tactic or ``"lone_spree"``), ``""`` for honest rows.
        rings: the planted rings, in order of months.
        months: number of 30-day months.
        start: the start of month 0, in Unix seconds.
    """

    transactions: pd.DataFrame
    tactic: np.ndarray
    rings: list[DriftRing]
    months: int
    start: int

    def month_bounds(self, month: int) -> tuple[int, int]:
        """``(start_s, end_s)`` of a month in Unix seconds, ``end_s`` excluded.

        Raises:
            ConfigError: ``month`` outside ``[0, months)``.
        """
        if not 0 <= month < self.months:
            raise ConfigError(f"month must be in [0, {self.months}), got {month}")
        first = self.start + month * MONTH_DAYS * _DAY
        return first, first + MONTH_DAYS * _DAY

    def month_of(self, timestamps: np.ndarray | None = None) -> np.ndarray:
        """The 0-based month (int64) of each transaction, or of the given Unix ``timestamps``
        (times outside the period give months outside ``[0, months)``)."""
        if timestamps is None:
            timestamps = self.transactions["timestamp"].to_numpy()
        return (np.asarray(timestamps, dtype=np.int64) - self.start) // (MONTH_DAYS * _DAY)

    def fraud_counts(self) -> pd.DataFrame:
        """Fraudulent rows per month (index) and tactic (columns, in order of appearance)."""
        fraud = self.tactic != ""
        frame = pd.DataFrame({"month": self.month_of()[fraud], "tactic": self.tactic[fraud]})
        counts = pd.crosstab(frame["month"], frame["tactic"])
        counts = counts.reindex(index=range(self.months), fill_value=0)
        present = [t for t in (*TACTICS, LONE_TACTIC) if t in counts.columns]
        return counts[present].rename_axis(index="month", columns="tactic")


def generate_drifting_stream(
    months: int = 6,
    n_users: int = 3000,
    n_merchants: int = 300,
    rings_per_month: int = 4,
    seed: int = 0,
    start: str = "2026-01-01",
    schedule: Mapping[str, int] | None = None,
    lone_fraud_frac: float = 0.004,
) -> DriftingStream:
    """Generate a synthetic stream whose fraud tactics change over the months (see the module
    docstring).

    Args:
        months: number of 30-day months, at least 2.
        n_users: number of users; every month's ring members must fit into half of them.
        n_merchants: number of merchants, at least 10.
        rings_per_month: new rings recruited every month (at least as many as tactics that start
            in one month).
        seed: the random seed; everything is determined by it.
        start: first day of month 0 (ISO date, UTC).
        schedule: tactic name -> the 0-based month it first appears; one tactic must start in
            month 0. Default: :func:`default_schedule` (``DEFAULT_SCHEDULE`` for 6 months).
        lone_fraud_frac: fraction of users who run one stolen-card spree during the period.

    Returns:
        The transactions, each row's tactic, the planted rings and the month layout.

    Raises:
        ConfigError: an argument out of range, naming it.

    Example:
        >>> stream = generate_drifting_stream(months=3, n_users=400, n_merchants=40, seed=1)
        >>> stream.fraud_counts().columns.tolist()
        ['cycle', 'collector', 'fan_out', 'slow_burn', 'lone_spree']
        >>> sorted({r.month for r in stream.rings if r.tactic == "fan_out"})
        [1, 2]
    """
    plan_schedule = default_schedule(months) if schedule is None else _as_dict(schedule)
    _check_arguments(months, n_users, n_merchants, rings_per_month, plan_schedule, lone_fraud_frac)
    t0 = _start_of(start)
    plan = ring_plan(plan_schedule, months, rings_per_month)
    rng = np.random.default_rng(seed)
    world = _build_world(rng, n_users, n_merchants, [t for _, t in plan], lone_fraud_frac)
    days = months * MONTH_DAYS
    parts = [
        _purchases(rng, world, days, t0),
        _sprees(rng, world, days, t0),
        _kiosk_purchases(rng, world, days, t0),
        _transfers(rng, world, days, t0),
        _group_transfers(rng, world, days, t0),
    ]
    tactics = [""] * len(parts)
    for (month, tactic), ring in zip(plan, world.rings, strict=True):
        parts.append(_ring_activity(rng, world, ring, t0 + month * MONTH_DAYS * _DAY))
        tactics.append(tactic)
    parts.append(_lone_sprees(rng, world, days, t0))
    tactics.append(LONE_TACTIC)
    last_second = t0 + days * _DAY - 1
    row_tactic = np.repeat(np.array(tactics), [len(p["t"]) for p in parts])
    transactions = _assemble(parts, last_second)
    # the order _assemble sorts the rows in: by time, ties in generation order
    t = np.minimum(np.concatenate([p["t"] for p in parts]).astype(np.int64), last_second)
    order = np.lexsort((np.arange(len(t)), t))
    rings = _planted(world, plan)
    return DriftingStream(transactions, row_tactic[order], rings, months, t0)


def ring_plan(
    schedule: Mapping[str, int], months: int, rings_per_month: int
) -> list[tuple[int, str]]:
    """``(month, tactic)`` of every ring, month by month: the tactic mix the schedule gives.

    A tactic's weight is its base share (``cycle`` 0.7, ``collector`` 0.3, the others 1) halved
    for every later tactic that has appeared by the month. Each month's rings are handed out in
    proportion to the weights, a tactic that starts that month getting at least one.

    Example:
        >>> [t for m, t in ring_plan({"cycle": 0, "fan_out": 1}, 2, 3) if m == 1]
        ['cycle', 'fan_out', 'fan_out']
    """
    ordered = sorted(schedule, key=lambda t: (schedule[t], TACTICS.index(t)))
    plan = []
    for month in range(months):
        active = [t for t in ordered if schedule[t] <= month]
        plan += [(month, t) for t in _month_quota(active, schedule, month, rings_per_month)]
    return plan


def _month_quota(
    active: list[str], schedule: Mapping[str, int], month: int, n_rings: int
) -> list[str]:
    """``n_rings`` tactics in proportion to their faded weights, debuts first."""
    firsts = sorted({schedule[t] for t in active})
    age = np.array([sum(schedule[t] < f for f in firsts) for t in active])  # later debuts seen
    weight = np.array([_TACTICS[t].weight for t in active]) * _FADE**age
    quota = weight / weight.sum() * n_rings
    counts = np.array([int(schedule[t] == month) for t in active])
    for _ in range(n_rings - counts.sum()):
        counts[int(np.argmax(quota - counts))] += 1  # the tactic furthest below its quota
    return [t for t, c in zip(active, counts.tolist(), strict=True) for _ in range(c)]


# --- arguments -----------------------------------------------------------------------------------


def _as_dict(schedule: Mapping[str, int]) -> dict[str, int]:
    if not isinstance(schedule, Mapping) or not schedule:
        raise ConfigError(f"schedule must be a non-empty mapping tactic -> month, got {schedule!r}")
    return dict(schedule)


def _check_arguments(
    months: int,
    n_users: int,
    n_merchants: int,
    rings_per_month: int,
    schedule: dict[str, int],
    lone_fraud_frac: float,
) -> None:
    if months < 2:
        raise ConfigError(f"months must be >= 2 (drift needs a before and an after), got {months}")
    if n_users < 20:
        raise ConfigError(f"n_users must be >= 20, got {n_users}")
    if n_merchants < 10:
        raise ConfigError(f"n_merchants must be >= 10, got {n_merchants}")
    _check_schedule(schedule, months)
    month, debuts = Counter(schedule.values()).most_common(1)[0]
    if rings_per_month < max(1, debuts):
        raise ConfigError(
            f"rings_per_month must be >= {max(1, debuts)} (month {month} of the schedule starts "
            f"{debuts} tactics, each needs a ring), got {rings_per_month}"
        )
    largest = max(_TACTICS[t].sizes[1] for t in schedule)
    need = 2 * months * rings_per_month * largest
    if n_users < need:
        raise ConfigError(
            f"n_users: {months} months of {rings_per_month} rings of up to {largest} members "
            f"must fit into half the users, so n_users >= {need}; got {n_users}"
        )
    if not 0 <= lone_fraud_frac < 0.2:
        raise ConfigError(f"lone_fraud_frac must be in [0, 0.2), got {lone_fraud_frac}")


def _check_schedule(schedule: dict[str, int], months: int) -> None:
    for tactic, first in schedule.items():
        if tactic not in _TACTICS:
            raise ConfigError(f"schedule: unknown tactic {tactic!r}; known: {', '.join(TACTICS)}")
        if isinstance(first, bool) or not isinstance(first, (int, np.integer)):
            raise ConfigError(f"schedule: month of {tactic!r} must be an integer, got {first!r}")
        if not 0 <= first < months:
            raise ConfigError(
                f"schedule: {tactic!r} starts in month {first}, outside 0..{months - 1} "
                f"(months={months})"
            )
    if 0 not in schedule.values():
        raise ConfigError(f"schedule: no tactic starts in month 0, got {schedule}")


def _start_of(start: str) -> int:
    try:
        return _start_seconds(start)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"start must be an ISO date such as 2026-01-01, got {start!r}") from e


# --- who is who ----------------------------------------------------------------------------------


def _build_world(
    rng: np.random.Generator,
    n_users: int,
    n_merchants: int,
    tactics: list[str],
    lone_fraud_frac: float,
) -> _World:
    """The population of ``synthetic``, one ring per entry of ``tactics``, lone fraudsters."""
    low, high = np.array([_TACTICS[t].sizes for t in tactics]).T
    return _populate(
        rng,
        n_users,
        n_merchants,
        lambda: rng.integers(low, high + 1),
        lambda members, devices, popularity: _recruit(rng, members, tactics, devices, popularity),
        lone_fraud_frac,
    )


def _recruit(
    rng: np.random.Generator,
    ring_members: list[np.ndarray],
    tactics: list[str],
    devices: np.ndarray,
    popularity: np.ndarray,
) -> list[_Ring]:
    """Shared devices and mule merchants for the early tactics; ordinary merchants (never a
    mule) for the later ones, popular ones for ``slow_burn``."""
    n_merchants = len(popularity)
    mule_pool = rng.choice(n_merchants, size=max(3, n_merchants // 40), replace=False)
    ordinary = popularity.copy()
    ordinary[mule_pool] = 0
    ordinary /= ordinary.sum()
    popular = np.argsort(-ordinary, kind="stable")[: max(5, n_merchants // 10)]
    rings = []
    for members, tactic in zip(ring_members, tactics, strict=True):
        if _TACTICS[tactic].shares_devices:
            shared = devices.max() + 1 + np.arange(rng.integers(1, 3))
            devices[members, 2] = shared[np.arange(len(members)) % len(shared)]
            merchants = rng.choice(mule_pool, size=rng.integers(1, 3), replace=False)
        else:
            shared = np.zeros(0, dtype=np.int64)
            if tactic == "fan_out":
                many = min(3 * len(members), int((ordinary > 0).sum()))
                merchants = rng.choice(n_merchants, size=many, replace=False, p=ordinary)
            else:
                merchants = rng.choice(popular, size=rng.integers(2, 4), replace=False)
        rings.append(_Ring(members, shared, merchants, tactic))
    return rings


def _planted(w: _World, plan: list[tuple[int, str]]) -> list[DriftRing]:
    return [
        DriftRing(
            ring_id=i,
            month=month,
            tactic=tactic,
            members=tuple(_ids("U", np.sort(ring.members)).tolist()),
            devices=tuple(_ids("D", ring.devices).tolist()),
            merchants=tuple(_ids("M", np.sort(ring.mules), 4).tolist()),
        )
        for i, ((month, tactic), ring) in enumerate(zip(plan, w.rings, strict=True))
    ]


# --- fraud ---------------------------------------------------------------------------------------


def _ring_activity(
    rng: np.random.Generator, w: _World, ring: _Ring, t0: int
) -> dict[str, np.ndarray]:
    """The ring's transactions within the month that starts at ``t0`` (late ones end with it)."""
    if ring.kind == "fan_out":
        part = _fan_out(rng, w, ring, t0)
    elif ring.kind == "slow_burn":
        part = _slow_burn(rng, w, ring, t0)
    else:
        starts = _event_times(rng, int(rng.integers(3, 7)), MONTH_DAYS, t0)
        part = _concat([_one_ring_burst(rng, w, ring, float(s)) for s in starts])
    part["t"] = np.minimum(part["t"].astype(np.int64), t0 + MONTH_DAYS * _DAY - 1)
    return part


def _own_device(rng: np.random.Generator, w: _World, user: np.ndarray) -> np.ndarray:
    """A device of the user's own (main or second slot; never a household, kiosk or ring one)."""
    return w.devices[user, rng.integers(0, 2, size=len(user))]


def _fan_out(rng: np.random.Generator, w: _World, ring: _Ring, t0: int) -> dict[str, np.ndarray]:
    """Two to five bursts, each starting at an ordinary time of day."""
    starts = _event_times(rng, int(rng.integers(2, 6)), MONTH_DAYS - 1, t0)
    return _concat([_one_fan_out(rng, w, ring, float(s)) for s in starts])


def _one_fan_out(
    rng: np.random.Generator, w: _World, ring: _Ring, clock: float
) -> dict[str, np.ndarray]:
    """The recruiter pays each mule within a day; each mule cashes out 1 to 4 times within hours
    of being paid, at merchants drawn from the ring's many ordinary ones."""
    recruiter, mules = ring.members[0], ring.members[1:]
    k = len(mules)
    paid = clock + np.sort(rng.uniform(0, _DAY, size=k))  # (k,) spread over a day
    sender = np.full(k, recruiter)
    amount = rng.lognormal(3.6, 0.8, size=k)  # drawn like an honest transfer
    transfers = _part(
        paid.astype(np.int64), sender, _own_device(rng, w, sender), _ids("U", mules), amount, True
    )
    buys = rng.integers(1, 5, size=k)
    user = np.repeat(mules, buys)
    delay = np.repeat(rng.uniform(0.5, 6, size=k) * _HOUR, buys)
    t = np.repeat(paid, buys) + delay + rng.exponential(1800, size=len(user))
    merchant = _ids("M", rng.choice(ring.mules, size=len(user)), 4)
    cash = _part(
        t.astype(np.int64),
        user,
        _own_device(rng, w, user),
        merchant,
        _spend(rng, w, user, 0.4),
        True,
    )
    return _concat([transfers, cash])


def _slow_burn(rng: np.random.Generator, w: _World, ring: _Ring, t0: int) -> dict[str, np.ndarray]:
    """Five to ten rounds at ordinary times of day over three to seven days."""
    span = int(rng.integers(3, 8))
    first = t0 + int(rng.integers(0, MONTH_DAYS - span + 1)) * _DAY
    rounds = np.sort(_event_times(rng, int(rng.integers(5, 11)), span, first))
    return _concat([_slow_round(rng, w, ring, float(s)) for s in rounds])


def _slow_round(
    rng: np.random.Generator, w: _World, ring: _Ring, clock: float
) -> dict[str, np.ndarray]:
    """A small amount round the ring over a few hours, then about half the members buy at the
    ring's popular merchants within hours, in their usual amounts."""
    k = len(ring.members)
    order = rng.permutation(ring.members)
    hops = clock + np.cumsum(rng.exponential(2 * _HOUR, size=k))  # (k,)
    amount = rng.lognormal(2.3, 0.4) * rng.uniform(0.9, 1.0, size=k)  # about 10, below honest
    counterparty = _ids("U", np.roll(order, -1))
    transfers = _part(
        hops.astype(np.int64), order, _own_device(rng, w, order), counterparty, amount, True
    )
    buyer = ring.members[rng.random(k) < 0.5]
    t = hops[-1] + rng.uniform(1, 8, size=len(buyer)) * _HOUR
    merchant = _ids("M", rng.choice(ring.mules, size=len(buyer)), 4)
    cash = _part(
        t.astype(np.int64), buyer, _own_device(rng, w, buyer), merchant, _spend(rng, w, buyer), True
    )
    return _concat([transfers, cash])


__all__ = [
    "DEFAULT_SCHEDULE",
    "LONE_TACTIC",
    "MONTH_DAYS",
    "TACTICS",
    "DriftRing",
    "DriftingStream",
    "default_schedule",
    "generate_drifting_stream",
    "ring_plan",
]
