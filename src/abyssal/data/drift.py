"""Distribution drift between a reference sample (the training data) and a current one.

- **Population Stability Index** (PSI): ``sum((c - r) * ln(c / r))`` over bins, where ``r`` and
  ``c`` are the reference's and the current sample's shares of each bin (a share of 0 counts as
  :data:`EPSILON`). Numeric features are binned at the reference's deciles (ties merge bins, so a
  feature with few values gets one bin per value; values outside the reference's range fall in the
  outer bins); categorical features use one bin per reference category plus one for categories the
  reference never had (*unseen*). The usual reading (Siddiqi, *Credit Risk Scorecards*, 2006):
  below :data:`PSI_MODERATE` (0.1) no real change, 0.1 to :data:`PSI_MAJOR` (0.25) a moderate
  change worth a look, 0.25 and above a major change.
- **Kolmogorov-Smirnov** (numeric features): the largest gap between the two empirical CDFs, and
  its p-value from the asymptotic Kolmogorov distribution with Stephens' small-sample correction
  (Stephens 1970; *Numerical Recipes* 14.3). numpy only. On large samples tiny, harmless shifts
  get tiny p-values, so :func:`table_drift` also asks for a KS statistic of at least ``min_ks``.
- **Embedding drift** (text or image embeddings): the maximum mean discrepancy (MMD², unbiased;
  Gretton et al., *A Kernel Two-Sample Test*, JMLR 2012) with a Gaussian RBF kernel whose width is
  the median pairwise distance, a permutation p-value, and the cosine distance between the mean
  embeddings (telling when the embeddings' mean is far from zero, as for most encoders). Each
  side is subsampled (seeded) to at most ``max_rows`` rows, which bounds the O(n²) kernel.

Missing and non-finite values are left out of drift (:func:`abyssal.data.checks.check_table`
watches missing shares). Row numbers in errors are 1-based data rows.

Example:
    >>> rng = np.random.default_rng(0)
    >>> reference = pd.DataFrame({"x": rng.normal(size=500)})
    >>> current = pd.DataFrame({"x": rng.normal(1.0, size=500)})
    >>> table_drift(reference, current).drifted
    ['x']
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from abyssal.core.display import fmt, table
from abyssal.core.errors import ConfigError, DataError
from abyssal.data.checks import infer_kind

PSI_MODERATE = 0.1
"""PSI from which a change is moderate (worth a look)."""
PSI_MAJOR = 0.25
"""PSI from which a change is major; :func:`table_drift`'s default threshold."""
EPSILON = 1e-4
"""The share an empty bin counts as in PSI (so that the logarithm stays finite)."""
DEFAULT_BINS = 10
MAX_CATEGORIES = 50
"""A text column with more distinct reference values is id-like: skipped unless named."""

FeatureKind = Literal["numeric", "categorical"]
Sample = Literal["reference", "current"]


@dataclass(frozen=True)
class FeatureDrift:
    """The drift of one feature.

    Attributes:
        feature: the column name.
        kind: ``"numeric"`` or ``"categorical"``.
        psi: Population Stability Index.
        ks: Kolmogorov-Smirnov statistic (numeric only, else ``None``).
        p_value: the KS p-value (numeric only, else ``None``).
        drifted: whether the thresholds of :func:`table_drift` flag it.
        unseen: current values in categories the reference never had (categorical only).
        n_reference: reference values compared (missing ones left out).
        n_current: current values compared.
    """

    feature: str
    kind: FeatureKind
    psi: float
    ks: float | None
    p_value: float | None
    drifted: bool
    unseen: int
    n_reference: int
    n_current: int

    @property
    def level(self) -> str:
        """``"none"``, ``"moderate"`` or ``"major"`` by the usual PSI thresholds."""
        return psi_level(self.psi)

    def to_dict(self) -> dict[str, Any]:
        """The row as plain values."""
        return {**asdict(self), "level": self.level}


