"""SYNTHETIC transactions with planted fraud rings, for demos, tests and the documentation.

Nothing here is real data: every user, merchant, device and payment is drawn from a seeded random
generator, so the same ``seed`` gives the same frame on any machine.

The data is built so that an account's own statistics say little and its relations say much. Honest
users (label 0) behave in every way a fraudster does when seen alone:

- they buy at a few favourite merchants with daily, weekly and pay-day rhythms (the 1st and the
  15th are busier), in log-normal amounts around a level of their own; their activity varies over
  an order of magnitude and about 4% are power users with several times the usual volume;
- most go on shopping sprees now and then: 3 to 8 purchases within a few hours;
- they own one to three devices; households of 2 to 5 share a tablet, and a few public kiosks
  (a shop's terminal) are used by 10 to 30 customers each, so a shared device is no proof of fraud;
- they send money to friends, and friend groups of 3 to 6 split bills (everyone repays the payer
  within the hour) or settle up round a circle (A -> B -> C -> A, similar small amounts).

Fraud (label 1 on the fraudulent transactions only; the accounts keep their honest activity too):

- **Rings** of 3 to 8 members act in two to five coordinated bursts: money goes round the ring
  (kind ``"cycle"``) or round and then to one collector (kind ``"collector"``), in amounts drawn
  like honest transfers, and members then cash out at the ring's one or two "mule" merchants
  (which have honest customers too) in amounts drawn from their own purchase level. Three rings in
  four act from one or two shared devices that also carry the members' honest purchases; the rest
  share no device and are linked only by the money they move and the merchants they cash out at.
- **Lone fraudsters** run one stolen-card spree (3 to 8 purchases within hours, a little pricier
  than their own) from a device no one else uses, and otherwise look like anyone else.

Where the signal lives:

- own statistics (weak on purpose): a few more transfers in and out, a burst more, perhaps a
  device more, slightly higher amounts; each overlaps heavily with honest users;
- relational (strong): a device used by several accounts within the same hour; transfers that
  close a cycle among accounts that share devices or cash-out merchants; several accounts paying
  the same merchant within an hour or two after moving money among themselves; accounts whose
  bursts coincide in time.

At the defaults: about 50,000 transactions, 1 to 2% of them and 3 to 4% of the accounts
fraudulent, generated in well under a second.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from abyssal.core.errors import ConfigError

_DAY = 86_400
_HOUR = 3_600
# Relative activity by hour of day (UTC) and by weekday (Monday first); pay days are busier.
_HOUR_WEIGHTS = np.array(
    [1, 0.6, 0.4, 0.3, 0.3, 0.5, 1, 2, 3, 4, 4.5, 5, 6, 5.5, 5, 4.5, 4.5, 5, 6, 6.5, 6, 5, 3.5, 2]
)
_WEEKDAY_WEIGHTS = np.array([1.0, 1.0, 1.0, 1.05, 1.2, 1.35, 0.9])
_PAYDAYS, _PAYDAY_WEIGHT = (1, 2, 15, 16), 1.8
_FAVOURITE_P = np.array([0.4, 0.25, 0.15, 0.12, 0.08])  # how often each favourite slot is used
_OWN_DEVICES_P = np.array([0.5, 0.38, 0.12])  # one, two or three devices of one's own
_DEVICE_SLOT_P = np.array([0.65, 0.2, 0.15])  # main, second, shared slot (household, ring)
_PURCHASE_RATE = 0.22  # mean purchases per user per day, outside sprees
_SPREE_RATE = 0.015  # mean shopping sprees per user per day
_TRANSFER_RATE = 0.03  # mean transfers to a friend per user per day
_GROUP_EVENT_RATE = 0.1  # bill splits or settle-up circles per friend group per day
_POWER_FRAC, _HOUSEHOLD_FRAC, _FRIEND_GROUP_FRAC = 0.04, 0.1, 0.5
_RING_KINDS = ("cycle", "collector")


@dataclass(frozen=True)
class PlantedRing:
    """A fraud ring the generator planted: the ground truth for ring detection.

    Attributes:
        ring_id: 0-based ring number.
        members: the ring's user ids.
        devices: the device ids the members share (empty for a ring linked only by money).
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
    devices: np.ndarray  # shared device indices, possibly none
    mules: np.ndarray  # merchant indices
    kind: str


