"""Sample files for the tabular solution, from a real data set bundled with scikit-learn.

``abyssal generate tabular --out DIR`` writes:

- ``train.csv``: an ``id`` column, the data set's features, one categorical column derived from a
  feature (so that the categorical path has something to do; it adds no information that the
  feature does not already hold), and the target; a share of feature cells is blanked at random
  to show imputation;
- ``new_rows.csv``: held-out rows in the same format, without the target, to predict.

The derived column is ``size_band`` (quartile of ``mean area``: small, medium, large, very large)
for breast cancer and ``age_band`` (under 30, 30-39, ..., 60 and over) for diabetes.

Example:
    >>> generate_sample(TabularSampleConfig(), Path("demo-tabular"))  # doctest: +SKIP
    ['demo-tabular/train.csv: 512 rows of ...', 'demo-tabular/new_rows.csv: 57 rows ...']
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from abyssal.data.tables import write_table
from abyssal.solutions.tabular.bundled import BUNDLED_TARGETS, bundled_table
from abyssal.solutions.tabular.config import TabularSampleConfig

_TITLES = {"breast_cancer": "Wisconsin breast cancer", "diabetes": "diabetes progression"}


def sample_table(options: TabularSampleConfig) -> pd.DataFrame:
    """The whole data set with an id, the derived categorical column and blanked cells."""
    frame = bundled_table(options.dataset)
    target = BUNDLED_TARGETS[options.dataset]
    if options.dataset == "breast_cancer":
        bands = ["small", "medium", "large", "very large"]
        derived = ("size_band", pd.qcut(frame["mean area"], 4, labels=bands).astype(str))
    else:
        edges = [-np.inf, 30, 40, 50, 60, np.inf]
        bands = ["under 30", "30-39", "40-49", "50-59", "60 and over"]
        derived = ("age_band", pd.cut(frame["age"], edges, right=False, labels=bands).astype(str))
    features = frame.drop(columns=[target])
    features[derived[0]] = derived[1].to_numpy(dtype=object)
    features = _blank(features, options.missing_frac, np.random.default_rng(options.seed))
    ids = pd.Series([f"R{i + 1:04d}" for i in range(len(frame))], name="id")
    return pd.concat([ids, features, frame[target]], axis=1)


def generate_sample(options: TabularSampleConfig, out: Path) -> list[str]:
    """Write ``train.csv`` and ``new_rows.csv`` into the folder ``out``.

    Args:
        options: which data set, how many rows to hold out, how many cells to blank, the seed.
        out: the folder (created if needed).

    Returns:
        One line per file written.
    """
    table = sample_table(options)
    target = BUNDLED_TARGETS[options.dataset]
    rng = np.random.default_rng([options.seed, 1])
    held = np.zeros(len(table), dtype=bool)
    held[rng.permutation(len(table))[: max(1, round(len(table) * options.new_frac))]] = True
    train_path = write_table(table[~held], Path(out) / "train.csv")
    new_path = write_table(table[held].drop(columns=[target]), Path(out) / "new_rows.csv")
    blanked = int(table[~held].drop(columns=["id", target]).isna().to_numpy().sum())
    title = _TITLES[options.dataset]
    return [
        f"{train_path}: {int((~held).sum())} rows of the {title} data set (bundled with "
        f"scikit-learn), target '{target}', {blanked} feature cells blanked at random",
        f"{new_path}: {int(held.sum())} held-out rows without '{target}', to predict",
    ]


def _blank(features: pd.DataFrame, share: float, rng: np.random.Generator) -> pd.DataFrame:
    """Features with about ``share`` of their cells set missing, at random."""
    mask = rng.random(features.shape) < share
    return features.astype(object).mask(mask, None) if mask.any() else features
