"""Predicting nodules: per-nodule volumes, or the candidates of a whole CT scan.

Every prediction gives the malignancy probability, a call at the model's Youden threshold
(chosen on its validation split), the predicted attributes and a one-line summary of them
("spiculated, lobulated, 18 mm"). A volume or candidate that cannot be used (unreadable file,
wrong shape, non-finite voxels, a point outside the scan) is reported by name and the others are
processed. The table is written atomically once all are done; with ``explain``, one saliency PNG
(Grad-CAM, slices through the cube) per nodule.

Example:
    >>> report = predict_scan(p, "scan.nii.gz", "cands.csv", out="out.csv")  # doctest: +SKIP
    >>> print(report.render())  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from abyssal.core.atomic import write_bytes_atomic
from abyssal.core.display import table
from abyssal.core.errors import DataError
from abyssal.data.tables import is_table
from abyssal.solutions.nodule.data import cube_at
from abyssal.solutions.nodule.evaluation import auroc, sigmoid
from abyssal.solutions.nodule.volumes import (
    SUFFIXES,
    Volume,
    dicom_series,
    read_candidates,
    read_dicom_series,
    read_volume,
    volume_stem,
)

MAX_SHOWN_BAD = 10


@dataclass
class NoduleItem:
    """One parsed request: its name, its cube (S, S, S) in [0, 1], and what identifies it."""

    name: str
    cube: np.ndarray
    keys: dict[str, Any] = field(default_factory=dict)
    label: int = -1


def describe_findings(names: Sequence[str], values: Sequence[float]) -> str:
    """The predicted attributes in a radiologist's words, e.g. ``"spiculated, lobulated,
    18 mm"``; ratings use the LIDC scales (spiculation 1 none .. 5 marked; margin 1 poorly
    defined .. 5 sharp; texture 1 non-solid .. 5 solid; calcification 6 absent).

    Example:
        >>> describe_findings(["spiculation", "lobulation", "diameter_mm"], [4.2, 3.1, 17.6])
        'spiculated, lobulated, 18 mm'
    """
    v = dict(zip(names, values, strict=True))
    words = []
    if v.get("spiculation", 0) >= 3:
        words.append("spiculated")
    if v.get("lobulation", 0) >= 3:
        words.append("lobulated")
    if "margin" in v and v["margin"] <= 2.5:
        words.append("ill-defined margin")
    if "texture" in v:
        texture = v["texture"]
        words.append(
            "ground-glass" if texture < 2.5 else "part-solid" if texture < 3.5 else "solid"
        )
    if "calcification" in v and v["calcification"] < 5.5:
        words.append("calcified")
    if "sphericity" in v and v["sphericity"] < 2.5:
        words.append("elongated")
    if "diameter_mm" in v:
        words.append(f"{v['diameter_mm']:.0f} mm")
    return ", ".join(words)


class NodulePredictor:
    """Scores nodule cubes with a loaded nodule model.

    Args:
        model: the loaded model, in eval mode.
        spec: its model spec (``cube``, ``voxel_mm``, ``intensity``, ``hu_window``,
            ``attributes``).
        ref: the version's ref, for messages.
        threshold: the probability at or above which a nodule is called malignant.
        batch_size: cubes per forward pass.
    """

    file_fields: tuple[str, ...] = ("path",)
    """Request fields naming a file (a service takes them as uploads)."""

    def __init__(
        self,
        model: torch.nn.Module,
        spec: Mapping[str, Any],
        ref: str,
        threshold: float = 0.5,
        batch_size: int = 16,
    ) -> None:
        self.model, self.spec, self.ref = model, spec, ref
        self.threshold, self.batch_size = threshold, batch_size
        self.attributes: list[str] = list(spec.get("attributes", []))
        self.device = next(model.parameters()).device

    @classmethod
    def from_loaded(cls, loaded: Any) -> NodulePredictor:
        threshold = loaded.version.metrics.get("threshold_youden", 0.5)
        return cls(loaded.model, loaded.spec, loaded.version.ref, float(threshold))

    def cube(self, volume: Volume, center_xyz_mm: Sequence[float] | None, name: str) -> np.ndarray:
        """The model's cube of ``volume`` around a world point (``None``: its centre)."""
        s = self.spec
        return cube_at(
            volume,
            center_xyz_mm,
            cube=s["cube"],
            voxel_mm=s["voxel_mm"],
            intensity=s["intensity"],
            hu_window=s["hu_window"],
            name=name,
        )

    def parse(self, payload: Mapping[str, Any]) -> NoduleItem:
        """``{"path": VOLUME}`` (a per-nodule volume, optional ``spacing`` [z, y, x] mm), or
        ``{"path": SCAN, "coord": [x, y, z]}`` (world mm) for a point in a whole scan."""
        if not payload.get("path"):
            raise DataError("expected a 'path' field (a volume file)", column="path")
        path = str(payload["path"])
        spacing = payload.get("spacing")
        if spacing is not None:
            spacing = _numbers(spacing, "spacing", "[z, y, x] mm (or one number)", positive=True)
        volume = read_volume(path, spacing=spacing)
        coord = payload.get("coord")
        if coord is not None:
            coord = _numbers(coord, "coord", "[x, y, z] in world mm", count=3)
            return NoduleItem(path, self.cube(volume, coord, path), {"coord": coord})
        return NoduleItem(path, self.cube(volume, None, path))

    def outputs(self, items: Sequence[NoduleItem]) -> np.ndarray:
        """(B, 1 + A) raw outputs (logit, attributes) on the CPU."""
        x = torch.from_numpy(np.stack([i.cube for i in items])).unsqueeze(1).to(self.device)
        with torch.no_grad():
            return self.model(x.float()).float().cpu().numpy()

    def predict(self, items: Sequence[NoduleItem]) -> list[dict[str, Any]]:
        """One response per item: probability, call, attributes and findings."""
        out = []
        for item, row in zip(items, self.outputs(items), strict=True):
            p = float(sigmoid(row[0]))
            attrs = {n: round(float(v), 3) for n, v in zip(self.attributes, row[1:], strict=True)}
            out.append(
                {
                    "name": item.name,
                    **item.keys,
                    "malignancy_probability": round(p, 6),
                    "call": "malignant" if p >= self.threshold else "benign",
                    "attributes": attrs,
                    "findings": describe_findings(self.attributes, list(row[1:])),
                }
            )
        return out

    def saliency(self, items: Sequence[NoduleItem]) -> np.ndarray:
        """(B, S, S, S) Grad-CAM maps of the malignancy logit, each in [0, 1] (of the eager
        network an optimized variant (ONNX, INT8) was made from)."""
        from abyssal.nn.gradcam import GradCAM

        net = getattr(self.model, "base", self.model)  # an optimized variant's eager model
        net = getattr(net, "module", net)
        x = torch.from_numpy(np.stack([i.cube for i in items])).unsqueeze(1).to(self.device)
        with net.single_view():
            cam, _ = GradCAM(net, net.cam_layer())(x.float(), [0] * len(items))
        return cam.cpu().numpy()


