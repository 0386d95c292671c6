"""A rules baseline of the kind teams run before a model, in a small readable file, evaluated on
the same rows as the model, so a table can say what the model changes.

A rules file (YAML)::

    name: card rules
    time: timestamp                 # seconds; features look only at earlier rows
    features:
      - {name: user_txns_1h, count: user_id, window: 3600}      # the user's rows in the hour
      - {name: user_amount_24h, sum: amount, by: user_id, window: 86400}
      - {name: new_device, first_seen: device_id, by: user_id}  # 1: the user's first use
    rules:
      - {name: large amount, when: "amount > 2000", action: review}
      - {name: burst, when: "user_txns_1h >= 5", action: block}
      - {name: new device, large, when: "new_device == 1 and amount > 500", action: review}

Each row gets the strongest action of the rules it meets (block over review over approve) and
the names of those rules. :func:`compare` then sets the rules beside a model's scores on the same
rows: what the rules intercept and send to review, the review share the model needs for the
same interception, and what the model intercepts with the same review share.

Example:
    >>> import pandas as pd
    >>> t = pd.DataFrame({"timestamp": [0, 10, 20], "user_id": ["a", "a", "a"],
    ...                   "amount": [10.0, 3000.0, 5.0]})
    >>> rs = RuleSet.from_dict({"time": "timestamp", "features": [
    ...     {"name": "n", "count": "user_id", "window": 60}],
    ...     "rules": [{"name": "big", "when": "amount > 2000", "action": "review"},
    ...               {"name": "burst", "when": "n >= 2", "action": "block"}]})
    >>> apply_rules(t, rs)[["action", "rules"]].values.tolist()
    [['approve', ''], ['review', 'big'], ['block', 'burst']]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from abyssal.core.errors import ConfigError, DataError

ACTIONS = ("approve", "review", "block")
_RANK = {a: k for k, a in enumerate(ACTIONS)}


@dataclass(frozen=True)
class Feature:
    """A feature computed from earlier rows: ``count`` of rows with the same key in the past
    ``window`` seconds, ``sum`` of a column over them, or ``first_seen`` (1 when a value of a
    column appears for the first time for its ``by`` key, or at all without one)."""

    name: str
    kind: str
    column: str
    by: str | None = None
    window: float | None = None

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Feature:
        kinds = [k for k in ("count", "sum", "first_seen") if k in d]
        name = d.get("name")
        if not name or len(kinds) != 1:
            raise ConfigError(f"feature {d!r}: give a name and one of count, sum or first_seen")
        unknown = sorted(set(d) - {"name", "count", "sum", "first_seen", "by", "window"})
        if unknown:
            raise ConfigError(f"feature '{name}': unknown keys {unknown}")
        kind = kinds[0]
        window = d.get("window")
        bad_window = not isinstance(window, int | float) or isinstance(window, bool)
        if kind in ("count", "sum") and (bad_window or window <= 0):
            raise ConfigError(f"feature '{name}': a {kind} needs window: SECONDS > 0")
        if kind == "sum" and not d.get("by"):
            raise ConfigError(f"feature '{name}': a sum needs by: KEY (whose rows are summed)")
        return Feature(str(name), kind, str(d[kind]), d.get("by"), window)


@dataclass(frozen=True)
class Rule:
    name: str
    when: str
    action: str


@dataclass(frozen=True)
class RuleSet:
    """Rules, the features they read, and the time column."""

    rules: tuple[Rule, ...]
    features: tuple[Feature, ...] = ()
    time: str = "timestamp"
    name: str = "rules"

    @staticmethod
    def from_dict(d: Mapping[str, Any], where: str = "rules") -> RuleSet:
        unknown = sorted(set(d) - {"name", "time", "features", "rules"})
        if unknown:
            raise ConfigError(f"{where}: unknown keys {unknown} (name, time, features, rules)")
        rules = []
        for r in d.get("rules") or []:
            if not isinstance(r, Mapping) or not r.get("name") or not r.get("when"):
                raise ConfigError(f"{where}: each rule needs a name and a when, got {r!r}")
            action = r.get("action", "review")
            if action not in ("review", "block"):
                raise ConfigError(f"{where}: rule '{r['name']}': action is review or block")
            rules.append(Rule(str(r["name"]), str(r["when"]), action))
        if not rules:
            raise ConfigError(f"{where}: no rules")
        features = tuple(Feature.from_dict(f) for f in d.get("features") or [])
        names = [f.name for f in features] + [r.name for r in rules]
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}: feature and rule names repeat: {names}")
        return RuleSet(tuple(rules), features, str(d.get("time", "timestamp")),
                       str(d.get("name", "rules")))  # fmt: skip

    @staticmethod
    def load(path: str | Path) -> RuleSet:
        from abyssal.core.config import read_yaml_mapping

        return RuleSet.from_dict(read_yaml_mapping(path, what="rules file"), where=str(path))


def _feature(table: pd.DataFrame, f: Feature, time: np.ndarray) -> np.ndarray:
    """Values of ``f`` per row (in the table's order), from earlier rows only (ties in time
    count as earlier in file order)."""
    order = np.argsort(time, kind="mergesort")
    t = time[order]
    out = np.zeros(len(table), dtype=np.float64)
    if f.kind == "first_seen":
        keys = table[f.column].astype(str).to_numpy()[order]
        if f.by:
            keys = table[f.by].astype(str).to_numpy()[order] + "\x00" + keys
        seen = pd.Series(keys).duplicated(keep="first").to_numpy()
        out[order] = (~seen).astype(np.float64)
        return out
    key_col = f.column if f.kind == "count" else f.by
    keys = table[key_col].astype(str).to_numpy()[order]
    values = np.ones(len(t)) if f.kind == "count" else table[f.column].to_numpy(np.float64)[order]
    result = np.zeros(len(t))
    for key in pd.unique(keys):
        idx = np.flatnonzero(keys == key)
        tk, vk = t[idx], np.cumsum(values[idx])
        start = np.searchsorted(tk, tk - f.window, side="left")  # rows inside the window
        before = np.r_[0.0, vk][start]
        result[idx] = vk - before - values[idx]  # earlier rows only, not this one
    out[order] = result
    return out


def apply_rules(table: pd.DataFrame, rules: RuleSet) -> pd.DataFrame:
    """``table`` with the rules' features, and per row its ``action`` and the ``rules`` it met
    (comma-separated). Unknown columns in a feature or a rule are errors naming the columns
    there are."""
    needed = {c for f in rules.features for c in (f.column, f.by) if c}
    needed |= {rules.time} if rules.features else set()  # time orders the windowed features
    missing = sorted(needed - set(table.columns))
    if missing:
        raise DataError(f"rules '{rules.name}': the table has no column {missing}; it has "
                        f"{sorted(table.columns)}")  # fmt: skip
    time = np.zeros(len(table))
    if rules.features:
        time = pd.to_numeric(table[rules.time], errors="coerce").to_numpy(np.float64)
        if np.isnan(time).any():
            raise DataError(f"rules '{rules.name}': {rules.time} has values that are not numbers")
    out = table.copy()
    for f in rules.features:
        out[f.name] = _feature(out, f, time)
    rank = np.zeros(len(out), dtype=np.int64)
    met: list[list[str]] = [[] for _ in range(len(out))]
    for r in rules.rules:
        try:
            hit = out.eval(r.when).to_numpy(bool)
        except Exception as exc:  # pandas raises many kinds for a bad expression
            raise ConfigError(
                f"rules '{rules.name}', rule '{r.name}': cannot evaluate '{r.when}' ({exc}); "
                f"columns: {sorted(out.columns)}"
            ) from None
        rank = np.where(hit, np.maximum(rank, _RANK[r.action]), rank)
        for i in np.flatnonzero(hit):
            met[i].append(r.name)
    out["action"] = [ACTIONS[k] for k in rank]
    out["rules"] = [",".join(m) for m in met]
    return out


def compare(labels: Any, scores: Any, actions: Any) -> dict[str, float]:
    """Rules' actions against a model's scores on the same labelled rows.

    Interception is the share of positives blocked or sent to review (a reviewer is taken to
    catch what reaches them); the model is read as a review queue of its highest scores.

    Returns:
        ``rules_interception``, ``rules_review_share`` (review or block: what people or the
        block list handle), ``model_review_share_at_rules_interception`` (the smallest share
        of top-scored rows holding as many positives) and
        ``model_interception_at_rules_review_share``.
    """
    y = np.asarray(labels).astype(np.int64)
    s = np.asarray(scores, dtype=np.float64)
    a = np.asarray(actions)
    if not (len(y) == len(s) == len(a)) or len(y) == 0:
        raise DataError("labels, scores and actions need one value per row each")
    if y.sum() == 0:
        raise DataError("no positive row: interception is undefined")
    flagged = a != "approve"
    caught = y[flagged].sum() / y.sum()
    share = flagged.mean()
    order = np.argsort(-s, kind="mergesort")
    found = np.cumsum(y[order]) / y.sum()  # recall of the top k+1 rows
    need = int(np.searchsorted(found, caught - 1e-12, side="left")) + 1
    k = int(np.floor(share * len(y) + 1e-9))
    return {
        "rules_interception": float(caught),
        "rules_review_share": float(share),
        "model_review_share_at_rules_interception": float(min(need, len(y)) / len(y)),
        "model_interception_at_rules_review_share": float(found[k - 1]) if k else 0.0,
    }
