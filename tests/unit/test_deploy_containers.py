"""The docker build context of a deployment: Dockerfiles that lint clean and follow the image
rules, an exact lock, the project source, and a store that resolves what the manifests serve."""

from __future__ import annotations

import importlib.metadata as metadata
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

import abyssal
from abyssal.core.errors import ConfigError, StoreError
from abyssal.core.store import ModelStore
from abyssal.deploy.containers import CUDA_IMAGES, BuildContext, build_context, pin_requirements
from abyssal.deploy.spec import DeploymentConfig, load_deployment

ROOT = Path(__file__).resolve().parents[2]
TABULAR = ROOT / "deployments" / "tabular.yaml"


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    """A tiny tabular model: version 1 is production, version 2 the newest."""
    store = ModelStore(tmp_path / "home")
    meta = {"solution": "tabular", "config": {"model": {"hidden": 4}}, "metrics": {"auc": 0.7}}
    store.register("tabular", {"w": torch.ones(2, 2)}, **meta)
    store.register("tabular", {"w": torch.zeros(2, 2)}, **meta)
    store.set_alias("tabular", "production", 1)
    return store


def _config(tmp_path: Path) -> DeploymentConfig:
    """tabular.yaml serving tabular:production on the edge and a GPU private tier."""
    data = yaml.safe_load(TABULAR.read_text())
    data["tiers"][0]["models"] = ["tabular:production"]
    data["tiers"][1]["device"] = "cuda"
    path = tmp_path / "tabular.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_deployment(path)


@pytest.fixture
def ctx(tmp_path: Path, store: ModelStore) -> BuildContext:
    return build_context(_config(tmp_path), tmp_path / "ctx", store=store)


def _stages(text: str) -> list[list[str]]:
    """Instructions (continuation lines joined, comments dropped) per FROM."""
    joined = re.sub(r"\\\n\s*", " ", text)
    lines = [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.startswith("#")]
    stages: list[list[str]] = []
    for line in lines:
        if line.startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def test_the_context_holds_what_the_images_copy(ctx: BuildContext) -> None:
    names = sorted(p.name for p in ctx.root.iterdir())
    assert names == [
        ".dockerignore", "Dockerfile.cpu", "Dockerfile.cuda", "README.md", "k8s",
        "pyproject.toml", "requirements.lock", "src", "store",
    ]  # fmt: skip
    package = ctx.root / "src" / "abyssal"
    assert (package / "__init__.py").read_text() == Path(abyssal.__file__).read_text()
    assert (package / "deploy" / "templates" / "Dockerfile.cpu").is_file()
    assert not list(package.rglob("__pycache__"))
    assert "[project]" in (ctx.root / "pyproject.toml").read_text()
    assert [p.name for p in ctx.manifests] == [
        "tier-edge.yaml", "tier-private.yaml", "tier-public.yaml", "router.yaml"
    ]  # fmt: skip
    assert sorted(p.name for p in ctx.root.parent.iterdir() if p.name.endswith(".tmp")) == []


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint is not installed")
@pytest.mark.parametrize("flavour", ["cpu", "cuda"])
def test_the_dockerfiles_lint_clean(ctx: BuildContext, flavour: str, tmp_path: Path) -> None:
    lint = tmp_path / "lint"  # no .hadolint.yaml around: the default rules and threshold
    lint.mkdir()
    done = subprocess.run(
        ["hadolint", "--no-color", str(ctx.dockerfiles[flavour])],
        cwd=lint,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


@pytest.mark.parametrize("flavour", ["cpu", "cuda"])
def test_the_dockerfiles_follow_the_image_rules(ctx: BuildContext, flavour: str) -> None:
    text = ctx.dockerfiles[flavour].read_text()
    stages = _stages(text)
    assert len(stages) >= 2  # multi-stage
    for stage in stages:
        image = stage[0].split()[1]
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image), image  # a tag, no digest-less name
        assert not image.endswith(":latest")
        assert re.search(r":\d+\.\d+\.\d+", image), f"{image} is not an exact version"
    runtime = stages[-1]
    users = [line.split()[1] for line in runtime if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    assert re.fullmatch(r"\d+:\d+", users[-1])  # numeric: runAsNonRoot can check it
    health = [line for line in runtime if line.startswith("HEALTHCHECK ")]
    assert health and "/healthz" in health[0] and "urllib" in health[0]
    instructions = " ".join(line for stage in stages for line in stage)
    assert "curl" not in instructions and "apt-get" not in instructions
    assert "EXPOSE 8000" in runtime
    assert any("ABYSSAL_HOME=/srv/abyssal" in line for line in runtime if line.startswith("ENV "))
    assert "COPY store/ /srv/abyssal/" in runtime  # no --chown: root owns it, the user reads it
    assert 'ENTRYPOINT ["abyssal", "serve"]' in runtime
    cmd = json.loads(next(line for line in runtime if line.startswith("CMD "))[4:])
    assert cmd[-6:] == ["--host", "0.0.0.0", "--port", "8000", "--device", flavour]
    torch_version = metadata.version("torch").split("+")[0]
    assert f"torch=={torch_version}" in text
    index = "cpu" if flavour == "cpu" else "cu" + ctx.cuda.replace(".", "")
    assert f"--index-url https://download.pytorch.org/whl/{index} " in text
    if flavour == "cuda":
        assert stages[-1][0] == f"FROM {CUDA_IMAGES[ctx.cuda]} AS runtime"
        assert re.search(r"nvidia/cuda:[\d.]+-cudnn-runtime-ubuntu[\d.]+", stages[-1][0])
        assert cmd[:-6] == ["tabular:2"]  # the GPU tier's models
    else:
        assert cmd[:-6] == ["tabular:production", "tabular:2"]


def test_the_lock_pins_every_runtime_package_exactly(ctx: BuildContext) -> None:
    lines = [
        ln for ln in (ctx.root / "requirements.lock").read_text().splitlines() if ln[:1] != "#"
    ]
    assert lines == sorted(lines) and lines
    pins = dict(line.split("==") for line in lines)
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!-]+", ln) for ln in lines)
    needs = ("fastapi", "uvicorn", "scikit-learn", "numpy", "safetensors", "filelock", "httpx")
    for needed in needs:
        assert needed in {n.lower() for n in pins}, needed
    assert pins["fastapi"] == metadata.version("fastapi")
    assert not {"torch", "torchvision", "abyssal"} & set(pins)
    assert not [n for n in pins if n.startswith("nvidia-") or n == "triton"]
    assert ctx.pins.torch == {"torch": metadata.version("torch").split("+")[0]}  # no vision


