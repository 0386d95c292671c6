"""Runtime variants of optimized versions (abyssal.nn.variants): the wrapper, the registry, torch
compile, torch INT8 (dynamic and weight-only) save/load, placement's checks, CUDA refusals."""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from abyssal.nn.variants import (
    VARIANTS,
    LoadContext,
    OptimizedModel,
    VariantError,
    WeightOnlyInt8Embedding,
    WeightOnlyInt8Linear,
    flatten_outputs,
    load_variant,
    quantize_per_channel,
    rebuild_outputs,
)
from abyssal.optimize.quantize import QuantizationError, dynamic_int8, weight_only_int8

CPU = LoadContext(torch.device("cpu"))


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(8, 16)
        self.head = nn.Linear(16, 3)
        self.threshold = 0.25

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.encoder(x)))


class TextModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.out = nn.Linear(8, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)
        return self.out(self.attn(h, h, h)[0].mean(1))


def _twin(model: nn.Module) -> nn.Module:
    """A freshly built model holding ``model``'s weights (what the loader hands a variant)."""
    fresh = type(model)()
    fresh.load_state_dict(model.state_dict())
    return fresh.eval()


def test_optimized_model_passes_attributes_through() -> None:
    base = Encoder().eval()
    fast = OptimizedModel(base, lambda x: x * 0, "compile", {"mode": "default"})
    assert fast.encoder.in_features == 8 and fast.threshold == 0.25
    assert fast.method == "compile" and fast.recipe == {"mode": "default"}
    assert list(fast.parameters()) == list(base.parameters())
    assert list(fast.state_dict()) == list(base.state_dict())
    assert torch.equal(fast(torch.ones(2)), torch.zeros(2))
    fast.train()
    assert base.training
    with pytest.raises(AttributeError, match="no_such"):
        _ = fast.no_such


def test_unknown_method_lists_the_valid_ones() -> None:
    with pytest.raises(VariantError, match="unknown optimization method 'tensorrt'") as err:
        load_variant(Encoder(), "tensorrt", {}, {}, CPU)
    for name in ("compile", "cudagraph", "onnx", "int8-dynamic", "int8-weight", "placement"):
        assert name in str(err.value)


@pytest.mark.parametrize("method", ["cudagraph", "half", "bf16", "compile-cudagraphs"])
def test_cuda_methods_refuse_on_cpu_in_one_line(method: str) -> None:
    with pytest.raises(VariantError, match="needs CUDA") as err:
        load_variant(Encoder(), method, {}, {}, CPU)
    assert "\n" not in str(err.value)
    assert VARIANTS.get(method).targets == ("cuda",)


def test_int8_dynamic_refuses_cuda_devices() -> None:
    with pytest.raises(VariantError, match="'int8-dynamic' needs CPU"):
        load_variant(Encoder(), "int8-dynamic", {}, {}, LoadContext(torch.device("cuda")))


def test_compile_matches_eager_and_a_new_batch_size_does_not_recompile(
    monkeypatch: pytest.MonkeyPatch, abyssal_home: Path
) -> None:
    import torch._dynamo
    from torch._dynamo.utils import counters

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    torch._dynamo.reset()
    counters.clear()
    model = Encoder().eval()
    ctx = LoadContext(torch.device("cpu"), input_axes=({0: "batch"},))
    fast = load_variant(_twin(model), "compile", {"backend": "eager"}, {}, ctx)
    with torch.no_grad():
        for batch in (3, 5, 9):
            x = torch.randn(batch, 8)
            torch.testing.assert_close(fast(x), model(x), rtol=0, atol=1e-6)
    assert counters["stats"]["unique_graphs"] == 1
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(abyssal_home / "cache" / "inductor")


def test_compile_rejects_a_bad_mode() -> None:
    with pytest.raises(VariantError, match="recipe 'mode' is 'fastest'"):
        load_variant(Encoder(), "compile", {"mode": "fastest"}, {}, CPU)


def test_output_structures_round_trip() -> None:
    out = {"scores": torch.ones(2), "extra": (torch.zeros(1), None, 3), "tag": "x"}
    structure, tensors = flatten_outputs(out)
    assert json.loads(json.dumps(structure)) == structure and len(tensors) == 2
    back = rebuild_outputs(structure, tensors)
    assert back["extra"][1:] == (None, 3) and back["tag"] == "x"
    assert back["scores"] is tensors[0]
    with pytest.raises(VariantError, match="fewer tensors"):
        rebuild_outputs(structure, tensors[:1])


def _linear_error_bound(layer: nn.Linear, x: torch.Tensor, weight_scale: float) -> torch.Tensor:
    """|y_int8 - y| per output when weights (scale s_w) and inputs (scale s_x, 7-bit range as
    fbgemm's dynamic linear uses; a full 8-bit range only tightens it) are rounded to nearest:
    sum_i |W_ji| s_x / 2 + |x_i| s_w / 2 + s_w s_x / 4."""
    s_x = (x.max().clamp(min=0) - x.min().clamp(max=0)) / 127
    w = layer.weight.detach().abs()
    per_row = x.abs() @ torch.full_like(w, weight_scale / 2).T
    return (w.sum(1) * s_x / 2 + per_row + w.shape[1] * weight_scale * s_x / 4) * 1.01


def test_int8_dynamic_error_is_within_the_rounding_bound() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(32, 16).eval()
    quantized, _, _ = dynamic_int8(nn.Sequential(layer))
    x = torch.randn(64, 32)
    with torch.no_grad():
        diff = (quantized(x) - layer(x)).abs()
        bound = _linear_error_bound(layer, x, quantized[0].weight().q_scale())
    assert (diff <= bound).all()
    assert 0 < diff.max() < 0.05 * layer(x).abs().max()


