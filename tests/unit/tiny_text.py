"""Tiny Hugging Face model folders built from configs (no download), for the text solution's
tests: a BERT-like encoder and a GPT-2-like causal model sharing a word-level vocabulary."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [
    "profit",
    "sales",
    "rose",
    "fell",
    "was",
    "unchanged",
    "the",
    "company",
    "said",
    "in",
    "quarter",
    "net",
    "operating",
    "revenue",
    "increased",
    "decreased",
    "by",
    "percent",
    "to",
    "eur",
    "million",
    "loss",
    "strong",
    "weak",
    "growth",
    "year",
    "first",
    "second",
    "board",
    "shares",
    "market",
    "bank",
    "group",
    "energy",
    "orders",
    "steady",
    "flat",
    "record",
]

POSITIVE = ["profit rose", "sales increased by percent", "record growth", "strong orders"]
NEGATIVE = ["profit fell", "sales decreased by percent", "weak market loss", "orders fell"]
NEUTRAL = ["the company said", "the board said in quarter", "shares flat", "revenue unchanged"]


def _vocab(folder: Path) -> Path:
    path = folder / "vocab.txt"
    path.write_text("\n".join(SPECIAL + WORDS) + "\n")
    return path


def tiny_bert(folder: Path, seed: int = 0) -> Path:
    """A 2-layer BERT (hidden 16) and its WordPiece tokenizer, saved in ``folder``."""
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    # the vocabulary by position: transformers 5 ignores vocab_file= (every word became [UNK])
    tokenizer = transformers.BertTokenizerFast(str(_vocab(folder)))
    config = transformers.BertConfig(
        vocab_size=len(SPECIAL) + len(WORDS),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=40,
    )
    torch.manual_seed(seed)
    transformers.BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_gpt2(folder: Path, seed: int = 0) -> Path:
    """A 2-layer GPT-2 (causal; hidden 16) with the same word-level tokenizer, in ``folder``."""
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    # the vocabulary by position: transformers 5 ignores vocab_file= (every word became [UNK])
    tokenizer = transformers.BertTokenizerFast(str(_vocab(folder)))
    config = transformers.GPT2Config(
        vocab_size=len(SPECIAL) + len(WORDS),
        n_embd=16,
        n_layer=2,
        n_head=2,
        n_positions=40,
        architectures=["GPT2LMHeadModel"],
    )
    torch.manual_seed(seed)
    transformers.GPT2Model(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def texts_csv(path: Path, per_class: int = 12) -> Path:
    """A CSV of ``text,label`` with three separable classes."""
    rows = []
    for i in range(per_class):
        for label, phrases in (("positive", POSITIVE), ("negative", NEGATIVE),
                               ("neutral", NEUTRAL)):  # fmt: skip
            rows.append((f"{phrases[i % 4]} {WORDS[i % 7]}", label))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def tiny_text_overrides(folder: Path, *extra: str) -> list[str]:
    """Training overrides for a tiny BERT on :func:`texts_csv`'s texts, both written under
    ``folder``: a quarter each for validation and test, CPU, no progress bar; ``extra`` last."""
    base, texts = tiny_bert(folder / "bert"), texts_csv(folder / "texts.csv")
    return [
        f"data.path={texts}",
        f"model.base={base}",
        "data.val_frac=0.25",
        "data.test_frac=0.25",
        "train.device=cpu",
        "train.progress=false",
        *extra,
    ]
