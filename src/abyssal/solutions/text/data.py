"""Read, tokenize and split the texts of a run.

:func:`prepare_text_data` reads a CSV, JSONL or PhraseBank file (:mod:`.records`), masks or
refuses personal data as ``data.pii`` says (:mod:`.privacy`; masked by default, before anything
else sees the texts), tokenizes every text once with the base model's tokenizer, handles texts
over the token limit as configured (truncated with one warning counting them, or refused naming
the lines), and splits the texts with a fixed, seeded, stratified split that is written into the
run folder as ``split.csv``.

Example:
    >>> data = prepare_text_data(cfg.data, cfg.model)  # doctest: +SKIP
    >>> data.classes, len(data.rows("train"))  # doctest: +SKIP
    (['negative', 'neutral', 'positive'], 3392)
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from abyssal.core.errors import ConfigError, DataError
from abyssal.data.splits import split_file, split_names, stratified_split
from abyssal.solutions.text.config import TextDataConfig, TextModelConfig
from abyssal.solutions.text.model import (
    base_kind,
    load_tokenizer,
    resolve_base,
    token_limit,
    transformers_module,
)
from abyssal.solutions.text.privacy import guard_records
from abyssal.solutions.text.records import TextRecords, read_texts

SPLITS = ("train", "val", "test")
LINES_SHOWN = 10
"""How many line numbers an error lists."""

log = logging.getLogger(__name__)


@dataclass
class Tokenized:
    """Texts as token ids.

    Attributes:
        ids: each text's token ids (int64), special tokens included, cut to the limit.
        lengths: (N,) int64 tokens per text.
        truncated: indices of the texts that were cut.
        limit: the most tokens per text.
        pad_id: the padding token's id.
    """

    ids: list[np.ndarray]
    lengths: np.ndarray
    truncated: np.ndarray
    limit: int
    pad_id: int


@dataclass
class TextData:
    """The labelled texts of one run, tokenized and split.

    Attributes:
        records: the texts as read (with their line numbers).
        labels: (N,) int64 class indices.
        classes: class names, sorted; index i is class i.
        tokens: the token ids.
        splits: ascending indices per split.
        base: the base model's folder.
        fingerprint, description: for the version's lineage.
    """

    records: TextRecords
    labels: np.ndarray
    classes: list[str]
    tokens: Tokenized
    splits: dict[str, np.ndarray]
    base: Path
    fingerprint: str = ""
    description: str = ""

    def rows(self, split: str) -> np.ndarray:
        return self.splits[split]

    def counts(self, split: str) -> np.ndarray:
        """Texts per class in ``split``."""
        return np.bincount(self.labels[self.splits[split]], minlength=len(self.classes))

    def run_files(self) -> dict[str, str]:
        """Files written into the run folder: ``split.csv`` (line, label, split, tokens)."""
        where = split_names(len(self.labels), self.splits)
        return split_file(
            ["line", "label", "split", "tokens"],
            (
                [self.records.lines[i], self.classes[label], where[i], int(self.tokens.lengths[i])]
                for i, label in enumerate(self.labels)
            ),
        )


def tokenize(
    tokenizer: Any,
    texts: Sequence[str],
    *,
    limit: int,
    overlong: str,
    where: Any = None,
) -> Tokenized:
    """Token ids of ``texts`` with the tokenizer's special tokens, at most ``limit`` each.

    Args:
        tokenizer: a ``transformers`` tokenizer.
        texts: the texts.
        limit: the most tokens per text.
        overlong: ``truncate`` (cut, one warning counting the texts cut) or ``refuse``.
        where: ``where(i)`` names text ``i`` in messages (e.g. "f.csv line 3").

    Raises:
        DataError: ``overlong="refuse"`` and texts over the limit (up to 10 named).
    """
    where = where or (lambda i: f"text {i}")
    encoded = tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)
    full = [np.asarray(ids, dtype=np.int64) for ids in encoded["input_ids"]]
    over = np.array([i for i, ids in enumerate(full) if len(ids) > limit], dtype=np.int64)
    if len(over) and overlong == "refuse":
        shown = ", ".join(where(int(i)) for i in over[:LINES_SHOWN])
        more = f" and {len(over) - LINES_SHOWN} more" if len(over) > LINES_SHOWN else ""
        raise DataError(
            f"{len(over)} text(s) are longer than {limit} tokens: {shown}{more} (set "
            "data.overlong=truncate to cut them, or raise data.max_length up to the model's limit)"
        )
    if len(over):
        cut = tokenizer(
            [texts[i] for i in over], truncation=True, max_length=limit, add_special_tokens=True
        )["input_ids"]
        for i, ids in zip(over, cut, strict=True):
            full[int(i)] = np.asarray(ids, dtype=np.int64)
        log.warning("%d text(s) longer than %d tokens were truncated", len(over), limit)
    empty = [i for i, ids in enumerate(full) if len(ids) == 0]
    if empty:
        raise DataError(f"{where(empty[0])}: the text has no tokens")
    lengths = np.array([len(ids) for ids in full], dtype=np.int64)
    pad = tokenizer.pad_token_id
    return Tokenized(full, lengths, over, limit, int(pad if pad is not None else 0))


def open_base(model: TextModelConfig) -> tuple[Path, Any, Any, str]:
    """The base model's folder, ``transformers`` config, tokenizer and kind (encoder/causal)."""
    folder = resolve_base(model.base)
    config = transformers_module().AutoConfig.from_pretrained(str(folder))
    kind = base_kind(config, model.kind)
    return folder, config, load_tokenizer(folder, kind), kind


