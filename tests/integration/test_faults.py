"""The CLI under faults: mistakes refused before a run exists, a store that cannot be written
still read (models list, show, evaluate, predict), stored data paths that hold from another
directory and name a moved file, output piped into a reader that stops, damaged run records."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from abyssal.cli.main import main
from abyssal.core import store_schema
from abyssal.core.runs import list_runs
from abyssal.core.store import ModelStore
from abyssal.core.store_schema import StoreDatabase

TINY = [
    "data.source=breast_cancer",
    "train.epochs=2",
    "train.progress=false",
    "model.hidden=8",
    "baselines=false",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A home with tabular:1 trained on ``train.csv`` given as a path relative to its folder."""
    root = tmp_path_factory.mktemp("faults")
    home, demo = root / "home", root / "demo"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ABYSSAL_HOME", str(home))
        assert main(["generate", "tabular", "--out", str(demo), "seed=0"]) == 0
        mp.chdir(demo)
        args = ["data.source=file", "data.path=train.csv", "data.target=diagnosis"]
        assert main(["train", "tabular", *args, "data.ignore=[id]", *TINY[1:]]) == 0
    return home, demo


def _own_copy(trained: tuple[Path, Path], tmp_path: Path, monkeypatch) -> Path:
    home = tmp_path / "home-copy"
    shutil.copytree(trained[0], home)
    monkeypatch.setenv("ABYSSAL_HOME", str(home))
    return home


