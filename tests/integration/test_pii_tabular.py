"""The tabular solution and personal data (``data.pii``): by default a text feature's e-mail
addresses and a column named like a name are masked before the encoders see them, so nothing
under the store or the run holds them and a request is masked the same way; ``refuse`` names the
columns and rows; ``keep`` leaves them (and the search finds them, so it can fail)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from abyssal.core.errors import DataError
from abyssal.core.home import using_home
from abyssal.solutions.loading import load_model
from abyssal.train.api import train

QUICKSTART = Path(__file__).resolve().parents[2] / "configs" / "tabular" / "quickstart.yaml"
FAST = ["train.epochs=2", "train.progress=false", "model.hidden=16", "baselines=false"]
DOMAINS = ["clinic-north.example.org", "clinic-south.example.org"]


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from abyssal.cli.main import main

    root = tmp_path_factory.mktemp("pii-tabular")
    assert main(["generate", "tabular", "--out", str(root), "seed=0"]) == 0
    frame = pd.read_csv(root / "train.csv")
    frame["referrer"] = [f"dr{k % 7}@{DOMAINS[k % 2]}" for k in range(len(frame))]
    frame["patient_name"] = [f"Person{k % 5}" for k in range(len(frame))]
    frame.to_csv(root / "pii.csv", index=False)
    return root / "pii.csv"


def held_anywhere(folder: Path, needles: list[str]) -> list[str]:
    found = []
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path.name}: {n}" for n in needles if n.encode() in data]
    return found


def test_masked_by_default_and_refused_or_kept_on_request(table: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    out = train("tabular", QUICKSTART, [f"data.path={table}", *FAST], home=home)
    needles = [*DOMAINS, "Person3"]
    assert held_anywhere(home, needles) == []
    with using_home(home):
        loaded = load_model(out.version.ref)
    predictor = loaded.solution.predictor(loaded)
    row = pd.read_csv(table).iloc[0].to_dict()
    answer = predictor.predict([predictor.parse(row)])[0]
    assert set(answer) >= {"prediction", "probability"}
    assert predictor.pii == "mask"

    with pytest.raises(DataError, match=r"personal data in referrer \(EMAIL\)") as refused:
        train("tabular", QUICKSTART, [f"data.path={table}", "data.pii=refuse", *FAST],
              home=tmp_path / "refused")  # fmt: skip
    assert "patient_name (NAME)" in str(refused.value) and DOMAINS[0] not in str(refused.value)

    kept = tmp_path / "kept"
    train("tabular", QUICKSTART, [f"data.path={table}", "data.pii=keep", *FAST], home=kept)
    assert held_anywhere(kept, needles)  # the search finds what a keep run stores
