"""Sample data for the fraud solution: a SYNTHETIC history with planted rings and a stream of new
transactions to score (``abyssal generate fraud``).

With ``segments=true`` every account also gets a synthetic sensitive attribute ``segment`` (A/B,
written to ``accounts.csv``); ``fraud_proxy`` gives fraudulent accounts rapid purchase bursts (a
fraud signal) and ``segment_bias`` gives them to honest B accounts too, a bias against B through a
proxy the model sees (see :mod:`abyssal.solutions.fraud.segments`): the data of a fairness audit.

With ``drift_months=N`` (N >= 2) it writes a drifting stream instead: N months of one honest
population with new rings every month whose tactics change (see
:mod:`abyssal.solutions.fraud.drift`), the whole stream labelled in ``transactions.csv`` and each
row's tactic and month in ``tactics.csv``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from abyssal.core.atomic import write_text_atomic
from abyssal.core.config import field
from abyssal.core.errors import ConfigError, DataError
from abyssal.data.tables import write_table
from abyssal.solutions.fraud.drift import DriftingStream, generate_drifting_stream
from abyssal.solutions.fraud.segments import plant_segments
from abyssal.solutions.fraud.synthetic import generate_transactions


@dataclass
class FraudSampleConfig:
    """Options of ``abyssal generate fraud`` (``key=value`` on the command line)."""

    users: int = field(2000, help="number of users")
    merchants: int = field(300, help="number of merchants")
    rings: int = field(12, help="planted fraud rings")
    days: int = field(60, help="days of activity")
    seed: int = field(0, help="random seed")
    new_frac: float = field(0.02, help="share of the latest transactions kept as the new stream")
    segments: bool = field(False, help="write accounts.csv: a synthetic segment A/B per account")
    segment_b_frac: float = field(0.3, help="share of accounts in segment B")
    segment_bias: float = field(
        0.0, help="mean rapid purchase bursts per honest B account (0: no planted bias)"
    )
    fraud_proxy: float = field(
        0.0, help="mean rapid purchase bursts per fraudulent account (a fraud signal B may share)"
    )
    drift_months: int = field(
        0,
        help="months (>= 2) of a drifting stream whose ring tactics change, with tactics.csv "
        "(days, rings, new_frac do not apply); 0: no drift",
    )
    drift_rings: int = field(4, help="new rings per month of a drifting stream")

    def __post_init__(self) -> None:
        if not 0 < self.new_frac < 1:
            raise ConfigError(f"new_frac must be in (0, 1), got {self.new_frac}")
        if not 0 < self.segment_b_frac < 1:
            raise ConfigError(f"segment_b_frac must be in (0, 1), got {self.segment_b_frac}")
        if not (self.segment_bias >= 0 and self.fraud_proxy >= 0):
            raise ConfigError(
                f"segment_bias and fraud_proxy must be >= 0, got {self.segment_bias} and "
                f"{self.fraud_proxy}"
            )
        if (self.segment_bias > 0 or self.fraud_proxy > 0) and not self.segments:
            raise ConfigError("segment_bias and fraud_proxy need segments=true")
        if self.drift_months == 1 or self.drift_months < 0:
            raise ConfigError(f"drift_months must be 0 (no drift) or >= 2, got {self.drift_months}")
        if self.drift_months and self.segments:
            raise ConfigError("drift_months and segments=true cannot be combined; choose one")
        if self.drift_rings < 1:
            raise ConfigError(f"drift_rings must be >= 1, got {self.drift_rings}")


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
        >>> frame = generate_transactions(n_users=100, n_rings=2).transactions
        >>> history, new = split_stream(frame)
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


def from_known_users(history: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """The new transactions whose user is in the history, so that ``abyssal predict`` scores
    them without ``live.on_unknown_account=add``.

    Example:
        >>> h = pd.DataFrame({"user_id": ["u1"]})
        >>> from_known_users(h, pd.DataFrame({"user_id": ["u1", "u2"]}))["user_id"].tolist()
        ['u1']
    """
    known = new["user_id"].isin(set(history["user_id"])).to_numpy()
    return new[known].reset_index(drop=True)


def write_sample(options: FraudSampleConfig, out: str | Path) -> list[str]:
    """Write ``transactions.csv`` (labelled history), ``new_transactions.csv`` (the latest
    transactions, unlabelled, to score) and ``planted_rings.json`` (the ground truth) to ``out``;
    with ``segments``, also ``accounts.csv`` (``user_id``, ``segment``) and the planted bias.
    With ``drift_months``, the drifting stream instead (see :func:`write_drift_sample`).

    The new stream keeps only users the history knows (a user whose first transaction falls in
    the stream is left out), so ``abyssal predict fraud`` scores it as it is.

    Args:
        options: sizes and seed.
        out: the folder (created if missing).

    Returns:
        One line per file written.

    Example:
        >>> write_sample(FraudSampleConfig(users=400, rings=4, days=30), "demo")  # doctest: +SKIP
    """
    if options.drift_months:
        return write_drift_sample(options, out)
    data = generate_transactions(
        n_users=options.users,
        n_merchants=options.merchants,
        n_rings=options.rings,
        days=options.days,
        seed=options.seed,
    )
    accounts = None
    if options.segments:
        planted = plant_segments(
            data,
            b_frac=options.segment_b_frac,
            bias=options.segment_bias,
            fraud_proxy=options.fraud_proxy,
            seed=options.seed,
        )
        data, accounts = planted.data, planted.accounts
    history, stream = split_stream(data.transactions, options.new_frac)
    new = from_known_users(history, stream)
    out = Path(out)
    rings = [{"ring_id": r.ring_id, "members": r.members, "devices": r.devices} for r in data.rings]
    write_table(history, out / "transactions.csv")
    write_table(new.drop(columns=["label"]), out / "new_transactions.csv")
    write_text_atomic(out / "planted_rings.json", json.dumps(rings, indent=1) + "\n")
    fraud = float(history["label"].mean())
    lines = [
        f"transactions.csv: {len(history)} SYNTHETIC transactions, {fraud:.1%} fraudulent",
        f"new_transactions.csv: {len(new)} later transactions to score, no labels"
        + _left_out(len(stream) - len(new)),
        f"planted_rings.json: the {len(rings)} planted rings (ground truth)",
    ]
    if accounts is not None:
        write_table(accounts, out / "accounts.csv")
        share = float((accounts["segment"] == "B").mean())
        bias = f"bias {options.segment_bias:g} planted against B" if options.segment_bias else ""
        proxy = f", fraud proxy {options.fraud_proxy:g}" if options.fraud_proxy else ""
        lines.append(
            f"accounts.csv: a SYNTHETIC segment per account, {share:.0%} B; "
            + (bias or "no planted bias")
            + proxy
        )
    return lines


def write_drift_sample(options: FraudSampleConfig, out: str | Path) -> list[str]:
    """Write a drifting stream: ``transactions.csv`` (every month, labelled), ``tactics.csv``
    (``transaction_id``, ``tactic``, ``month`` of every row; the tactic empty for honest rows)
    and ``planted_rings.json`` (the rings with their month and tactic) to ``out``.

    Args:
        options: sizes and seed; ``drift_months`` and ``drift_rings`` shape the stream.
        out: the folder (created if missing).

    Returns:
        One line per file written.

    Raises:
        ConfigError: the stream's arguments do not fit (e.g. too few users for the rings).

    Example:
        >>> options = FraudSampleConfig(users=800, drift_months=3)
        >>> write_drift_sample(options, "demo")  # doctest: +SKIP
    """
    try:
        stream = generate_drifting_stream(
            months=options.drift_months,
            n_users=options.users,
            n_merchants=options.merchants,
            rings_per_month=options.drift_rings,
            seed=options.seed,
        )
    except ConfigError as e:
        given = (
            f"users={options.users}, merchants={options.merchants}, "
            f"drift_months={options.drift_months}, drift_rings={options.drift_rings}"
        )
        raise ConfigError(f"drifting stream with {given}: {e}") from e
    out = Path(out)
    tx = stream.transactions
    tactics = pd.DataFrame(
        {
            "transaction_id": tx["transaction_id"],
            "tactic": stream.tactic,
            "month": stream.month_of(),
        }
    )
    write_table(tx, out / "transactions.csv")
    write_table(tactics, out / "tactics.csv")
    write_text_atomic(
        out / "planted_rings.json", json.dumps(_ring_records(stream), indent=1) + "\n"
    )
    counts = stream.fraud_counts()
    firsts = ", ".join(f"{t} from month {int(counts[t].gt(0).idxmax())}" for t in counts.columns)
    return [
        f"transactions.csv: {len(tx)} SYNTHETIC transactions over {stream.months} months, "
        f"{float(tx['label'].mean()):.1%} fraudulent",
        f"tactics.csv: tactic and month of every transaction ({firsts})",
        f"planted_rings.json: the {len(stream.rings)} planted rings with month and tactic",
    ]


def _ring_records(stream: DriftingStream) -> list[dict[str, object]]:
    return [
        {
            "ring_id": r.ring_id,
            "month": r.month,
            "tactic": r.tactic,
            "members": list(r.members),
            "devices": list(r.devices),
            "merchants": list(r.merchants),
        }
        for r in stream.rings
    ]


def _left_out(count: int) -> str:
    return f" ({count} by users first seen after the history left out)" if count else ""
