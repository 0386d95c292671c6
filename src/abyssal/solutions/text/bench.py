"""The text solution's benchmark hooks: test texts with typos, and the texts' lengths.

``typos`` changes the test split's texts (a fraction of their words gets one character-level
typo each, :func:`abyssal.data.perturb_records.typos`) and tokenizes the changed texts again with
the base model's tokenizer and the data's token limit, as :func:`~.data.prepare_text_data` did.
Training and validation texts, labels, line numbers and the split stay as they were.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from abyssal.data.perturb import Perturbation, check_kind, perturbed_identity
from abyssal.data.perturb_records import typos
from abyssal.solutions.text.config import TextModelConfig
from abyssal.solutions.text.data import TextData, Tokenized, tokenize
from abyssal.solutions.text.model import base_kind, load_tokenizer, transformers_module

KINDS = ("typos",)
"""The perturbations texts take."""


def perturb_texts(
    data: TextData, perturbation: Perturbation, model: TextModelConfig | None = None
) -> TextData:
    """A copy of ``data`` whose test texts carry ``perturbation``, tokenized again.

    The changed texts are tokenized with the tokenizer of ``data.base`` (``model.kind`` decides
    an encoder's or a causal model's, as in training), special tokens included, and cut at
    ``data.tokens.limit`` (a typo can add a token or two: a text then over the limit is cut,
    with the usual warning, whatever ``data.overlong`` says). ``data`` is unchanged.

    Raises:
        ConfigError: another kind (the message lists :data:`KINDS`).
    """
    perturbation = check_kind(perturbation, KINDS, "solution 'text'")
    fingerprint, description = perturbed_identity(data.fingerprint, data.description, perturbation)
    test = data.rows("test")
    records = data.records
    changed = typos(
        [records.texts[i] for i in test.tolist()], perturbation.level, perturbation.seed
    )
    texts = list(records.texts)
    for i, text in zip(test.tolist(), changed, strict=True):
        texts[i] = text
    tokens = data.tokens
    fresh = tokenize(
        base_tokenizer(data, model),
        changed,
        limit=tokens.limit,
        overlong="truncate",
        where=lambda k: records.where(int(test[k])),
    )
    ids = list(tokens.ids)
    lengths = tokens.lengths.copy()
    for k, i in enumerate(test.tolist()):
        ids[i] = fresh.ids[k]
        lengths[i] = fresh.lengths[k]
    truncated = np.union1d(np.setdiff1d(tokens.truncated, test), test[fresh.truncated])
    return dataclasses.replace(
        data,
        records=dataclasses.replace(
            records,
            texts=texts,
            labels=None if records.labels is None else list(records.labels),
            lines=list(records.lines),
        ),
        labels=data.labels.copy(),
        classes=list(data.classes),
        tokens=Tokenized(ids, lengths, truncated.astype(np.int64), tokens.limit, tokens.pad_id),
        splits={name: rows.copy() for name, rows in data.splits.items()},
        fingerprint=fingerprint,
        description=description,
    )


def base_tokenizer(data: TextData, model: TextModelConfig | None = None) -> Any:
    """The tokenizer the texts of ``data`` were tokenized with: its base folder's, set up for
    an encoder or a causal model as ``model.kind`` (default ``auto``) says."""
    config = transformers_module().AutoConfig.from_pretrained(str(data.base))
    kind = base_kind(config, model.kind if model is not None else "auto")
    return load_tokenizer(data.base, kind)


def text_attributes(data: TextData) -> pd.DataFrame:
    """One row per test text, in file order: ``id`` (its line, as ``held_out`` gives it),
    ``length_words`` (white-space separated words), ``length_chars``, ``length_tokens`` (special
    tokens included, after any cut) and ``truncated`` (whether it was cut at the token limit).

    The text formats carry nothing else per text: a CSV's or JSON line's other columns are not
    read (see ``docs/formats.md``).
    """
    rows = data.rows("test")
    texts = [data.records.texts[i] for i in rows.tolist()]
    return pd.DataFrame(
        {
            "id": [int(data.records.lines[i]) for i in rows.tolist()],
            "length_words": np.array([len(t.split()) for t in texts], dtype=np.int64),
            "length_chars": np.array([len(t) for t in texts], dtype=np.int64),
            "length_tokens": data.tokens.lengths[rows].astype(np.int64),
            "truncated": np.isin(rows, data.tokens.truncated),
        }
    )
