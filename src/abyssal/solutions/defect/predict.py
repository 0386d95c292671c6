"""Predicting images with a defect model: one image, a folder of thousands, or a CSV of paths.

Images are decoded, scored and written in batches, so memory stays bounded whatever the folder's
size: predictions go to a temporary CSV as they are made (moved into place at the end), a progress
bar shows the count, and an unreadable image is reported and skipped while the rest are scored.
Grad-CAM heat maps, when asked for, are written as PNGs beside each other in one folder.

Example:
    >>> report = predict_images(p, "line_3/", out="scores.csv", explain="heat/")  # doctest: +SKIP
    >>> print(report.render(top=5))  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import csv
import io
import os
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from abyssal.core.display import table
from abyssal.core.errors import AbyssalError, DataError
from abyssal.data.images import IMAGE_EXTENSIONS, load_image
from abyssal.data.splits import sample_rows
from abyssal.nn.features import cached_features, head_answers, host_copy
from abyssal.solutions.defect.images import list_unlabelled

FIELDS = ("path", "class", "probability")
MAX_SHOWN_BAD = 10


@dataclass
class ImageItem:
    """One parsed request: where the image came from, its pixels, its known label if any."""

    name: str
    pixels: np.ndarray  # (C, S, S) uint8
    label: str | None = None


class DefectPredictor:
    """Scores images with a loaded defect model (any variant: eager, compiled, ONNX, INT8).

    Args:
        model: the loaded model, in eval mode.
        spec: its model spec (``classes``, ``channels``, ``image_size``).
        ref: the version's ref, for messages.
        batch_size: images per forward pass.
    """

    file_fields: tuple[str, ...] = ("path",)
    """Request fields naming a file (a service takes them as uploads)."""

    def __init__(
        self, model: torch.nn.Module, spec: Mapping[str, Any], ref: str, batch_size: int = 32
    ) -> None:
        self.model, self.spec, self.ref, self.batch_size = model, spec, ref, batch_size
        self.classes: list[str] = list(spec["classes"])
        self.device = next(model.parameters()).device
        self.cache: Any = None

    @classmethod
    def from_loaded(cls, loaded: Any) -> DefectPredictor:
        return cls(loaded.model, loaded.spec, loaded.version.ref)

    def load(self, source: str | Path | bytes, name: str) -> np.ndarray:
        """The image at ``source`` (a path or encoded bytes), at the model's size and channels."""
        size, channels = self.spec["image_size"], self.spec["channels"]
        if isinstance(source, bytes):
            return load_image(io.BytesIO(source), size=size, channels=channels, name=name)
        return load_image(source, size=size, channels=channels)

    def parse(self, payload: Mapping[str, Any]) -> ImageItem:
        """``{"path": FILE}`` or ``{"image_base64": DATA}``, with an optional known ``label``."""
        label = payload.get("label")
        if label is not None and str(label) not in self.classes:
            raise DataError(
                f"class {label!r} was never trained; {self.ref} knows {self.classes}",
                column="label",
            )
        if payload.get("image_base64"):
            try:
                raw = base64.b64decode(str(payload["image_base64"]), validate=True)
            except ValueError:
                raise DataError("not valid base64", column="image_base64") from None
            name = str(payload.get("name") or "image")
            return ImageItem(name, self.load(raw, name), None if label is None else str(label))
        if not payload.get("path"):
            raise DataError("expected a 'path' or an 'image_base64' field", column="path")
        path = str(payload["path"])
        return ImageItem(path, self.load(path, path), None if label is None else str(label))

    def use_cache(self, cache: Any) -> bool:
        """Keep each image's backbone features in ``cache`` (by version and pixel digest), so an
        image seen before costs only the head; whether this model can (an eager network with
        ``embed`` and ``head``; optimized variants run as one graph)."""
        able = all(hasattr(self.model, name) for name in ("embed", "head"))
        self.cache = cache if able else None
        return able

    def probabilities(self, items: Sequence[ImageItem]) -> torch.Tensor:
        """(B, K) class probabilities on the CPU."""
        pixels = [i.pixels for i in items]
        with torch.no_grad():
            if self.cache is not None:

                def compute(rows: np.ndarray) -> np.ndarray:
                    x = torch.from_numpy(np.stack([pixels[r] for r in rows])).to(self.device)
                    return self.model.embed(x.float().div_(255.0)).float().cpu().numpy()

                features = cached_features(self.cache, self.ref, pixels, compute)
                logits = self.model.head(torch.from_numpy(features).to(self.device))
            else:
                x = torch.from_numpy(np.stack(pixels)).to(self.device)
                logits = self.model(x.float().div_(255.0))
        return torch.softmax(logits.float(), dim=1).cpu()

    @torch.no_grad()
    def embed_source(self, path: str | Path, limit: int = 256, seed: int = 0) -> np.ndarray:
        """(n, features) backbone features of at most ``limit`` images of ``path`` (an image,
        a folder, or a CSV of ``path[,label]``; a seeded sample, in order): what a pipeline
        compares for embedding drift.

        Raises:
            DataError: no such file, or an image that cannot be read (named).
            AbyssalError: a model without a separate backbone (``embed``), e.g. an ONNX variant.
        """
        if not hasattr(self.model, "embed"):
            raise AbyssalError(f"{self.ref} has no separate backbone to embed with")
        requests = [request for request, _ in _requests(Path(path))]
        chosen = [requests[i] for i in sample_rows(len(requests), limit, seed)]
        out = []
        for start in range(0, len(chosen), self.batch_size):
            pixels = [self.parse(r).pixels for r in chosen[start : start + self.batch_size]]
            x = torch.from_numpy(np.stack(pixels)).to(self.device).float().div_(255.0)
            out.append(self.model.embed(x).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)

    def predict(self, items: Sequence[ImageItem]) -> list[dict[str, Any]]:
        """One response per item: the class, its probability and every class's probability."""
        return self.respond(items, self.probabilities(items))

    @cached_property
    def host_head(self) -> torch.nn.Module:
        """The classification head on the CPU, for answers from cached features."""
        return host_copy(self.model.head)

    def predict_cached(self, items: Sequence[ImageItem]) -> list[dict[str, Any] | None]:
        """The answers of the images whose features are cached (the head only), ``None`` for
        the others: a service answers those at once, without a batch (the head's CPU copy: no
        GPU queue)."""

        def respond(rows: list[int], probs: torch.Tensor) -> list[dict[str, Any]]:
            return self.respond([items[r] for r in rows], probs)

        return head_answers(
            self.cache, self.ref, [i.pixels for i in items], self.host_head, respond
        )

    def respond(self, items: Sequence[ImageItem], probs: torch.Tensor) -> list[dict[str, Any]]:
        """One response per item and row of class probabilities."""
        out = []
        for item, p in zip(items, probs, strict=True):
            best = int(p.argmax())
            each = {c: round(float(v), 6) for c, v in zip(self.classes, p, strict=True)}
            out.append(
                {
                    "path": item.name,
                    "class": self.classes[best],
                    "probability": each[self.classes[best]],
                    "probabilities": each,
                }
            )
        return out


