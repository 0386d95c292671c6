"""The placement cost model and its min-cut optimum, checked against brute force; the SVG."""

from __future__ import annotations

import itertools
import math
import random
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from torch import nn

from abyssal.core.display import table
from abyssal.nn.capture import capture, place
from abyssal.optimize import render
from abyssal.optimize.graph import GraphReport, TransferModel, analyse, transfer_cost
from abyssal.optimize.placement import (
    CostGraph,
    CostNode,
    PlacementError,
    cpu_only_plan,
    plan_placement,
)

KB = 1000
MS_PER_KB = TransferModel(latency_ms=0.0, ms_per_byte=1e-3)  # 1 KB costs 1 ms


def _io(name: str, out_bytes: int = 0, inputs: list[str] | None = None) -> CostNode:
    return CostNode(name, {}, out_bytes, inputs or [], pinned="cpu", group="(inputs/outputs)")


def _single(cpu: float, cuda: float, in_bytes: int, transfer: TransferModel) -> CostGraph:
    """x (host) -> op -> out (host)."""
    op = CostNode("op", {"cpu": cpu, "cuda": cuda}, in_bytes, ["x"], group="block", op="aten.mm")
    return CostGraph([_io("x", in_bytes), op, _io("out", 0, ["op"])], transfer)


def test_a_heavy_operator_with_small_transfers_goes_to_the_accelerator() -> None:
    plan = plan_placement(_single(5.0, 0.1, 1 * KB, MS_PER_KB))  # 2 transfers: 2 ms
    assert plan.assignment == {"op": "cuda"}
    assert plan.predicted_ms == pytest.approx({"cpu": 5.0, "accelerator": 2.1, "plan": 2.1})
    assert plan.reasons["block"] == "conv/matmul heavy: 5 ms on cpu vs 0.1 ms on cuda"
    assert plan.summary() == (
        "plan: 1 of 1 ops on cuda, predicted 2.1 ms vs 2.1 ms all-cuda and 5 ms all-cpu"
    )


def test_the_same_operator_stays_on_the_cpu_when_transfers_dominate() -> None:
    plan = plan_placement(_single(5.0, 0.1, 4 * KB, MS_PER_KB))  # 2 transfers: 8 ms
    assert plan.assignment == {"op": "cpu"}
    assert plan.predicted_ms["plan"] == pytest.approx(5.0)
    assert plan.predicted_ms["accelerator"] == pytest.approx(8.1)
    assert plan.reasons["block"] == "stays on cpu: transfer 8 ms exceeds saving 4.9 ms"


def test_launch_overhead_keeps_a_tiny_model_on_the_cpu_even_with_free_transfers() -> None:
    plan = plan_placement(_single(0.01, 0.05, 64, TransferModel(0.0, 0.0)))
    assert plan.assignment == {"op": "cpu"}
    assert plan.reasons["block"].startswith("faster on cpu: 0.01 ms on cpu vs 0.05 ms on cuda")


def _chain(middle_cuda: float) -> CostGraph:
    """x -> a -> b -> c -> out; only b is faster on cuda; every edge costs 1 ms to cross."""
    ops = [
        CostNode("a", {"cpu": 1.0, "cuda": 1.5}, KB, ["x"]),
        CostNode("b", {"cpu": 4.0, "cuda": middle_cuda}, KB, ["a"]),
        CostNode("c", {"cpu": 1.0, "cuda": 1.5}, KB, ["b"]),
    ]
    return CostGraph([_io("x", KB), *ops, _io("out", 0, ["c"])], MS_PER_KB)


def test_moving_the_middle_of_a_chain_alone_pays_two_transfers() -> None:
    stays = plan_placement(_chain(middle_cuda=2.5))  # saves 1.5 ms, costs 2 ms of copies
    assert set(stays.assignment.values()) == {"cpu"}
    assert stays.predicted_ms["plan"] == pytest.approx(6.0)
    goes = plan_placement(_chain(middle_cuda=1.5))  # saves 2.5 ms > 2 ms of copies
    assert goes.assignment == {"a": "cpu", "b": "cuda", "c": "cpu"}
    assert goes.predicted_ms["plan"] == pytest.approx(1.0 + 1.5 + 1.0 + 2.0)


