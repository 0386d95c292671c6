"""Predicting with a retrieval model.

- :func:`predict_retrieval_manifest` (``abyssal predict multimodal --input F``): the manifest's
  texts are queries against its images (rows naming one image file share it) and its images
  against its texts; per query the top ``model.rerank_k`` matches, re-ranked, with their scores.
  The manifest is read with the model's data settings (``data.text_column``, ``image_column``,
  ``image_root``, ``format``; change them with ``key=value`` overrides). A row with a problem (a
  missing or unreadable image, no text and no image) is named in the report and left out; the
  other rows are ranked. A row with both a text and an image is a known pair: the report gives
  recall@1/5/10 against those pairs.
- :class:`PairPredictor` (one request, e.g. from a service): ``{"text", "image"}`` -> the pair's
  cosine similarity, the re-ranker's logit and the combined score.

Output columns: ``direction`` (``text->image`` / ``image->text``), ``query_id`` (the text's row
id, or the image file), ``query`` (the text, or the image file), ``rank`` (1 = best), ``match_id``,
``match``, ``score`` (the combined score that ordered the list), ``cosine`` (the dual encoder's
similarity), ``paired`` (the match is the query's own pair in the manifest).

Example:
    >>> report = predict_retrieval_manifest(loaded, "pairs.csv", out="ranked.csv")  # doctest: +SKIP
    >>> print(report.render(top=3))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from abyssal.contracts.prediction import TablePredictionReport
from abyssal.core.errors import DataError
from abyssal.data.tables import write_table
from abyssal.nn.retrieval import first_hit, positives, recall_at
from abyssal.solutions.multimodal.data import read_data_manifest
from abyssal.solutions.multimodal.inputs import DecodedInputs, decode_samples
from abyssal.solutions.multimodal.predict import MultimodalItem, MultimodalPredictor, merge_inputs
from abyssal.solutions.multimodal.retrieval_data import image_groups
from abyssal.solutions.multimodal.retrieval_eval import (
    KS,
    encode_rows,
    first_rows,
    inputs_of,
    rank_both,
)
from abyssal.solutions.multimodal.task import batch_inputs

log = logging.getLogger(__name__)

BAD_LISTED = 5
"""Bad rows spelled out in the report (all are in the log)."""


class PairPredictor(MultimodalPredictor):
    """Scores one (text, image) pair per request with a retrieval model."""

    mix: float = 0.5
    """Weight of the re-ranker's logit in ``score`` (the model's ``model.rerank_mix``)."""

    def parse(
        self, payload: Mapping[str, Any], *, row: int = 0, source: Path | None = None
    ) -> MultimodalItem:
        """``{"id"?, "text", "image"}``; DataError naming the field when one is missing or the
        image cannot be read."""
        if isinstance(payload, Mapping):
            for field in ("text", "image"):
                if payload.get(field) in (None, ""):
                    raise DataError(
                        f"a retrieval model scores a pair: the request needs a {field!r}",
                        path=source,
                        row=row or None,
                    )
        return super().parse(payload, row=row, source=source)

    @torch.no_grad()
    def predict(self, items: Sequence[MultimodalItem]) -> list[dict[str, Any]]:
        if not items:
            return []
        merged = merge_inputs([i.inputs for i in items])
        batch = {
            k: v.to(self.device) for k, v in batch_inputs(merged, np.arange(len(items))).items()
        }
        net = getattr(self.model, "base", self.model)
        text, image = net.encode_text(batch), net.encode_image(batch)
        cosine = (text.embedding * image.embedding).sum(1)
        rerank = net.score_pairs(text, image)
        mix = float(self.mix)
        score = (1 - mix) * float(net.scale().detach()) * cosine + mix * rerank
        return [
            {
                "id": item.name,
                "cosine": round(float(cosine[b]), 6),
                "rerank_score": round(float(rerank[b]), 6),
                "score": round(float(score[b]), 6),
            }
            for b, item in enumerate(items)
        ]

    @classmethod
    def from_loaded(cls, loaded: Any) -> PairPredictor:
        predictor = super().from_loaded(loaded)
        assert isinstance(predictor, PairPredictor)
        predictor.mix = loaded.cfg.model.rerank_mix
        return predictor


def predict_retrieval_manifest(
    loaded: Any, path: str | Path, *, out: str | Path | None = None
) -> TablePredictionReport:
    """Rank the manifest's images for each text and its texts for each image (module docstring).

    Raises:
        DataError: the manifest cannot be read, or no text or no image is left to rank.
    """
    predictor = PairPredictor.from_loaded(loaded)
    cfg = loaded.cfg
    manifest = read_data_manifest(replace(cfg.data, skip_bad=True), str(path), labels=False)
    bad = [(row, why) for row, why in manifest.bad]
    samples = [replace(s, audio=None) for s in manifest.samples]
    inputs = decode_samples(
        samples, [], predictor.options, tokenizer=predictor.tokenizer, skip_bad=True
    )
    bad += inputs.bad
    kept = {s.id: s for s in samples}
    texts = np.flatnonzero(inputs.present[:, 0])
    with_image = np.flatnonzero(inputs.present[:, 1])
    if not len(texts) or not len(with_image):
        raise DataError(
            f"nothing to rank: {len(texts)} rows with a text and {len(with_image)} with an "
            f"image are usable ({len(bad)} bad rows)",
            path=manifest.path,
        )
    groups = np.full(len(inputs), -1, dtype=np.int64)
    groups[with_image], files = image_groups([kept[inputs.ids[k]].image for k in with_image])
    root = Path(cfg.data.image_root) if cfg.data.image_root else manifest.path.parent
    files = [_relative(Path(f), root) for f in files]
    images = first_rows(groups, with_image)
    shown = {
        "text": lambda row: (inputs.ids[row], kept[inputs.ids[row]].text),
        "image": lambda row: (files[groups[row]], files[groups[row]]),
    }
    frame, summary = _rank(loaded, inputs, texts, images, shown, groups)
    summary = [_counts(len(texts), len(images), cfg.model), *summary, *_bad_lines(bad, manifest)]
    written = None
    if out is not None:
        written = Path(out)
        write_table(frame, written)
    return TablePredictionReport(predictor.ref, frame, written, tuple(summary))


def _rank(
    loaded: Any,
    inputs: DecodedInputs,
    texts: np.ndarray,
    images: np.ndarray,
    shown: dict[str, Any],
    groups: np.ndarray,
) -> tuple[pd.DataFrame, list[str]]:
    """The long table of matches and the recall lines (known pairs). ``shown[kind](row)`` is
    ``(id, what)`` of a text or image row."""
    m, net = loaded.cfg.model, getattr(loaded.model, "base", loaded.model)
    size = loaded.cfg.data.eval_batch_size
    net.eval()
    text_side = encode_rows(net, inputs_of(inputs), texts, "text", size)
    image_side = encode_rows(net, inputs_of(inputs), images, "image", size)
    ranked = rank_both(net, text_side, image_side, k=m.rerank_k, mix=m.rerank_mix, batch_size=size)
    text_groups, image_groups_ = torch.from_numpy(groups[texts]), torch.from_numpy(groups[images])
    sides = {
        "t2i": (
            "text->image",
            texts,
            "text",
            images,
            "image",
            positives(text_groups, image_groups_),
        ),
        "i2t": (
            "image->text",
            images,
            "image",
            texts,
            "text",
            positives(image_groups_, text_groups),
        ),
    }
    tables, summary = [], []
    for direction, (label, queries, qkind, matches, mkind, pos) in sides.items():
        r = ranked[direction]
        k = r.top.shape[1]
        top = r.order[:, :k]  # (Q, k) positions into matches
        query = [shown[qkind](row) for row in queries]
        match = [shown[mkind](matches[j]) for j in top.reshape(-1).tolist()]
        tables.append(
            pd.DataFrame(
                {
                    "direction": label,
                    "query_id": np.repeat([q[0] for q in query], k),
                    "query": np.repeat([q[1] for q in query], k),
                    "rank": np.tile(np.arange(1, k + 1), len(queries)),
                    "match_id": [x[0] for x in match],
                    "match": [x[1] for x in match],
                    "score": r.top.reshape(-1).numpy().round(6),
                    "cosine": r.cosine.gather(1, top).reshape(-1).numpy().round(6),
                    "paired": pos.gather(1, top).reshape(-1).numpy(),
                }
            )
        )
        known = pos.any(1)
        if known.any():
            ranks = first_hit(r.order[known], pos[known]).numpy()
            cells = ", ".join(f"R@{c} {recall_at(ranks, c):.4f}" for c in KS)
            summary.append(
                f"{label} against the manifest's own pairs ({int(known.sum())} queries): {cells}"
            )
    return pd.concat(tables, ignore_index=True), summary


def _relative(file: Path, root: Path) -> str:
    """``file`` from ``root`` when it lies under it (as the manifest names it), else whole."""
    try:
        return str(file.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(file)


def _counts(texts: int, images: int, model: Any) -> str:
    return (
        f"ranked {images} images for each of {texts} texts and the texts for each image: the "
        f"dual encoder's top {model.rerank_k} re-ranked by cross-attention (score = "
        f"{1 - model.rerank_mix:g} x dual logit + {model.rerank_mix:g} x re-ranker logit)"
    )


def _bad_lines(bad: list[tuple[int, str]], manifest: Any) -> list[str]:
    if not bad:
        return []
    for row, why in bad:
        log.warning("%s row %d left out: %s", manifest.path, row, why)
    lines = [f"{len(bad)} row(s) of {manifest.path.name} left out:"]
    # a decoding error already names the manifest and row: not twice
    lines += [
        f"  row {row}: {why.removeprefix(f'{manifest.path}, row {row}: ')}"
        for row, why in bad[:BAD_LISTED]
    ]
    if len(bad) > BAD_LISTED:
        lines.append(f"  ... and {len(bad) - BAD_LISTED} more (in the log)")
    return lines
