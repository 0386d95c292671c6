"""CUDA variants (cudagraph, bf16, half) against eager on a small MLP and a small conv net."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from abyssal.nn.variants import LoadContext, VariantError, load_variant
from abyssal.optimize.quantize import weight_only_int8

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CUDA = LoadContext(torch.device("cuda"), input_axes=({0: "batch"},))


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 8, 3)
        )
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.head(self.features(x).mean((2, 3))), None


class Syncing(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * float(x.sum().item())  # a CPU sync: cannot be captured


def _pair(cls: type[nn.Module]) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    model = cls().cuda().eval()
    fresh = cls()
    fresh.load_state_dict(model.state_dict())
    return model, fresh.cuda().eval()


@pytest.fixture(autouse=True)
def _exact_float32():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_cudagraph_mlp_equals_eager_for_several_batch_sizes() -> None:
    model, fresh = _pair(MLP)
    fast = load_variant(fresh, "cudagraph", {"dtype": "float32"}, {}, CUDA)
    with torch.no_grad():
        for batch in (4, 9, 4):
            x = torch.randn(batch, 32, device="cuda")
            torch.testing.assert_close(fast(x), model(x), rtol=1e-5, atol=1e-5)
    assert len(fast.runner.graphs) == 2  # one graph per input shape, reused


def test_cudagraph_conv_net_equals_eager_and_keeps_its_output_structure() -> None:
    model, fresh = _pair(ConvNet)
    fast = load_variant(fresh, "cudagraph", {}, {}, CUDA)
    x = torch.randn(6, 3, 20, 20, device="cuda")
    with torch.no_grad():
        out, nothing = fast(x)
        first = out.clone()
        fast(torch.randn(6, 3, 20, 20, device="cuda"))  # a replay must not change `out`
        torch.testing.assert_close(out, model(x)[0], rtol=1e-5, atol=1e-5)
    assert nothing is None and torch.equal(out, first)


def test_cudagraph_keeps_at_most_the_cap_of_graphs() -> None:
    _, fresh = _pair(MLP)
    fast = load_variant(fresh, "cudagraph", {}, {}, CUDA)
    fast.runner.max_graphs = 2
    with torch.no_grad():
        for batch in (1, 2, 3, 2):
            fast(torch.randn(batch, 32, device="cuda"))
    assert [key[1][0][1][0] for key in fast.runner.graphs] == [3, 2]


@pytest.mark.parametrize("method", ["bf16", "cudagraph"])
def test_bfloat16_is_close_to_float32(method: str) -> None:
    for cls in (MLP, ConvNet):
        model, fresh = _pair(cls)
        fast = load_variant(fresh, method, {"dtype": "bfloat16"}, {}, CUDA)
        x = torch.randn(8, 32, device="cuda") if cls is MLP else torch.randn(8, 3, 16, 16).cuda()
        with torch.no_grad():
            want, got = model(x), fast(x)
        want, got = (want[0], got[0]) if cls is ConvNet else (want, got)
        assert got.dtype == torch.float32
        scale = want.abs().max()
        assert (got - want).abs().max() <= 0.03 * scale
        # the base keeps FP32 for callers of its other methods (a live scorer's layers)
        assert next(fast.base.parameters()).dtype == torch.float32


def test_half_is_close_to_float32() -> None:
    model, fresh = _pair(MLP)
    fast = load_variant(fresh, "half", {}, {}, CUDA)
    x = torch.randn(8, 32, device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-2, atol=5e-3)


def test_int8_weight_runs_on_cuda(tmp_path: Path) -> None:
    model, fresh = _pair(MLP)
    _, tensors = weight_only_int8(model)
    save_file(tensors, str(tmp_path / "w.safetensors"))
    files = {"w.safetensors": tmp_path / "w.safetensors"}
    fast = load_variant(fresh, "int8-weight", {}, files, CUDA)
    x = torch.randn(8, 32, device="cuda")
    with torch.no_grad():
        assert (fast(x) - model(x)).abs().max() < 0.05


def test_compile_cudagraphs_equals_eager() -> None:
    model, fresh = _pair(MLP)
    fast = load_variant(fresh, "compile-cudagraphs", {}, {}, CUDA)
    with torch.no_grad():
        for batch in (8, 8, 16):
            x = torch.randn(batch, 32, device="cuda")
            torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-4)


def test_cudagraph_names_a_forward_that_cannot_be_captured() -> None:
    _, fresh = _pair(Syncing)
    fast = load_variant(fresh, "cudagraph", {}, {}, CUDA)
    with pytest.raises(VariantError, match="forward of Syncing synchronises with the CPU"):
        fast(torch.randn(2, 4, device="cuda"))
    x = torch.randn(3, device="cuda")  # the process's CUDA generator still works
    assert x.shape == (3,)