def test_a_producer_pays_one_transfer_for_all_its_consumers_on_the_other_device() -> None:
    fan = [CostNode(f"f{i}", {"cpu": 2.0, "cuda": 0.5}, 0, ["x"]) for i in range(3)]
    out = _io("out", 0, [f.name for f in fan])
    cost = CostGraph([_io("x", KB), *fan, out], MS_PER_KB)  # outputs: 0 bytes to copy back
    plan = plan_placement(cost)
    assert set(plan.assignment.values()) == {"cuda"}
    assert plan.predicted_ms["plan"] == pytest.approx(3 * 0.5 + 1.0)  # one copy of x, not three


def test_an_operator_without_an_accelerator_time_is_pinned_to_the_cpu() -> None:
    nms = CostNode("nms", {"cpu": 9.0}, 8, ["x"], group="post", op="torchvision.nms")
    mm = CostNode("mm", {"cpu": 9.0, "cuda": 0.1}, 8, ["nms"], group="head", op="aten.mm")
    nodes = [_io("x", 8), nms, mm, _io("out", 0, ["mm"])]
    plan = plan_placement(CostGraph(nodes, MS_PER_KB))
    assert plan.assignment == {"nms": "cpu", "mm": "cuda"} and plan.pinned == ["nms"]
    assert plan.reasons["post"] == "no cuda kernel for torchvision.nms: pinned to cpu"
    with pytest.raises(PlacementError, match="no transfer model"):
        plan_placement(CostGraph(nodes, None))


def test_without_accelerator_times_everything_stays_on_the_cpu() -> None:
    cost = CostGraph([_io("x", 8), CostNode("op", {"cpu": 1.5}, 8, ["x"])], None)
    plan = plan_placement(cost, "cuda")
    assert plan.accelerator is None and plan.assignment == {"op": "cpu"}
    assert plan.summary() == (
        "no accelerator here: every operator stays on the CPU (predicted 1.5 ms)"
    )
    assert math.isnan(plan.predicted_ms["accelerator"])
    with pytest.raises(PlacementError, match="unknown nodes"):
        CostGraph([CostNode("op", {"cpu": 1.0}, 8, ["ghost"])], None)


def _random_graph(seed: int, size: int = 8) -> CostGraph:
    rng = random.Random(seed)
    nodes, names = [_io("x", rng.randint(1, 4 * KB))], ["x"]
    for i in range(size):
        times = {"cpu": rng.uniform(0.0, 3.0), "cuda": rng.uniform(0.0, 3.0)}
        if rng.random() < 0.1:
            del times["cuda"]
        inputs = rng.sample(names, rng.randint(1, min(3, len(names))))
        nodes.append(CostNode(f"n{i}", times, rng.choice([0, rng.randint(1, 4 * KB)]), inputs))
        names.append(f"n{i}")
    nodes.append(_io("out", 0, rng.sample(names[1:], 2)))
    return CostGraph(nodes, TransferModel(rng.uniform(0.0, 0.5), rng.uniform(0.0, 1e-3)))


@pytest.mark.parametrize("seed", range(12))
def test_the_min_cut_equals_the_brute_force_optimum(seed: int) -> None:
    cost = _random_graph(seed)
    free = [n.name for n in cost.nodes if n.pinned is None]
    best = min(
        cost.cost_ms(dict(zip(free, devices, strict=True)))
        for devices in itertools.product(["cpu", "cuda"], repeat=len(free))
    )
    plan = plan_placement(cost)
    assert plan.predicted_ms["plan"] == pytest.approx(best, abs=1e-5)
    assert cost.cost_ms(plan.assignment) == pytest.approx(plan.predicted_ms["plan"])
    assert best <= min(plan.predicted_ms["cpu"], plan.predicted_ms["accelerator"]) + 1e-9


