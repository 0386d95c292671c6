"""Column encoders fitted on the training split only, stored as JSON in the model spec.

- **Numeric**: missing cells take the training median; a column that had missing training cells
  gets a 0/1 missing indicator; values are standardised with the training mean and standard
  deviation (of the present cells).
- **Categorical**: the ``max_categories`` most frequent training values get codes ``1..K``
  (ties broken by value); code ``0`` is missing, rarer or never-seen values. The network embeds
  the codes; the boosted trees see code 0 as missing.
- **Target**: classification: class names (sorted, numbers in numeric order) -> indices 0..C-1;
  regression: standardised with the training mean and standard deviation, so the network learns
  on unit scale while metrics and predictions are in the target's own units.

Example:
    >>> import numpy as np
    >>> pre = TablePreprocessor.fit(
    ...     ["x"], np.array([[1.0], [np.nan], [3.0]]), ["c"], np.array([["a"], ["b"], ["a"]]),
    ...     TargetEncoding("regression", mean=0.0, std=1.0), max_categories=1,
    ... )
    >>> pre.encode_numeric(np.array([[np.nan]])).tolist()  # median 2 -> 0, indicator 1
    [[0.0, 1.0]]
    >>> pre.encode_categorical(np.array([["a"], ["b"], [None]], dtype=object)).ravel().tolist()
    [1, 0, 0]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from abyssal.core.errors import StoreError


@dataclass
class NumericColumn:
    """Imputation and scaling of one numeric column."""

    name: str
    median: float
    mean: float
    std: float
    indicator: bool

    @classmethod
    def fit(cls, name: str, values: np.ndarray) -> NumericColumn:
        """Statistics of one training column (NaN = missing); an all-missing column gives 0, 1."""
        present = values[~np.isnan(values)]
        if len(present) == 0:
            return cls(name, 0.0, 0.0, 1.0, True)
        std = float(present.std())
        return cls(
            name,
            float(np.median(present)),
            float(present.mean()),
            std if std > 0 else 1.0,
            bool(len(present) < len(values)),
        )


@dataclass
class CategoricalColumn:
    """The vocabulary of one categorical column: code ``i + 1`` for ``vocabulary[i]``."""

    name: str
    vocabulary: list[str]

    @property
    def cardinality(self) -> int:
        """Number of codes, including code 0 (missing, rare or unseen)."""
        return len(self.vocabulary) + 1

    @classmethod
    def fit(cls, name: str, values: np.ndarray, max_categories: int) -> CategoricalColumn:
        """The ``max_categories`` most frequent present values (ties: by value)."""
        counts = Counter(v for v in values.tolist() if v is not None)
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return cls(name, [value for value, _ in ranked[:max_categories]])


@dataclass
class TargetEncoding:
    """Class names (classification) or the training mean and std (regression)."""

    task: Literal["classification", "regression"]
    classes: list[str] = field(default_factory=list)
    mean: float = 0.0
    std: float = 1.0

    @property
    def outputs(self) -> int:
        """Width of the network's output: one logit per class, or one value."""
        return len(self.classes) if self.task == "classification" else 1

    def standardise(self, target: np.ndarray) -> np.ndarray:
        """(N,) regression target in units of the training std around the training mean."""
        return (np.asarray(target, dtype=np.float64) - self.mean) / self.std

    def restore(self, standardised: np.ndarray) -> np.ndarray:
        """(N,) network output back in the target's units."""
        return np.asarray(standardised, dtype=np.float64) * self.std + self.mean


@dataclass
class TablePreprocessor:
    """Every fitted encoder of one table; :meth:`to_dict` is what the model spec stores."""

    numeric: list[NumericColumn]
    categorical: list[CategoricalColumn]
    target: TargetEncoding

    @classmethod
    def fit(
        cls,
        numeric_names: Sequence[str],
        numeric: np.ndarray,
        categorical_names: Sequence[str],
        categorical: np.ndarray,
        target: TargetEncoding,
        *,
        max_categories: int = 100,
    ) -> TablePreprocessor:
        """Fit on training rows only.

        Args:
            numeric_names: the numeric columns.
            numeric: (N, Fn) float64, NaN where missing.
            categorical_names: the categorical columns.
            categorical: (N, Fc) object: canonical text or ``None``.
            target: the fitted target encoding.
            max_categories: categories kept per column.
        """
        nums = [NumericColumn.fit(n, numeric[:, i]) for i, n in enumerate(numeric_names)]
        cats = [
            CategoricalColumn.fit(n, categorical[:, i], max_categories)
            for i, n in enumerate(categorical_names)
        ]
        return cls(nums, cats, target)

    @property
    def numeric_width(self) -> int:
        """Width of :meth:`encode_numeric`'s output: the columns plus their missing indicators."""
        return len(self.numeric) + sum(c.indicator for c in self.numeric)

    @property
    def cardinalities(self) -> list[int]:
        """Codes per categorical column (embedding table sizes)."""
        return [c.cardinality for c in self.categorical]

    def encode_numeric(self, values: np.ndarray) -> np.ndarray:
        """Impute, standardise and append missing indicators.

        Shapes:
            values: (N, Fn) float, NaN where missing -> (N, :attr:`numeric_width`) float32.
        """
        values = np.asarray(values, dtype=np.float64).reshape(len(values), len(self.numeric))
        missing = np.isnan(values)
        median = np.array([c.median for c in self.numeric])
        mean = np.array([c.mean for c in self.numeric])
        std = np.array([c.std for c in self.numeric])
        scaled = (np.where(missing, median, values) - mean) / std  # (N, Fn)
        flags = missing[:, [c.indicator for c in self.numeric]].astype(np.float64)  # (N, Fi)
        return np.concatenate([scaled, flags], axis=1).astype(np.float32)

    def encode_categorical(self, values: np.ndarray) -> np.ndarray:
        """Category text to codes; missing, rare and unseen values are 0.

        Shapes:
            values: (N, Fc) object -> (N, Fc) int64.
        """
        values = np.asarray(values, dtype=object).reshape(len(values), len(self.categorical))
        out = np.zeros(values.shape, dtype=np.int64)
        for j, column in enumerate(self.categorical):
            codes = {v: i + 1 for i, v in enumerate(column.vocabulary)}
            out[:, j] = [codes.get(v, 0) for v in values[:, j].tolist()]
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON form (plain lists, strings and floats)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TablePreprocessor:
        """The preprocessor :meth:`to_dict` wrote.

        Raises:
            StoreError: the mapping is not a stored preprocessor.
        """
        try:
            return cls(
                [NumericColumn(**c) for c in data["numeric"]],
                [CategoricalColumn(**c) for c in data["categorical"]],
                TargetEncoding(**data["target"]),
            )
        except (KeyError, TypeError) as exc:
            raise StoreError(f"not a tabular preprocessing spec ({exc})") from None
