"""ONNX export with dynamic axes, ONNX Runtime agreement, and ONNX INT8 builders
(abyssal.optimize.export, abyssal.optimize.quantize, the ``onnx`` variant)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from abyssal.nn.variants import LoadContext, OnnxRunner, VariantError, load_variant
from abyssal.optimize.export import ExportError, OnnxExport, check_onnx, export_onnx
from abyssal.optimize.quantize import QuantizationError, onnx_int8_dynamic, onnx_int8_static

CPU = LoadContext(torch.device("cpu"))


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Scorer(nn.Module):
    """Returns ``(scores, None)``; its second input is optional and unused at export."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(6, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, shift: torch.Tensor):
        return self.lin(x).squeeze(-1) + shift, None


class TokenModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(4000, 64)
        self.proj = nn.Linear(64, 64)
        self.head = nn.Linear(64, 3)

    def forward(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = torch.tanh(self.proj(self.embed(ids))).mean(1)
        return {"logits": self.head(pooled), "pooled": pooled}


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2), nn.ReLU()
        )
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


@pytest.fixture(scope="module")
def mlp_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[MLP, OnnxExport]:
    torch.manual_seed(0)
    model = MLP().eval()
    path = tmp_path_factory.mktemp("mlp") / "mlp.onnx"
    return model, export_onnx(model, (torch.randn(2, 16),), path, input_axes=({0: "batch"},))


def test_mlp_export_has_a_dynamic_batch_and_matches_pytorch(
    mlp_export: tuple[MLP, OnnxExport],
) -> None:
    model, exported = mlp_export
    assert exported.exporter == "dynamo" and exported.input_names == ("input_0",)
    proto = onnx.load(str(exported.path))
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert not list(exported.path.parent.glob(".*.tmp"))  # no temporary file left behind
    runner = OnnxRunner(exported.path)
    for batch in (1, 7):
        x = torch.randn(batch, 16)
        with torch.no_grad():
            torch.testing.assert_close(runner(x), model(x), rtol=0, atol=1e-5)
    agreement = check_onnx(exported.path, model, [(torch.randn(1, 16),), (torch.randn(7, 16),)])
    assert agreement.agreement == 1.0 and agreement.n_inputs == 2 and agreement.n_rows == 8
    assert agreement.max_abs_diff < 1e-5


