"""Predicting with a multimodal model: one request per sample (``text``, ``image``, ``audio``,
any of them missing), each answered with its class, the probabilities, and how much each
modality mattered: its share of the cross-modal attention and the drop in the predicted class's
probability when it is left out (leave-one-modality-out).

Example:
    >>> loaded = load_model("multimodal:candidate")  # doctest: +SKIP
    >>> predictor = MultimodalPredictor.from_loaded(loaded)  # doctest: +SKIP
    >>> item = predictor.parse({"text": "an old horn", "audio": "horn.wav"})  # doctest: +SKIP
    >>> predictor.predict([item])[0]["label"]  # doctest: +SKIP
    'horn'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from abyssal.contracts.prediction import TablePredictionReport
from abyssal.core.errors import DataError
from abyssal.data.tables import write_table
from abyssal.solutions.multimodal.config import InputOptions
from abyssal.solutions.multimodal.inputs import DecodedInputs, decode_samples
from abyssal.solutions.multimodal.manifest import MODALITIES, Sample, read_manifest
from abyssal.solutions.multimodal.model import flat_inputs
from abyssal.solutions.multimodal.task import batch_inputs


@dataclass
class MultimodalItem:
    """One parsed request: its name and its decoded arrays (one sample)."""

    name: str
    inputs: DecodedInputs


class MultimodalPredictor:
    """Requests to decoded samples (refused in :meth:`parse` when a file cannot be read), then
    class probabilities, attention shares and leave-one-modality-out deltas."""

    file_fields: tuple[str, ...] = ("image", "audio")
    """Request fields naming a file (a service takes them as uploads)."""

    def __init__(self, model: torch.nn.Module, spec: Mapping[str, Any], ref: str, tokenizer: Any):
        self.model, self.spec, self.ref, self.tokenizer = model, dict(spec), ref, tokenizer
        self.classes = list(spec["classes"])
        self.modalities = list(spec["modalities"])
        self.options = InputOptions(
            image_size=int(spec["image_size"]),
            image_channels=int(spec["image_channels"]),
            sample_rate=int(spec["sample_rate"]),
            n_mels=int(spec["n_mels"]),
            max_seconds=float(spec["max_seconds"]),
            max_tokens=int(spec["max_tokens"]),
            waveform=spec.get("audio_input") == "wave",
        )
        self.device = next(model.parameters()).device

    @classmethod
    def from_loaded(cls, loaded: Any) -> MultimodalPredictor:
        tokenizer = None
        if loaded.spec.get("text_base"):
            from abyssal.solutions.text.model import load_tokenizer

            tokenizer = load_tokenizer(Path(loaded.spec["text_base"]), "encoder")
        return cls(loaded.model, loaded.spec, loaded.version.ref, tokenizer)

    def parse(
        self, payload: Mapping[str, Any], *, row: int = 0, source: Path | None = None
    ) -> MultimodalItem:
        """A request ``{"id"?, "text"?, "image"?, "audio"?}`` (image and audio: file paths),
        decoded now; DataError naming the field (and row) when it cannot be used."""
        if not isinstance(payload, Mapping):
            raise DataError(
                f"a request is an object with text, image or audio, got {type(payload).__name__}"
            )
        unknown = sorted(set(payload) - {"id", "label", *MODALITIES})
        if unknown:
            raise DataError(f"unknown request fields {unknown}; expected id, text, image, audio")
        given = {m: payload.get(m) for m in MODALITIES if payload.get(m) not in (None, "")}
        usable = {m: v for m, v in given.items() if m in self.modalities}
        if not usable:
            raise DataError(
                f"the request has {sorted(given) or 'nothing'}; this model takes "
                f"{', '.join(self.modalities)}",
                path=source,
                row=row or None,
            )
        for m, v in usable.items():
            if not isinstance(v, str):
                raise DataError(f"field {m!r} must be a string, got {type(v).__name__}")
        name = str(payload.get("id") or (row or "request"))
        folder = source.parent if source is not None else Path(".")
        sample = Sample(
            id=name,
            text=usable.get("text"),
            image=_path(usable.get("image"), folder),
            audio=_path(usable.get("audio"), folder),
            label=None,
            row=row,
            source=source,
        )
        inputs = decode_samples([sample], self.classes, self.options, tokenizer=self.tokenizer)
        return MultimodalItem(name, inputs)

    @torch.no_grad()
    def predict(self, items: Sequence[MultimodalItem]) -> list[dict[str, Any]]:
        if not items:
            return []
        merged = merge_inputs([i.inputs for i in items])
        rows = np.arange(len(items))
        batch = {k: v.to(self.device) for k, v in batch_inputs(merged, rows).items()}
        net = getattr(self.model, "base", self.model)  # explanations: the eager network's
        out = net.explain(batch)
        logits = out.logits if net is self.model else self.model(*flat_inputs(batch, self.spec))
        probs = torch.softmax(logits.float(), dim=1)
        chosen = probs.argmax(1)
        deltas = torch.zeros(len(items), len(MODALITIES), device=probs.device)
        for k, modality in enumerate(MODALITIES):
            if modality not in self.modalities:
                continue
            without = dict(batch)
            without["present"] = batch["present"].clone()
            without["present"][:, k] = False
            alone = ~without["present"].any(1)
            without["present"][alone, k] = True  # a row's only modality: compared with chance
            p = torch.softmax(net.explain(without).logits.float(), dim=1)
            kept = p.gather(1, chosen[:, None])[:, 0]
            kept = torch.where(alone, torch.full_like(kept, 1 / len(self.classes)), kept)
            here = batch["present"][:, k]
            deltas[:, k] = torch.where(here, probs.gather(1, chosen[:, None])[:, 0] - kept, 0)
        answers = []
        for b, item in enumerate(items):
            present = [m for k, m in enumerate(MODALITIES) if merged.present[b, k]]
            shares = {
                m: round(float(out.contributions[b, self.modalities.index(m)]), 4) for m in present
            }
            answers.append(
                {
                    "id": item.name,
                    "label": self.classes[int(chosen[b])],
                    "probability": round(float(probs[b, chosen[b]]), 6),
                    "probabilities": {
                        c: round(float(probs[b, j]), 6) for j, c in enumerate(self.classes)
                    },
                    "modalities": present,
                    "attention_share": shares,
                    "leave_one_out": {
                        m: round(float(deltas[b, MODALITIES.index(m)]), 4) for m in present
                    },
                }
            )
        return answers


def _path(value: str | None, folder: Path) -> Path | None:
    if value is None:
        return None
    path = Path(value)
    return path if path.is_absolute() else folder / path


def merge_inputs(parts: Sequence[DecodedInputs]) -> DecodedInputs:
    """One-sample (or more) decoded inputs stacked into one, texts and clips padded to the
    longest; an array some parts lack is zeros (its presence flag is False there)."""
    n = [len(p) for p in parts]
    out = DecodedInputs(
        ids=[i for p in parts for i in p.ids],
        rows=[r for p in parts for r in p.rows],
        labels=np.concatenate([p.labels for p in parts]),
        present=np.concatenate([p.present for p in parts]),
    )
    out.tokens = _pad([p.tokens for p in parts], n)
    out.token_lengths = _lengths([p.token_lengths for p in parts], n)
    out.images = _pad([p.images for p in parts], n)
    out.mels = _pad([p.mels for p in parts], n)
    out.mel_lengths = _lengths([p.mel_lengths for p in parts], n)
    out.waves = _pad([p.waves for p in parts], n)
    out.wave_lengths = _lengths([p.wave_lengths for p in parts], n)
    return out


def _pad(arrays: list[np.ndarray | None], n: list[int]) -> np.ndarray | None:
    shapes = [a.shape for a in arrays if a is not None]
    if not shapes:
        return None
    tail = tuple(max(s[d] for s in shapes) for d in range(1, len(shapes[0])))
    dtype = next(a.dtype for a in arrays if a is not None)
    out = np.zeros((sum(n), *tail), dtype=dtype)
    at = 0
    for a, k in zip(arrays, n, strict=True):
        if a is not None:
            out[(slice(at, at + k), *(slice(0, d) for d in a.shape[1:]))] = a
        at += k
    return out


def _lengths(arrays: list[np.ndarray | None], n: list[int]) -> np.ndarray | None:
    if all(a is None for a in arrays):
        return None
    return np.concatenate(
        [a if a is not None else np.zeros(k, np.int64) for a, k in zip(arrays, n, strict=True)]
    )


def predict_manifest(
    predictor: MultimodalPredictor,
    path: str | Path,
    *,
    out: str | Path | None = None,
    batch_size: int = 64,
) -> TablePredictionReport:
    """Predict every row of a manifest (labels optional: with them the report gives the
    accuracy). Every row is parsed first; a bad row stops everything with its file and row, and
    nothing is written."""
    manifest = read_manifest(path, require_label=False)
    items = []
    for sample in manifest.samples:
        payload = {  # paths already resolved from the manifest's folder
            "id": sample.id,
            "text": sample.text,
            "image": str(sample.image.resolve()) if sample.image else None,
            "audio": str(sample.audio.resolve()) if sample.audio else None,
        }
        items.append(predictor.parse(payload, row=sample.row, source=manifest.path))
    answers = []
    for start in range(0, len(items), batch_size):
        answers += predictor.predict(items[start : start + batch_size])
    frame = pd.DataFrame(
        {
            "id": [a["id"] for a in answers],
            "label": [a["label"] for a in answers],
            "probability": [a["probability"] for a in answers],
            "modalities": ["+".join(a["modalities"]) for a in answers],
            **{
                f"{what}_{m}": [a[key].get(m, np.nan) for a in answers]
                for what, key in (("share", "attention_share"), ("loo", "leave_one_out"))
                for m in predictor.modalities
            },
        }
    )
    summary = []
    truth = [s.label for s in manifest.samples]
    if all(t is not None for t in truth):
        hit = np.mean([t == a["label"] for t, a in zip(truth, answers, strict=True)])
        summary.append(f"accuracy against the given labels: {hit:.4f}")
    written = None
    if out is not None:
        written = Path(out)
        write_table(frame, written)
    return TablePredictionReport(predictor.ref, frame, written, tuple(summary))