def _nothing_created(capsys) -> None:
    assert list_runs() == [] and ModelStore().names() == []
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--alias", "1bad"], "bad alias '1bad'"),
        (["--alias", "latest"], "bad alias 'latest'"),
        (["--name", "bad name!"], "bad model name 'bad name!'"),
    ],
)
def test_bad_names_are_refused_before_a_run_exists(extra, message, capsys) -> None:
    assert main(["train", "tabular", *TINY, *extra]) == 1
    assert message in capsys.readouterr().err
    _nothing_created(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_device_this_machine_lacks_is_refused_before_a_run_exists(capsys) -> None:
    assert main(["train", "tabular", *TINY, "train.device=cuda"]) == 1
    assert "device 'cuda' was requested but CUDA is not available" in capsys.readouterr().err
    _nothing_created(capsys)


def test_a_damaged_store_is_refused_before_a_run_exists(abyssal_home, capsys) -> None:
    abyssal_home.mkdir()
    (abyssal_home / "store.db").write_bytes(b"not sqlite at all " * 500)
    assert main(["train", "tabular", *TINY]) == 1
    assert "store.db': file is not a database" in capsys.readouterr().err
    assert list_runs() == []


def test_a_home_that_is_a_file_is_named(abyssal_home, capsys) -> None:
    abyssal_home.parent.mkdir(parents=True, exist_ok=True)
    abyssal_home.write_text("not a folder")
    for args in (["train", "tabular", *TINY], ["models", "list"]):
        assert main(args) == 1
        err = capsys.readouterr().err
        assert f"'{abyssal_home}' is a file, not a folder" in err and "Traceback" not in err


def test_stored_paths_are_absolute_and_a_moved_file_is_named(
    trained, tmp_path, monkeypatch, capsys
) -> None:
    home = _own_copy(trained, tmp_path, monkeypatch)
    demo = tmp_path / "demo"
    shutil.copytree(trained[1], demo)
    mv = ModelStore(home).resolve("tabular:1")
    stored = mv.config["solution_config"]["data"]["path"]
    assert stored == str(trained[1] / "train.csv")  # typed as train.csv in the demo folder
    run = list_runs()[0]
    assert f"path: {stored}" in run.config_path.read_text()
    monkeypatch.chdir(tmp_path)  # another directory: the stored absolute path still holds
    assert main(["evaluate", "tabular:1", "--json"]) == 0
    capsys.readouterr()
    shutil.move(trained[1] / "train.csv", tmp_path / "moved.csv")
    try:
        assert main(["evaluate", "tabular:1"]) == 1
        err = capsys.readouterr().err
        typed = f"typed as train.csv (in {trained[1]})"
        assert (
            f"data.path: {stored} ({typed}) was not found (the version was trained on it; pass "
            "data.path=NEW to evaluate on another copy)"
        ) in err
        assert mv.lineage["paths_as_typed"] == {"data.path": f"train.csv (in {trained[1]})"}
        assert main(["evaluate", "tabular:1", "data.path=moved.csv"]) == 0
    finally:
        shutil.move(tmp_path / "moved.csv", trained[1] / "train.csv")


def _listing(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if not p.name.startswith("store.db-")  # SQLite's WAL files, never the data
    }


def test_a_store_this_process_cannot_write_is_listed_shown_evaluated_and_predicted(
    trained, tmp_path, monkeypatch, capsys
) -> None:
    home = _own_copy(trained, tmp_path, monkeypatch)
    before = _listing(home)

    def refuse(self: StoreDatabase) -> None:
        raise AssertionError("a read opened a write transaction")

    monkeypatch.setattr(StoreDatabase, "writing", refuse)
    monkeypatch.setattr(store_schema, "can_write", lambda db_path: False)
    new_rows = trained[1] / "new_rows.csv"
    for args in (
        ["models", "list"],
        ["models", "show", "tabular:1"],
        ["evaluate", "tabular:1"],
        ["predict", "tabular", "--input", str(new_rows)],
        ["runs"],
    ):
        assert main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "tabular:1" in out and "predicted 57 rows" in out
    assert _listing(home) == before


def test_train_on_a_store_this_process_may_only_read_is_refused_before_a_run(
    trained, tmp_path, monkeypatch, capsys
) -> None:
    _own_copy(trained, tmp_path, monkeypatch)
    runs = [r.id for r in list_runs()]
    monkeypatch.setattr(store_schema.os, "access", lambda path, mode: mode != os.W_OK)
    assert main(["train", "tabular", *TINY]) == 1
    assert "cannot be written here (permission denied)" in capsys.readouterr().err
    assert [r.id for r in list_runs()] == runs
    assert [mv.ref for mv in ModelStore().list_versions()] == ["tabular:1"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_a_read_only_home_really_read_only(trained, tmp_path, monkeypatch, capsys) -> None:
    home = _own_copy(trained, tmp_path, monkeypatch)
    paths = [home, *home.rglob("*")]
    for path in paths:
        path.chmod(stat.S_IMODE(path.stat().st_mode) & ~0o222)
    try:
        new_rows = trained[1] / "new_rows.csv"
        for args in (
            ["models", "list"],
            ["models", "show", "tabular:1"],
            ["evaluate", "tabular:1"],
            ["predict", "tabular", "--input", str(new_rows)],
        ):
            assert main(args) == 0, capsys.readouterr().err
        assert main(["train", "tabular", *TINY]) == 1
        assert "cannot be written here" in capsys.readouterr().err
    finally:
        for path in paths:
            path.chmod(stat.S_IMODE(path.stat().st_mode) | 0o200)


def test_output_piped_into_a_reader_that_stops_ends_quietly(trained) -> None:
    env = {**os.environ, "ABYSSAL_HOME": str(trained[0])}
    for args in (["models", "list"], ["models", "show", "tabular:1"], ["runs"]):
        proc = subprocess.Popen(
            [sys.executable, "-m", "abyssal", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        proc.stdout.close()  # like `| head -0`: gone before the first line is written
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == 0, err
        assert err == ""


def test_a_damaged_run_is_listed_and_showing_it_says_what_is_wrong(
    trained, tmp_path, monkeypatch, capsys
) -> None:
    home = _own_copy(trained, tmp_path, monkeypatch)
    good = list_runs()[0].id
    bad = home / "runs" / "20990101-000000-tabular-dead"
    bad.mkdir()
    (bad / "run.json").write_text('{"id": "20990101-000000-tabular-dead", "st')
    assert main(["runs"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows[good][2] == "completed" and rows[bad.name][2] == "damaged"
    assert main(["runs", bad.name]) == 1
    err = capsys.readouterr().err
    assert f"run {bad.name} is damaged: {bad / 'run.json'} is not valid JSON" in err
