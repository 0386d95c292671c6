"""Shared fixtures: an isolated ABYSSAL_HOME for every test, small synthetic data, dataset paths."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
TABULAR_CONFIG = ROOT / "configs" / "tabular" / "quickstart.yaml"


@pytest.fixture(autouse=True)
def abyssal_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own store and runs folder."""
    home = tmp_path / "abyssal-home"
    monkeypatch.setenv("ABYSSAL_HOME", str(home))
    return home


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    # tiny tensors: on a 2-core machine, extra intra-op threads only add contention
    torch.set_num_threads(1)


def dataset(name: str) -> Path:
    """Path of a real dataset, or skip the test when it is not there."""
    path = DATASETS / name
    if not path.is_dir():
        pytest.skip(f"dataset {name} not found at {path}")
    return path


@pytest.fixture(scope="session")
def tabular_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A registered tabular model: (its home, the folder of its sample data)."""
    from abyssal.solutions.tabular.config import TabularSampleConfig
    from abyssal.solutions.tabular.sample import generate_sample
    from abyssal.train.api import train

    root = tmp_path_factory.mktemp("tabular")
    generate_sample(TabularSampleConfig(), root / "data")
    overrides = [f"data.path={root / 'data' / 'train.csv'}", "train.progress=false"]
    assert train("tabular", TABULAR_CONFIG, [*overrides, "train.epochs=2"], home=root / "home")
    return root / "home", root / "data"


@pytest.fixture(scope="session")
def fraud_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small fraud model trained on generated transactions: (its home, the sample folder)."""
    from abyssal.cli.main import main

    root = tmp_path_factory.mktemp("fraud")
    sample = root / "sample"
    assert main(["generate", "fraud", "--out", str(sample), "users=120", "rings=2", "days=8"]) == 0
    home = root / "home"
    mp = pytest.MonkeyPatch()
    mp.setenv("ABYSSAL_HOME", str(home))
    try:
        train = [
            "train",
            "fraud",
            "data.source=transactions",
            f"data.path={sample}/transactions.csv",
        ]
        quick = ["train.epochs=1", "train.progress=false", "model.hidden=16", "model.heads=2"]
        assert main([*train, *quick, "baselines=false"]) == 0
    finally:
        mp.undo()
    return home, sample


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on ``sys.path`` for fake plugin packages (:mod:`tests.plugin_fakes`) and their
    ``acme_*`` modules, which are forgotten afterwards."""
    import sys

    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    yield root
    for name in [m for m in sys.modules if m.startswith("acme_")]:
        del sys.modules[name]
