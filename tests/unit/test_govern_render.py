"""The audit's report as a person reads it: the HTML page and a PDF whose pages come back as
PNG images with readable text (read back with pdfium), for a record with every section."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from abyssal.govern.audit import AuditResult, Check
from abyssal.govern.render import DPI, PAGE_INCHES, write_html, write_pdf

pytest.importorskip("matplotlib")
pdfium = pytest.importorskip("pypdfium2")


def record(tmp_path: Path) -> AuditResult:
    image = tmp_path / "cam.png"
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) % 255).astype(np.uint8)).save(image)
    card = {
        "model": {"solution": "fraud", "created": "2026-11-29T10:00:00", "run": "r1",
                  "aliases": ["production"], "data": "demo/transactions.csv",
                  "data_fingerprint": "ab12", "lineage": ["fraud:2", "fraud:1"],
                  "training": {"epochs": 60, "lr": 0.003}},
        "intended_use": "flag accounts for review by an analyst",
        "out_of_scope": "blocking accounts without review",
        "metrics": [{"metric": "test_auprc", "value": 0.65, "low": 0.43, "high": 0.83}],
        "fairness": {
            "attribute": "segment",
            "report": {
                "groups": [
                    {"group": "A", "count": 300, "recall": {"value": 0.7, "low": 0.5, "high": 0.9},
                     "false_positive_rate": 0.01},
                    {"group": "B", "count": 120, "recall": {"value": 0.6, "low": 0.3, "high": 0.8},
                     "false_positive_rate": 0.09},
                ],
                "equalized_odds_difference": {"value": 0.1, "low": 0.02, "high": 0.3},
                "demographic_parity_difference": 0.05,
            },
            "mitigation": {"constraint": "equalized_odds", "thresholds": {"A": 0.4, "B": 0.7}},
        },
        "explanations": {
            "available": True, "method": "integrated gradients (Captum)",
            "items": [{"item": "U00001", "prediction": 0.91, "label": 1,
                       "scores": {"amount": 0.4, "night": -0.1}, "image": str(image), "note": ""}],
            "global_importance": {"amount": 0.12, "degree": 0.05, "night": 0.01},
            "global_metric": "test_auprc", "extras": ["ring 1: 7 accounts share device D1"],
        },
        "privacy": {"dp": {"epsilon": 3.2, "delta": 1e-5}, "masking": "mask",
                    "pii": {"table": "demo/transactions.csv",
                            "columns": [{"column": "email", "kinds": ["EMAIL"], "by_name": "EMAIL",
                                             "rows": 2, "examples": [2, 5]}]}},
        "audit": {"time": "2026-11-29T11:00:00+00:00"},
    }  # fmt: skip
    checks = [
        Check("metric test_auprc", True, "0.65 >= 0.3"),
        Check("fairness: equalized odds difference", False, "0.100 > 0.05 across segment"),
    ]
    return AuditResult("fraud:2", "bank", False, checks, card, tmp_path)


def test_the_html_page_holds_every_section_and_the_verdict(tmp_path: Path) -> None:
    page = write_html(record(tmp_path), tmp_path / "audit.html").read_text()
    for text in (
        "FAILED",
        "equalized odds difference",
        "Intended use",
        "test_auprc",
        "segment",
        "integrated gradients",
        "PII scan",
        "epsilon 3.2",
        "data:image/png;base64",
        "fraud:2 &lt;- fraud:1",
    ):
        assert text in page, text


def test_the_pdf_pages_render_to_readable_png_pages(tmp_path: Path) -> None:
    written = write_pdf(record(tmp_path), tmp_path / "audit.pdf", pages=tmp_path / "pages")
    pdf, pngs = written[0], written[1:]
    document = pdfium.PdfDocument(str(pdf))
    assert len(document) == len(pngs) >= 1
    text = " ".join(document[k].get_textpage().get_text_range() for k in range(len(document)))
    for phrase in (
        "Model card and audit: fraud:2",
        "FAILED",
        "Fairness",
        "Explanations",
        "Privacy",
        "EMAIL",
    ):
        assert phrase in text, phrase
    for png in pngs:
        pixels = np.asarray(Image.open(png).convert("L"), dtype=float)
        assert pixels.shape == (PAGE_INCHES[1] * DPI, PAGE_INCHES[0] * DPI)
        assert (pixels < 128).mean() > 0.002  # ink on the page, not a blank
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically, nothing left over
