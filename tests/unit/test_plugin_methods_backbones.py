"""Plugins for ``abyssal optimize`` (group ``abyssal.optimizations``: a Variant that loads and
builds a method) and for the defect solution's backbones (group ``abyssal.backbones``: a factory
of a feature extractor), end to end on faked installed packages: built, measured, registered and
predicted; trained, evaluated, explained and predicted; and failures that name the package."""

from __future__ import annotations

import shutil
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from abyssal.cli.main import main
from abyssal.core.errors import ConfigError, RegistryError
from abyssal.core.store import ModelStore
from abyssal.nn.backbones import BACKBONES, make_backbone
from abyssal.nn.variants import VARIANTS
from abyssal.optimize import OptimizeError, method_rows, optimize_version, resolve_methods
from abyssal.solutions.defect.model import DefectNet
from tests.plugin_fakes import fake_package, rediscover

OPTIMIZATIONS, BACKBONE_GROUP = "abyssal.optimizations", "abyssal.backbones"
QUICK = {"batch_sizes": (1, 4), "reps": 5, "warmup": 1, "analyse_graph": False}
DEFECT_QUICKSTART = Path(__file__).resolve().parents[2] / "configs" / "defect" / "quickstart.yaml"

# weights rounded through bfloat16, stored as one safetensors file of bfloat16 tensors
QUANT = """
import torch
from safetensors.torch import load_file, save_file

from abyssal.core.artifacts import ArtifactSource
from abyssal.nn.variants import OptimizedModel, Variant
from abyssal.optimize.candidates import Candidate

FILE = "model.bf16.safetensors"


def load(model, recipe, files, ctx):
    state = load_file(str(files[recipe["file"]]))
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    return OptimizedModel(model, model)


def build(method, ctx):
    state = ctx.fresh_model().state_dict()
    tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in state.items()
               if v.is_floating_point()}
    path = ctx.workdir / f"{method.name}.safetensors"
    save_file(tensors, str(path))
    recipe = {**method.recipe, "file": FILE}
    module = ctx.load(method.variant, recipe, {FILE: path})
    artifacts = [ArtifactSource.file(FILE, "quantized", path)]
    return Candidate(method.name, module, method.variant, recipe, artifacts, path.stat().st_size)


def broken_build(method, ctx):
    raise RuntimeError("no licence for this CPU")


BF16_WEIGHTS = Variant("bf16-weights-cpu", ("cpu",), "weights rounded through bfloat16", load,
                       build=build, recipe={"rounding": "bfloat16"})
BROKEN = Variant("broken-quant", ("cpu",), "always fails", load, build=broken_build)
"""

VISION = """
from torch import nn


class TinyCNN(nn.Sequential):
    def __init__(self, channels):
        super().__init__(nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


def tiny_cnn(channels):
    return TinyCNN(channels), 16


class Pooled(nn.Module):  # one child that pools inside: Grad-CAM needs its cam_layer()
    def __init__(self, channels, named):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.named = named

    def forward(self, x):
        return self.body(x)

    def cam_layer(self):
        return self.body[1] if self.named else None


def pooled(channels):
    return Pooled(channels, named=True), 4


def not_a_pair(channels):
    return nn.Identity()
"""


@pytest.fixture
def quant(site: Path) -> Iterator[Path]:
    """acme-quant 1.0 adds bf16-weights-cpu and broken-quant; acme-gone 0.2 fails to import."""
    (site / "acme_quant.py").write_text(QUANT)
    (site / "acme_gone.py").write_text("raise ImportError('acme_gone needs libquant.so')\n")
    entries = {"bf16-weights-cpu": "acme_quant:BF16_WEIGHTS", "broken-quant": "acme_quant:BROKEN"}
    fake_package(site, "acme-quant", "1.0", entries, group=OPTIMIZATIONS)
    fake_package(site, "acme-gone", "0.2", {"gone": "acme_gone:X"}, group=OPTIMIZATIONS)
    with rediscover(VARIANTS):
        yield site


@pytest.fixture
def vision(site: Path) -> Iterator[Path]:
    (site / "acme_vision.py").write_text(textwrap.dedent(VISION))
    (site / "acme_blind.py").write_text("raise RuntimeError('acme_blind needs a GPU driver')\n")
    entries = {"tiny-cnn": "acme_vision:tiny_cnn", "pooled": "acme_vision:pooled",
               "not-a-pair": "acme_vision:not_a_pair"}  # fmt: skip
    fake_package(site, "acme-vision", "2.1", entries, group=BACKBONE_GROUP)
    fake_package(site, "acme-blind", "0.1", {"blind": "acme_blind:f"}, group=BACKBONE_GROUP)
    with rediscover(BACKBONES):
        yield site


