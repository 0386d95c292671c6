"""Perturbations of records (texts, graphs' edges, table features) for robustness benchmarks.

The functions behind the ``typos``, ``drop_edges`` and ``feature_noise`` kinds of
:data:`abyssal.data.perturb.KINDS`. Each is seeded (a :func:`numpy.random.default_rng` from
``seed``) and pure: the same call gives the same result, and its inputs are never changed in
place. A level of 0 gives the inputs back unchanged (as copies).

Example:
    >>> typos(["the quarterly profit rose"], 0.5, seed=0)[0].count(" ")  # words stay words
    3
    >>> kept_edges(10, 0.3, seed=0)  # 3 of 10 edges dropped
    array([0, 1, 2, 3, 4, 7, 8])
    >>> x = np.array([[1.0, 10.0], [np.nan, 20.0]])
    >>> bool(np.isnan(feature_noise(x, None, 0.1, seed=0)[1, 0]))  # missing stays missing
    True
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from abyssal.core.errors import ConfigError, DataError

QWERTY_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
"""The letter rows of a QWERTY keyboard, each shifted right of the one above by about half a key."""


def _keyboard_neighbours() -> dict[str, str]:
    """Each letter's neighbours on a QWERTY keyboard: left and right on its row, and the keys
    touching it on the rows above and below (rows are staggered by half a key)."""
    where = {ch: (r, c) for r, row in enumerate(QWERTY_ROWS) for c, ch in enumerate(row)}
    out: dict[str, str] = {}
    for ch, (r, c) in where.items():
        near = []
        for dr, dcs in ((0, (-1, 1)), (-1, (0, 1)), (1, (-1, 0))):
            for dc in dcs:
                rr, cc = r + dr, c + dc
                if 0 <= rr < len(QWERTY_ROWS) and 0 <= cc < len(QWERTY_ROWS[rr]):
                    near.append(QWERTY_ROWS[rr][cc])
        out[ch] = "".join(near)
    return out


KEYBOARD_NEIGHBOURS: dict[str, str] = _keyboard_neighbours()
"""``letter -> its QWERTY neighbours`` (lower case), e.g. ``"f" -> "dgrtcv"``."""

TYPO_KINDS = ("swap", "delete", "insert", "substitute")
"""The character-level typos :func:`typos` makes: swap two adjacent letters, delete a letter,
insert a keyboard neighbour of a letter after it, substitute a letter by a keyboard neighbour."""

_WORD = re.compile(r"[^\W\d_]{2,}")
"""A word: a run of at least two letters (digits, ``_``, punctuation and spaces end it)."""


def check_level(name: str, level: float, *, fraction: bool) -> float:
    """``level`` as a float, refused unless finite and >= 0 (and <= 1 for a ``fraction``).

    Raises:
        ConfigError: names ``name`` and the level given.
    """
    try:
        value = float(level)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: level must be a number, not {level!r}") from None
    if not math.isfinite(value) or value < 0 or (fraction and value > 1):
        allowed = "a fraction in [0, 1]" if fraction else "a finite number >= 0"
        raise ConfigError(f"{name}: level must be {allowed}, not {level!r}")
    return value


# -- typos ---------------------------------------------------------------------------------------


def typos(texts: Sequence[str], rate: float, seed: int) -> list[str]:
    """``texts`` with one character-level typo in each of ``round(rate * n)`` of their ``n``
    words, chosen at random across all texts.

    A word is a run of at least two letters; spaces, punctuation and digits around it stay as they
    are. Each chosen word gets one typo of a kind drawn from :data:`TYPO_KINDS`: two adjacent,
    different letters swapped; a letter deleted; a keyboard neighbour of a letter inserted after
    it; a letter replaced by a keyboard neighbour (:data:`KEYBOARD_NEIGHBOURS`, keeping its case).
    A kind that cannot change the word (a swap in ``"ll"``, a neighbour of a letter off the QWERTY
    rows such as ``é``) gives way to deleting a letter, so every chosen word changes.

    Args:
        texts: the texts.
        rate: the fraction of words given a typo, in [0, 1].
        seed: seeds the choice of words, kinds and positions.

    Returns:
        A new list, one text per text.

    Raises:
        ConfigError: ``rate`` outside [0, 1].
        DataError: an item of ``texts`` that is not a string (its index).

    Example:
        >>> typos(["Profit rose, strongly."], 1.0, seed=3)
        ['Profti roae, storngly.']
    """
    rate = check_level("typos", rate, fraction=True)
    if isinstance(texts, str):
        raise DataError("typos: texts must be a sequence of strings, not one string")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise DataError(f"typos: text {i} is {type(text).__name__}, not a string")
    words = [(t, m.start(), m.end()) for t, text in enumerate(texts) for m in _WORD.finditer(text)]
    count = round(rate * len(words))
    if count == 0:
        return texts
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(words), size=count, replace=False))
    edits: dict[int, list[tuple[int, int, str]]] = {}
    for w in chosen.tolist():
        t, start, end = words[w]
        edits.setdefault(t, []).append((start, end, typo(texts[t][start:end], rng)))
    out = list(texts)
    for t, changes in edits.items():
        text, parts, at = texts[t], [], 0
        for start, end, word in changes:  # ascending, never overlapping
            parts += [text[at:start], word]
            at = end
        out[t] = "".join([*parts, text[at:]])
    return out


def typo(word: str, rng: np.random.Generator) -> str:
    """``word`` (at least two letters) with one typo of a random kind (see :func:`typos`)."""
    kind = TYPO_KINDS[int(rng.integers(len(TYPO_KINDS)))]
    if kind == "swap":
        places = [i for i in range(len(word) - 1) if word[i] != word[i + 1]]
        if places:
            i = places[int(rng.integers(len(places)))]
            return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    elif kind in ("insert", "substitute"):
        places = [i for i, ch in enumerate(word) if ch.lower() in KEYBOARD_NEIGHBOURS]
        if places:
            i = places[int(rng.integers(len(places)))]
            near = KEYBOARD_NEIGHBOURS[word[i].lower()]
            ch = near[int(rng.integers(len(near)))]
            ch = ch.upper() if word[i].isupper() else ch
            if kind == "insert":
                return word[: i + 1] + ch + word[i + 1 :]
            return word[:i] + ch + word[i + 1 :]
    i = int(rng.integers(len(word)))  # delete (or the fallback)
    return word[:i] + word[i + 1 :]


# -- edges ---------------------------------------------------------------------------------------


def kept_edges(num_edges: int, level: float, seed: int) -> np.ndarray:
    """Ascending indices of the edges kept when ``round(level * num_edges)`` of ``num_edges``
    edges are removed at random.

    Raises:
        ConfigError: ``level`` outside [0, 1].
        DataError: a negative ``num_edges``.
    """
    level = check_level("drop_edges", level, fraction=True)
    if int(num_edges) != num_edges or num_edges < 0:
        raise DataError(f"drop_edges: the number of edges must be >= 0, not {num_edges}")
    num_edges = int(num_edges)
    dropped = round(level * num_edges)
    keep = np.ones(num_edges, dtype=bool)
    if dropped:
        keep[np.random.default_rng(seed).choice(num_edges, size=dropped, replace=False)] = False
    return np.flatnonzero(keep)


def drop_edges(
    edges: Mapping[str, np.ndarray] | pd.DataFrame, level: float, seed: int
) -> dict[str, np.ndarray] | pd.DataFrame:
    """The edges left when ``round(level * E)`` of the ``E`` edges are removed at random.

    Args:
        edges: aligned per-edge arrays (``{"edge_src": (E,), "edge_dst": (E,), "edge_time": (E,),
            ...}``, each with the edges along its first axis, as a ``FraudGraph`` holds them) or
            an edge table (one row per edge).
        level: the fraction of edges removed, in [0, 1].
        seed: seeds the choice (the same edges go for the same ``E``, ``level`` and ``seed``).

    Returns:
        New arrays (a dict with the same keys) or a new table (its index kept), the remaining
        edges in their original order.

    Raises:
        ConfigError: ``level`` outside [0, 1].
        DataError: no arrays, or arrays of different lengths (each named with its length).

    Example:
        >>> out = drop_edges({"src": np.arange(4), "dst": np.arange(4) + 1}, 0.5, seed=0)
        >>> out["src"].tolist(), out["dst"].tolist()
        ([0, 1], [1, 2])
    """
    if isinstance(edges, pd.DataFrame):
        return edges.iloc[kept_edges(len(edges), level, seed)].copy()
    arrays = {name: np.asarray(values) for name, values in edges.items()}
    if not arrays:
        raise DataError("drop_edges: no edge arrays given")
    sizes = {name: (a.shape[0] if a.ndim else -1) for name, a in arrays.items()}
    if len(set(sizes.values())) != 1 or -1 in sizes.values():
        listed = ", ".join(f"{name} {n if n >= 0 else 'a scalar'}" for name, n in sizes.items())
        raise DataError(f"drop_edges: the edge arrays must have one length; got {listed}")
    keep = kept_edges(next(iter(sizes.values())), level, seed)
    return {name: a[keep].copy() for name, a in arrays.items()}


# -- table features ------------------------------------------------------------------------------


def column_std(values: np.ndarray) -> np.ndarray:
    """(F,) standard deviation of each column of ``values`` (N, F) over its present (non-NaN)
    cells; 0 for a column with none."""
    values = _numeric(values, "column_std")
    present = ~np.isnan(values)
    counts = present.sum(axis=0)
    filled = np.where(present, values, 0.0)
    mean = filled.sum(axis=0) / np.maximum(counts, 1)
    var = (np.where(present, values - mean, 0.0) ** 2).sum(axis=0) / np.maximum(counts, 1)
    return np.sqrt(var)


def feature_noise(
    values: np.ndarray,
    std: np.ndarray | Sequence[float] | None,
    level: float,
    seed: int,
    *,
    rows: np.ndarray | Sequence[int] | None = None,
    columns: np.ndarray | Sequence[bool] | None = None,
) -> np.ndarray:
    """``values`` plus Gaussian noise of ``level`` times each column's standard deviation.

    Missing cells (NaN) stay missing. The noise is drawn for the whole array from the seed, so a
    cell's noise does not depend on which other rows are perturbed.

    Args:
        values: (N, F) numbers, NaN where missing.
        std: (F,) each column's standard deviation (e.g. over the training rows); ``None``: the
            columns' own, over their present cells (:func:`column_std`).
        level: the noise's standard deviation in units of the column's, >= 0.
        seed: seeds the noise.
        rows: the rows perturbed (e.g. the test split); ``None``: every row.
        columns: (F,) bool, the columns perturbed (the numeric features); ``None``: every column.

    Returns:
        A new float64 array (N, F).

    Raises:
        ConfigError: a negative or non-finite ``level``.
        DataError: ``values`` not a 2-D numeric array, ``std`` or ``columns`` of the wrong length
            or a negative ``std``, ``rows`` outside the array.
    """
    level = check_level("feature_noise", level, fraction=False)
    values = _numeric(values, "feature_noise")
    n, f = values.shape
    sigma = column_std(values) if std is None else np.asarray(std, dtype=np.float64).reshape(-1)
    if sigma.shape != (f,):
        raise DataError(f"feature_noise: std has {sigma.size} entries for {f} columns")
    if not np.all(np.isfinite(sigma) & (sigma >= 0)):
        raise DataError("feature_noise: std must be finite and >= 0 for every column")
    chosen = np.ones(f, dtype=bool) if columns is None else np.asarray(columns, dtype=bool)
    if chosen.shape != (f,):
        raise DataError(f"feature_noise: columns has {chosen.size} entries for {f} columns")
    picked = np.ones(n, dtype=bool)
    if rows is not None:
        index = np.asarray(rows, dtype=np.int64).reshape(-1)
        if index.size and (index.min() < -n or index.max() >= n):
            raise DataError(f"feature_noise: rows must be within 0..{n - 1}")
        picked = np.zeros(n, dtype=bool)
        picked[index] = True
    out = values.copy()
    if level == 0:
        return out
    noise = np.random.default_rng(seed).standard_normal((n, f)) * (level * sigma)  # (N, F)
    mask = picked[:, None] & chosen[None, :]
    out[mask] += noise[mask]
    return out


def _numeric(values: Any, name: str) -> np.ndarray:
    """``values`` as a 2-D float64 array (a copy when converted), refused if not numbers."""
    array = np.asarray(values)
    if array.ndim != 2:
        raise DataError(f"{name}: values must be a 2-D array (rows, columns), not {array.shape}")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise DataError(
            f"{name}: values must be numbers, not {array.dtype} (numeric features only)"
        )
    return array.astype(np.float64, copy=False)
