"""The defect solution's data preparation and training tasks on tiny generated parts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from abyssal.contracts.task import Shard
from abyssal.core.errors import ConfigError
from abyssal.solutions import get_solution
from abyssal.solutions.defect.config import DefectConfig, DefectDataConfig
from abyssal.solutions.defect.data import prepare_defect_data
from abyssal.solutions.defect.sample import DefectSampleConfig, generate_sample
from abyssal.solutions.defect.task import ClassifyTask, SimCLRTask


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("parts")
    generate_sample(DefectSampleConfig(images_per_class=10, size=16, new_images=2), out)
    return out / "images"


def _cfg(parts: Path, **data) -> DefectConfig:
    base = dict(path=str(parts), image_size=16, batch_size=4, workers=0, val_frac=0.2)
    cfg = DefectConfig(data=DefectDataConfig(**{**base, **data, "test_frac": 0.2}))
    cfg.model.backbone = "resnet18"
    return cfg


def test_prepare_splits_every_class_and_writes_the_split(parts: Path) -> None:
    data = prepare_defect_data(_cfg(parts).data, progress=False)
    assert data.images.shape == (40, 1, 16, 16) and data.images.dtype == np.uint8
    assert data.classes == ["crack", "patch", "scratch", "spot"]
    for split, n in (("train", 6), ("val", 2), ("test", 2)):
        assert data.counts(split).tolist() == [n] * 4
    text = data.run_files()["split.csv"]
    assert text.startswith("path,label,split\n") and text.count("\n") == 41
    again = prepare_defect_data(_cfg(parts).data, progress=False)
    assert again.fingerprint == data.fingerprint
    other = prepare_defect_data(_cfg(parts, split_seed=1).data, progress=False)
    assert other.fingerprint != data.fingerprint


def test_few_shot_and_imbalance_change_only_the_training_split(parts: Path) -> None:
    whole = prepare_defect_data(_cfg(parts).data, progress=False)
    few = prepare_defect_data(_cfg(parts, shots=2).data, progress=False)
    assert few.counts("train").tolist() == [2, 2, 2, 2]
    assert np.array_equal(few.rows("test"), whole.rows("test"))
    cut = prepare_defect_data(_cfg(parts, minority="spot", minority_ratio=0.2).data, progress=False)
    assert cut.counts("train").tolist() == [6, 6, 6, 1]
    both = prepare_defect_data(
        _cfg(parts, shots=5, minority="spot", minority_ratio=0.2).data, progress=False
    )
    assert both.counts("train").tolist() == [5, 5, 5, 1]  # shots first, then the cut
    with pytest.raises(ConfigError, match=r"data\.minority 'rust' is not a class"):
        prepare_defect_data(_cfg(parts, minority="rust").data, progress=False)


def test_processes_get_equal_batch_counts_and_disjoint_images(parts: Path) -> None:
    cfg = _cfg(parts)
    data = prepare_defect_data(cfg.data, progress=False)
    task = get_solution("defect").task(cfg, data)
    assert isinstance(task, ClassifyTask)
    a, b = task.train_batches(3, Shard(0, 2)), task.train_batches(3, Shard(1, 2))
    assert len(a) == len(b) == 3
    rows = [r for batches in (a, b) for batch in batches for r in batch.rows.tolist()]
    assert sorted(rows) == data.rows("train").tolist()
    first, repeat = next(iter(a)), next(iter(task.train_batches(3, Shard(0, 2))))
    assert torch.equal(first.draws, repeat.draws) and torch.equal(first.images, repeat.images)
    assert first.images.dtype == torch.uint8 and first.draws.shape[1] == 1
    loss = task.training_loss(task.build_model(), first)
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_focal_loss_with_balanced_alpha_and_balanced_sampler(parts: Path) -> None:
    cfg = _cfg(parts, minority="spot", minority_ratio=0.2)
    cfg.loss.name, cfg.loss.alpha, cfg.loss.sampler = "focal", "balanced", "balanced"
    data = prepare_defect_data(cfg.data, progress=False)
    task = get_solution("defect").task(cfg, data)
    alpha = task.loss.alpha
    assert alpha[3] > alpha[0] and alpha.mean().item() == pytest.approx(1.0)
    drawn = [r for batch in task.train_batches(0, Shard()) for r in batch.rows.tolist()]
    assert (data.labels[drawn] == 3).sum() > 1  # the one minority image is drawn repeatedly


def test_simclr_task_has_two_views_and_scores_embeddings(parts: Path) -> None:
    cfg = _cfg(parts)
    cfg.objective = "simclr"
    data = prepare_defect_data(cfg.data, progress=False)
    task = get_solution("defect").task(cfg, data)
    assert isinstance(task, SimCLRTask)
    batch = next(iter(task.train_batches(0, Shard())))
    assert batch.draws.shape[1] == 2
    model = task.build_model()
    assert model.head[-1].out_features == cfg.model.projection
    assert torch.isfinite(task.training_loss(model, batch))
    out = task.validation_step(model.eval(), next(iter(task.val_batches(Shard()))))
    assert out["embedding"].shape[1] == 512
    assert 0 <= task.validation_metrics(out)["val_knn_accuracy"] <= 1


def test_a_pretrained_ref_is_read_from_the_home_train_was_given(
    parts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from abyssal.train.api import train

    monkeypatch.setenv("ABYSSAL_HOME", str(tmp_path / "elsewhere"))
    home = tmp_path / "home"
    base = [
        f"data.path={parts}",
        "data.image_size=16",
        "model.backbone=resnet18",
        "train.epochs=1",
        "train.progress=false",
        "data.workers=0",
        "heat_in_box=false",
    ]
    ssl = train("defect", overrides=[*base, "objective=simclr"], model_name="ssl", home=home)
    tuned = train("defect", overrides=[*base, f"model.pretrained={ssl.version.ref}"], home=home)
    assert tuned.version.ref == "defect:1" and "proto_test_accuracy" in tuned.metrics
    assert not (tmp_path / "elsewhere").exists()