def _numbers(
    value: Any, field_name: str, expected: str, *, count: int | None = None, positive: bool = False
) -> list[float]:
    """A request's list of finite numbers (one number stands for three unless ``count``)."""
    values = value if isinstance(value, (list, tuple)) else [value]
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        numbers = []
    lengths = (count,) if count else (1, 3)
    ok = len(numbers) in lengths and all(np.isfinite(numbers))
    if not ok or (positive and min(numbers) <= 0):
        raise DataError(f"expected {expected}, got {value!r}", column=field_name)
    return numbers * 3 if len(numbers) == 1 else numbers


@dataclass
class NodulePredictionReport:
    """What predicting many nodules gave.

    Attributes:
        ref: the model version.
        rows: nodules scored.
        output: the CSV written, if asked for.
        shown: the first predictions, as table rows.
        headers: the table's columns.
        bad: nodules or candidates that could not be used, with why.
        malignant: how many were called malignant.
        auroc: against labels given with the inputs, when there are both classes.
        saliency: the folder of saliency PNGs, if written.
    """

    ref: str
    rows: int
    output: Path | None
    shown: list[list[Any]]
    headers: list[str]
    bad: list[tuple[str, str]]
    malignant: int = 0
    auroc: float | None = None
    saliency: Path | None = None

    def render(self, top: int = 10) -> str:
        lines = [f"{self.ref}: predicted {self.rows} nodules, {self.malignant} called malignant"]
        if self.auroc is not None:
            lines.append(f"AUROC against the given labels: {self.auroc:.4f}")
        rows = self.shown[: max(top, 0)]
        if rows:
            lines.append(table(self.headers, rows))
        if self.bad:
            lines.append(f"{len(self.bad)} could not be used and were skipped:")
            lines += [f"  {name}: {why}" for name, why in self.bad[:MAX_SHOWN_BAD]]
            if len(self.bad) > MAX_SHOWN_BAD:
                lines.append(f"  ... and {len(self.bad) - MAX_SHOWN_BAD} more")
        if self.output is not None:
            lines.append(f"predictions written to {self.output}")
        if self.saliency is not None:
            lines.append(f"saliency images written to {self.saliency}")
        return "\n".join(lines)