def test_the_exported_store_resolves_what_the_manifests_serve(
    ctx: BuildContext, store: ModelStore
) -> None:
    assert ctx.refs == {"tabular:production": "tabular:production", "tabular": "tabular:2"}
    image_store = ModelStore(ctx.root / "store")
    served = []
    for path in ctx.manifests:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc["kind"] == "Deployment" and doc["metadata"]["name"].endswith("-router"):
                continue
            if doc["kind"] == "Deployment":
                args = doc["spec"]["template"]["spec"]["containers"][0]["args"]
                served += args[1 : args.index("--host")]
    assert sorted(set(served)) == ["tabular:2", "tabular:production"]
    sources = {there: here for here, there in ctx.refs.items()}
    for ref in served:
        mv = image_store.resolve(ref)
        assert mv.weights_sha256 == store.resolve(sources[ref]).weights_sha256
    assert [mv.ref for mv in image_store.list_versions()] == ["tabular:1", "tabular:2"]
    assert image_store.aliases("tabular") == {"production": 1}


def test_a_non_empty_out_is_refused(tmp_path: Path, store: ModelStore) -> None:
    out = tmp_path / "ctx"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="is not an empty folder"):
        build_context(_config(tmp_path), out, store=store)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_a_failure_leaves_no_context(tmp_path: Path, store: ModelStore) -> None:
    cfg = _config(tmp_path)
    cfg.tiers[0].models = ["tabular:staging"]
    with pytest.raises(StoreError, match="staging"):
        build_context(cfg, tmp_path / "ctx", store=store)
    assert not (tmp_path / "ctx").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_the_cuda_release_can_be_chosen(tmp_path: Path, store: ModelStore) -> None:
    ctx = build_context(_config(tmp_path), tmp_path / "ctx", store=store, cuda="12.8")
    text = ctx.dockerfiles["cuda"].read_text()
    assert "FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS runtime" in text
    assert "https://download.pytorch.org/whl/cu128 " in text
    with pytest.raises(ConfigError, match=r"no CUDA base image for CUDA '10.2'; choose one of"):
        build_context(_config(tmp_path), tmp_path / "other", store=store, cuda="10.2")


def test_a_package_that_is_not_installed_is_named() -> None:
    with pytest.raises(ConfigError, match="need surely-not-installed-xyz, not installed here"):
        pin_requirements(["tabular"], packages=["surely-not-installed-xyz"])
    pins = pin_requirements(["defect"])
    assert set(pins.torch) == {"torch", "torchvision"}
    assert "pillow" in {line.split("==")[0].lower() for line in pins.lock}