@dataclass(frozen=True)
class DriftReport:
    """Per-feature drift of a current table against a reference.

    Attributes:
        features: one row per compared feature, in column order.
        skipped: column -> why it was not compared (only when ``columns`` was not given).
        psi_threshold: PSI from which a feature drifted.
        alpha: KS p-value under which a numeric feature drifted (with ``ks >= min_ks``).
        min_ks: the smallest KS statistic that counts.
    """

    features: tuple[FeatureDrift, ...]
    skipped: dict[str, str]
    psi_threshold: float
    alpha: float
    min_ks: float

    @property
    def drifted(self) -> list[str]:
        """Names of the features that drifted."""
        return [f.feature for f in self.features if f.drifted]

    def feature(self, name: str) -> FeatureDrift:
        """The row of feature ``name``.

        Raises:
            KeyError: it was not compared.
        """
        for row in self.features:
            if row.feature == name:
                return row
        raise KeyError(f"feature '{name}' was not compared ({', '.join(self._names())})")

    def _names(self) -> list[str]:
        return [f.feature for f in self.features]

    def to_dict(self) -> dict[str, Any]:
        """The report as plain values (for JSON)."""
        return {
            "drifted": self.drifted,
            "features": [f.to_dict() for f in self.features],
            "skipped": dict(self.skipped),
            "thresholds": {"psi": self.psi_threshold, "alpha": self.alpha, "min_ks": self.min_ks},
        }

    def summary(self) -> str:
        """A headline and an aligned table, for a terminal."""
        rule = f"psi >= {self.psi_threshold:g}, or KS p < {self.alpha:g} with KS >= {self.min_ks:g}"
        head = f"{len(self.drifted)} of {len(self.features)} features drifted ({rule})"
        rows = [
            [
                f.feature,
                f.kind,
                f.psi,
                f.level,
                _dash(f.ks),
                _dash(f.p_value),
                f.unseen,
                _yes(f.drifted),
            ]
            for f in self.features
        ]
        headers = ["feature", "kind", "psi", "level", "ks", "p_value", "unseen", "drifted"]
        lines = [head, table(headers, rows)]
        if self.skipped:
            lines.append("skipped: " + "; ".join(f"{k} ({v})" for k, v in self.skipped.items()))
        return "\n".join(lines)


@dataclass(frozen=True)
class EmbeddingDrift:
    """Drift between two sets of embeddings.

    Attributes:
        mmd2: unbiased squared maximum mean discrepancy (near 0, possibly below, without drift).
        p_value: share of label permutations with an MMD² at least as large (``(1 + k) / (1 + P)``).
        cosine_distance: ``1 - cos`` of the angle between the two mean embeddings (NaN when a
            mean is the zero vector).
        bandwidth: the RBF kernel's width (median pairwise distance of the subsample).
        n_reference: reference rows in the subsample.
        n_current: current rows in the subsample.
        permutations: how many permutations the p-value used.
        drifted: ``p_value < alpha``.
    """

    mmd2: float
    p_value: float
    cosine_distance: float
    bandwidth: float
    n_reference: int
    n_current: int
    permutations: int
    drifted: bool

    def to_dict(self) -> dict[str, Any]:
        """The result as plain values."""
        return asdict(self)

    def summary(self) -> str:
        """One line, for a terminal."""
        verdict = "drifted" if self.drifted else "no drift"
        return (
            f"embeddings ({self.n_reference} vs {self.n_current} rows): MMD² {fmt(self.mmd2)} "
            f"(p {fmt(self.p_value)}, {self.permutations} permutations, bandwidth "
            f"{fmt(self.bandwidth)}), cosine distance of means {fmt(self.cosine_distance)}: "
            f"{verdict}"
        )


def psi_level(psi: float) -> str:
    """``"none"`` below 0.1, ``"moderate"`` below 0.25, else ``"major"``.

    Example:
        >>> psi_level(0.12)
        'moderate'
    """
    if psi < PSI_MODERATE:
        return "none"
    return "moderate" if psi < PSI_MAJOR else "major"


