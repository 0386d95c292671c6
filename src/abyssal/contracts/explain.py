"""Explanations of a model version for an audit: why it made some of its held-out predictions,
and which inputs it relies on as a whole.

A solution's :meth:`~abyssal.contracts.solution.Solution.explain` returns an
:class:`Explanations`: one :class:`Attribution` per explained prediction (input features, tokens,
image regions or graph neighbours and how much each moved the prediction, with an optional
picture), a global permutation importance, and the solution's own explanations as text (fraud
rings, predicted nodule attributes).

The helpers here are what the solutions share:

- :func:`integrated_gradients`: integrated gradients (Sundararajan, Taly and Yan, "Axiomatic
  Attribution for Deep Networks", ICML 2017, arXiv:1703.01365) through Captum's
  ``IntegratedGradients``, or ``LayerIntegratedGradients`` for inputs that cannot be interpolated
  themselves (token ids, category codes: their embeddings are). For an input ``x``, a baseline
  ``x'`` and the model's output ``F``, feature ``i`` gets

      IG_i(x) = (x_i - x'_i) * integral over a in [0, 1] of dF(x' + a (x - x')) / dx_i da,

  approximated with ``steps`` points (Gauss-Legendre); the attributions add up to
  ``F(x) - F(x')`` (completeness), and for a linear model ``F(x) = w . x`` they are exactly
  ``w_i (x_i - x'_i)``.
- :func:`permutation_importance`: how much a metric drops when one feature's values are shuffled
  across the rows (Breiman, "Random Forests", Machine Learning 2001; Fisher, Rudin and Dominici,
  "All Models are Wrong, but Many are Useful", JMLR 2019), averaged over ``repeats`` shuffles.
  Shuffling keeps a feature's distribution but breaks its tie to the rest of the row, so the drop
  is what the model loses without the information the feature carries.
- :func:`write_bar_chart`: a horizontal bar chart of attributions as a PNG (matplotlib, drawn on
  an Agg canvas: no display and no change to pyplot's global backend).
- :func:`grid_heat`, :func:`top_scores`, :func:`token_scores`, :func:`explain_folder`: small
  pieces the solutions use to turn maps and token lists into named scores.

Example:
    >>> import torch
    >>> w = torch.tensor([[2.0, -1.0]])
    >>> ig = integrated_gradients(lambda x: x @ w.T, torch.tensor([[1.0, 3.0]]), None, 0)
    >>> [round(v, 4) for v in ig[0].tolist()]
    [2.0, -3.0]
"""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from abyssal.core.atomic import atomic_path
from abyssal.core.optional import require

TOP_SCORES = 10
"""How many scores an :class:`Attribution` keeps by default (the largest in absolute value)."""

CHART_BARS = 15
"""How many bars :func:`write_bar_chart` draws by default."""

SMALLER_IS_BETTER = ("loss", "rmse", "mae", "mse", "error", "brier")
"""Metric name endings for which a smaller value is better (a shuffle that raises them hurts)."""

GRID_NAMES = {
    (0, 0): "top-left",
    (0, 1): "top",
    (0, 2): "top-right",
    (1, 0): "left",
    (1, 1): "centre",
    (1, 2): "right",
    (2, 0): "bottom-left",
    (2, 1): "bottom",
    (2, 2): "bottom-right",
}
"""Names of the cells of :func:`grid_heat`'s 3 x 3 grid, by (row, column)."""

POSITIVE_COLOUR = "#c0392b"
NEGATIVE_COLOUR = "#2e86c1"

Place = str | int | tuple[str, int]
"""Where a feature lives in the data :func:`permutation_importance` shuffles: a frame's column
name, a 2-D array's column index, or ``(key, column index)`` / ``key`` in a mapping of arrays."""


