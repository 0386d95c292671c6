"""Graph capture (export, fx fallback, errors), per-operator analysis and node placement."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from abyssal.core.display import table
from abyssal.nn.capture import CapturedGraph, CaptureError, capture, move_to, place
from abyssal.optimize.graph import analyse, group_label, transfer_cost


def _leaf_with_branch(x: torch.Tensor) -> torch.Tensor:
    """Data-dependent Python control flow: fx keeps it as one opaque call, export cannot."""
    if x.sum() > 0:
        return x * 2
    return -x


torch.fx.wrap("_leaf_with_branch")


@torch.library.custom_op("abyssal_test::twice", mutates_args=())
def _twice(x: torch.Tensor) -> torch.Tensor:
    """A custom operator with no fake (meta) kernel: export cannot trace through it, fx can."""
    return x * 2


class ExportCannot(nn.Module):
    """A module calling an ``fx.wrap`` leaf function (as torchvision's detection models do)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _leaf_with_branch(self.lin(x)).relu()


class NeitherCan(nn.Module):
    """Branches on a tensor's value in forward: export cannot guard on it, fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        if y.mean() > 0:
            return y
        return -y


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)).eval()


def _names(gm: torch.fx.GraphModule) -> list[str]:
    return [n.name for n in gm.graph.nodes]


def test_export_captures_an_mlp_with_the_same_outputs_and_stable_names() -> None:
    model, x = _mlp(), torch.randn(5, 6)
    captured = capture(model, (x,), dynamic=[{0: "batch"}])
    assert captured.method == "export"
    assert torch.equal(captured.module(x), model(x))
    wider = torch.randn(9, 6)
    assert torch.equal(captured.module(wider), model(wider))  # the batch axis is dynamic
    assert _names(captured.module) == _names(capture(model, (x,)).module)
    assert "_guards_fn" not in _names(captured.module)
    gets = [n for n in captured.module.graph.nodes if n.op == "get_attr"]
    assert {str(n.target) for n in gets} == {"0.weight", "0.bias", "2.weight", "2.bias"}


def test_fx_is_used_where_export_fails_and_the_note_says_why() -> None:
    model, x = ExportCannot(), torch.randn(2, 4)
    captured = capture(model, (x,))
    assert captured.method == "fx"
    assert "torch.export failed" in captured.note
    assert "if x.sum() > 0" in captured.note and "data-dependent" in captured.note
    assert torch.equal(captured.module(x), model(x))


def test_an_operator_export_cannot_trace_is_named() -> None:
    class CustomOp(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.ops.abyssal_test.twice(x).relu()

    class CustomOpAndBranch(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.ops.abyssal_test.twice(x)
            return y if y.sum() > 0 else -y

    x = torch.randn(3)
    captured = capture(CustomOp(), (x,))
    assert captured.method == "fx" and "abyssal_test::twice" in captured.note
    assert torch.equal(captured.module(x), (x * 2).relu())
    with pytest.raises(CaptureError, match=r"abyssal_test::twice and `return y if y.sum\(\) > 0"):
        capture(CustomOpAndBranch(), (x,))


def test_capture_error_names_the_line_and_both_reasons() -> None:
    with pytest.raises(CaptureError) as caught:
        capture(NeitherCan(), (torch.randn(2, 4),))
    message = str(caught.value)
    assert "NeitherCan" in message and "`if y.mean() > 0:` in forward" in message
    assert "torch.export: GuardOnDataDependentSymNode" in message
    assert "torch.fx: TraceError" in message
    assert len(message.splitlines()) == 2


def test_analyse_counts_linear_flops_bytes_and_keeps_edges() -> None:
    batch, d_in, d_out = 8, 16, 32
    model, x = nn.Linear(d_in, d_out), torch.randn(batch, d_in)
    report = analyse(capture(model, (x,)), (x,), reps=3, warmup=1)
    (op,) = report.operators()
    assert op.op == "aten.linear" and op.flops == 2 * batch * d_in * d_out
    params = (d_in * d_out + d_out) * 4
    assert op.bytes == x.nbytes + params + batch * d_out * 4
    assert op.out_bytes == batch * d_out * 4
    assert op.intensity == pytest.approx(op.flops / op.bytes)
    assert op.time_ms["cpu"] > 0 and report.whole_ms["cpu"] > 0
    (inp,) = [o for o in report.ops if o.kind == "placeholder"]
    assert inp.name in op.inputs and inp.time_ms == {"cpu": 0.0} and not inp.is_op
    assert report.ops[-1].kind == "output" and report.ops[-1].inputs == [op.name]


def test_analyse_an_fx_graph_groups_by_module_and_leaves_inputs_alone() -> None:
    class AddInPlace(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=True))
            self.head = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x.add_(1.0)
            return self.head(self.enc(x))

    model, x = AddInPlace(), torch.randn(3, 4)
    before = x.clone()
    captured = CapturedGraph(torch.fx.symbolic_trace(model), "fx", "")
    report = analyse(captured, (x,), reps=3, warmup=1)
    assert torch.equal(x, before)
    groups = {g.group: g for g in report.groups()}
    assert set(groups) == {"", "enc.0", "enc.1", "head"}
    assert groups["enc.0"].flops == 2 * 3 * 4 * 8 and groups["head"].flops == 2 * 3 * 8 * 2
    headers, rows = report.table(top=2)
    assert headers[:3] == ["node", "op", "group"] and len(rows) == 2
    assert "cpu ms" in table(headers, rows)
    assert group_label("") == "(top level)"


def test_place_on_the_cpu_keeps_outputs_exactly() -> None:
    model, x = _mlp(), torch.randn(4, 6)
    for gm in (capture(model, (x,)).module, torch.fx.symbolic_trace(model)):
        ops = [n.name for n in gm.graph.nodes if n.op.startswith("call")]
        placed = place(gm, dict.fromkeys(ops, "cpu"))
        assert torch.equal(placed(x), model(x))
        assert not [n for n in placed.graph.nodes if n.target in ("to", move_to)]


def test_place_inserts_copies_at_device_boundaries() -> None:
    gm = capture(_mlp(), (torch.randn(4, 6),)).module  # linear -> relu -> linear_1
    placed = place(gm, {"relu": "meta", "linear_1": "meta"})
    copies = [n for n in placed.graph.nodes if n.op == "call_method" and n.target == "to"]
    moves = [(n.args[0].name, str(n.args[1])) for n in copies]
    assert moves == [("linear", "meta"), ("linear_1", "cpu")]  # in, and back out to the host
    relu = next(n for n in placed.graph.nodes if n.name == "relu")
    assert relu.args[0] is copies[0]
    assert placed.get_submodule("2").weight.device.type == "meta"
    assert placed.get_submodule("0").weight.device.type == "cpu"
    assert gm.get_submodule("2").weight.device.type == "cpu"  # the original is untouched
    assert "linear.to(device(type='meta'))" in placed.code


def test_place_moves_fx_modules_and_rejects_unknown_nodes() -> None:
    gm = torch.fx.symbolic_trace(_mlp())
    placed = place(gm, {"_1": "meta"})
    moved = [n for n in placed.graph.nodes if n.target is move_to]
    assert [(n.args[0].name, str(n.args[1])) for n in moved] == [("_0", "meta"), ("_1", "cpu")]
    with pytest.raises(CaptureError, match="nope"):
        place(gm, {"nope": "cpu"})


def test_place_keeps_an_in_place_write_where_its_target_is_read_again() -> None:
    class Bump(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x.add_(1.0)  # fx: later uses read x (the placeholder), not add_'s output
            return x * 2

    gm = torch.fx.symbolic_trace(Bump())
    assert [n.name for n in gm.graph.nodes] == ["x", "add_", "mul", "output"]
    placed = place(gm, {"add_": "meta", "mul": "cpu"})
    assert not [n for n in placed.graph.nodes if n.target is move_to]  # add_ stayed on the cpu
    assert torch.equal(placed(torch.zeros(2)), torch.full((2,), 2.0))


def test_no_transfer_model_without_cuda() -> None:
    assert transfer_cost(["cpu"]) is None
