"""``embed_source``: what a pipeline's validation embeds for embedding drift. The defect
predictor embeds a seeded sample of a CSV's or a folder's images with its backbone; a model
without a separate backbone is refused by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from abyssal.core.errors import AbyssalError
from abyssal.solutions.defect.predict import DefectPredictor

SPEC = {"classes": ["ok", "scratch"], "image_size": 16, "channels": 1}


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Flatten(), nn.Linear(256, 5))
        self.classifier = nn.Linear(5, 2)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return self.classifier(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def images(folder: Path, n: int) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = ["path,label"]
    for k in range(n):
        pixels = rng.integers(0, 255, (16, 16), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{k}.png")
        rows.append(f"{k}.png,{'ok' if k % 2 else 'scratch'}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_the_defect_predictor_embeds_a_seeded_sample_of_a_csv_or_a_folder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    folder = images(tmp_path / "imgs", 7)
    predictor = DefectPredictor(Net().eval(), SPEC, "defect:1", batch_size=3)
    every = predictor.embed_source(folder / "labels.csv", limit=10)
    assert every.shape == (7, 5) and np.isfinite(every).all()
    some = predictor.embed_source(folder / "labels.csv", limit=4, seed=1)
    assert some.shape == (4, 5)
    assert np.array_equal(some, predictor.embed_source(folder / "labels.csv", limit=4, seed=1))
    assert all(any(np.allclose(row, other) for other in every) for row in some)
    assert predictor.embed_source(folder, limit=10).shape == (7, 5)


def test_a_model_without_a_backbone_cannot_embed(tmp_path: Path) -> None:
    folder = images(tmp_path / "imgs", 2)
    plain = nn.Sequential(nn.Flatten(), nn.Linear(256, 2))
    with pytest.raises(AbyssalError, match="no separate backbone"):
        DefectPredictor(plain, SPEC, "defect:2").embed_source(folder / "labels.csv")