@dataclass
class Attribution:
    """The explanation of one prediction.

    Attributes:
        item: what was predicted (``"row 17"``, an account, an image file).
        prediction: the predicted class, or the predicted value.
        label: the true label, when known.
        scores: feature, token, region or neighbour -> attribution (how much it moved the
            prediction; the sign says which way), the largest few only.
        image: a PNG that shows the explanation (a Grad-CAM overlay, a bar chart), if any.
        note: anything else worth a line (the attributions' total, the method's caveats).
    """

    item: str
    prediction: str | float
    label: Any
    scores: dict[str, float]
    image: Path | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: plain numbers and strings, the image as a path string."""
        return {
            "item": self.item,
            "prediction": _plain(self.prediction),
            "label": _plain(self.label),
            "scores": {str(k): float(v) for k, v in self.scores.items()},
            "image": None if self.image is None else str(self.image),
            "note": self.note,
        }

    def line(self, top: int = 5) -> str:
        """One line: the item, prediction, label and its ``top`` largest scores."""
        shown = ", ".join(f"{k} {v:+.3g}" for k, v in list(self.scores.items())[:top])
        label = "" if self.label is None else f" (label {self.label})"
        prediction = (
            f"{self.prediction:.4g}" if isinstance(self.prediction, float) else self.prediction
        )
        note = f"; {self.note}" if self.note else ""
        return f"{self.item}: predicted {prediction}{label}: {shown or 'no scores'}{note}"


@dataclass
class Explanations:
    """Explanations of some held-out predictions and of the model as a whole.

    Attributes:
        method: how the per-prediction scores were made, e.g. ``"integrated gradients
            (Captum)"``.
        items: one :class:`Attribution` per explained prediction.
        global_importance: feature -> drop of :attr:`global_metric` when the feature is shuffled
            (permutation importance), largest first; empty when the solution has none.
        global_metric: the metric the drops are of, e.g. ``"test_auroc"``.
        extras: the solution's own explanations, one text line each (ring descriptions, nodule
            attributes, why there is no global importance).
        folder: where the pictures were written, if any.
    """

    method: str
    items: list[Attribution]
    global_importance: dict[str, float] = field(default_factory=dict)
    global_metric: str = ""
    extras: list[str] = field(default_factory=list)
    folder: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for an audit report)."""
        return {
            "method": self.method,
            "items": [a.to_dict() for a in self.items],
            "global_importance": {str(k): float(v) for k, v in self.global_importance.items()},
            "global_metric": self.global_metric,
            "extras": list(self.extras),
            "folder": None if self.folder is None else str(self.folder),
        }

    def summary(self, top: int = 5) -> str:
        """A few lines for a terminal: the method, each item's ``top`` scores, the ``top`` most
        important features, the extras."""
        where = f"; pictures in {self.folder}" if self.folder is not None else ""
        lines = [f"{self.method}: {len(self.items)} predictions explained{where}"]
        lines += [f"  {a.line(top)}" for a in self.items]
        if self.global_importance:
            shown = ", ".join(
                f"{k} {v:+.3g}" for k, v in list(self.global_importance.items())[:top]
            )
            lines.append(f"global importance (drop in {self.global_metric}): {shown}")
        lines += self.extras
        return "\n".join(lines)


# -- integrated gradients ----------------------------------------------------------------------


