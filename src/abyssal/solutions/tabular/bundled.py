"""The real data sets that ship inside scikit-learn, as tables: nothing is downloaded.

- ``breast_cancer``: Wisconsin Diagnostic Breast Cancer (569 tumours, 30 numeric measurements of
  cell nuclei; target ``diagnosis``: ``malignant`` or ``benign``). Street, Wolberg and Mangasarian,
  "Nuclear feature extraction for breast tumor diagnosis", 1993.
- ``diabetes``: 442 patients, age, sex, body-mass index, blood pressure and six blood serum
  measurements in their original units; target ``progression``: a measure of disease progression
  one year later. Efron, Hastie, Johnstone and Tibshirani, "Least Angle Regression", 2004.

Example:
    >>> frame = bundled_table("breast_cancer")  # doctest: +SKIP
    >>> frame.shape, sorted(frame["diagnosis"].unique())  # doctest: +SKIP
    ((569, 31), ['benign', 'malignant'])
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from abyssal.core.optional import require

BundledName = Literal["breast_cancer", "diabetes"]
BUNDLED_TARGETS: dict[str, str] = {"breast_cancer": "diagnosis", "diabetes": "progression"}


def bundled_table(name: BundledName) -> pd.DataFrame:
    """The data set ``name`` as one frame: its features, then its target column.

    Args:
        name: ``"breast_cancer"`` or ``"diabetes"``.

    Returns:
        Numeric feature columns (float64) and the target (``BUNDLED_TARGETS[name]``): class
        names for breast cancer, floats for diabetes.

    Raises:
        MissingDependencyError: scikit-learn is not installed (extra ``tabular``).
        KeyError: an unknown name.
    """
    datasets = require("sklearn.datasets", extra="tabular", purpose="the bundled data sets")
    target = BUNDLED_TARGETS[name]
    if name == "breast_cancer":
        raw = datasets.load_breast_cancer(as_frame=True)
        labels = np.asarray(raw.target_names)[raw.target.to_numpy()]
    else:
        raw = datasets.load_diabetes(as_frame=True, scaled=False)
        labels = raw.target.to_numpy(dtype=np.float64)
    frame = raw.data.astype("float64").reset_index(drop=True)
    frame[target] = labels
    return frame
