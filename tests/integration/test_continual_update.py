"""Continual updates (``abyssal pipeline update``) and the warm start under them
(``train.init_from``), on a real table (scikit-learn's breast-cancer data as a CSV): an update
that passes the gate moves ``production`` to a version warm-started from the old one; an update
the gate refuses leaves ``production`` where it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from abyssal.cli.main import main
from abyssal.core.errors import ConfigError
from abyssal.core.home import using_home
from abyssal.core.store import ModelStore
from abyssal.pipeline.spec import load_pipeline
from abyssal.pipeline.update import update_production
from abyssal.train.api import train

FAST = ["train.progress=false", "baselines=false", "train.epochs=6", "data.source=file",
        "data.target=target", "data.leakage_check=false"]  # fmt: skip


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from sklearn.datasets import load_breast_cancer

    folder = tmp_path_factory.mktemp("continual")
    frame = load_breast_cancer(as_frame=True).frame
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    frame.insert(0, "row_id", [f"r{i}" for i in range(len(frame))])
    old, new = frame.iloc[:380], frame.iloc[380:]
    old.to_csv(folder / "old.csv", index=False)
    new.to_csv(folder / "new.csv", index=False)
    return {"old": folder / "old.csv", "new": folder / "new.csv", "folder": folder}


def _pipeline(folder: Path, table: Path, rules: list[dict], name: str = "cancer") -> Path:
    spec = {
        "name": name,
        "solution": "tabular",
        "model": "cancer",
        "overrides": [f"data.path={table}", "data.ignore=[row_id]", *FAST],
        "validate": {"label": "target", "keys": ["row_id"], "drift": False},
        "gate": {"rules": rules},
        "perf": {"batch": 8, "reps": 2},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_warm_start_starts_from_the_version_and_records_it(tables: dict[str, Path]) -> None:
    home = tables["folder"] / "warm-home"
    base = [f"data.path={tables['old']}", "data.ignore=[row_id]", *FAST]
    first = train("tabular", None, base, home=home)
    assert first is not None
    # with a learning rate of ~0 the warm-started model is the version it started from
    still = train("tabular", None, [*base, f"train.init_from={first.version.ref}",
                                    "train.lr=1e-30", "train.weight_decay=0", "train.epochs=1"],
                  home=home)  # fmt: skip
    assert still is not None
    with using_home(home):
        store = ModelStore()
        a, b = store.load_weights(first.version.ref), store.load_weights(still.version.ref)
        assert still.version.lineage["parent"] == first.version.ref
        saved = yaml.safe_load(still.run.config_path.read_text())
        assert saved["train"]["init_from"] == first.version.ref  # pinned in the run's config
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_warm_start_from_another_architecture_is_refused_before_a_run(
    tables: dict[str, Path],
) -> None:
    home = tables["folder"] / "refused-home"
    base = [f"data.path={tables['old']}", "data.ignore=[row_id]", *FAST]
    first = train("tabular", None, base, home=home)
    assert first is not None
    runs = sorted((home / "runs").iterdir())
    with pytest.raises(ConfigError, match=r"init_from.*shape"):
        train("tabular", None, [*base, f"train.init_from={first.version.ref}",
                                "model.hidden=16"], home=home)  # fmt: skip
    with pytest.raises(ConfigError, match="init_from=cancer-none:3"):
        train("tabular", None, [*base, "train.init_from=cancer-none:3"], home=home)
    assert sorted((home / "runs").iterdir()) == runs  # nothing was started


def test_an_update_that_passes_moves_production_and_one_refused_does_not(
    tables: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tables["folder"]
    home = folder / "update-home"
    monkeypatch.setenv("ABYSSAL_HOME", str(home))
    easy = _pipeline(folder, tables["old"], [{"metric": "test_accuracy", "min": 0.5}])
    assert main(["pipeline", "run", str(easy)]) == 0
    store = ModelStore()
    assert store.resolve("cancer:production").ref == "cancer:1"

    assert main(["pipeline", "update", str(easy), "--new", str(tables["new"]), "--replay",
                 "0.5", "--set", "train.epochs=3"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "production: cancer:1 -> cancer:2" in out
    v2 = store.resolve("cancer:production")
    assert v2.ref == "cancer:2" and v2.lineage["parent"] == "cancer:1"
    record = json.loads(Path(out.split("record: ")[1].split()[0]).read_text())
    assert record["new_rows"] == 189 and record["replay_rows"] == 190  # half of 380 old rows

    strict = _pipeline(folder, tables["old"], [{"metric": "test_accuracy", "min": 1.01}])
    outcome = update_production(load_pipeline(strict), tables["new"], replay=0.25)
    assert outcome.status == "refused"
    assert outcome.production_before == outcome.production_after == "cancer:2"
    assert store.resolve("cancer:production").ref == "cancer:2"  # where it was
    assert outcome.candidate == "cancer:3"
    assert store.resolve("cancer:3").lineage["parent"] == "cancer:2"
    assert "production" not in store.aliases("cancer") or \
        store.aliases("cancer")["production"] == 2  # fmt: skip


def test_bad_updates_are_refused_with_the_reason(tables: dict[str, Path], tmp_path: Path) -> None:
    home = tmp_path / "home"
    rules = [{"metric": "test_accuracy", "min": 0.0}]
    cfg = load_pipeline(_pipeline(tmp_path, tables["old"], rules, name="fresh"))
    with pytest.raises(Exception, match="no 'production' version to update"):
        update_production(cfg, tables["new"], home=home)
    with pytest.raises(ConfigError, match="replay"):
        update_production(cfg, tables["new"], replay=1.5, home=home)


def test_an_update_can_take_its_labels_from_feedback(
    tables: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New rows without labels, labelled by the feedback store: rows with a confirmed label
    are trained on, rows still pending are left out."""
    import pandas as pd

    from abyssal.decide.feedback import add_feedback, log_predictions

    home = tmp_path / "home"
    monkeypatch.setenv("ABYSSAL_HOME", str(home))
    easy = _pipeline(tmp_path, tables["old"], [{"metric": "test_accuracy", "min": 0.0}])
    assert main(["pipeline", "run", str(easy)]) == 0
    new = pd.read_csv(tables["new"])
    unlabelled = tmp_path / "unlabelled.csv"
    new.drop(columns=["target"]).to_csv(unlabelled, index=False)
    log_predictions("cancer", [{"id": r, "version": "cancer:1", "event_time": 1_000}
                               for r in new["row_id"]])  # fmt: skip
    confirmed = new.iloc[:120]
    add_feedback("cancer", [{"id": r.row_id, "label": int(r.target), "timestamp": 2_000}
                            for r in confirmed.itertuples()], now=3_000)  # fmt: skip
    out = update_production(load_pipeline(easy), unlabelled, replay=0.1,
                            labels_from_feedback=True, window_s=10**12)  # fmt: skip
    assert out.status == "deployed" and out.new_rows == 120
    trained = pd.read_csv(out.table)
    got = trained.set_index("row_id").loc[confirmed["row_id"], "target"].to_numpy()
    assert (got == confirmed["target"].to_numpy()).all()