Loader = Callable[[], NoduleItem]


def _volume_jobs(path: Path, predictor: NodulePredictor) -> list[tuple[str, Loader]]:
    """One (name, loader) per per-nodule volume ``path`` names."""
    from abyssal.solutions.nodule.records import read_records

    def job(file: Path, name: str, spacing: Any = None, label: int = -1) -> Loader:
        def load() -> NoduleItem:
            volume = read_volume(file, spacing=spacing)
            return NoduleItem(name, predictor.cube(volume, None, name), {"nodule_id": name}, label)

        return load

    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and _is_volume(p))
        if not files:
            raise DataError(f"no volumes ({', '.join(SUFFIXES)}) in the folder", path=path)
        return [(volume_stem(f), job(f, volume_stem(f))) for f in files]
    if not _is_volume(path) and is_table(path):
        records = read_records(path, labels_required=False).records
        return [(r.nodule_id, job(r.path, r.nodule_id, r.spacing, r.label)) for r in records]
    if not path.exists():
        raise DataError("no such volume, folder or table", path=path)
    return [(volume_stem(path), job(path, volume_stem(path)))]


def _is_volume(path: Path) -> bool:
    return path.name.lower().endswith(SUFFIXES)


def predict_volumes(
    predictor: NodulePredictor,
    path: str | Path,
    *,
    out: str | Path | None = None,
    explain: str | Path | None = None,
) -> NodulePredictionReport:
    """Score every per-nodule volume of a folder, one file, or a table (``nodule_id`` or
    ``path`` per row, optional label or malignancy for an AUROC)."""
    jobs = _volume_jobs(Path(path), predictor)
    return _run(predictor, jobs, ["nodule_id"], out=out, explain=explain)


def read_scan(path: str | Path, series: Sequence[str] = ()) -> tuple[Volume, str]:
    """A whole scan and its series name: a volume file (named by its file name without suffix),
    or a folder of DICOM slices (the first of ``series`` the folder holds, else its only series;
    named by its series uid)."""
    path = Path(path)
    if not path.is_dir():
        return read_volume(path), volume_stem(path)
    held = dicom_series(path)
    chosen = next((uid for uid in series if uid in held), None)
    if chosen is None and len(held) == 1:
        chosen = held[0]
    return read_dicom_series(path, series_uid=chosen), chosen or path.name