def numeric_psi(
    reference: Any, current: Any, *, bins: int = DEFAULT_BINS, epsilon: float = EPSILON
) -> float:
    """PSI of a numeric feature, binned at the reference's quantiles.

    Args:
        reference: (n,) numbers; NaN and ±inf are left out.
        current: (m,) numbers.
        bins: quantile bins of the reference (fewer when quantiles tie).
        epsilon: the share an empty bin counts as.

    Returns:
        PSI >= 0; about 0 for samples of the same distribution.

    Raises:
        DataError: a sample has no finite value.
        ConfigError: ``bins`` below 2.

    Example:
        >>> x = np.arange(1000.0)
        >>> round(numeric_psi(x, x), 6), numeric_psi(x, x + 500) > PSI_MAJOR
        (0.0, True)
    """
    if bins < 2:
        raise ConfigError(f"bins must be 2 or more, got {bins}")
    ref = _finite(reference, "reference")
    cur = _finite(current, "current")
    # edges are reference values (inverted CDF); right-closed bins (x <= edge), so a value that
    # fills several quantiles gets one bin of its own and no bin is empty in the reference
    levels = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    inner = np.unique(np.quantile(ref, levels, method="inverted_cdf"))
    ref_share = np.bincount(np.searchsorted(inner, ref), minlength=len(inner) + 1) / len(ref)
    cur_share = np.bincount(np.searchsorted(inner, cur), minlength=len(inner) + 1) / len(cur)
    return _psi(ref_share, cur_share, epsilon)


def categorical_psi(reference: Any, current: Any, *, epsilon: float = EPSILON) -> tuple[float, int]:
    """PSI of a categorical feature over the reference's categories plus one *unseen* bin.

    Args:
        reference: (n,) category values; missing ones (``None``, NaN) are left out.
        current: (m,) category values.
        epsilon: the share an empty bin counts as (an unseen category's reference share).

    Returns:
        ``(psi, unseen)``: the PSI and how many current values are in categories the reference
        never had.

    Raises:
        DataError: a sample has no value.

    Example:
        >>> psi, unseen = categorical_psi(["a", "b"] * 50, ["a", "b"] * 45 + ["c"] * 10)
        >>> unseen, round(psi, 3)
        (10, 0.701)
    """
    ref = _present(reference, "reference")
    cur = _present(current, "current")
    counts = ref.value_counts(sort=False)
    ref_share = np.append(counts.to_numpy(dtype=np.float64) / len(ref), 0.0)
    cur_counts = cur.value_counts(sort=False).reindex(counts.index, fill_value=0)
    seen = int(cur_counts.sum())
    cur_share = np.append(cur_counts.to_numpy(dtype=np.float64), len(cur) - seen) / len(cur)
    return _psi(ref_share, cur_share, epsilon), len(cur) - seen


