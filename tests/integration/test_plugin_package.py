"""A plugin from ``abyssal new solution``, installed into a new virtual environment beside
abyssal, as a user installs it: its own generated tests and lint pass as generated, and in that
environment abyssal trains, evaluates, predicts and serves it over HTTP (a real ``abyssal serve``
process). A broken plugin and two packages claiming one name each give their message while the
rest of the command line keeps working.

The environment sees the packages of the Python running the tests (``--system-site-packages``:
abyssal, torch) and gets the plugins by ``pip install --no-deps --no-build-isolation -e``, so
nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from abyssal.cli.main import main
from abyssal.core.home import using_home
from abyssal.core.store import ModelStore

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


def make_venv(folder: Path) -> Path:
    """A virtual environment seeing this interpreter's packages; its python."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(folder)],
        check=True,
    )
    return folder / "bin" / "python"


def pip_install(python: Path, package: Path) -> None:
    """``pip install -e package`` into the environment of ``python``, offline."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-deps", "--no-build-isolation", "--no-index", "-e", str(package)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


def new_plugin(name: str, folder: Path) -> Path:
    assert main(["new", "solution", name, "--dir", str(folder)]) == 0
    return folder


def run(python: Path, *args: str, home: Path, ok: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "ABYSSAL_HOME": str(home)}
    env.pop("PYTHONPATH", None)  # the environment's own packages, as a user has them
    done = subprocess.run(
        [str(python), "-m", "abyssal", *args], capture_output=True, text=True, env=env,
        timeout=300,
    )  # fmt: skip
    if ok:
        assert done.returncode == 0, f"{args}: {done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A new environment with the generated ``claims`` plugin: (its python, the package)."""
    root = tmp_path_factory.mktemp("plugin")
    package = new_plugin("claims", root / "abyssal-claims")
    python = make_venv(root / "venv")
    pip_install(python, package)
    return python, package


def test_the_generated_package_is_complete_and_its_own_tests_pass(
    installed: tuple[Path, Path],
) -> None:
    python, package = installed
    files = sorted(str(p.relative_to(package)) for p in package.rglob("*") if p.is_file())
    assert {"pyproject.toml", "README.md", "configs/claims.yaml",
            "src/abyssal_claims/solution.py", "tests/test_claims.py"} <= set(files)  # fmt: skip
    assert '[project.entry-points."abyssal.solutions"]' in (package / "pyproject.toml").read_text()
    for lint in (["check", "."], ["format", "--check", "."]):
        done = subprocess.run([sys.executable, "-m", "ruff", *lint], cwd=package,
                              capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ABYSSAL_HOME")}
    done = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=package,
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:]
    assert "4 passed" in done.stdout


def test_train_evaluate_predict_and_serve_through_the_plugin(
    installed: tuple[Path, Path], tmp_path: Path
) -> None:
    python, package = installed
    home = tmp_path / "home"
    listed = run(python, "solutions", home=home).stdout
    assert "claims" in listed and "abyssal-claims 0.1.0" in listed
    assert "abyssal-claims" in run(python, "version", home=home).stdout
    run(python, "generate", "claims", "--out", str(tmp_path / "data"), home=home)
    trained = run(python, "train", "claims", "--config", str(package / "configs/claims.yaml"),
                  f"data.path={tmp_path / 'data/train.csv'}", "train.epochs=25",
                  "train.progress=false", home=home)  # fmt: skip
    assert "registered claims:1" in trained.stdout
    with using_home(home):
        version = ModelStore().resolve("claims:1")
    assert version.lineage["plugin"] == {"package": "abyssal-claims", "version": "0.1.0"}
    assert version.metrics["test_auroc"] > 0.85
    assert "AUROC" in run(python, "evaluate", "claims:1", home=home).stdout
    scores = tmp_path / "scores.csv"
    run(python, "predict", "claims", "--model", "claims:1", "--input",
        str(tmp_path / "data/new_rows.csv"), "--out", str(scores), home=home)  # fmt: skip
    header = scores.read_text().splitlines()[0].split(",")
    assert header == ["id", "label", "probability", "p_alert", "p_normal"]

    from abyssal.deploy.local import free_port

    port = free_port()
    env = {**os.environ, "ABYSSAL_HOME": str(home)}
    env.pop("PYTHONPATH", None)
    server = subprocess.Popen(
        [str(python), "-m", "abyssal", "serve", "claims", "--port", str(port), "--device", "cpu"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stdout.read() if server.stdout else ""
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, "the service did not become ready"
            time.sleep(0.5)
        body = {"instances": [
            {"id": "a", "reading_1": 2.5, "reading_2": 0.1, "reading_3": 0.0, "reading_4": 0.3},
            {"id": "b", "reading_1": 0.1, "reading_2": 0.1, "reading_3": 0.0, "reading_4": 0.3},
        ]}  # fmt: skip
        answer = post(f"{base}/v1/models/claims/predict", body)
        assert answer["model"] == "claims:1"
        assert [p["label"] for p in answer["predictions"]] == ["alert", "normal"]
        with pytest.raises(urllib.error.HTTPError) as refused:
            post(f"{base}/v1/models/claims/predict", {"reading_1": 1.0})
        assert refused.value.code == 422
        assert "reading_2" in refused.value.read().decode()
    finally:
        server.terminate()
        server.wait(timeout=30)


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_a_broken_plugin_and_a_name_claimed_twice_leave_the_rest_working(
    tmp_path: Path,
) -> None:
    python = make_venv(tmp_path / "venv")
    home = tmp_path / "home"
    good = new_plugin("claims", tmp_path / "abyssal-claims")
    broken = new_plugin("broken_one", tmp_path / "abyssal-broken-one")
    (broken / "src/abyssal_broken_one/solution.py").write_text(
        'raise ImportError("abyssal-broken-one needs acme-core >= 2")\n'
    )
    twin = new_plugin("twin", tmp_path / "abyssal-twin")
    project = twin / "pyproject.toml"  # the twin claims the name 'claims' too
    entry = '"abyssal_twin.solution:TwinSolution"'
    project.write_text(project.read_text().replace(f"twin = {entry}", f"claims = {entry}"))
    for package in (good, broken, twin):
        pip_install(python, package)

    listed = run(python, "solutions", home=home).stdout
    assert "broken_one" in listed and "abyssal-broken-one 0.1.0" in listed
    assert "solution 'claims' is claimed by abyssal-claims 0.1.0 and abyssal-twin 0.1.0" in listed
    checked = run(python, "solutions", "--check", home=home).stdout
    assert "error: solution 'broken_one' from the plugin package abyssal-broken-one" in checked
    assert "needs acme-core >= 2" in checked

    failed = run(python, "train", "broken_one", home=home, ok=False)
    assert failed.returncode == 1 and "abyssal-broken-one 0.1.0" in failed.stderr
    assert "Traceback" not in failed.stderr
    failed = run(python, "train", "claims", home=home, ok=False)
    assert failed.returncode == 1
    assert "abyssal-claims 0.1.0 and abyssal-twin 0.1.0" in failed.stderr

    # the rest of the command line keeps working
    version = run(python, "version", home=home).stdout
    assert "broken_one" in version and "abyssal-broken-one" in version
    assert "claimed by abyssal-claims 0.1.0 and abyssal-twin 0.1.0" in version
    assert "data.target" in run(python, "config", "tabular", home=home).stdout
    again = run(python, "new", "solution", "claims", "--dir", str(tmp_path / "again"),
                home=home, ok=False)  # fmt: skip
    assert again.returncode == 1 and "exists already" in again.stderr
    assert not (tmp_path / "again").exists()
