"""Two identical fraud trainings with several CPU threads give bit-identical weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from abyssal.core.store import ModelStore

ARGS = [
    "train",
    "fraud",
    "data.synthetic_users=400",
    "data.synthetic_rings=4",
    "train.epochs=6",
    "train.patience=0",
    "train.progress=false",
    "baselines=false",
]


def test_training_repeats_bit_for_bit_with_two_threads(tmp_path: Path) -> None:
    shas = []
    for i in range(2):
        home = tmp_path / f"home{i}"
        env = {**os.environ, "ABYSSAL_HOME": str(home), "OMP_NUM_THREADS": "2"}
        done = subprocess.run(
            [sys.executable, "-m", "abyssal", *ARGS],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        shas.append(ModelStore(home).resolve("fraud:1").weights_sha256)
    assert shas[0] == shas[1]