def ks_test(reference: Any, current: Any) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and its (asymptotic) p-value.

    Args:
        reference: (n,) numbers; NaN and ±inf are left out.
        current: (m,) numbers.

    Returns:
        ``(statistic, p_value)``: the largest gap between the empirical CDFs, in [0, 1], and the
        probability of a gap at least as large between two samples of one distribution.

    Raises:
        DataError: a sample has no finite value.

    Example:
        >>> d, p = ks_test(np.arange(100.0), np.arange(100.0) + 50)
        >>> d, p < 1e-9
        (0.5, True)
    """
    ref = np.sort(_finite(reference, "reference"))
    cur = np.sort(_finite(current, "current"))
    grid = np.concatenate([ref, cur])
    ref_cdf = np.searchsorted(ref, grid, side="right") / len(ref)
    cur_cdf = np.searchsorted(cur, grid, side="right") / len(cur)
    statistic = float(np.max(np.abs(ref_cdf - cur_cdf)))
    root = math.sqrt(len(ref) * len(cur) / (len(ref) + len(cur)))
    return statistic, _kolmogorov_sf((root + 0.12 + 0.11 / root) * statistic)


def table_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: Sequence[str] | None = None,
    *,
    categorical: Sequence[str] = (),
    bins: int = DEFAULT_BINS,
    psi_threshold: float = PSI_MAJOR,
    alpha: float = 0.01,
    min_ks: float = 0.1,
    max_categories: int = MAX_CATEGORIES,
) -> DriftReport:
    """Drift of every shared feature (or of ``columns``) between two tables.

    A column is numeric when the reference's values are numbers (numeric dtype or text that reads
    as numbers; named date-times compare as Unix seconds), otherwise categorical (text, bools and
    the ``categorical`` columns, compared as text). A numeric feature drifted when its PSI is at
    least ``psi_threshold`` or its KS p-value is below ``alpha`` with a KS statistic of at least
    ``min_ks``; a categorical one when its PSI is at least ``psi_threshold``. Without ``columns``,
    columns of one table only, date-time columns (time always moves) and id-like text columns
    (more than ``max_categories`` distinct values) are skipped and listed in ``report.skipped``.

    Args:
        reference: the reference table (e.g. the training data).
        current: the table to compare (e.g. recent requests).
        columns: the columns to compare; ``None``: the shared ones.
        categorical: columns to compare as categories even though they hold numbers (codes).
        bins: quantile bins for numeric PSI.
        psi_threshold: PSI from which a feature drifted (0.1 moderate, 0.25 major).
        alpha: KS p-value under which a numeric feature may have drifted (0: PSI only).
        min_ks: KS statistic a numeric feature needs as well.
        max_categories: most distinct reference values of a text column compared by default.

    Returns:
        The report; ``report.drifted`` names the drifted features.

    Raises:
        DataError: a table is not a DataFrame or has no rows, a named column is missing from a
            side, no column is shared, a column has no value on one side (all missing), or a
            numeric reference column meets text in the current table (naming its row).

    Example:
        >>> ref = pd.DataFrame({"shop": ["a", "b"] * 50, "n": np.arange(100.0)})
        >>> report = table_drift(ref, ref.assign(shop="c"))
        >>> report.drifted, report.feature("shop").unseen
        (['shop'], 100)
    """
    for side, frame in (("reference", reference), ("current", current)):
        _check_frame(frame, side)
    chosen, skipped = _choose_columns(reference, current, columns, max_categories)
    rows = []
    for name in chosen:
        kind = "string" if name in categorical else infer_kind(reference[name])
        if kind in ("integer", "number", "datetime"):
            row = _numeric_drift(reference[name], current[name], name, kind, bins)
        else:
            row = _categorical_drift(reference[name], current[name], name)
        rows.append(_judge(row, psi_threshold, alpha, min_ks))
    return DriftReport(tuple(rows), skipped, psi_threshold, alpha, min_ks)


def embedding_drift(
    reference: Any,
    current: Any,
    *,
    max_rows: int = 1000,
    permutations: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
) -> EmbeddingDrift:
    """Drift between two sets of embeddings: MMD² with a permutation test, and the cosine
    distance between their means.

    Each side is subsampled (seeded, without replacement) to at most ``max_rows`` rows; the
    kernel is then at most ``2 * max_rows`` square. The means use every row.

    Args:
        reference: (n, d) embeddings, n >= 2.
        current: (m, d) embeddings of the same width, m >= 2.
        max_rows: most rows per side in the MMD.
        permutations: label permutations for the p-value.
        alpha: p-value under which the embeddings drifted.
        seed: seed of the subsample and the permutations.

    Returns:
        The result (the same for the same inputs and seed).

    Raises:
        DataError: not a 2-D array, fewer than 2 rows, different widths, or a non-finite value
            (naming its row).
        ConfigError: ``max_rows`` below 2 or ``permutations`` below 1.

    Shapes:
        reference: (n, d); current: (m, d).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> a, b = rng.normal(size=(200, 8)), rng.normal(0.5, size=(200, 8))
        >>> embedding_drift(a, b, permutations=50).drifted
        True
    """
    if max_rows < 2 or permutations < 1:
        raise ConfigError(
            f"expected max_rows >= 2 and permutations >= 1, got {max_rows} and {permutations}"
        )
    ref = _embeddings(reference, "reference")
    cur = _embeddings(current, "current")
    if ref.shape[1] != cur.shape[1]:
        raise DataError(
            f"embedding widths differ: the reference's rows have {ref.shape[1]} values, "
            f"the current's {cur.shape[1]}; expected the same model's embeddings"
        )
    rng = np.random.default_rng(seed)
    ref_rows, cur_rows = _subsample(ref, max_rows, rng), _subsample(cur, max_rows, rng)
    pooled = np.vstack([ref_rows, cur_rows])  # (N, d)
    squared = _squared_distances(pooled)  # (N, N)
    bandwidth = _median_bandwidth(squared)
    kernel = np.exp(-squared / (2.0 * bandwidth**2))
    is_ref = np.zeros((permutations + 1, len(pooled)), dtype=bool)  # row 0: the real split
    is_ref[0, : len(ref_rows)] = True
    for p in range(1, permutations + 1):
        is_ref[p, rng.permutation(len(pooled))[: len(ref_rows)]] = True
    stats = _mmd2(kernel, is_ref)
    p_value = (1 + int(np.sum(stats[1:] >= stats[0]))) / (1 + permutations)
    return EmbeddingDrift(
        mmd2=float(stats[0]),
        p_value=float(p_value),
        cosine_distance=_cosine_distance(ref.mean(axis=0), cur.mean(axis=0)),
        bandwidth=float(bandwidth),
        n_reference=len(ref_rows),
        n_current=len(cur_rows),
        permutations=permutations,
        drifted=bool(p_value < alpha),
    )


def _psi(expected: np.ndarray, actual: np.ndarray, epsilon: float) -> float:
    expected = np.maximum(expected, epsilon)
    actual = np.maximum(actual, epsilon)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def _kolmogorov_sf(lam: float) -> float:
    """P(K > lam) for the Kolmogorov distribution K (two series, each exact where it converges)."""
    if lam <= 0.0:
        return 1.0
    if lam < 1.0:  # cdf = sqrt(2 pi) / lam * sum_k exp(-(2k - 1)^2 pi^2 / (8 lam^2))
        odd = 2.0 * np.arange(1, 21) - 1.0
        terms = np.exp(-(odd**2) * math.pi**2 / (8.0 * lam**2))
        sf = 1.0 - math.sqrt(2.0 * math.pi) / lam * float(np.sum(terms))
    else:  # sf = 2 sum_k (-1)^(k - 1) exp(-2 k^2 lam^2)
        k = np.arange(1, 101, dtype=np.float64)
        sf = 2.0 * float(np.sum((-1.0) ** (k - 1) * np.exp(-2.0 * k**2 * lam**2)))
    return min(1.0, max(0.0, sf))


def _finite(values: Any, side: Sample) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise DataError(f"the {side} sample is not numbers ({exc})") from None
    array = array[np.isfinite(array)]
    if len(array) == 0:
        raise DataError(f"the {side} sample has no finite value; expected at least one number")
    return array


def _present(values: Any, side: Sample) -> pd.Series:
    series = pd.Series(np.asarray(values, dtype=object).ravel()).dropna()
    if len(series) == 0:
        raise DataError(f"the {side} sample has no value; expected at least one category")
    return series


def _check_frame(frame: Any, side: Sample) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"the {side} sample is a {type(frame).__name__}; expected a DataFrame")
    if len(frame) == 0:
        raise DataError(f"the {side} sample is empty; expected at least one row")


def _choose_columns(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: Sequence[str] | None,
    max_categories: int,
) -> tuple[list[str], dict[str, str]]:
    """The columns to compare, and those left out with why."""
    ref_names = [str(c) for c in reference.columns]
    cur_names = [str(c) for c in current.columns]
    if columns is not None:
        for name in columns:
            for side, names in (("reference", ref_names), ("current", cur_names)):
                if name not in names:
                    found = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
                    raise DataError(f"not in the {side} sample (found: {found})", column=name)
        return list(columns), {}
    skipped = {n: "only in the reference" for n in ref_names if n not in cur_names}
    skipped |= {n: "only in the current" for n in cur_names if n not in ref_names}
    chosen = []
    for name in (n for n in ref_names if n in cur_names):
        reason = _skip_reason(reference[name], max_categories)
        if reason:
            skipped[name] = reason
        else:
            chosen.append(name)
    if not chosen:
        raise DataError(f"no column to compare (skipped: {skipped or 'none'})")
    return chosen, skipped


def _skip_reason(column: pd.Series, max_categories: int) -> str | None:
    kind = infer_kind(column)
    if kind == "datetime":
        return "date-time: time always moves; name it in columns to compare"
    if kind == "string":
        distinct = column.dropna().nunique()
        if distinct > max_categories:
            return f"text with {distinct} distinct values (id-like); name it in columns to compare"
    return None


def _numeric_drift(
    reference: pd.Series, current: pd.Series, name: str, kind: str, bins: int
) -> FeatureDrift:
    ref = _numbers(reference, name, "reference", kind)
    cur = _numbers(current, name, "current", kind)
    ks, p_value = ks_test(ref, cur)
    psi = numeric_psi(ref, cur, bins=bins)
    return FeatureDrift(name, "numeric", psi, ks, p_value, False, 0, len(ref), len(cur))


def _categorical_drift(reference: pd.Series, current: pd.Series, name: str) -> FeatureDrift:
    ref = _categories(reference, name, "reference")
    cur = _categories(current, name, "current")
    psi, unseen = categorical_psi(ref, cur)
    return FeatureDrift(name, "categorical", psi, None, None, False, unseen, len(ref), len(cur))


def _judge(row: FeatureDrift, psi_threshold: float, alpha: float, min_ks: float) -> FeatureDrift:
    by_ks = row.p_value is not None and row.p_value < alpha and (row.ks or 0.0) >= min_ks
    return replace(row, drifted=bool(row.psi >= psi_threshold or by_ks))


def _numbers(column: pd.Series, name: str, side: Sample, kind: str) -> np.ndarray:
    """The finite numbers of a column (date-times as Unix seconds)."""
    if pd.api.types.is_datetime64_any_dtype(column.dtype):
        values = _seconds(column)
    elif pd.api.types.is_numeric_dtype(column.dtype) and not pd.api.types.is_bool_dtype(column):
        values = _to_float(column)
    else:
        values = _text_numbers(column, name, side, kind)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        raise DataError(f"no finite number in the {side} sample (all missing)", column=name)
    return values


def _text_numbers(column: pd.Series, name: str, side: Sample, kind: str) -> np.ndarray:
    """Numbers (or ISO-8601 date-times, for a date-time column) written as text; NaN if empty."""
    text = column.astype(object).where(column.notna(), "").astype(str).str.strip()
    written = (text != "").to_numpy(dtype=bool)
    if kind == "datetime":
        values, expected = _seconds(_text_datetimes(text, written, name, side)), "date-times"
        bad = np.isnan(values) & written
    else:
        values, expected = _to_float(pd.to_numeric(text, errors="coerce")), "numbers"
        spelled_nan = text.str.lower().str.lstrip("+-").eq("nan").to_numpy(dtype=bool)
        bad = np.isnan(values) & written & ~spelled_nan
    if bad.any():
        row = int(np.argmax(bad))
        message = (
            f"{text.iloc[row]!r} in the {side} sample; expected {expected}, as in the reference"
        )
        raise DataError(message, row=row + 1, column=name)
    return values


def _text_datetimes(text: pd.Series, written: np.ndarray, name: str, side: Sample) -> pd.Series:
    try:
        return pd.to_datetime(
            text.where(written, None), format="ISO8601", utc=True, errors="coerce"
        )
    except (pd.errors.OutOfBoundsDatetime, OverflowError, ValueError) as exc:
        message = f"a date-time in the {side} sample is outside 1677-2262 ({exc})"
        raise DataError(message, column=name) from None


def _to_float(values: pd.Series) -> np.ndarray:
    return values.to_numpy(dtype=np.float64, na_value=np.nan)


def _seconds(moments: pd.Series) -> np.ndarray:
    """Date-times as float Unix seconds (naive ones taken as UTC), NaN for NaT."""
    if moments.dt.tz is None:
        moments = moments.dt.tz_localize("UTC")
    epoch = pd.Timestamp(0, tz="UTC").as_unit(moments.dt.unit)
    return _to_float((moments - epoch) / pd.Timedelta(seconds=1))


def _categories(column: pd.Series, name: str, side: Sample) -> np.ndarray:
    """The present values of a column as category text (whole numbers without ``.0``)."""
    present = column[column.notna()]
    if pd.api.types.is_float_dtype(present.dtype):
        values = present.to_numpy(dtype=np.float64)
        whole = (np.floor(values) == values) & (np.abs(values) < 2.0**53)
        text = pd.Series(values.astype(str), dtype=object)
        text[whole] = values[whole].astype(np.int64).astype(str)
    else:
        text = present.astype(str).str.strip()
        text = text[text != ""]
    if len(text) == 0:
        raise DataError(f"no value in the {side} sample (all missing)", column=name)
    return text.to_numpy(dtype=object)


def _embeddings(values: Any, side: Sample) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"the {side} embeddings are not an array of numbers ({exc})") from None
    if array.ndim != 2:
        raise DataError(
            f"the {side} embeddings have shape {array.shape}; expected a 2-D array (rows, width)"
        )
    if len(array) < 2:
        raise DataError(f"the {side} embeddings have {len(array)} rows; expected at least 2")
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        raise DataError(
            f"the {side} embeddings have a non-finite value", row=int(np.argmax(bad)) + 1
        )
    return array


def _subsample(rows: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    if len(rows) <= limit:
        return rows
    return rows[np.sort(rng.choice(len(rows), size=limit, replace=False))]


def _squared_distances(x: np.ndarray) -> np.ndarray:
    norms = np.einsum("ij,ij->i", x, x)  # (N,)
    squared = norms[:, None] + norms[None, :] - 2.0 * (x @ x.T)  # (N, N)
    np.fill_diagonal(squared, 0.0)
    return np.maximum(squared, 0.0)


def _median_bandwidth(squared: np.ndarray) -> float:
    """The median pairwise distance (1.0 when all points coincide)."""
    upper = squared[np.triu_indices(len(squared), k=1)]
    median = float(np.median(upper))
    if median <= 0.0:
        positive = upper[upper > 0.0]
        median = float(np.mean(positive)) if len(positive) else 1.0
    return math.sqrt(median)


def _mmd2(kernel: np.ndarray, is_ref: np.ndarray) -> np.ndarray:
    """Unbiased MMD² for each split (a row of ``is_ref`` marks the reference's rows).

    Shapes:
        kernel: (N, N); is_ref: (P, N); returns (P,).
    """
    k0 = kernel.copy()
    np.fill_diagonal(k0, 0.0)  # the unbiased estimate leaves out k(x_i, x_i)
    s = is_ref.T.astype(np.float64)  # (N, P)
    n = s.sum(axis=0)
    m = len(kernel) - n
    row_sums = k0.sum(axis=1)  # (N,)
    xx = np.einsum("ip,ip->p", s, k0 @ s)  # sum over reference pairs
    x_all = row_sums @ s  # reference rows against every row
    xy = x_all - xx
    yy = row_sums.sum() - 2.0 * x_all + xx
    return xx / (n * (n - 1)) + yy / (m * (m - 1)) - 2.0 * xy / (n * m)


def _cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norms == 0.0:
        return float("nan")
    return float(1.0 - np.dot(a, b) / norms)


def _dash(value: float | None) -> float | str:
    return "-" if value is None else value


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


__all__ = [
    "DEFAULT_BINS",
    "EPSILON",
    "MAX_CATEGORIES",
    "PSI_MAJOR",
    "PSI_MODERATE",
    "DriftReport",
    "EmbeddingDrift",
    "FeatureDrift",
    "FeatureKind",
    "categorical_psi",
    "embedding_drift",
    "ks_test",
    "numeric_psi",
    "psi_level",
    "table_drift",
]