@dataclass
class _World:
    devices: np.ndarray  # (U, 3) device index per slot of _DEVICE_SLOT_P
    activity: np.ndarray  # (U,) multiplier of every honest rate
    level: np.ndarray  # (U,) mean log purchase amount
    favourites: np.ndarray  # (U, 5) merchant indices
    popularity: np.ndarray  # (M,) probability of each merchant
    contacts: np.ndarray  # (U, 4) user indices
    groups: np.ndarray  # (G, 6) user indices of each friend group, padded with -1
    kiosks: list[tuple[int, int, np.ndarray]]  # (device, merchant, users) of each kiosk
    rings: list[_Ring]
    lone: np.ndarray  # user indices
    lone_devices: np.ndarray

    @property
    def n_users(self) -> int:
        return len(self.devices)

    @property
    def n_merchants(self) -> int:
        return len(self.popularity)


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
    parts = [
        _purchases(rng, world, days, t0),
        _sprees(rng, world, days, t0),
        _kiosk_purchases(rng, world, days, t0),
        _transfers(rng, world, days, t0),
        _group_transfers(rng, world, days, t0),
    ]
    parts += [_ring_bursts(rng, world, ring, days, t0) for ring in world.rings]
    parts.append(_lone_sprees(rng, world, days, t0))
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
    """``prefix`` + zero-padded number of each index, formatting each distinct index once."""
    index = np.asarray(index, dtype=np.int64)
    if len(index) < 4096:
        return np.array([f"{prefix}{i:0{width}d}" for i in index.tolist()], dtype=object)
    distinct, inverse = np.unique(index, return_inverse=True)
    names = np.array([f"{prefix}{i:0{width}d}" for i in distinct.tolist()], dtype=object)
    return names[inverse.reshape(-1)]


def _build_world(
    rng: np.random.Generator,
    n_users: int,
    n_merchants: int,
    n_rings: int,
    ring_size: tuple[int, int],
    lone_fraud_frac: float,
) -> _World:
    """Who is who: devices, habits, friends, kiosks, rings and lone fraudsters."""
    return _populate(
        rng,
        n_users,
        n_merchants,
        lambda: rng.integers(ring_size[0], ring_size[1] + 1, size=n_rings),
        lambda members, devices, popularity: _plant_rings(rng, members, devices, popularity),
        lone_fraud_frac,
    )


def _populate(
    rng: np.random.Generator,
    n_users: int,
    n_merchants: int,
    ring_sizes: Callable[[], np.ndarray],
    plant: Callable[[list[np.ndarray], np.ndarray, np.ndarray], list[_Ring]],
    lone_fraud_frac: float,
) -> _World:
    """The population: ``ring_sizes()`` draws the rings' sizes and ``plant(members, devices,
    popularity)`` makes the rings (the drifting stream plants its own tactics)."""
    order = rng.permutation(n_users)  # ring members first, then lone fraudsters, then the rest
    sizes = ring_sizes()
    ring_members = np.split(order[: sizes.sum()], np.cumsum(sizes)[:-1]) if len(sizes) else []
    n_lone = round(lone_fraud_frac * n_users)
    devices = _own_devices(rng, n_users)
    _share_households(rng, devices)
    popularity = 1.0 / np.arange(1, n_merchants + 1) ** 0.8
    popularity = rng.permutation(popularity / popularity.sum())
    rings = plant(ring_members, devices, popularity)
    kiosks = _kiosks(rng, n_users, popularity, int(devices.max()) + 1)
    power = np.where(rng.random(n_users) < _POWER_FRAC, rng.uniform(3, 6, size=n_users), 1.0)
    return _World(
        devices=devices,
        activity=rng.lognormal(-0.18, 0.6, size=n_users) * power,
        level=rng.normal(3.0, 0.5, size=n_users),  # median spend about 20 per user, varying
        favourites=rng.choice(n_merchants, size=(n_users, len(_FAVOURITE_P)), p=popularity),
        popularity=popularity,
        contacts=_contacts(rng, n_users, ring_members),
        groups=_friend_groups(rng, n_users),
        kiosks=kiosks,
        rings=rings,
        lone=order[sizes.sum() : sizes.sum() + n_lone],
        lone_devices=int(devices.max()) + 1 + len(kiosks) + np.arange(n_lone),
    )


def _own_devices(rng: np.random.Generator, n_users: int) -> np.ndarray:
    """(U, 3) one to three devices per user; a slot without a device of its own repeats the last."""
    n_own = rng.choice(len(_OWN_DEVICES_P), size=n_users, p=_OWN_DEVICES_P) + 1
    devices = np.repeat(np.arange(n_users)[:, None], 3, axis=1)
    second = np.flatnonzero(n_own >= 2)
    devices[second, 1:] = n_users + np.arange(len(second))[:, None]
    third = np.flatnonzero(n_own == 3)
    devices[third, 2] = n_users + len(second) + np.arange(len(third))
    return devices


