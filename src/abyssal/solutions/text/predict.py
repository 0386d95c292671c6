"""Predict texts with a loaded text model: one request at a time (serving) or a whole file.

A file is a CSV, JSONL or PhraseBank file as in training; its label column is optional. When
labels are present they must be classes the model was trained on (a row with another is refused,
by line), and the report scores the predictions against them.

Personal data in texts to predict (a file's texts, a request's text) is masked before they are
tokenized unless the version was trained with ``data.pii=keep`` (:mod:`.privacy`): the model sees
what it was trained on, and the predictions file holds the masked text. Answers never echo a text.

Example:
    >>> loaded = load_model("text:production")  # doctest: +SKIP
    >>> report = predict_texts(TextPredictor.from_loaded(loaded), "new.csv", out="scored.csv")
    ... # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from abyssal.contracts.prediction import TablePredictionReport
from abyssal.core.errors import AbyssalError, DataError
from abyssal.data.splits import sample_rows
from abyssal.data.tables import write_table
from abyssal.nn.features import cached_features, head_answers, host_copy
from abyssal.nn.metrics import classification_metrics
from abyssal.solutions.text.data import tokenize
from abyssal.solutions.text.model import load_tokenizer
from abyssal.solutions.text.privacy import guard_texts
from abyssal.solutions.text.records import read_texts
from abyssal.solutions.text.task import length_sorted_batches, pad_batch

MAX_TEXT_CHARS = 100_000
"""The longest text one request may carry (a bigger payload is refused, not tokenized)."""

log = logging.getLogger(__name__)


@dataclass
class TextItem:
    """One parsed request: its token ids (cut to the model's limit)."""

    ids: np.ndarray


class TextPredictor:
    """Scores texts with one loaded text model version.

    With a feature cache (:meth:`use_cache`), each text's pooled embedding (the expensive part:
    the transformer) is kept by the version and the digest of its token ids, so a text seen
    before costs only the classification head. Optimized variants, which run as one graph, are
    scored without it.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any, spec: Mapping[str, Any], cfg: Any,
                 ref: str) -> None:  # fmt: skip
        self.model, self.tokenizer, self.spec, self.cfg, self.ref = model, tokenizer, spec, cfg, ref
        self.classes: list[str] = list(spec["classes"])
        self.cache: Any = None
        self.pii: str = getattr(getattr(cfg, "data", None), "pii", "mask")

    def use_cache(self, cache: Any) -> bool:
        """Keep embeddings in ``cache`` (``get(version, digest)`` / ``put(version, digest,
        array)``, e.g. :class:`abyssal.serve.cache.MemoryFeatureCache`); whether this model can
        (an eager classifier with ``embed`` and ``head``)."""
        able = all(hasattr(self.model, name) for name in ("embed", "head"))
        self.cache = cache if able else None
        return able

    @classmethod
    def from_loaded(cls, loaded: Any) -> TextPredictor:
        tokenizer = load_tokenizer(Path(loaded.spec["base"]), loaded.spec["kind"])
        return cls(loaded.model, tokenizer, loaded.spec, loaded.cfg, loaded.version.ref)

    def clean(self, texts: Sequence[str]) -> list[str]:
        """``texts`` with personal data masked, unless the version keeps it (``data.pii``)."""
        return guard_texts(texts, self.pii)

    def tokenize(self, texts: Sequence[str], where: Any = None) -> list[np.ndarray]:
        """Token ids, texts over the limit cut or refused as ``data.overlong`` says."""
        limit, overlong = int(self.spec["max_length"]), self.cfg.data.overlong
        return tokenize(self.tokenizer, texts, limit=limit, overlong=overlong, where=where).ids

    def parse(self, payload: Mapping[str, Any]) -> TextItem:
        """``{"text": "..."}``: a non-empty string of at most :data:`MAX_TEXT_CHARS`, masked as
        :meth:`clean` says before it is tokenized."""
        text = payload.get("text")
        if not isinstance(text, str):
            raise DataError(f"'text' must be a string, got {type(text).__name__}", column="text")
        if not text.strip():
            raise DataError("'text' is empty", column="text")
        if len(text) > MAX_TEXT_CHARS:
            raise DataError(
                f"'text' has {len(text)} characters, more than {MAX_TEXT_CHARS}", column="text"
            )
        return TextItem(self.tokenize(self.clean([text.strip()]))[0])

    @torch.no_grad()
    def probabilities(self, ids: Sequence[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """(N, K) class probabilities, scored in length-sorted batches, in input order."""
        lengths = np.array([len(x) for x in ids], dtype=np.int64)
        out = np.zeros((len(ids), len(self.classes)), dtype=np.float32)
        device = next(self.model.parameters()).device if _has_params(self.model) else "cpu"
        if self.cache is not None:
            features = torch.from_numpy(self._embeddings(ids, lengths, batch_size, device))
            logits = self.model.head(features.to(device))  # eval: dropout is the identity
            return torch.softmax(logits.float(), dim=1).cpu().numpy()
        for part in length_sorted_batches(lengths, np.arange(len(ids)), batch_size):
            batch = pad_batch([ids[i] for i in part], int(self.spec["pad_id"])).to(device)
            logits = self.model(batch.input_ids, batch.attention_mask)
            out[part] = torch.softmax(torch.as_tensor(logits).float(), dim=1).cpu().numpy()
        return out

    def _embeddings(
        self, ids: Sequence[np.ndarray], lengths: np.ndarray, batch_size: int, device: Any
    ) -> np.ndarray:
        """(N, hidden) pooled embeddings: from the cache, the missing ones computed and kept."""

        def compute(rows: np.ndarray) -> np.ndarray:
            return self._embed_rows(ids, lengths, rows, batch_size, device)

        return cached_features(self.cache, self.ref, list(ids), compute)

    def _embed_rows(
        self,
        ids: Sequence[np.ndarray],
        lengths: np.ndarray,
        rows: np.ndarray,
        batch_size: int,
        device: Any,
    ) -> np.ndarray:
        """(len(rows), hidden) pooled embeddings of ``ids[rows]``, in length-sorted batches."""
        out = np.zeros((len(rows), 0), dtype=np.float32)
        where = {int(r): k for k, r in enumerate(rows)}
        for part in length_sorted_batches(lengths, rows, batch_size):
            batch = pad_batch([ids[i] for i in part], int(self.spec["pad_id"])).to(device)
            pooled = self.model.embed(batch.input_ids, batch.attention_mask)
            pooled = pooled.float().cpu().numpy()
            if out.shape[1] == 0:
                out = np.zeros((len(rows), pooled.shape[1]), dtype=np.float32)
            out[[where[int(i)] for i in part]] = pooled
        return out

    @torch.no_grad()
    def embed_source(self, path: str | Path, limit: int = 256, seed: int = 0) -> np.ndarray:
        """(n, hidden) pooled embeddings of at most ``limit`` texts of the file ``path`` (a
        seeded sample, in file order): what a pipeline compares for embedding drift.

        Raises:
            DataError: a bad file or row (named by line).
            AbyssalError: a model without a separate encoder (``embed``), e.g. an ONNX variant.
        """
        if not hasattr(self.model, "embed"):
            raise AbyssalError(f"{self.ref} has no separate encoder to embed with")
        cfg = self.cfg.data
        records = read_texts(path, format="auto", text_column=cfg.text_column,
                             label_column=cfg.label_column, encoding=cfg.encoding,
                             require_labels=False)  # fmt: skip
        rows = sample_rows(len(records.texts), limit, seed)
        ids = self.tokenize(self.clean([records.texts[i] for i in rows]), where=records.where)
        lengths = np.array([len(x) for x in ids], dtype=np.int64)
        device = next(self.model.parameters()).device if _has_params(self.model) else "cpu"
        return self._embed_rows(ids, lengths, np.arange(len(ids)), 64, device)

    def respond(self, probs: np.ndarray) -> list[dict[str, Any]]:
        """One response per row of probabilities: label, its probability, and all of them."""
        out = []
        for p in probs:
            k = int(p.argmax())
            row = {"label": self.classes[k], "probability": round(float(p[k]), 6)}
            row.update({f"p_{c}": round(float(v), 6) for c, v in zip(self.classes, p, strict=True)})
            out.append(row)
        return out

    def predict(self, items: Sequence[TextItem]) -> list[dict[str, Any]]:
        return self.respond(self.probabilities([item.ids for item in items]))

    @cached_property
    def host_head(self) -> torch.nn.Module:
        """The classification head on the CPU, for answers from cached embeddings."""
        return host_copy(self.model.head)

    def predict_cached(self, items: Sequence[TextItem]) -> list[dict[str, Any] | None]:
        """The answers of the texts whose embeddings are cached (the head only), ``None`` for
        the others: a service answers those at once, without a batch (the head's CPU copy: no
        GPU queue)."""
        return head_answers(self.cache, self.ref, [item.ids for item in items], self.host_head,
                            lambda rows, probs: self.respond(probs.numpy()))  # fmt: skip


def _has_params(model: torch.nn.Module) -> bool:
    return any(True for _ in model.parameters())


def predict_texts(
    predictor: TextPredictor, path: str | Path, *, out: str | Path | None = None
) -> TablePredictionReport:
    """Predict every text of ``path``; write ``out`` (CSV or Parquet) atomically if given. Its
    ``text`` column holds the texts as the model saw them (masked unless ``data.pii=keep``).

    Raises:
        DataError: a bad file or row (named by line), a label the model was never trained on.
    """
    cfg = predictor.cfg.data
    records = read_texts(
        path,
        format="auto",  # from the file's suffix, whatever the training file was
        text_column=cfg.text_column,
        label_column=cfg.label_column,
        encoding=cfg.encoding,
        require_labels=False,
    )
    known = set(predictor.classes)
    for i, label in enumerate(records.labels or []):
        if label not in known:
            raise DataError(
                f"{records.where(i)}: label {label!r} was never trained; {predictor.ref} knows "
                f"{predictor.classes}"
            )
    texts = predictor.clean(records.texts)  # what is tokenized is what is written
    probs = predictor.probabilities(predictor.tokenize(texts, where=records.where))
    frame = pd.DataFrame({"line": records.lines, "text": texts})
    if records.labels is not None:
        frame["true_label"] = records.labels
    frame = pd.concat([frame, pd.DataFrame(predictor.respond(probs))], axis=1)
    summary = [f"{len(frame)} texts from {path}"]
    if records.labels is not None:
        index = {c: i for i, c in enumerate(predictor.classes)}
        labels = np.array([index[label] for label in records.labels])
        scores = classification_metrics(labels, probs, predictor.classes, count="texts")
        summary.append(
            f"against the file's labels: accuracy {scores['accuracy']:.4f}, macro-F1 "
            f"{scores['macro_f1']:.4f}"
        )
    written = write_table(frame, out) if out is not None else None
    shown = frame.assign(text=frame["text"].str.slice(0, 60))
    report = TablePredictionReport(predictor.ref, shown, written, tuple(summary))
    return report