def predict_scan(
    predictor: NodulePredictor,
    scan: str | Path,
    candidates: str | Path,
    *,
    out: str | Path | None = None,
    explain: str | Path | None = None,
) -> NodulePredictionReport:
    """Score the candidates of one scan: a cube at the model's voxel size around each
    ``coordX, coordY, coordZ`` (world mm, LPS). Rows of other series are ignored (the scan's
    series: its file name without suffix, or a DICOM folder's series uid); a list with one series
    is used whole."""
    rows = read_candidates(candidates)
    uids = sorted({c.series_uid for c in rows})
    volume, series = read_scan(scan, uids)
    mine = [c for c in rows if c.series_uid == series] if len(uids) > 1 else rows
    if not mine:
        shown = ", ".join(uids[:5]) + (" ..." if len(uids) > 5 else "")
        raise DataError(
            f"no candidate of series {series!r} (the scan's name); the list holds {shown}",
            path=candidates,
        )

    def job(c: Any) -> Loader:
        name = f"{c.series_uid} row {c.row}"
        keys = {
            "seriesuid": c.series_uid,
            "coordX": c.xyz_mm[0],
            "coordY": c.xyz_mm[1],
            "coordZ": c.xyz_mm[2],
        }
        return lambda: NoduleItem(name, predictor.cube(volume, c.xyz_mm, name), keys)

    jobs = [(f"{c.series_uid} row {c.row}", job(c)) for c in mine]
    return _run(
        predictor, jobs, ["seriesuid", "coordX", "coordY", "coordZ"], out=out, explain=explain
    )


def _run(
    predictor: NodulePredictor,
    jobs: list[tuple[str, Loader]],
    keys: list[str],
    *,
    out: str | Path | None,
    explain: str | Path | None,
) -> NodulePredictionReport:
    from tqdm.auto import tqdm

    headers = [*keys, "malignancy_probability", "call", *predictor.attributes, "findings"]
    results, bad, labels = [], [], []
    folder = None if explain is None else Path(explain)
    pending: list[NoduleItem] = []

    def flush() -> None:
        if not pending:
            return
        answers = predictor.predict(pending)
        if folder is not None:
            _write_saliency(predictor, pending, answers, folder)
        for item, answer in zip(pending, answers, strict=True):
            results.append(answer)
            labels.append(item.label)
        pending.clear()

    for name, load in tqdm(
        jobs, desc="nodules", unit="nodule", leave=False, disable=len(jobs) < 20
    ):
        try:
            pending.append(load())
        except DataError as e:
            bad.append((name, e.reason if e.path is None else str(e)))
            continue
        if len(pending) >= predictor.batch_size:
            flush()
    flush()
    rows = [
        [
            *(a.get(k) for k in keys),
            a["malignancy_probability"],
            a["call"],
            *(a["attributes"][n] for n in predictor.attributes),
            a["findings"],
        ]
        for a in results
    ]
    if out is not None:
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(headers)
        writer.writerows(rows)
        write_bytes_atomic(out, text.getvalue().encode())
    y = np.array(labels)
    scores = np.array([a["malignancy_probability"] for a in results])
    score = auroc(y, scores) if len(set(y[y >= 0].tolist())) == 2 else None
    return NodulePredictionReport(
        ref=predictor.ref,
        rows=len(results),
        output=None if out is None else Path(out),
        shown=rows,
        headers=headers,
        bad=bad,
        malignant=sum(a["call"] == "malignant" for a in results),
        auroc=score,
        saliency=folder,
    )


def _write_saliency(
    predictor: NodulePredictor,
    items: Sequence[NoduleItem],
    answers: Sequence[Mapping[str, Any]],
    folder: Path,
) -> None:
    from abyssal.solutions.nodule.explain import render_saliency

    folder.mkdir(parents=True, exist_ok=True)
    cams = predictor.saliency(items)
    for item, answer, cam in zip(items, answers, cams, strict=True):
        title = f"{item.name}: p(malignant) {answer['malignancy_probability']:.2f}"
        if answer["findings"]:
            title += f"; {answer['findings']}"
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", item.name)
        render_saliency(item.cube, cam, folder / f"{safe}.png", title=title)
