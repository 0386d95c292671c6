"""A SYNTHETIC sensitive attribute for fraud accounts, with an optional planted bias, for fairness
experiments (:mod:`abyssal.govern.fairness`).

:func:`plant_segments` gives every account of a :class:`~.synthetic.SyntheticData` a ``segment``,
``"A"`` or ``"B"`` (a share ``b_frac`` is B, drawn at random and independently of the label); the
model is never given the segment. A bias is planted through a **proxy** the model can see: a
*rapid burst*, 5 to 10 purchases at popular merchants within 15 to 45 minutes, priced ``e^0.6``
(about 1.8) times the account's usual purchase (the rise the generator gives stolen-card sprees).
The generator's own honest shopping sprees are slower (3 to 8 purchases over 1 to 4 hours), so
the temporal features see a rapid burst in the largest 1-hour burst, the shortest gap and the
amounts.

- ``fraud_proxy``: mean rapid bursts (Poisson) per *fraudulent* account, labelled fraudulent: the
  proxy becomes a real fraud signal, which a model learns to use.
- ``bias``: mean rapid bursts per *honest account of segment B*, labelled honest: B's honest
  accounts share the fraud signal (as night-shift workers might share a fraudster's hours), so a
  model that uses it flags them more often: a higher false-positive rate for B, the disparity an
  equalized-odds audit should find.

With ``fraud_proxy > 0`` and ``bias = 0`` the proxy is a fraud signal that neither segment's
honest accounts share: the control. With ``fraud_proxy = 0`` the proxy is carried by honest B
accounts only and says nothing about fraud, which a model can learn to ignore. Honest accounts of
segment A never get it. The segments depend only on ``seed`` and ``b_frac``; the bursts come
from a separate stream, so the generator's own transactions are unchanged.

Example:
    >>> from abyssal.solutions.fraud.synthetic import generate_transactions
    >>> data = generate_transactions(n_users=300, n_merchants=50, n_rings=2, days=14, seed=1)
    >>> planted = plant_segments(data, bias=3.0, fraud_proxy=1.0)
    >>> sorted(planted.accounts["segment"].unique().tolist())
    ['A', 'B']
    >>> len(planted.data.transactions) > len(data.transactions)
    True
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from abyssal.core.errors import ConfigError
from abyssal.solutions.fraud.synthetic import SyntheticData

SPREE_EXTRA = 0.6
"""Log-scale price rise of a rapid burst over the account's usual purchase (as stolen cards)."""
BURST_SIZE = (5, 10)
"""Purchases per rapid burst (inclusive)."""
BURST_MINUTES = (15, 45)
"""How long a rapid burst lasts."""


@dataclass
class PlantedSegments:
    """What :func:`plant_segments` returns.

    Attributes:
        data: the synthetic data, with the planted bursts merged into its transactions (the
            transaction ids renumbered in time order); unchanged when nothing was planted.
        accounts: ``user_id``, ``segment`` for every user (``accounts.csv``).
        planted: how many bursts and transactions were planted on honest B accounts
            (``bursts``, ``transactions``) and on fraudulent ones (``fraud_bursts``,
            ``fraud_transactions``).
    """

    data: SyntheticData
    accounts: pd.DataFrame
    planted: dict[str, int]