@pytest.fixture
def tabular_home(
    tabular_model: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Path]:
    """A private copy of the session's registered tabular model (tabular:1) and its data."""
    home = tmp_path / "home"
    shutil.copytree(tabular_model[0], home)
    monkeypatch.setenv("ABYSSAL_HOME", str(home))
    return home, tabular_model[1]


# -- optimization methods -----------------------------------------------------------------------


def test_plugin_methods_are_resolved_listed_and_named_in_errors(quant: Path) -> None:
    assert "acme_quant" not in sys.modules
    with pytest.raises(OptimizeError, match=r"valid methods: compile, .*onnx.*"
                       r"bf16-weights-cpu \(plugin: acme-quant 1\.0\)"):  # fmt: skip
        resolve_methods(["fastest"], "cpu")
    assert "acme_quant" not in sys.modules  # listed without importing
    assert resolve_methods(["bf16-weights-cpu"], "cpu") == ["bf16-weights-cpu"]
    with pytest.raises(OptimizeError, match="applies to target cpu, not cuda"):
        resolve_methods(["bf16-weights-cpu"], "cuda")
    everything = resolve_methods(None, "cpu")
    assert {"onnx", "bf16-weights-cpu", "broken-quant", "gone"} <= set(everything)
    assert "bf16-weights-cpu" not in resolve_methods(None, "cuda")
    with pytest.raises(OptimizeError, match=r"'gone' from the plugin package acme-gone 0\.2.*"
                       r"libquant\.so"):  # fmt: skip
        resolve_methods(["gone"], "cpu")
    rows = {row[0]: row for row in method_rows()}
    assert rows["bf16-weights-cpu"][1:] == [
        "cpu",
        "weights rounded through bfloat16 (plugin: acme-quant 1.0)",
    ]
    assert rows["gone"][2].startswith("error: ") and "acme-gone 0.2" in rows["gone"][2]
    assert rows["int8"][1] == "group"