@pytest.mark.parametrize("meta_in", ["recipe", "json"])
def test_int8_dynamic_saves_and_loads_to_identical_outputs(tmp_path: Path, meta_in: str) -> None:
    torch.manual_seed(1)
    model = Encoder().eval()
    quantized, tensors, meta = dynamic_int8(model)
    assert not any(k.startswith("encoder.weight") for k in tensors)  # only the INT8 modules
    save_file(tensors, str(tmp_path / "model.int8.safetensors"))
    files = {"model.int8.safetensors": tmp_path / "model.int8.safetensors"}
    recipe: dict = {"state": meta}
    if meta_in == "json":
        (tmp_path / "state.json").write_text(json.dumps(meta))
        files["state.json"], recipe = tmp_path / "state.json", {}
    loaded = load_variant(_twin(model), "int8-dynamic", recipe, files, CPU)
    x = torch.randn(10, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), quantized(x))
        assert (loaded(x) - model(x)).abs().max() < 0.05
    assert loaded.encoder.in_features == 8 and not loaded.training


def test_int8_dynamic_needs_a_linear_layer() -> None:
    with pytest.raises(QuantizationError, match=r"no nn\.Linear"):
        dynamic_int8(nn.Sequential(nn.ReLU()))


def test_per_channel_weights_are_within_half_a_scale() -> None:
    torch.manual_seed(2)
    weight = torch.randn(24, 40) * torch.logspace(-3, 1, 24)[:, None]  # rows of different range
    q, scale = quantize_per_channel(weight)
    assert q.dtype == torch.int8 and q.abs().max() <= 127 and scale.shape == (24,)
    error = (weight - q.float() * scale[:, None]).abs()
    assert (error <= scale[:, None] / 2 * (1 + 1e-5)).all()


def test_weight_only_linear_output_is_close() -> None:
    torch.manual_seed(3)
    linear = nn.Linear(40, 24)
    layer = WeightOnlyInt8Linear.from_float(linear)
    x = torch.randn(5, 40)
    with torch.no_grad():
        diff = (layer(x) - linear(x)).abs()
        bound = x.abs() @ (layer.weight_scale[:, None] / 2).expand(24, 40).T
    assert (diff <= bound * 1.001 + 1e-6).all()
    assert layer.bias is linear.bias


def test_weight_only_saves_loads_and_skips_attention_projections(tmp_path: Path) -> None:
    torch.manual_seed(4)
    model = TextModel().eval()
    quantized, tensors = weight_only_int8(model)
    assert isinstance(quantized.embed, WeightOnlyInt8Embedding)
    assert isinstance(quantized.out, WeightOnlyInt8Linear)
    assert type(quantized.attn.out_proj) is not WeightOnlyInt8Linear
    assert sorted(tensors) == [
        "embed.weight_int8",
        "embed.weight_scale",
        "out.weight_int8",
        "out.weight_scale",
    ]
    save_file(tensors, str(tmp_path / "w.safetensors"))
    loaded = load_variant(
        _twin(model),
        "int8-weight",
        {"embeddings": True},
        {"w.safetensors": tmp_path / "w.safetensors"},
        CPU,
    )
    ids = torch.randint(0, 50, (3, 7))
    with torch.no_grad():
        assert torch.equal(loaded(ids), quantized(ids))
        assert (loaded(ids) - model(ids)).abs().max() < 0.05


def test_weight_only_refuses_a_file_that_lacks_weights(tmp_path: Path) -> None:
    _, tensors = weight_only_int8(Encoder())
    save_file({"head.weight_int8": tensors["head.weight_int8"]}, str(tmp_path / "w.safetensors"))
    with pytest.raises(VariantError, match="lacks"):
        load_variant(
            Encoder(), "int8-weight", {}, {"w.safetensors": tmp_path / "w.safetensors"}, CPU
        )


def _fake_capture(monkeypatch: pytest.MonkeyPatch, nodes: list[str]) -> list:
    placed: list = []
    graph = types.SimpleNamespace(
        module=types.SimpleNamespace(
            graph=types.SimpleNamespace(nodes=[types.SimpleNamespace(name=n) for n in nodes])
        ),
        method="export",
        note="",
    )
    fake = types.ModuleType("abyssal.nn.capture")
    fake.capture = lambda model, inputs, dynamic=None: graph
    fake.place = lambda g, assignment, io_device="cpu": (
        placed.append((assignment, io_device)) or (lambda *args: "placed")
    )
    monkeypatch.setitem(sys.modules, "abyssal.nn.capture", fake)
    return placed


def test_placement_uses_the_recaptured_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    placed = _fake_capture(monkeypatch, ["x", "linear", "relu", "output"])
    ctx = LoadContext(torch.device("cpu"), example_inputs=lambda: (torch.ones(1, 8),))
    recipe = {"assignment": {"linear": "cpu", "relu": "cpu"}, "io_device": "cpu"}
    model = load_variant(Encoder(), "placement", recipe, {}, ctx)
    assert model(torch.ones(1, 8)) == "placed"
    assert placed == [({"linear": "cpu", "relu": "cpu"}, "cpu")]


def test_placement_names_nodes_missing_from_the_recaptured_graph(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_capture(monkeypatch, ["x", "linear", "output"])
    ctx = LoadContext(torch.device("cpu"), example_inputs=lambda: (torch.ones(1, 8),))
    recipe = {"assignment": {"linear": "cpu", "conv_7": "cuda:0"}}
    with pytest.raises(VariantError, match="no node\\(s\\) conv_7"):
        load_variant(Encoder(), "placement", recipe, {}, ctx)
