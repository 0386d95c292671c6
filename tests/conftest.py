"""Shared fixtures: an isolated ABYSSAL_HOME for every test, small synthetic data, dataset paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


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
