"""SYNTHETIC transactions with planted fraud rings, for demos, tests and the documentation.

Nothing here is real data: every user, merchant, device and payment is drawn from a seeded random
generator, so the same ``seed`` gives the same frame on any machine. The generator plants patterns
that a graph model should find and that simple rules should not find alone:

- **Normal users** own one or two devices (about 3% of users share a device within a household, so
  a shared device is no proof of fraud), buy at a few favourite merchants at Poisson-distributed
  times with weekly and daily rhythms and log-normal amounts, and now and then send money to a
  friend.
- **Fraud rings** share one to three devices, act in bursts of a few hours, send similar amounts
  round in circles (A -> B -> C -> A) and cash out at a small set of "mule" merchants (which have
  honest customers too). A ``"collector"`` ring also funnels money to one member who cashes out
  alone. Members keep shopping normally; only their fraudulent payments are labelled 1.
- **Lone fraudsters** run a stolen-card burst: many purchases at unrelated merchants within a
  few hours, from a device no one else uses.

At the defaults: about 50,000 transactions, about 3% fraudulent, generated in well under a second.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from abyssal.core.errors import ConfigError, DataError
from abyssal.data.tables import write_table

_DAY = 86_400
_HOUR = 3_600
# Relative activity by hour of day (UTC) and by weekday (Monday first).
_HOUR_WEIGHTS = np.array(
    [1, 0.6, 0.4, 0.3, 0.3, 0.5, 1, 2, 3, 4, 4.5, 5, 6, 5.5, 5, 4.5, 4.5, 5, 6, 6.5, 6, 5, 3.5, 2]
)
_WEEKDAY_WEIGHTS = np.array([1.0, 1.0, 1.0, 1.05, 1.2, 1.35, 0.9])
_FAVOURITE_P = np.array([0.4, 0.25, 0.15, 0.12, 0.08])  # how often each favourite slot is used
_PURCHASE_RATE = 0.37  # mean purchases per user per day
_TRANSFER_RATE = 0.03  # mean peer transfers per user per day
_HOUSEHOLD_FRAC = 0.03
_RING_KINDS = ("cycle", "collector")


@dataclass(frozen=True)
class PlantedRing:
    """A fraud ring the generator planted: the ground truth for ring detection.

    Attributes:
        ring_id: 0-based ring number.
        members: the ring's user ids.
        devices: the device ids the members share.
        kind: ``"cycle"`` (money goes round the ring, every member cashes out) or
            ``"collector"`` (round the ring, then to one member who cashes out).
    """

    ring_id: int
    members: list[str]
    devices: list[str]
    kind: str


@dataclass
class SyntheticData:
    """What :func:`generate_transactions` returns.

    Attributes:
        transactions: the transactions format of :mod:`abyssal.solutions.fraud.schema`, with
            ``label`` (1 = fraudulent transaction), sorted by time.
        rings: the planted rings.
        user_labels: ``user_id``, ``label`` for every user (1 = ring member or lone fraudster).
    """

    transactions: pd.DataFrame
    rings: list[PlantedRing]
    user_labels: pd.DataFrame


@dataclass
class _Ring:
    members: np.ndarray  # user indices
    devices: np.ndarray  # device indices
    mules: np.ndarray  # merchant indices
    kind: str


@dataclass
class _World:
    n_users: int
    n_merchants: int
    devices: np.ndarray  # (U, 2) device index: primary, secondary (a ring member's: the ring's)
    favourites: np.ndarray  # (U, 5) merchant indices
    popularity: np.ndarray  # (M,) probability of each merchant
    contacts: np.ndarray  # (U, 4) user indices
    rings: list[_Ring]
    lone: np.ndarray  # user indices
    lone_devices: np.ndarray
    n_devices: int


def generate_transactions(
    n_users: int = 2000,
    n_merchants: int = 300,
    n_rings: int = 12,
    days: int = 60,
    seed: int = 0,
    ring_size: tuple[int, int] = (3, 8),
    lone_fraud_frac: float = 0.005,
    start: str = "2026-01-01",
) -> SyntheticData:
    """Generate synthetic transactions with planted fraud rings (see the module docstring).

    Args:
        n_users: number of users (ring members and lone fraudsters included).
        n_merchants: number of merchants.
        n_rings: number of fraud rings to plant.
        days: length of the period in days.
        seed: the random seed; everything is determined by it.
        ring_size: smallest and largest number of members of a ring (inclusive).
        lone_fraud_frac: fraction of users who are lone fraudsters.
        start: first day of the period (ISO date, UTC).

    Returns:
        The transactions, the planted rings and the per-user labels.

    Raises:
        ConfigError: an argument out of range (e.g. more ring members than half the users).

    Example:
        >>> data = generate_transactions(n_users=300, n_merchants=50, n_rings=2, days=14, seed=1)
        >>> sorted(data.transactions["label"].unique().tolist())
        [0, 1]
    """
    _check_arguments(n_users, n_merchants, n_rings, days, ring_size, lone_fraud_frac)
    rng = np.random.default_rng(seed)
    t0 = _start_seconds(start)
    world = _build_world(rng, n_users, n_merchants, n_rings, ring_size, lone_fraud_frac)
    parts = [_purchases(rng, world, days, t0), _transfers(rng, world, days, t0)]
    parts += [_ring_bursts(rng, world, ring, days, t0) for ring in world.rings]
    parts.append(_lone_bursts(rng, world, days, t0))
    transactions = _assemble(parts, t0 + days * _DAY - 1)
    labels = np.zeros(n_users, dtype=np.int8)
    for ring in world.rings:
        labels[ring.members] = 1
    labels[world.lone] = 1
    user_labels = pd.DataFrame({"user_id": _ids("U", np.arange(n_users)), "label": labels})
    return SyntheticData(transactions, _planted(world), user_labels)


def _check_arguments(
    n_users: int,
    n_merchants: int,
    n_rings: int,
    days: int,
    ring_size: tuple[int, int],
    lone_fraud_frac: float,
) -> None:
    low, high = ring_size
    if n_users < 20 or n_merchants < 5 or days < 1 or n_rings < 0:
        raise ConfigError(
            "need n_users >= 20, n_merchants >= 5, days >= 1, n_rings >= 0; "
            f"got n_users={n_users}, n_merchants={n_merchants}, days={days}, n_rings={n_rings}"
        )
    if not 2 <= low <= high:
        raise ConfigError(f"ring_size must be (low, high) with 2 <= low <= high, got {ring_size}")
    if n_rings * high > n_users // 2:
        raise ConfigError(
            f"{n_rings} rings of up to {high} members need n_users >= {2 * n_rings * high}, "
            f"got {n_users}"
        )
    if not 0 <= lone_fraud_frac < 0.2:
        raise ConfigError(f"lone_fraud_frac must be in [0, 0.2), got {lone_fraud_frac}")


def _start_seconds(start: str) -> int:
    moment = pd.Timestamp(start)
    moment = moment.tz_localize("UTC") if moment.tz is None else moment.tz_convert("UTC")
    return int(moment.timestamp())


def _ids(prefix: str, index: np.ndarray, width: int = 5) -> np.ndarray:
    return np.array([f"{prefix}{i:0{width}d}" for i in index.tolist()], dtype=object)


def _build_world(
    rng: np.random.Generator,
    n_users: int,
    n_merchants: int,
    n_rings: int,
    ring_size: tuple[int, int],
    lone_fraud_frac: float,
) -> _World:
    """Who is who: devices, favourite merchants, friends, rings and lone fraudsters."""
    order = rng.permutation(n_users)  # ring members first, then lone fraudsters, then the rest
    sizes = rng.integers(ring_size[0], ring_size[1] + 1, size=n_rings)
    ring_members = np.split(order[: sizes.sum()], np.cumsum(sizes)[:-1]) if n_rings else []
    n_lone = round(lone_fraud_frac * n_users)
    lone = order[sizes.sum() : sizes.sum() + n_lone]
    honest = order[sizes.sum() + n_lone :]
    devices, n_devices = _own_devices(rng, n_users, honest)
    popularity = 1.0 / np.arange(1, n_merchants + 1) ** 0.8
    popularity = rng.permutation(popularity / popularity.sum())
    mule_pool = rng.choice(n_merchants, size=max(3, n_merchants // 40), replace=False)
    rings = []
    for members in ring_members:
        shared = n_devices + np.arange(rng.integers(1, 4))
        n_devices += len(shared)
        devices[members, 1] = shared[np.arange(len(members)) % len(shared)]
        mules = rng.choice(mule_pool, size=rng.integers(1, 4), replace=False)
        rings.append(_Ring(members, shared, mules, str(rng.choice(_RING_KINDS, p=[0.7, 0.3]))))
    return _World(
        n_users=n_users,
        n_merchants=n_merchants,
        devices=devices,
        favourites=rng.choice(n_merchants, size=(n_users, len(_FAVOURITE_P)), p=popularity),
        popularity=popularity,
        contacts=_contacts(rng, n_users, ring_members),
        rings=rings,
        lone=lone,
        lone_devices=n_devices + np.arange(n_lone),
        n_devices=n_devices + n_lone,
    )


def _own_devices(
    rng: np.random.Generator, n_users: int, honest: np.ndarray
) -> tuple[np.ndarray, int]:
    """Primary device per user, a second one for 40%, and households that share one."""
    devices = np.column_stack([np.arange(n_users), np.arange(n_users)])
    second = np.flatnonzero(rng.random(n_users) < 0.4)
    devices[second, 1] = n_users + np.arange(len(second))
    n_shared = max(2, round(_HOUSEHOLD_FRAC * n_users)) // 2 * 2
    sharing = rng.choice(honest, size=n_shared, replace=False)
    for a, b in sharing.reshape(-1, 2).tolist():  # households of two share a's device
        if devices[b, 1] == devices[b, 0]:  # b had one device: both slots become the shared one
            devices[b, 1] = devices[a, 0]
        devices[b, 0] = devices[a, 0]
    return devices, n_users + len(second)


def _contacts(rng: np.random.Generator, n_users: int, rings: list[np.ndarray]) -> np.ndarray:
    """Four friends per user (never oneself); ring members count two fellow members among them."""
    contacts = rng.integers(0, n_users - 1, size=(n_users, 4))
    contacts += contacts >= np.arange(n_users)[:, None]
    for members in rings:
        for i, member in enumerate(members):
            others = np.delete(members, i)
            contacts[member, :2] = rng.choice(others, size=2)
    return contacts


def _event_times(rng: np.random.Generator, n: int, days: int, t0: int) -> np.ndarray:
    """``n`` times with a weekly and a daily rhythm."""
    weekday = (t0 // _DAY + 3 + np.arange(days)) % 7  # 1970-01-01 was a Thursday
    day_p = _WEEKDAY_WEIGHTS[weekday] / _WEEKDAY_WEIGHTS[weekday].sum()
    day = rng.choice(days, size=n, p=day_p)
    hour = rng.choice(24, size=n, p=_HOUR_WEIGHTS / _HOUR_WEIGHTS.sum())
    return t0 + day * _DAY + hour * _HOUR + rng.integers(0, _HOUR, size=n)


def _part(
    t: np.ndarray,
    user: np.ndarray,
    device: np.ndarray,
    counterparty: np.ndarray,
    amount: np.ndarray,
    fraud: bool,
) -> dict[str, np.ndarray]:
    """A block of transactions; ``counterparty`` holds ids (``U...`` user, ``M...`` merchant)."""
    n = len(t)
    label = np.full(n, int(fraud), dtype=np.int8)
    return {
        "t": t,
        "user": user,
        "device": device,
        "cp": counterparty,
        "amount": amount,
        "label": label,
    }


def _purchases(rng: np.random.Generator, w: _World, days: int, t0: int) -> dict[str, np.ndarray]:
    """Poisson purchases at favourite merchants, 10% elsewhere; log-normal amounts per user."""
    rate = rng.lognormal(np.log(_PURCHASE_RATE) - 0.18, 0.6, size=w.n_users)
    user = np.repeat(np.arange(w.n_users), rng.poisson(rate * days))
    n = len(user)
    slot = rng.choice(len(_FAVOURITE_P), size=n, p=_FAVOURITE_P)
    merchant = w.favourites[user, slot]
    explore = rng.random(n) < 0.1
    merchant[explore] = rng.choice(w.n_merchants, size=int(explore.sum()), p=w.popularity)
    device = w.devices[user, (rng.random(n) < 0.25).astype(int)]
    level = rng.normal(3.0, 0.5, size=w.n_users)  # median spend about 20 per user, varying
    amount = np.exp(level[user] + rng.normal(0, 0.7, size=n))
    return _part(
        _event_times(rng, n, days, t0), user, device, _ids("M", merchant, 4), amount, False
    )


def _transfers(rng: np.random.Generator, w: _World, days: int, t0: int) -> dict[str, np.ndarray]:
    """Occasional transfers to friends from the primary device."""
    rate = rng.lognormal(np.log(_TRANSFER_RATE) - 0.32, 0.8, size=w.n_users)
    user = np.repeat(np.arange(w.n_users), rng.poisson(rate * days))
    n = len(user)
    friend = w.contacts[user, rng.integers(0, w.contacts.shape[1], size=n)]
    amount = rng.lognormal(3.6, 0.8, size=n)
    times = _event_times(rng, n, days, t0)
    return _part(times, user, w.devices[user, 0], _ids("U", friend), amount, False)


def _ring_bursts(
    rng: np.random.Generator, w: _World, ring: _Ring, days: int, t0: int
) -> dict[str, np.ndarray]:
    """Three to six bursts of circular transfers and cash-outs."""
    bursts = []
    for _ in range(rng.integers(3, 7)):
        start = t0 + int(rng.integers(0, days * _DAY))
        bursts.append(_one_ring_burst(rng, w, ring, start))
    return _concat(bursts)


def _one_ring_burst(
    rng: np.random.Generator, w: _World, ring: _Ring, start: int
) -> dict[str, np.ndarray]:
    """Two to four rounds A -> B -> ... -> A of similar amounts within hours, then cash-outs."""
    k = len(ring.members)
    senders, receivers, times, amounts = [], [], [], []
    clock, base = float(start), rng.lognormal(5.8, 0.4)
    for _ in range(rng.integers(2, 5)):
        order = rng.permutation(ring.members)
        hop_times = clock + np.cumsum(30 + rng.exponential(600, size=k))
        hop_fee = 1 - 0.01 * np.arange(k)  # each hop keeps a little
        senders.append(order)
        receivers.append(np.roll(order, -1))
        times.append(hop_times)
        amounts.append(base * hop_fee * rng.uniform(0.98, 1.0, size=k))
        clock = hop_times[-1] + rng.exponential(1800)
    if ring.kind == "collector":
        collector, others = ring.members[0], ring.members[1:]
        senders.append(others)
        receivers.append(np.full(len(others), collector))
        times.append(clock + np.cumsum(30 + rng.exponential(300, size=len(others))))
        amounts.append(base * rng.uniform(0.9, 1.0, size=len(others)))
        clock = times[-1][-1]
    transfers = _ring_part(rng, w, ring, senders, receivers, times, amounts)
    return _concat([transfers, _cash_out(rng, w, ring, clock, base)])


def _ring_part(
    rng: np.random.Generator,
    w: _World,
    ring: _Ring,
    senders: list[np.ndarray],
    receivers: list[np.ndarray],
    times: list[np.ndarray],
    amounts: list[np.ndarray],
) -> dict[str, np.ndarray]:
    user = np.concatenate(senders)
    device = _ring_devices(rng, ring, w, user)
    t = np.concatenate(times).astype(np.int64)
    return _part(
        t, user, device, _ids("U", np.concatenate(receivers)), np.concatenate(amounts), True
    )


def _ring_devices(rng: np.random.Generator, ring: _Ring, w: _World, user: np.ndarray) -> np.ndarray:
    """Each member mostly uses "their" shared device (their secondary), sometimes another one."""
    device = w.devices[user, 1].copy()
    swap = rng.random(len(user)) < 0.2
    device[swap] = rng.choice(ring.devices, size=int(swap.sum()))
    return device


def _cash_out(
    rng: np.random.Generator, w: _World, ring: _Ring, clock: float, base: float
) -> dict[str, np.ndarray]:
    """Purchases at the ring's mule merchants right after the transfers."""
    if ring.kind == "collector":
        user = np.full(
            rng.integers(len(ring.members) // 2 + 1, len(ring.members) + 2), ring.members[0]
        )
    else:
        user = np.repeat(ring.members, rng.integers(1, 3, size=len(ring.members)))
    n = len(user)
    t = (clock + np.cumsum(60 + rng.exponential(900, size=n))).astype(np.int64)
    merchant = rng.choice(ring.mules, size=n)
    amount = base * rng.uniform(0.5, 1.0, size=n)
    return _part(t, user, _ring_devices(rng, ring, w, user), _ids("M", merchant, 4), amount, True)


def _lone_bursts(rng: np.random.Generator, w: _World, days: int, t0: int) -> dict[str, np.ndarray]:
    """Stolen-card bursts: 5-15 purchases at random merchants within 1-3 hours, own device."""
    counts = rng.integers(5, 16, size=len(w.lone))
    user = np.repeat(w.lone, counts)
    device = np.repeat(w.lone_devices, counts)
    starts = np.repeat(t0 + rng.integers(0, days * _DAY, size=len(w.lone)), counts)
    spans = np.repeat(rng.uniform(1, 3, size=len(w.lone)) * _HOUR, counts)
    t = starts + (rng.random(len(user)) * spans).astype(np.int64)
    merchant = rng.integers(0, w.n_merchants, size=len(user))
    amount = rng.lognormal(5.0, 0.5, size=len(user))
    return _part(t, user, device, _ids("M", merchant, 4), amount, True)


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def _assemble(parts: list[dict[str, np.ndarray]], last_second: int) -> pd.DataFrame:
    """One frame sorted by time, transaction ids numbered in that order."""
    rows = _concat(parts)
    t = np.minimum(rows["t"].astype(np.int64), last_second)
    order = np.lexsort((np.arange(len(t)), t))  # by time, ties in generation order
    return pd.DataFrame(
        {
            "transaction_id": _ids("T", np.arange(len(t)), 7),
            "timestamp": t[order],
            "user_id": _ids("U", rows["user"][order]),
            "device_id": _ids("D", rows["device"][order]),
            "counterparty_id": rows["cp"][order],
            "amount": np.round(rows["amount"][order], 2),
            "label": rows["label"][order],
        }
    ).astype({"transaction_id": str, "user_id": str, "device_id": str, "counterparty_id": str})


def _planted(w: _World) -> list[PlantedRing]:
    return [
        PlantedRing(
            ring_id=i,
            members=_ids("U", np.sort(ring.members)).tolist(),
            devices=_ids("D", ring.devices).tolist(),
            kind=ring.kind,
        )
        for i, ring in enumerate(w.rings)
    ]


def split_stream(frame: pd.DataFrame, new_frac: float = 0.05) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off the latest transactions as a stream of "new" ones.

    The cut falls between two timestamps, so every new transaction is later than every one in the
    history (the new part may be a little larger than ``new_frac`` when times are tied).

    Args:
        frame: transactions with a ``timestamp`` column (and ``transaction_id`` to break ties).
        new_frac: fraction of rows to put in the new stream, in (0, 1).

    Returns:
        ``(history, new)``, each sorted by time with a fresh index.

    Raises:
        ConfigError: ``new_frac`` outside (0, 1).
        DataError: all rows share the latest timestamp, so there is no history.

    Example:
        >>> history, new = split_stream(generate_transactions(n_users=100, n_rings=2).transactions)
        >>> bool(history["timestamp"].max() < new["timestamp"].min())
        True
    """
    if not 0 < new_frac < 1:
        raise ConfigError(f"new_frac must be in (0, 1), got {new_frac}")
    keys = ["timestamp"] + (["transaction_id"] if "transaction_id" in frame else [])
    ordered = frame.sort_values(keys, kind="stable").reset_index(drop=True)
    n_new = max(1, round(len(ordered) * new_frac))
    cutoff = ordered["timestamp"].iloc[len(ordered) - n_new]
    is_new = (ordered["timestamp"] >= cutoff).to_numpy()
    if is_new.all():
        raise DataError("cannot split a stream: every transaction has the latest timestamp")
    history = ordered[~is_new].reset_index(drop=True)
    return history, ordered[is_new].reset_index(drop=True)


def write_sample(
    directory: str | os.PathLike[str], seed: int = 0, small: bool = True
) -> tuple[Path, Path]:
    """Write a synthetic sample for the documentation and quick starts.

    Writes ``transactions.csv`` (the history, with labels) and ``new_transactions.csv`` (the
    latest 5%, as a stream to score). The new file keeps its ``label`` column so that scores can
    be evaluated; the column is optional in real new transactions.

    Args:
        directory: the folder to write to (created if needed).
        seed: the random seed.
        small: 400 users over 30 days (a few thousand rows) instead of the full defaults.

    Returns:
        The paths of the two files.

    Example:
        >>> history_path, new_path = write_sample("demo")  # doctest: +SKIP
    """
    size = dict(n_users=400, n_merchants=80, n_rings=4, days=30) if small else {}
    data = generate_transactions(seed=seed, **size)
    history, new = split_stream(data.transactions)
    directory = Path(directory)
    return (
        write_table(history, directory / "transactions.csv"),
        write_table(new, directory / "new_transactions.csv"),
    )


__all__ = [
    "PlantedRing",
    "SyntheticData",
    "generate_transactions",
    "split_stream",
    "write_sample",
]