def _share_households(rng: np.random.Generator, devices: np.ndarray) -> None:
    """Households of two to five put one tablet in their members' shared slot."""
    n_users = len(devices)
    sizes = rng.integers(2, 6, size=max(1, round(_HOUSEHOLD_FRAC * n_users / 3.5)))
    members = rng.choice(n_users, size=sizes.sum(), replace=False)
    devices[members, 2] = devices.max() + 1 + np.repeat(np.arange(len(sizes)), sizes)


def _plant_rings(
    rng: np.random.Generator,
    ring_members: list[np.ndarray],
    devices: np.ndarray,
    popularity: np.ndarray,
) -> list[_Ring]:
    """Zero to two shared devices per ring, in the members' shared slot, and mule merchants."""
    n_merchants = len(popularity)
    mule_pool = rng.choice(n_merchants, size=max(3, n_merchants // 40), replace=False)
    rings = []
    for members in ring_members:
        shared = devices.max() + 1 + np.arange(rng.choice(3, p=[0.25, 0.5, 0.25]))
        if len(shared):
            devices[members, 2] = shared[np.arange(len(members)) % len(shared)]
        mules = rng.choice(mule_pool, size=rng.integers(1, 3), replace=False)
        kind = str(rng.choice(_RING_KINDS, p=[0.7, 0.3]))
        rings.append(_Ring(members, shared, mules, kind))
    return rings


def _kiosks(
    rng: np.random.Generator, n_users: int, popularity: np.ndarray, first_device: int
) -> list[tuple[int, int, np.ndarray]]:
    """One public terminal per 400 users, at a popular shop, used by 10 to 30 customers."""
    n = max(1, n_users // 400)
    shops = rng.choice(len(popularity), size=n, replace=False, p=popularity)
    sizes = rng.integers(10, 31, size=n)
    users = [rng.choice(n_users, size=min(int(k), n_users), replace=False) for k in sizes]
    return [(first_device + i, int(shops[i]), users[i]) for i in range(n)]


def _contacts(rng: np.random.Generator, n_users: int, rings: list[np.ndarray]) -> np.ndarray:
    """Four friends per user (never oneself); ring members count a fellow member among them."""
    contacts = rng.integers(0, n_users - 1, size=(n_users, 4))
    contacts += contacts >= np.arange(n_users)[:, None]
    for members in rings:
        contacts[members, 0] = np.roll(members, -1)  # members are in random order
    return contacts


def _friend_groups(rng: np.random.Generator, n_users: int) -> np.ndarray:
    """(G, 6) disjoint groups of 3 to 6 friends, about half the users, padded with -1."""
    sizes = rng.integers(3, 7, size=max(1, round(_FRIEND_GROUP_FRAC * n_users / 4.5)))
    members = rng.choice(n_users, size=sizes.sum(), replace=False)
    position = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    groups = np.full((len(sizes), 6), -1)
    groups[np.repeat(np.arange(len(sizes)), sizes), position] = members
    return groups


def _event_times(rng: np.random.Generator, n: int, days: int, t0: int) -> np.ndarray:
    """``n`` times with a daily, a weekly and a pay-day rhythm."""
    first = t0 // _DAY
    weekday = (first + 3 + np.arange(days)) % 7  # 1970-01-01 was a Thursday
    dates = np.datetime64(first, "D") + np.arange(days)
    day_of_month = (dates - dates.astype("datetime64[M]")).astype(int) + 1
    day_w = _WEEKDAY_WEIGHTS[weekday] * np.where(np.isin(day_of_month, _PAYDAYS), _PAYDAY_WEIGHT, 1)
    day = rng.choice(days, size=n, p=day_w / day_w.sum())
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
    label = np.full(len(t), int(fraud), dtype=np.int8)
    return dict(t=t, user=user, device=device, cp=counterparty, amount=amount, label=label)


def _honest_devices(rng: np.random.Generator, w: _World, user: np.ndarray) -> np.ndarray:
    return w.devices[user, rng.choice(len(_DEVICE_SLOT_P), size=len(user), p=_DEVICE_SLOT_P)]


def _spend(rng: np.random.Generator, w: _World, user: np.ndarray, extra: float = 0.0) -> np.ndarray:
    """Purchase amounts around each user's own level (raised by ``extra`` on the log scale)."""
    return np.exp(w.level[user] + extra + rng.normal(0, 0.7, size=len(user)))


# --- honest activity -----------------------------------------------------------------------------


def _purchases(rng: np.random.Generator, w: _World, days: int, t0: int) -> dict[str, np.ndarray]:
    """Poisson purchases at favourite merchants, 10% elsewhere."""
    user = np.repeat(np.arange(w.n_users), rng.poisson(_PURCHASE_RATE * w.activity * days))
    n = len(user)
    merchant = w.favourites[user, rng.choice(len(_FAVOURITE_P), size=n, p=_FAVOURITE_P)]
    explore = rng.random(n) < 0.1
    merchant[explore] = rng.choice(w.n_merchants, size=int(explore.sum()), p=w.popularity)
    t = _event_times(rng, n, days, t0)
    device = _honest_devices(rng, w, user)
    return _part(t, user, device, _ids("M", merchant, 4), _spend(rng, w, user), False)


def _sprees(rng: np.random.Generator, w: _World, days: int, t0: int) -> dict[str, np.ndarray]:
    """Shopping sprees now and then, each from one device."""
    user = np.repeat(np.arange(w.n_users), rng.poisson(_SPREE_RATE * w.activity * days))
    device = _honest_devices(rng, w, user)
    return _spree_part(rng, w, user, device, days, t0, extra=0.2, fraud=False)


def _spree_part(
    rng: np.random.Generator,
    w: _World,
    user: np.ndarray,
    device: np.ndarray,
    days: int,
    t0: int,
    extra: float,
    fraud: bool,
) -> dict[str, np.ndarray]:
    """One spree per entry of ``user``: 3 to 8 purchases at any merchants within 1 to 4 hours."""
    counts = rng.integers(3, 9, size=len(user))
    start = np.repeat(_event_times(rng, len(user), days, t0), counts)
    span = np.repeat(rng.uniform(1, 4, size=len(user)) * _HOUR, counts)
    user, device = np.repeat(user, counts), np.repeat(device, counts)
    t = start + (rng.random(len(user)) * span).astype(np.int64)
    merchant = rng.choice(w.n_merchants, size=len(user), p=w.popularity)
    return _part(t, user, device, _ids("M", merchant, 4), _spend(rng, w, user, extra), fraud)


def _kiosk_purchases(
    rng: np.random.Generator, w: _World, days: int, t0: int
) -> dict[str, np.ndarray]:
    """Each kiosk customer pays at the shop's public terminal one to four times."""
    visits = [np.repeat(users, rng.integers(1, 5, size=len(users))) for _, _, users in w.kiosks]
    user = np.concatenate(visits)
    device = np.concatenate([np.full(len(v), k[0]) for k, v in zip(w.kiosks, visits, strict=True)])
    shop = np.concatenate([np.full(len(v), k[1]) for k, v in zip(w.kiosks, visits, strict=True)])
    t = _event_times(rng, len(user), days, t0)
    return _part(t, user, device, _ids("M", shop, 4), _spend(rng, w, user), False)


def _transfers(rng: np.random.Generator, w: _World, days: int, t0: int) -> dict[str, np.ndarray]:
    """Transfers to one of four friends now and then."""
    user = np.repeat(np.arange(w.n_users), rng.poisson(_TRANSFER_RATE * w.activity * days))
    friend = w.contacts[user, rng.integers(0, w.contacts.shape[1], size=len(user))]
    amount = rng.lognormal(3.6, 0.8, size=len(user))
    t = _event_times(rng, len(user), days, t0)
    return _part(t, user, _honest_devices(rng, w, user), _ids("U", friend), amount, False)


def _group_transfers(
    rng: np.random.Generator, w: _World, days: int, t0: int
) -> dict[str, np.ndarray]:
    """Friend groups split bills (all repay one payer within the hour) or settle up in a circle."""
    size = (w.groups >= 0).sum(axis=1)
    event = np.repeat(np.arange(len(size)), rng.poisson(_GROUP_EVENT_RATE * days, size=len(size)))
    n = len(event)
    keys = np.where(w.groups[event] >= 0, rng.random((n, 6)), np.inf)  # shuffle, padding last
    members = np.take_along_axis(w.groups[event], np.argsort(keys, axis=1), axis=1)  # (n, 6)
    k, pos = size[event][:, None], np.arange(6)[None, :]  # (n, 1), (1, 6)
    circle = (rng.random(n) < 0.3)[:, None]  # (n, 1)
    nxt = np.take_along_axis(members, (pos + 1) % k, axis=1)
    receiver = np.where(circle, nxt, members[:, :1])  # (n, 6)
    hops = np.cumsum(30 + rng.exponential(1200, size=(n, 6)), axis=1)
    delay = np.where(circle, hops, rng.exponential(2700, size=(n, 6)))
    amount = rng.lognormal(3.2, 0.6, size=(n, 1)) * rng.uniform(0.8, 1.2, size=(n, 6))
    send = (pos < k) & (circle | (pos > 0))  # (n, 6): a circle's every member, else all but payer
    t = (_event_times(rng, n, days, t0)[:, None] + delay).astype(np.int64)
    user = members[send]
    device = _honest_devices(rng, w, user)
    return _part(t[send], user, device, _ids("U", receiver[send]), amount[send], False)


# --- fraud ---------------------------------------------------------------------------------------


def _ring_bursts(
    rng: np.random.Generator, w: _World, ring: _Ring, days: int, t0: int
) -> dict[str, np.ndarray]:
    """Two to five coordinated bursts, at ordinary times of day."""
    starts = _event_times(rng, int(rng.integers(2, 6)), days, t0)
    return _concat([_one_ring_burst(rng, w, ring, float(s)) for s in starts])


def _one_ring_burst(
    rng: np.random.Generator, w: _World, ring: _Ring, clock: float
) -> dict[str, np.ndarray]:
    """One or two rounds A -> B -> ... -> A of one amount less a cut per hop, then cash-outs."""
    k = len(ring.members)
    senders, receivers, times, amounts = [], [], [], []
    base = rng.lognormal(3.6, 0.8)  # drawn like an honest transfer
    for _ in range(rng.integers(1, 3)):
        order = rng.permutation(ring.members)
        hop_times = clock + np.cumsum(30 + rng.exponential(900, size=k))
        senders.append(order)
        receivers.append(np.roll(order, -1))
        times.append(hop_times)
        amounts.append(base * (1 - 0.01 * np.arange(k)) * rng.uniform(0.98, 1.0, size=k))
        clock = hop_times[-1] + rng.exponential(1800)
    if ring.kind == "collector":
        collector, others = ring.members[0], ring.members[1:]
        senders.append(others)
        receivers.append(np.full(len(others), collector))
        times.append(clock + np.cumsum(30 + rng.exponential(300, size=len(others))))
        amounts.append(base * rng.uniform(0.9, 1.0, size=len(others)))
        clock = times[-1][-1]
    user = np.concatenate(senders)
    t = np.concatenate(times).astype(np.int64)
    device = _ring_devices(rng, w, ring, user)
    counterparty = _ids("U", np.concatenate(receivers))
    transfers = _part(t, user, device, counterparty, np.concatenate(amounts), True)
    return _concat([transfers, _cash_out(rng, w, ring, clock)])


def _ring_devices(rng: np.random.Generator, w: _World, ring: _Ring, user: np.ndarray) -> np.ndarray:
    """A member's shared ring device (one time in five another one of the ring's), or, in a ring
    without shared devices, the member's usual devices."""
    if len(ring.devices) == 0:
        return _honest_devices(rng, w, user)
    device = w.devices[user, 2].copy()
    swap = rng.random(len(user)) < 0.2
    device[swap] = rng.choice(ring.devices, size=int(swap.sum()))
    return device


def _cash_out(
    rng: np.random.Generator, w: _World, ring: _Ring, clock: float
) -> dict[str, np.ndarray]:
    """Purchases at the ring's mule merchants right after the transfers, in ordinary amounts."""
    k = len(ring.members)
    if ring.kind == "collector":
        user = np.full(rng.integers(k // 2 + 1, k + 1), ring.members[0])
    else:
        user = rng.permutation(np.repeat(ring.members, rng.integers(1, 3, size=k)))
    t = (clock + np.cumsum(60 + rng.exponential(900, size=len(user)))).astype(np.int64)
    merchant = rng.choice(ring.mules, size=len(user))
    device = _ring_devices(rng, w, ring, user)
    return _part(t, user, device, _ids("M", merchant, 4), _spend(rng, w, user, 0.4), True)


def _lone_sprees(rng: np.random.Generator, w: _World, days: int, t0: int) -> dict[str, np.ndarray]:
    """One stolen-card spree per lone fraudster, a little pricier, from a device of its own."""
    return _spree_part(rng, w, w.lone, w.lone_devices, days, t0, extra=0.6, fraud=True)


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


__all__ = [
    "PlantedRing",
    "SyntheticData",
    "generate_transactions",
]