def test_a_plugin_method_is_built_measured_registered_and_predicts(
    quant: Path, tabular_home: tuple[Path, Path], tmp_path: Path, capsys: Any
) -> None:
    from abyssal.solutions.loading import load_model

    _, data = tabular_home
    args = ["optimize", "tabular:1", "--methods", "bf16-weights-cpu", "--target", "cpu",
            "--min-gain", "-100", "--tolerance", "1",
            "--batch-sizes", "1,4", "--reps", "5"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "bf16-weights-cpu: weights rounded through bfloat16 (plugin: acme-quant 1.0)" in out
    assert "registered: bf16-weights-cpu -> tabular:2" in out
    child = ModelStore().resolve("tabular:2")
    opt = child.config["optimization"]
    assert child.lineage["method"] == opt["method"] == opt["variant"] == "bf16-weights-cpu"
    assert opt["recipe"] == {"rounding": "bfloat16", "file": "model.bf16.safetensors"}
    assert opt["plugin"] == {"package": "acme-quant", "version": "1.0"}
    assert [a.name for a in child.artifacts] == ["model.bf16.safetensors"]

    parent, loaded = load_model("tabular:1"), load_model("tabular:2")
    assert type(loaded.model).__name__ == "OptimizedModel"
    assert loaded.model.method == "bf16-weights-cpu"
    for (name, p), (_, c) in zip(
        parent.model.state_dict().items(), loaded.model.state_dict().items(), strict=True
    ):
        if p.is_floating_point():  # the child runs the weights rounded through bfloat16
            assert torch.equal(c, p.to(torch.bfloat16).float()), name
    scores = tmp_path / "scores.csv"
    predict = ["predict", "tabular", "--model", "tabular:2", "--input", str(data / "new_rows.csv")]
    assert main([*predict, "--out", str(scores)]) == 0
    assert len(scores.read_text().splitlines()) > 10


def test_a_plugin_method_that_fails_is_a_failed_candidate_naming_its_package(
    quant: Path, tabular_home: tuple[Path, Path]
) -> None:
    report = optimize_version("tabular:1", "cpu", ["broken-quant", "int8-weight"],
                              min_gain=-100.0, tolerance=1.0, **QUICK)  # fmt: skip
    by_method = {r.method: r for r in report.results}
    failed = by_method["broken-quant"]
    assert failed.status == "failed"
    assert "'broken-quant' from acme-quant 1.0" in failed.reason
    assert "no licence for this CPU" in failed.reason
    assert by_method["int8-weight"].status == "accepted"  # the others still run
    assert report.results[0].registered or report.results[1].registered


def test_a_plugin_that_fails_to_import_fails_its_candidate_naming_its_package(quant: Path) -> None:
    """In a default run (every method) such a plugin is tried; building it raises this, which
    the run reports as that candidate's failure."""
    from abyssal.optimize.candidates import BuildContext, build_candidate

    ctx = BuildContext(None, torch.device("cpu"), Path("."), None)  # type: ignore[arg-type]
    with pytest.raises(OptimizeError, match=r"acme-gone 0\.2 \('acme_gone:X'\) failed to load"):
        build_candidate("gone", ctx)


# -- backbones ---------------------------------------------------------------------------------


def test_backbones_list_builtins_and_plugins_without_importing_them(vision: Path) -> None:
    names = BACKBONES.names()
    assert {"resnet18", "resnet50", "efficientnet_b0", "tiny-cnn", "pooled", "blind"} <= set(names)
    assert "acme_vision" not in sys.modules
    assert BACKBONES.origin("tiny-cnn").package == "acme-vision"
    assert BACKBONES.origin("resnet18") is None
    net, features = make_backbone("tiny-cnn", 1)
    assert features == 16 and net(torch.rand(2, 1, 16, 16)).shape == (2, 16)
    assert make_backbone("resnet18", 1)[1] == 512  # built-ins unchanged
    with pytest.raises(ConfigError, match=r"unknown model\.backbone 'resnet51'; torchvision has"
                       r".*plugins add: .*tiny-cnn"):  # fmt: skip
        make_backbone("resnet51", 3)
    with pytest.raises(RegistryError, match=r"'blind' from the plugin package acme-blind 0\.1.*"
                       r"GPU driver"):  # fmt: skip
        make_backbone("blind", 1)
    with pytest.raises(ConfigError, match=r"not-a-pair \(plugin package acme-vision 2\.1\): the "
                       r"factory must return"):  # fmt: skip
        make_backbone("not-a-pair", 1)


def test_grad_cam_reads_a_plugin_backbones_cam_layer_or_says_how_to_name_one(vision: Path) -> None:
    from abyssal.solutions.defect.evaluation import CamLayerError, gradcam_maps

    backbone, features = make_backbone("pooled", 1)
    net = DefectNet(backbone, features, 3, channels=1).eval()
    maps, classes = gradcam_maps(net, torch.rand(2, 1, 16, 16), 16)
    assert maps.shape == (2, 16, 16) and classes.shape == (2,)
    backbone.named = False  # the last child with a convolution pools: no feature map there
    backbone.cam_layer = None  # type: ignore[assignment]
    with pytest.raises(CamLayerError, match=r"cam_layer\(\) method"):
        gradcam_maps(net, torch.rand(2, 1, 16, 16), 16)


def test_a_plugin_backbone_trains_evaluates_explains_and_predicts_the_defect_solution(
    vision: Path, tmp_path: Path, capsys: Any
) -> None:
    parts = tmp_path / "parts"
    sample = ["images_per_class=5", "size=16", "new_images=3", "seed=0"]
    assert main(["generate", "defect", "--out", str(parts), *sample]) == 0
    train = ["train", "defect", "--config", str(DEFECT_QUICKSTART),
             f"data.path={parts / 'images'}", "data.image_size=16", "data.batch_size=8",
             "data.workers=0", "train.epochs=1", "train.progress=false",
             "baselines=false"]  # fmt: skip
    assert main([*train, "model.backbone=tiny-cnn"]) == 0
    out = capsys.readouterr().out
    assert "registered defect:1" in out and "heat in box" in out
    mv = ModelStore().resolve("defect:1")
    assert mv.config["solution_config"]["model"]["backbone"] == "tiny-cnn"
    assert "test_heat_in_box" in mv.metrics
    scores, heat = tmp_path / "scores.csv", tmp_path / "heat"
    predict = ["predict", "defect", "--images", str(parts / "new"), "--out", str(scores)]
    assert main([*predict, "--explain", str(heat)]) == 0
    assert len(scores.read_text().splitlines()) == 4 and len(list(heat.glob("*.png"))) == 3

    assert main([*train, "model.backbone=blind"]) == 1
    assert "acme-blind 0.1" in capsys.readouterr().err
    assert main([*train, "model.backbone=tiny-cnn", "model.pretrained=imagenet"]) == 1
    assert "for timm and plugin backbones pass a weights file" in capsys.readouterr().err