def test_onnx_variant_rebuilds_the_output_structure_and_skips_none_inputs(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = Scorer().eval()
    example = (torch.randn(3, 6), None, torch.randn(3))
    exported = export_onnx(model, example, tmp_path / "scorer.onnx")
    assert exported.input_names == ("input_0", "input_2")
    assert exported.input_positions == (0, 2)
    assert exported.outputs == {"kind": "tuple", "items": [{"kind": "tensor"}, {"kind": "none"}]}
    assert sorted(exported.feed(example)) == ["input_0", "input_2"]
    fresh = Scorer()
    fresh.load_state_dict(model.state_dict())
    files = {"model.onnx": exported.path}
    loaded = load_variant(fresh.eval(), "onnx", exported.recipe(), files, CPU)
    x, shift = torch.randn(5, 6), torch.randn(5)
    scores, nothing = loaded(x, None, shift)
    assert nothing is None and scores.shape == (5,)
    with torch.no_grad():
        torch.testing.assert_close(scores, model(x, None, shift)[0], rtol=0, atol=1e-5)
    assert loaded.lin.in_features == 6  # attributes still reach the eager model
    with pytest.raises(VariantError, match="input_2' is forward argument 2"):
        loaded(x, None, None)


def test_the_torchscript_exporter_is_the_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_export = torch.onnx.export

    def no_dynamo(*args, dynamo: bool = True, **kwargs):
        if dynamo:
            raise RuntimeError("dynamo exporter unavailable\nsecond line")
        return real_export(*args, dynamo=False, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", no_dynamo)
    torch.manual_seed(2)
    model = MLP().eval()
    exported = export_onnx(model, (torch.randn(2, 16),), tmp_path / "mlp.onnx")
    assert exported.exporter == "torchscript"
    assert exported.note == "dynamo exporter failed: RuntimeError: dynamo exporter unavailable"
    x = torch.randn(7, 16)
    with torch.no_grad():
        torch.testing.assert_close(OnnxRunner(exported.path)(x), model(x), rtol=0, atol=1e-5)


def test_a_failed_export_leaves_the_old_file_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("cannot export")

    monkeypatch.setattr(torch.onnx, "export", broken)
    path = tmp_path / "model.onnx"
    path.write_bytes(b"previous")
    with pytest.raises(ExportError, match=r"dynamo exporter failed .* TorchScript exporter"):
        export_onnx(MLP().eval(), (torch.randn(2, 16),), path)
    assert path.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_export_needs_a_tensor_input(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="no tensor input"):
        export_onnx(MLP(), (None,), tmp_path / "x.onnx")


def test_dynamic_int8_shrinks_an_embedding_model_over_3x(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = TokenModel().eval()
    ids = torch.randint(0, 4000, (4, 12))
    axes = ({0: "batch", 1: "tokens"},)
    exported = export_onnx(model, (ids,), tmp_path / "tok.onnx", input_axes=axes)
    assert exported.outputs["keys"] == ["logits", "pooled"]
    quantized = onnx_int8_dynamic(exported.path, tmp_path / "tok.int8.onnx")
    assert quantized.stat().st_size * 3 < exported.path.stat().st_size
    fresh = TokenModel()
    fresh.load_state_dict(model.state_dict())
    loaded = load_variant(
        fresh.eval(), "onnx-int8-dynamic", exported.recipe(), {"m.onnx": quantized}, CPU
    )
    out = loaded(torch.randint(0, 4000, (3, 20)))
    assert sorted(out) == ["logits", "pooled"] and out["logits"].shape == (3, 3)
    agreement = check_onnx(quantized, model, [(torch.randint(0, 4000, (32, 12)),)])
    assert agreement.max_abs_diff < 0.1 and agreement.agreement >= 0.8


def test_dynamic_int8_quantizes_the_gemm_layers_of_an_mlp(
    mlp_export: tuple[MLP, OnnxExport], tmp_path: Path
) -> None:
    model, exported = mlp_export
    quantized = onnx_int8_dynamic(exported.path, tmp_path / "mlp.int8.onnx")
    ops = [node.op_type for node in onnx.load(str(quantized)).graph.node]
    assert ops.count("MatMulInteger") == 2 and "Gemm" not in ops
    agreement = check_onnx(quantized, model, [(torch.randn(64, 16),)])
    assert agreement.agreement >= 0.9 and agreement.max_abs_diff < 0.1


def test_static_qdq_int8_of_a_conv_net_agrees_on_most_inputs(tmp_path: Path) -> None:
    torch.manual_seed(4)
    model = ConvNet().eval()
    exported = export_onnx(model, (torch.randn(2, 3, 16, 16),), tmp_path / "cnn.onnx")
    feeds = [exported.feed((torch.randn(4, 3, 16, 16),)) for _ in range(4)]
    quantized = onnx_int8_static(exported.path, tmp_path / "cnn.int8.onnx", feeds)
    ops = {node.op_type for node in onnx.load(str(quantized)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    agreement = check_onnx(quantized, model, [(torch.randn(32, 3, 16, 16),)])
    assert agreement.n_rows == 32 and agreement.agreement >= 0.75


def test_static_quantization_needs_calibration_feeds(mlp_export, tmp_path: Path) -> None:
    _, exported = mlp_export
    with pytest.raises(QuantizationError, match="no calibration feeds"):
        onnx_int8_static(exported.path, tmp_path / "q.onnx", [])
    with pytest.raises(QuantizationError, match="unknown calibration method 'median'"):
        onnx_int8_static(exported.path, tmp_path / "q.onnx", [{}], method="median")


def test_quantizing_a_missing_or_broken_file_names_the_problem(tmp_path: Path) -> None:
    with pytest.raises(QuantizationError, match=r"missing\.onnx' does not exist"):
        onnx_int8_dynamic(tmp_path / "missing.onnx", tmp_path / "q.onnx")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    feeds = [{"input_0": np.zeros((1, 16), np.float32)}]
    with pytest.raises(QuantizationError, match="preprocessing"):
        onnx_int8_static(broken, tmp_path / "q.onnx", feeds)
    assert not (tmp_path / "q.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.onnx"]


def test_onnx_sessions_use_torch_thread_count_unless_told(
    mlp_export: tuple[MLP, OnnxExport],
) -> None:
    _, exported = mlp_export
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        options = OnnxRunner(exported.path).session.get_session_options()
        assert options.intra_op_num_threads == 1
        told = OnnxRunner(exported.path, intra_op_num_threads=2).session.get_session_options()
        assert told.intra_op_num_threads == 2
    finally:
        torch.set_num_threads(before)