def plant_segments(
    data: SyntheticData,
    *,
    b_frac: float = 0.3,
    bias: float = 0.0,
    fraud_proxy: float = 0.0,
    seed: int = 0,
) -> PlantedSegments:
    """Assign segments A/B at random; plant rapid bursts on honest B and fraudulent accounts.

    Args:
        data: what :func:`~abyssal.solutions.fraud.synthetic.generate_transactions` returned.
        b_frac: the share of accounts in segment B, in (0, 1).
        bias: mean rapid bursts per honest account of segment B (0: none).
        fraud_proxy: mean rapid bursts per fraudulent account, labelled fraudulent (0: none).
        seed: the seed of the segments and the bursts (the same segments, and the same bursts
            of each kind, whatever the other knob).

    Returns:
        The data with the bursts merged in, the accounts' segments, and counts.

    Raises:
        ConfigError: ``b_frac`` outside (0, 1) or a negative ``bias`` or ``fraud_proxy``.
    """
    if not 0 < b_frac < 1:
        raise ConfigError(f"segment b_frac must be in (0, 1), got {b_frac}")
    if not (bias >= 0 and fraud_proxy >= 0):
        raise ConfigError(f"bias and fraud_proxy must be >= 0, got {bias} and {fraud_proxy}")
    users = data.user_labels["user_id"].to_numpy(dtype=object)
    rng = np.random.default_rng([seed, 15])  # streams of their own: the generator's stays as it
    segment = np.where(rng.random(len(users)) < b_frac, "B", "A")  # was, and one knob's bursts
    b_rng, fraud_rng = (np.random.default_rng([seed, 15, k]) for k in (1, 2))  # not the other's
    accounts = pd.DataFrame({"user_id": users, "segment": segment})
    fraud = data.user_labels["label"].to_numpy() == 1
    honest_b = _bursts(b_rng, data.transactions, users[(segment == "B") & ~fraud], bias, 0)
    fraud_bursts = _bursts(fraud_rng, data.transactions, users[fraud], fraud_proxy, 1)
    counts = {
        "bursts": int(honest_b.attrs.get("bursts", 0)),
        "transactions": len(honest_b),
        "fraud_bursts": int(fraud_bursts.attrs.get("bursts", 0)),
        "fraud_transactions": len(fraud_bursts),
    }
    extra = [b for b in (honest_b, fraud_bursts) if not b.empty]
    if not extra:
        return PlantedSegments(data, accounts, counts)
    merged = _merge(data.transactions, pd.concat(extra, ignore_index=True))
    return PlantedSegments(replace(data, transactions=merged), accounts, counts)


def _bursts(
    rng: np.random.Generator, frame: pd.DataFrame, users: np.ndarray, rate: float, label: int
) -> pd.DataFrame:
    """Rapid bursts, ``rate`` per user on average (Poisson), at each user's own price level, from
    the user's most used device; every purchase labelled ``label``."""
    per_user = rng.poisson(rate, size=len(users)) if rate > 0 else np.zeros(len(users), int)
    burst_user = np.repeat(users, per_user)
    burst_user = burst_user[np.isin(burst_user, frame["user_id"].unique())]  # has a device
    if len(burst_user) == 0:
        return frame.iloc[:0]
    purchases = frame[frame["counterparty_id"].str.startswith("M") & (frame["label"] == 0)]
    level = np.log(purchases.groupby("user_id")["amount"].median())
    device = frame.groupby("user_id")["device_id"].agg(lambda d: d.value_counts().index[0])
    merchants = purchases["counterparty_id"].to_numpy(dtype=object)  # drawn by popularity
    size = rng.integers(BURST_SIZE[0], BURST_SIZE[1] + 1, size=len(burst_user))
    start = rng.integers(frame["timestamp"].min(), frame["timestamp"].max(), size=len(size))
    span = rng.uniform(*BURST_MINUTES, size=len(size)) * 60
    user = np.repeat(burst_user, size)
    t = np.repeat(start, size) + (rng.random(len(user)) * np.repeat(span, size)).astype(np.int64)
    mean_level = float(level.mean())
    own = level.reindex(user).fillna(mean_level).to_numpy()
    out = pd.DataFrame(
        {
            "timestamp": np.minimum(t, frame["timestamp"].max()),
            "user_id": user,
            "device_id": device.reindex(user).to_numpy(dtype=object),
            "counterparty_id": rng.choice(merchants, size=len(user)),
            "amount": np.round(np.exp(own + SPREE_EXTRA + rng.normal(0, 0.7, len(user))), 2),
            "label": np.full(len(user), label, dtype=frame["label"].dtype),
        }
    )
    out.attrs["bursts"] = len(size)
    return out


def _merge(frame: pd.DataFrame, extra: pd.DataFrame) -> pd.DataFrame:
    """Both frames in time order (ties: the original rows first), ids renumbered in that order."""
    joined = pd.concat([frame.drop(columns="transaction_id"), extra], ignore_index=True)
    joined = joined.sort_values("timestamp", kind="stable").reset_index(drop=True)
    width = max(7, len(str(len(joined))))
    ids = [f"T{i:0{width}d}" for i in range(len(joined))]
    joined.insert(0, "transaction_id", ids)
    return joined[frame.columns.tolist()]


__all__ = ["PlantedSegments", "plant_segments"]