@dataclass
class DefectPredictionReport:
    """What predicting many images gave.

    Attributes:
        ref: the model version.
        rows: images scored.
        output: the CSV written (``path, class, probability, p_<class>...``), if asked for.
        counts: images per predicted class.
        bad: images that could not be read, with why.
        shown: the first predictions (or all, when nothing was written to a file).
        accuracy: share predicted as their known label, when labels were given.
        heatmaps: the folder of heat maps, if written.
    """

    ref: str
    rows: int
    output: Path | None
    counts: Counter[str]
    bad: list[tuple[str, str]]
    shown: list[list[Any]] = field(default_factory=list)
    accuracy: float | None = None
    heatmaps: Path | None = None

    def render(self, top: int = 10) -> str:
        lines = [f"{self.ref}: predicted {self.rows} images"]
        if self.rows:
            lines.append("by class: " + ", ".join(f"{c} {n}" for c, n in self.counts.most_common()))
        if self.accuracy is not None:
            lines.append(f"accuracy against the given labels: {self.accuracy:.4f}")
        rows = self.shown if self.output is None else self.shown[: max(top, 0)]
        if rows:
            lines.append(table(list(FIELDS), rows))
        if self.bad:
            lines.append(f"{len(self.bad)} images could not be read and were skipped:")
            lines += [f"  {p}: {why}" for p, why in self.bad[:MAX_SHOWN_BAD]]
            if len(self.bad) > MAX_SHOWN_BAD:
                lines.append(f"  ... and {len(self.bad) - MAX_SHOWN_BAD} more")
        if self.output is not None:
            lines.append(f"predictions written to {self.output}")
        if self.heatmaps is not None:
            lines.append(f"heat maps written to {self.heatmaps}")
        return "\n".join(lines)


def _requests(path: Path) -> Iterator[tuple[dict[str, Any], int | None]]:
    """Requests (and CSV row numbers) for an image, a folder or a CSV of ``path[,label]``."""
    if path.is_dir():
        for record in list_unlabelled(path).records:
            yield {"path": str(record.path)}, None
        return
    if path.suffix.lower() != ".csv":
        if path.suffix.lower().lstrip(".") not in IMAGE_EXTENSIONS and not path.exists():
            raise DataError("no such image, folder or CSV", path=path)
        yield {"path": str(path)}, None
        return
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if "path" not in (reader.fieldnames or []):
            raise DataError("expected a 'path' column (and optionally 'label')", path=path)
        for number, row in enumerate(reader, 1):
            file = Path(row["path"] or "")
            request = {"path": str(file if file.is_absolute() else path.parent / file)}
            if row.get("label"):
                request["label"] = row["label"]
            yield request, number