def integrated_gradients(
    forward: Callable[..., torch.Tensor],
    inputs: torch.Tensor | tuple[torch.Tensor, ...],
    baselines: torch.Tensor | tuple[torch.Tensor, ...] | None,
    target: int | Sequence[int] | torch.Tensor | None,
    steps: int = 32,
    *,
    layer: nn.Module | Sequence[nn.Module] | None = None,
    layer_input: bool = False,
    extra_args: Any = None,
    batch: int | None = None,
) -> Any:
    """Integrated-gradients attributions of ``forward``'s output ``target`` (Captum).

    Without ``layer`` the inputs themselves are interpolated from the baselines (they must be
    float). With ``layer`` (one module or a list), the inputs go through ``forward`` unchanged and
    the layer's output (or input, with ``layer_input``) is interpolated between its values for
    the baselines and for the inputs: use it for token ids or category codes, with the
    embedding layer as ``layer``.

    Args:
        forward: the model's function: ``forward(*inputs, *extra_args)`` returns (B, K) scores
            (logits) or (B,) one score per item.
        inputs: a (B, ...) tensor or a tuple of them (the positional inputs of ``forward``).
        baselines: what "no information" is, shaped as ``inputs``; ``None``: zeros.
        target: which output column to explain: one index for all items, one per item, or
            ``None`` when ``forward`` returns one score per item.
        steps: points of the path integral (Gauss-Legendre), ``>= 1``.
        layer: a module (or list of modules) of ``forward``'s model whose output is attributed.
        layer_input: attribute to the layer's input instead of its output.
        extra_args: further positional arguments of ``forward``, not attributed (tensors with a
            batch axis are repeated along with the inputs).
        batch: at most this many interpolated items per forward pass (``None``: all at once).

    Returns:
        Attributions, detached: shaped as ``inputs`` (a tensor, or a tuple for a tuple); with
        ``layer``, shaped as the layer's output (a list for a list of layers).

    Raises:
        ValueError: ``steps < 1``, or integer inputs without a ``layer``.
        MissingDependencyError: Captum is not installed (the ``govern`` extra).

    Example:
        >>> w = torch.tensor([[1.0, -2.0, 0.5]])
        >>> x, x0 = torch.tensor([[1.0, 1.0, 4.0]]), torch.tensor([[0.0, 2.0, 2.0]])
        >>> ig = integrated_gradients(lambda v: v @ w.T, x, x0, 0)
        >>> [round(v, 4) for v in ig[0].tolist()]
        [1.0, 2.0, 1.0]
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"integrated gradients needs steps >= 1, got {steps!r}")
    attr = require("captum.attr", extra="govern", purpose="integrated-gradients attributions")
    tensors = inputs if isinstance(inputs, tuple) else (inputs,)
    if layer is None:
        ints = [i for i, t in enumerate(tensors) if not t.dtype.is_floating_point]
        if ints:
            raise ValueError(
                f"integrated gradients interpolates its inputs, but input {ints[0]} is "
                f"{tensors[ints[0]].dtype}; pass its embedding layer as layer=..."
            )
        method = attr.IntegratedGradients(forward)
        kwargs: dict[str, Any] = {}
    else:
        layers = list(layer) if isinstance(layer, Sequence) else layer
        method = attr.LayerIntegratedGradients(forward, layers)
        kwargs = {"attribute_to_layer_input": layer_input}
    if isinstance(target, torch.Tensor):
        target = target.detach().long().reshape(-1).tolist()
    elif isinstance(target, Sequence):
        target = [int(t) for t in target]
    out = method.attribute(
        inputs,
        baselines=baselines,
        target=target,
        additional_forward_args=extra_args,
        n_steps=steps,
        internal_batch_size=batch,
        **kwargs,
    )
    return _detached(out)


def _detached(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, tuple):
        return tuple(_detached(v) for v in value)
    if isinstance(value, list):
        return [_detached(v) for v in value]
    return value


# -- permutation importance --------------------------------------------------------------------


def permutation_importance(
    score_fn: Callable[[Any], float],
    columns: Sequence[str] | Mapping[str, Place | Sequence[Place]],
    frame_or_arrays: pd.DataFrame | np.ndarray | Mapping[str, np.ndarray],
    metric: str,
    repeats: int = 3,
    seed: int = 0,
    *,
    higher_is_better: bool | None = None,
) -> dict[str, float]:
    """The drop of ``metric`` when each feature's values are shuffled across the rows.

    ``score_fn`` is called once on the data as given (the reference value), then ``repeats``
    times per feature on a copy in which that feature's places are permuted (every place of one
    feature with the same permutation of the rows, so a number and its missing indicator stay
    together); the data given is never changed.

    Args:
        score_fn: the metric of the model on data shaped as ``frame_or_arrays``.
        columns: the features. A list of names: a frame's columns, an array's columns in order,
            or a mapping's keys (each whole array shuffled along its first axis). A mapping:
            feature name -> its place, or a list of places (:data:`Place`).
        frame_or_arrays: the rows: a ``pandas.DataFrame``, a 2-D array, or a mapping of arrays
            with the same number of rows.
        metric: the metric's name (for messages and its direction).
        repeats: shuffles per feature, ``>= 1``.
        seed: seeds the shuffles.
        higher_is_better: whether a larger metric is better; ``None``: larger is better unless
            the name ends in one of :data:`SMALLER_IS_BETTER` (and does not start with ``neg_``,
            scikit-learn's prefix for a negated error).

    Returns:
        feature -> mean drop over the repeats (reference minus shuffled, the other way round for
        a metric where smaller is better), so a feature the model relies on has a large positive
        drop; largest first, NaN (a metric the shuffled data cannot define) last.

    Raises:
        ValueError: ``repeats < 1``, an unknown column or key, arrays of different lengths, or a
            reference value that is not a finite number.

    Example:
        >>> x = np.array([[0.0, 5.0], [1.0, 3.0], [2.0, 9.0], [3.0, 1.0]])
        >>> def score(a):
        ...     return -float(np.abs(a[:, 0] - np.arange(4)).mean())
        >>> imp = permutation_importance(score, ["signal", "noise"], x, "neg_mae", repeats=5)
        >>> imp["signal"] > 0 and imp["noise"] == 0
        True
    """
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise ValueError(f"permutation importance needs repeats >= 1, got {repeats!r}")
    places = _places(columns, frame_or_arrays)
    rows = _row_count(frame_or_arrays)
    higher = _higher_is_better(metric) if higher_is_better is None else higher_is_better
    reference = float(score_fn(frame_or_arrays))
    if not math.isfinite(reference):
        raise ValueError(
            f"permutation importance: {metric} of the unshuffled data is {reference}; it needs a "
            "finite reference value (e.g. both classes present)"
        )
    rng = np.random.default_rng(seed)
    drops: dict[str, float] = {}
    for name, where in places.items():
        values = []
        for _ in range(repeats):
            shuffled = _shuffled(frame_or_arrays, where, rng.permutation(rows))
            score = float(score_fn(shuffled))
            values.append(reference - score if higher else score - reference)
        finite = [v for v in values if math.isfinite(v)]
        drops[name] = float(np.mean(finite)) if finite else math.nan
    return dict(sorted(drops.items(), key=lambda kv: -kv[1] if math.isfinite(kv[1]) else math.inf))


def _higher_is_better(metric: str) -> bool:
    name = metric.lower()
    return name.startswith("neg_") or not name.endswith(SMALLER_IS_BETTER)


def _row_count(data: pd.DataFrame | np.ndarray | Mapping[str, np.ndarray]) -> int:
    if isinstance(data, pd.DataFrame | np.ndarray):
        return len(data)
    lengths = {key: len(value) for key, value in data.items()}
    if not lengths:
        raise ValueError("permutation importance got an empty mapping of arrays")
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{k}: {v}" for k, v in lengths.items())
        raise ValueError(f"permutation importance: arrays have different numbers of rows ({shown})")
    return next(iter(lengths.values()))


def _places(
    columns: Sequence[str] | Mapping[str, Place | Sequence[Place]],
    data: pd.DataFrame | np.ndarray | Mapping[str, np.ndarray],
) -> dict[str, list[Place]]:
    """Feature name -> its places, each checked against ``data``."""
    if isinstance(columns, Mapping):
        named = {
            str(name): list(where) if isinstance(where, list) else [where]
            for name, where in columns.items()
        }
    elif isinstance(data, np.ndarray):
        named = {str(name): [i] for i, name in enumerate(columns)}
    else:
        named = {str(name): [name] for name in columns}
    for name, places in named.items():
        for place in places:
            _check_place(name, place, data)
    return named


def _check_place(name: str, place: Place, data: Any) -> None:
    if isinstance(data, pd.DataFrame):
        if place not in data.columns:
            raise ValueError(f"permutation importance: feature {name!r}: no column {place!r}")
    elif isinstance(data, np.ndarray):
        if data.ndim != 2 or not isinstance(place, int) or not 0 <= place < data.shape[1]:
            raise ValueError(
                f"permutation importance: feature {name!r}: column {place!r} is not in a "
                f"{data.shape} array"
            )
    else:
        key, column = place if isinstance(place, tuple) else (place, None)
        if key not in data:
            raise ValueError(f"permutation importance: feature {name!r}: no array {key!r}")
        array = data[key]
        if column is not None and (array.ndim != 2 or not 0 <= column < array.shape[1]):
            raise ValueError(
                f"permutation importance: feature {name!r}: column {column} is not in array "
                f"{key!r} of shape {array.shape}"
            )


def _shuffled(data: Any, places: list[Place], order: np.ndarray) -> Any:
    """A copy of ``data`` with ``places`` permuted by ``order`` (only touched arrays copied)."""
    if isinstance(data, pd.DataFrame):
        out = data.copy()
        for column in places:
            out[column] = data[column].to_numpy()[order]
        return out
    if isinstance(data, np.ndarray):
        out = data.copy()
        for column in places:
            out[:, column] = data[order, column]
        return out
    copied = dict(data)
    for place in places:
        key, column = place if isinstance(place, tuple) else (place, None)
        if copied[key] is data[key]:
            copied[key] = np.array(data[key], copy=True)
        if column is None:
            copied[key] = np.asarray(data[key])[order]
        else:
            copied[key][:, column] = np.asarray(data[key])[order, column]
    return copied


# -- pictures and small pieces -----------------------------------------------------------------


def write_bar_chart(
    scores: Mapping[str, float],
    path: str | Path,
    *,
    title: str = "",
    xlabel: str = "attribution",
    top: int = CHART_BARS,
) -> Path:
    """Write a horizontal bar chart of ``scores`` as a PNG (atomically; folders are created).

    The ``top`` largest scores in absolute value are drawn, the largest at the top; positive
    bars are red, negative blue, with a line at zero. Long names are cut to 40 characters.

    Args:
        scores: name -> value; NaN values are left out.
        path: the PNG to write.
        title: a line above the chart.
        xlabel: what the values are.
        top: how many bars at most, ``>= 1``.

    Returns:
        ``path``.

    Raises:
        ValueError: ``top < 1``.
        MissingDependencyError: matplotlib is not installed (the ``govern`` extra).

    Example:
        >>> write_bar_chart({"age": 0.3, "income": -0.1}, "out/row_3.png")  # doctest: +SKIP
        PosixPath('out/row_3.png')
    """
    if not isinstance(top, int) or isinstance(top, bool) or top < 1:
        raise ValueError(f"write_bar_chart needs top >= 1, got {top!r}")
    require("matplotlib", extra="govern", purpose="attribution charts")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = list(top_scores({k: v for k, v in scores.items() if math.isfinite(v)}, top).items())
    shown.reverse()  # barh draws the first bar at the bottom
    names = [_cut(str(k), 40) for k, _ in shown]
    values = [float(v) for _, v in shown]
    figure = Figure(figsize=(6.4, 1.0 + 0.32 * max(1, len(values))), dpi=100)
    FigureCanvasAgg(figure)  # the Agg canvas: renders without a display
    axes = figure.add_subplot(1, 1, 1)
    colours = [POSITIVE_COLOUR if v >= 0 else NEGATIVE_COLOUR for v in values]
    axes.barh(range(len(values)), values, color=colours)
    axes.set_yticks(range(len(values)), names, fontsize=8)
    axes.axvline(0.0, color="black", linewidth=0.8)
    axes.set_xlabel(xlabel)
    if not values:
        axes.text(0.5, 0.5, "no scores", ha="center", va="center", transform=axes.transAxes)
    if title:
        axes.set_title(_cut(title, 80), fontsize=9)
    figure.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


def top_scores(scores: Mapping[str, float], k: int = TOP_SCORES) -> dict[str, float]:
    """The ``k`` scores largest in absolute value, in that order (ties: the order given).

    Example:
        >>> top_scores({"a": 0.1, "b": -0.5, "c": 0.3}, 2)
        {'b': -0.5, 'c': 0.3}
    """
    ranked = sorted(scores.items(), key=lambda kv: -abs(float(kv[1])))
    return {str(name): float(value) for name, value in ranked[:k]}


def token_scores(tokens: Sequence[str], values: Sequence[float]) -> dict[str, float]:
    """Token -> attribution for one text; a token seen again is keyed ``token@position``
    (0-based), so no value is lost.

    Example:
        >>> token_scores(["profit", "rose", "profit"], [0.5, 0.2, 0.1])
        {'profit': 0.5, 'rose': 0.2, 'profit@2': 0.1}
    """
    out: dict[str, float] = {}
    for i, (token, value) in enumerate(zip(tokens, values, strict=True)):
        out[token if token not in out else f"{token}@{i}"] = float(value)
    return out


def grid_heat(heat: np.ndarray) -> dict[str, float]:
    """Share of a 2-D heat map's total in each cell of a 3 x 3 grid (``"top-left"`` ..
    ``"bottom-right"``), largest first; all zero for a map without heat.

    Example:
        >>> heat = np.zeros((6, 6)); heat[:2, :2] = 1.0
        >>> grid_heat(heat)["top-left"]
        1.0
    """
    heat = np.asarray(heat, dtype=np.float64)
    if heat.ndim != 2:
        raise ValueError(f"grid_heat needs a 2-D map, got shape {heat.shape}")
    total = float(heat.sum())
    rows = np.array_split(np.arange(heat.shape[0]), 3)
    cols = np.array_split(np.arange(heat.shape[1]), 3)
    cells = {
        name: float(heat[np.ix_(rows[r], cols[c])].sum()) / total if total > 0 else 0.0
        for (r, c), name in GRID_NAMES.items()
    }
    return dict(sorted(cells.items(), key=lambda kv: -kv[1]))


def explain_folder(out: str | Path | None, solution: str) -> Path:
    """The folder pictures go to: ``out`` (created), or a new temporary folder."""
    if out is None:
        return Path(tempfile.mkdtemp(prefix=f"abyssal-explain-{solution}-"))
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def safe_name(text: str) -> str:
    """``text`` as a file name: runs of anything but letters, digits, ``.``, ``_`` and ``-``
    become one ``_``.

    Example:
        >>> safe_name("user:42/a b")
        'user_42_a_b'
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "item"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plain(value: Any) -> Any:
    """Numpy scalars as Python numbers; other values as they are."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def explained_rows(rows: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` of ``rows`` (a held-out split, already in random order or sorted by
    index after a random split): the items to explain.

    Raises:
        ValueError: ``n`` is not a whole number ``>= 0``.

    Example:
        >>> explained_rows(np.array([4, 9, 12]), 2).tolist()
        [4, 9]
    """
    if not isinstance(n, int | np.integer) or isinstance(n, bool) or n < 0:
        raise ValueError(
            f"the number of predictions to explain must be a whole number >= 0, got {n!r}"
        )
    return np.asarray(rows)[: int(n)]


def eager_network(model: torch.nn.Module, cls: type, solution: str) -> Any:
    """The eager network of class ``cls`` inside ``model`` (an optimized variant keeps it as
    ``base``, a wrapper as ``module``): explanations need its layers.

    Raises:
        AbyssalError: ``model`` is not, and does not wrap, a ``cls`` (an ONNX or compiled
            variant): explain the version it was made from.
    """
    from abyssal.core.errors import AbyssalError

    net = getattr(model, "base", model)
    net = getattr(net, "module", net)
    if not isinstance(net, cls):
        raise AbyssalError(
            f"{solution} explanations need the eager network ({cls.__name__}), got "
            f"{type(net).__name__}; explain the version an optimized one was made from"
        )
    return net
