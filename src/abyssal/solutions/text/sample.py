"""Synthetic financial-news sentences with sentiment labels, for docs, the quickstart and tests.

``abyssal generate text --out DIR`` writes:

- ``texts.csv`` (``text,label``) and ``texts.jsonl`` (the same rows, keys ``text`` and
  ``label``): labelled sentences of three classes, ``negative``, ``neutral`` and ``positive``;
- ``new.csv`` (``text``): unlabelled sentences to predict, and ``new_truth.csv`` (``text,label``)
  to check the predictions against.

Sentences are written in the style of the Financial PhraseBank: made-up companies, metrics
(``operating profit``, ``net sales``), verbs that carry the sentiment (``rose``, ``fell``, ``was
unchanged``), amounts and percentages. Neutral clauses (when, where, who said it) pad some
sentences, so lengths run from 5 to about 60 words and length bucketing has work to do. A share
``noise`` of the labelled rows get a wrong label, so a model cannot reach accuracy 1; the new
rows are never flipped. Everything is drawn from ``seed``: the same options write the same bytes.

Example:
    >>> generate_sample(TextSampleConfig(), Path("demo-text"))  # doctest: +SKIP
    ['demo-text/texts.csv: 600 labelled texts (3 classes)', ...]
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from abyssal.core.atomic import write_text_atomic
from abyssal.core.config import field
from abyssal.core.errors import ConfigError

CLASSES = ("negative", "neutral", "positive")
"""The sentiment classes, in label order."""

_COMPANIES = (
    "Aalto Metals", "Baltic Paper", "Helmi Foods", "Koski Systems", "Lumo Telecom",
    "Nordvik Group", "Saari Shipping", "Tundra Energy", "Virta Bank", "Polar Retail",
)  # fmt: skip
_METRICS = (
    ("operating profit", "was"), ("net sales", "were"), ("net profit", "was"),
    ("pretax profit", "was"), ("order intake", "was"), ("revenue", "was"),
)  # fmt: skip
_PERIODS = (
    "in the first quarter of 2010", "in January-June 2009", "in 2008", "in the third quarter",
    "for the full year 2011", "in the review period", "in October-December 2007",
)  # fmt: skip
_CITIES = ("Helsinki", "Tampere", "Oulu", "Turku", "Espoo", "Tallinn", "Stockholm")
_CORES = {
    "positive": (
        "{Metric} rose {pct} to EUR {amount} million {period}",
        "{company}'s {metric} increased by {pct} {period}",
        "{company} won an order worth EUR {amount} million from {client}",
        "{company} said its {metric} grew to EUR {amount} million from EUR {lower} million",
        "{Metric} improved clearly {period}",
    ),
    "negative": (
        "{Metric} fell {pct} to EUR {amount} million {period}",
        "{company}'s {metric} decreased by {pct} {period}",
        "{company} will cut {jobs} jobs and close its plant in {city}",
        "{company} said its {metric} dropped to EUR {amount} million from EUR {higher} million",
        "{Metric} declined sharply {period}",
    ),
    "neutral": (
        "{Metric} {be} unchanged at EUR {amount} million {period}",
        "{company}'s {metric} {be} flat {period}",
        "{company} will publish its interim report on {day} {month}",
        "{company} is headquartered in {city} and listed in Helsinki",
        "{company} appointed a new chief financial officer",
    ),
}
_CONTEXT = (
    "the company said in a stock exchange release on {day} {month}",
    "compared with the corresponding period a year earlier",
    "according to the interim report published by the {city}-based group",
    "and the figures for the comparison period have been restated",
    "while the group employed about {staff} people at the end of the period",
    "as the group reports its operations in two business segments",
)
_NEW_STREAM = 1
"""Seed stream of the unlabelled rows (the labelled rows use stream 0)."""


@dataclass
class TextSampleConfig:
    """Options of ``abyssal generate text``: synthetic labelled sentences written as files."""

    rows: int = field(600, help="labelled texts, the three classes in equal shares (at least 30)")
    new_rows: int = field(40, help="unlabelled texts to predict, written with a truth file")
    seed: int = field(0, help="seed of every text: the same options write the same files")
    noise: float = field(
        0.1, help="share of labelled texts whose label is flipped at random (so accuracy < 1)"
    )

    def __post_init__(self) -> None:
        if self.rows < 30:
            raise ConfigError(f"rows must be >= 30 (ten a class), got {self.rows}")
        if self.new_rows < 0:
            raise ConfigError(f"new_rows must be >= 0, got {self.new_rows}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if not 0 <= self.noise < 1:
            raise ConfigError(f"noise must be in [0, 1), got {self.noise}")


def make_sentence(label: str, rng: np.random.Generator) -> str:
    """One financial-news sentence whose sentiment is ``label``, 5 to about 60 words.

    Example:
        >>> make_sentence("positive", np.random.default_rng(0)).endswith(".")
        True
    """
    core = str(rng.choice(_CORES[label]))
    padding = int(rng.choice([0, 0, 0, 1, 1, 2, 3, 4]))  # most short, some long
    clauses = [core, *rng.choice(_CONTEXT, padding, replace=False).tolist()]
    sentence = ", ".join(clauses).format(**_slots(rng))
    return sentence[0].upper() + sentence[1:] + "."


def generate_sample(options: TextSampleConfig, out: Path) -> list[str]:
    """Write ``texts.csv``, ``texts.jsonl``, and (``new_rows`` > 0) ``new.csv`` with
    ``new_truth.csv`` into the folder ``out``, each file written atomically.

    Args:
        options: how many rows, the seed and the label noise.
        out: the folder (created if needed).

    Returns:
        One line per file written.
    """
    out = Path(out)
    rng = np.random.default_rng([options.seed, 0])
    truth = rng.permutation(np.arange(options.rows) % len(CLASSES))
    texts = [make_sentence(CLASSES[k], rng) for k in truth.tolist()]
    labels = [CLASSES[k] for k in _flip(truth, options.noise, rng).tolist()]
    labelled = list(zip(texts, labels, strict=True))
    write_text_atomic(out / "texts.csv", _csv_text(["text", "label"], labelled))
    jsonl = "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in labelled)
    write_text_atomic(out / "texts.jsonl", jsonl)
    lines = [
        f"{out / 'texts.csv'}: {options.rows} labelled texts ({len(CLASSES)} classes)",
        f"{out / 'texts.jsonl'}: the same {options.rows} labelled texts as JSON lines",
    ]
    if options.new_rows:
        lines += _write_new(options, out)
    return lines


def _write_new(options: TextSampleConfig, out: Path) -> list[str]:
    rng = np.random.default_rng([options.seed, _NEW_STREAM])
    labels = rng.choice(CLASSES, options.new_rows).tolist()
    rows = [(make_sentence(y, rng), y) for y in labels]
    write_text_atomic(out / "new.csv", _csv_text(["text"], [(t,) for t, _ in rows]))
    write_text_atomic(out / "new_truth.csv", _csv_text(["text", "label"], rows))
    return [
        f"{out / 'new.csv'}: {options.new_rows} unlabelled texts, to predict",
        f"{out / 'new_truth.csv'}: text,label of the new texts, to check predictions",
    ]


def _flip(truth: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """``truth`` with a share ``noise`` of its entries moved to another class at random."""
    labels = truth.copy()
    flipped = rng.choice(len(labels), round(noise * len(labels)), replace=False)
    shift = rng.integers(1, len(CLASSES), len(flipped))  # 1 or 2: never the same class
    labels[flipped] = (labels[flipped] + shift) % len(CLASSES)
    return labels


def _slots(rng: np.random.Generator) -> dict[str, str]:
    """Values for every placeholder of the templates (unused ones are ignored)."""
    metric, be = _METRICS[int(rng.integers(len(_METRICS)))]
    amount, change = rng.uniform(1, 900), rng.uniform(0.02, 0.6)
    return {
        "company": str(rng.choice(_COMPANIES)),
        "client": str(rng.choice(_COMPANIES)),
        "metric": metric,
        "Metric": metric.capitalize(),
        "be": be,
        "amount": f"{amount:.1f}",
        "lower": f"{amount / (1 + change):.1f}",
        "higher": f"{amount / (1 - change):.1f}",
        "pct": f"{100 * change:.1f} %",
        "period": str(rng.choice(_PERIODS)),
        "city": str(rng.choice(_CITIES)),
        "jobs": str(int(rng.integers(20, 900))),
        "staff": str(int(rng.integers(300, 9000))),
        "day": str(int(rng.integers(1, 29))),
        "month": str(rng.choice(["March", "May", "August", "October"])),
    }


def _csv_text(header: list[str], rows: list[tuple[str, ...]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()