def test_a_2000_node_graph_is_planned() -> None:
    rng = random.Random(1)
    nodes = [_io("x", KB)]
    for i in range(2000):
        inputs = {nodes[-1].name, rng.choice(nodes).name}
        times = {"cpu": rng.uniform(0, 1), "cuda": rng.uniform(0, 1)}
        nodes.append(CostNode(f"n{i}", times, rng.randint(1, 10 * KB), sorted(inputs)))
    plan = plan_placement(CostGraph([*nodes, _io("out", 0, ["n1999"])], MS_PER_KB))
    assert len(plan.assignment) == 2000
    assert plan.predicted_ms["plan"] <= min(
        plan.predicted_ms["cpu"], plan.predicted_ms["accelerator"]
    )


@pytest.fixture(scope="module")
def mlp_report() -> GraphReport:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4)
    )
    x = torch.randn(16, 32)
    return analyse(capture(model, (x,)), (x,), reps=3, warmup=1)


def _with_fake_cuda(report: GraphReport) -> GraphReport:
    """The report as if measured on a GPU: fast matmuls, fixed launch cost for the rest."""
    for o in report.operators():
        o.time_ms["cuda"] = 0.01 if o.flops else o.time_ms["cpu"] * 10 + 0.05
        o.time_ms["cpu"] = max(o.time_ms["cpu"], 1.0) if o.flops else o.time_ms["cpu"]
    report.devices.append("cuda")
    return report


def test_a_measured_report_gives_a_plan_and_a_group_table(mlp_report: GraphReport) -> None:
    cpu_plan = cpu_only_plan(mlp_report)
    assert set(cpu_plan.assignment.values()) == {"cpu"} and len(cpu_plan.assignment) == 5
    assert set(cpu_plan.reasons.values()) == {"no accelerator"}
    report = _with_fake_cuda(mlp_report)
    plan = plan_placement(CostGraph.from_report(report, TransferModel(0.001, 1e-9)), "cuda")
    assert plan.assignment["linear"] == "cuda"
    headers, rows = plan.table(report)
    assert headers == ["group", "ops", "MFLOP", "cpu ms", "cuda ms", "device", "reason"]
    assert [r[0] for r in rows] == ["0", "1", "2", "3", "4"]
    assert rows[0][5] == "cuda" and rows[0][6].startswith("conv/matmul heavy")
    assert "reason" in table(headers, rows)


def test_the_svg_is_well_formed_and_names_both_devices(
    mlp_report: GraphReport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = mlp_report if "cuda" in mlp_report.devices else _with_fake_cuda(mlp_report)
    plan = plan_placement(CostGraph.from_report(report, TransferModel(0.001, 1e-9)), "cuda")
    path = render.graph_svg(report, plan, tmp_path / "plan.svg")
    root = ET.parse(path).getroot()
    texts = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "cpu" in texts and "cuda" in texts  # the legend
    assert any(plan.summary() in t for t in texts)
    assert any(t == "linear" for t in texts)  # one box per operator
    monkeypatch.setattr(render, "MAX_BOXES", 2)  # collapsed: one box per module group
    collapsed = ET.parse(render.graph_svg(report, cpu_only_plan(report), path)).getroot()
    texts = [t.text or "" for t in collapsed.iter("{http://www.w3.org/2000/svg}text")]
    assert "accelerator (none here)" in texts and "linear" not in texts
    assert "(top level)" in texts or "0" in texts


@pytest.mark.gpu
def test_on_a_gpu_a_tiny_model_stays_on_the_cpu_and_a_big_one_moves() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    transfer = transfer_cost(["cpu", "cuda"])
    assert transfer is not None and transfer.latency_ms > 0 and transfer.ms_per_byte > 0
    tiny = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    big = nn.Sequential(nn.Linear(2048, 2048), nn.GELU(), nn.Linear(2048, 2048)).eval()
    for model, x, expect in (
        (tiny, torch.randn(1, 8), "cpu"),
        (big, torch.randn(512, 2048), "cuda"),
    ):
        captured = capture(model, (x,))
        report = analyse(captured, (x,), devices=("cpu", "cuda"), reps=10, warmup=3)
        plan = plan_placement(CostGraph.from_report(report, transfer), "cuda")
        assert set(plan.assignment.values()) == {expect}, plan.summary()
        with torch.no_grad():
            out = place(captured.module, plan.assignment)(x)
            assert out.device.type == "cpu"
            torch.testing.assert_close(out, model(x), atol=1e-3, rtol=1e-3)