def predict_images(
    predictor: DefectPredictor,
    path: str | Path,
    *,
    out: str | Path | None = None,
    explain: str | Path | None = None,
    progress: bool = True,
) -> DefectPredictionReport:
    """Score every image ``path`` names, in batches; write a CSV to ``out`` (atomically) and
    Grad-CAM heat maps into ``explain`` if given.

    Raises:
        DataError: a CSV row with a class the model never learnt, or a bad CSV (nothing is
            written). Unreadable images are skipped and listed in the report instead.
    """
    from tqdm.auto import tqdm

    path = Path(path)
    state = _Stream(predictor, out, explain, keep_all=out is None)
    bar = tqdm(desc="predicting", unit="img", disable=not progress, leave=False)
    try:
        batch: list[ImageItem] = []
        for request, number in _requests(path):
            item = _parse(predictor, request, path, number, state.bad)
            if item is None:
                continue
            batch.append(item)
            if len(batch) == predictor.batch_size:
                state.score(batch)
                bar.update(len(batch))
                batch = []
        if batch:
            state.score(batch)
            bar.update(len(batch))
        return state.finish(path)
    except BaseException:
        state.discard()
        raise
    finally:
        bar.close()


def _parse(
    predictor: DefectPredictor,
    request: dict[str, Any],
    source: Path,
    number: int | None,
    bad: list[tuple[str, str]],
) -> ImageItem | None:
    """The parsed request; an unreadable image is noted in ``bad`` and skipped, but a label the
    model never learnt stops everything (it is the caller's mistake, not the image's)."""
    try:
        return predictor.parse(request)
    except DataError as exc:
        if exc.column == "label":
            raise DataError(exc.reason, path=source, row=number, column="label") from None
        bad.append((request.get("path", "?"), exc.reason))
        return None


class _Stream:
    """Scored batches on their way to a temporary CSV, counts, and heat maps."""

    def __init__(
        self,
        predictor: DefectPredictor,
        out: str | Path | None,
        explain: str | Path | None,
        keep_all: bool,
    ) -> None:
        self.predictor, self.keep_all = predictor, keep_all
        self.out = None if out is None else Path(out)
        self.explain = None if explain is None else Path(explain)
        self.counts: Counter[str] = Counter()
        self.bad: list[tuple[str, str]] = []
        self.shown: list[list[Any]] = []
        self.rows = self.hits = self.labelled = 0
        self.temp: Path | None = None
        self.writer: Any = None
        self.file: Any = None
        if self.out is not None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{self.out.name}.", dir=self.out.parent)
            self.temp = Path(name)
            self.file = os.fdopen(fd, "w", newline="")
            self.writer = csv.writer(self.file)
            self.writer.writerow([*FIELDS, *(f"p_{c}" for c in predictor.classes)])

    def score(self, items: list[ImageItem]) -> None:
        responses = self.predictor.predict(items)
        for item, r in zip(items, responses, strict=True):
            self.rows += 1
            self.counts[r["class"]] += 1
            if item.label is not None:
                self.labelled += 1
                self.hits += int(item.label == r["class"])
            line = [r["path"], r["class"], r["probability"]]
            if self.writer is not None:
                self.writer.writerow([*line, *r["probabilities"].values()])
            if self.keep_all or len(self.shown) < 1000:
                self.shown.append(line)
        if self.explain is not None:
            write_heatmaps(self.predictor, items, self.explain)

    def finish(self, source: Path) -> DefectPredictionReport:
        if self.rows == 0 and not self.bad:
            self.discard()
            raise DataError("no images to predict", path=source)
        written = None
        if self.file is not None and self.temp is not None and self.out is not None:
            self.file.close()
            os.replace(self.temp, self.out)
            written = self.out
        accuracy = self.hits / self.labelled if self.labelled else None
        return DefectPredictionReport(
            self.predictor.ref,
            self.rows,
            written,
            self.counts,
            self.bad,
            self.shown,
            accuracy,
            self.explain,
        )

    def discard(self) -> None:
        if self.file is not None and not self.file.closed:
            self.file.close()
        if self.temp is not None and self.temp.exists():
            self.temp.unlink()


def write_heatmaps(predictor: DefectPredictor, items: Sequence[ImageItem], folder: Path) -> None:
    """Grad-CAM of each item's predicted class, as ``<folder>/<image name>.png``."""
    from abyssal.solutions.defect.evaluation import gradcam_maps
    from abyssal.solutions.defect.explain import render_explanation

    net = getattr(predictor.model, "base", predictor.model)  # an optimized variant's eager model
    x = torch.from_numpy(np.stack([i.pixels for i in items])).to(predictor.device).float() / 255
    maps, classes = gradcam_maps(net, x, x.shape[-1])
    for item, heat, c in zip(items, maps.cpu().numpy(), classes.tolist(), strict=True):
        name = Path(item.name).with_suffix("").as_posix().strip("/").replace("/", "__")
        title = f"{Path(item.name).name}: {predictor.classes[c]}"
        render_explanation(item.pixels, heat, folder / f"{name}.png", title=title)