def prepare_text_data(cfg: TextDataConfig, model: TextModelConfig) -> TextData:
    """Read, tokenize and split the texts ``cfg`` points at.

    Raises:
        ConfigError: no ``data.path``.
        DataError: bad files or rows (named by line), fewer than two classes, a class too small
            to split, texts over the limit with ``data.overlong=refuse``.
    """
    if cfg.path is None:
        raise ConfigError(
            "data.path is required: a CSV or JSONL with text and label columns, or a Financial "
            "PhraseBank file"
        )
    records = read_texts(
        cfg.path,
        format=cfg.format,
        text_column=cfg.text_column,
        label_column=cfg.label_column,
        encoding=cfg.encoding,
    )
    records = guard_records(records, cfg.pii)  # before anything else sees the texts
    classes = sorted(set(records.labels or []))
    if len(classes) < 2:
        raise DataError(f"found {len(classes)} class ({classes}); need at least 2", path=cfg.path)
    index = {name: i for i, name in enumerate(classes)}
    labels = np.array([index[label] for label in records.labels or []], dtype=np.int64)
    folder, config, tokenizer, _ = open_base(model)
    limit = min(cfg.max_length, token_limit(config, tokenizer))
    tokens = tokenize(
        tokenizer, records.texts, limit=limit, overlong=cfg.overlong, where=records.where
    )
    splits = stratified_split(
        len(labels),
        labels,
        val_frac=cfg.val_frac,
        test_frac=cfg.test_frac,
        seed=cfg.split_seed,
        where=str(cfg.path),
        unit="texts",
    )
    data = TextData(records, labels, classes, tokens, splits, folder)
    data.fingerprint = _fingerprint(data)
    data.description = describe(data, cfg)
    return data


def _fingerprint(data: TextData) -> str:
    digest = hashlib.sha256()
    for text in data.records.texts:
        digest.update(text.encode("utf-8") + b"\0")
    digest.update(data.labels.tobytes())
    digest.update(",".join(data.classes).encode())
    for name in SPLITS:
        digest.update(name.encode() + data.splits[name].tobytes())
    digest.update(str(data.tokens.limit).encode())
    return digest.hexdigest()[:16]


def describe(data: TextData, cfg: TextDataConfig) -> str:
    """One line: where, how many texts of which classes, tokens, split."""
    sizes = {s: len(data.splits[s]) for s in SPLITS}
    counts = ", ".join(
        f"{name} {n}" for name, n in zip(data.classes, np.bincount(data.labels), strict=False)
    )
    lengths = data.tokens.lengths
    line = (
        f"{cfg.path} ({data.records.format}): {len(data.labels)} texts ({counts}); tokens per "
        f"text median {int(np.median(lengths))}, max {int(lengths.max())} (limit "
        f"{data.tokens.limit}); split seed {cfg.split_seed}: {sizes['train']} train, "
        f"{sizes['val']} val, {sizes['test']} test"
    )
    if len(data.tokens.truncated):
        line += f"; {len(data.tokens.truncated)} truncated"
    return line
