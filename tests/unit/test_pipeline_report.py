"""The HTML report of a pipeline run, on state folders written by hand: a deployed run with
drift and a gate, a run stopped by validation, a failed run, missing pieces, hostile text, and
a copy of a real run's records when there is one."""

from __future__ import annotations

import json
import math
import re
import shutil
import xml.etree.ElementTree as ET
from html import escape
from pathlib import Path
from typing import Any

import pytest

from abyssal.core.errors import AbyssalError
from abyssal.pipeline.charts import (
    PSI_MAJOR,
    PSI_MODERATE,
    svg_drift_chart,
    svg_gate_chart,
    svg_grouped_bars,
)
from abyssal.pipeline.report import CHARTS, read_run, render_report, write_chart, write_report

HOSTILE = "<script>alert('x')</script> & \"quoted\""


def write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def record(state: Path, name: str, status: str, outputs: dict | None = None, **kw: Any) -> None:
    write(
        state / "steps" / f"{name}.json",
        {"version": 1, "step": name, "status": status, "fingerprint": "f" * 8,
         "outputs": outputs or {}, "seconds": kw.get("seconds", 0.5),
         "reason": kw.get("reason"), "report": kw.get("report", {}),
         "finished": "2026-11-29T17:32:25+0000"},
    )  # fmt: skip


def summary(state: Path, status: str, reason: str, steps: list[dict], **kw: Any) -> None:
    attempt = {"status": kw.get("attempt_status", "done"), "ended_by": None, "steps": steps}
    write(
        state / "summary.json",
        {"status": status, "deployed": kw.get("deployed"), "reason": reason,
         "attempts": [attempt], "pipeline": "fraud", "started": 1795973503.5, "seconds": 41.6},
    )  # fmt: skip


def step(name: str, status: str, outputs: dict | None = None, reason: str | None = None) -> dict:
    return {"name": name, "status": status, "seconds": 1.25, "reason": reason,
            "outputs": outputs or {}}  # fmt: skip


VALIDATE = {"table": "/data/t.csv", "checked": True, "rows": 1000, "errors": 0, "warnings": 1,
            "reference": "fraud:1", "drifted": ["amount"], "drifted_share": 0.5}  # fmt: skip
TRAIN = {"ref": "fraud:2", "overrides": ["train.lr=0.003"],
         "metrics": {"test_auprc": 0.62, "test_auprc_low": 0.37, "test_auprc_high": 0.84,
                     "test_auroc": 0.91, "test_positives": 14.0, "val_auprc": 0.99}}  # fmt: skip
PERF = {"p50_ms": 134.9, "p99_ms": 180.6, "throughput": 237.3, "size_mb": 0.182,
        "cost_per_1000": 0.000234, "batch": 32, "calls": 30}  # fmt: skip
CHECKS = [
    {"metric": "test_auprc", "value": 0.62, "passed": True, "why": "", "production": 0.60},
    {"metric": "p99_ms", "value": 180.6, "passed": True, "why": "", "production": 110.5},
]


@pytest.fixture
def deployed(tmp_path: Path) -> Path:
    """A run that deployed fraud:2 over fraud:1, with one drifted feature and a warning."""
    state = tmp_path / "deployed"
    gate = {"ref": "fraud:2", "checks": CHECKS, "production": "fraud:1"}
    deploy = {"ref": "fraud:2", "alias": "production", "previous": "fraud:1"}
    outputs = {"validate": VALIDATE, "train-0": TRAIN, "perf-0": PERF, "gate-0": gate,
               "deploy": deploy}  # fmt: skip
    for name, out in outputs.items():
        record(state, name, "done", out)
    summary(state, "deployed", "fraud:2 passed the gate & is now production",
            [step(n, "done", o) for n, o in outputs.items()], deployed="fraud:2")  # fmt: skip
    finding = {
        "check": "missing",
        "severity": "warning",
        "column": "device_id",
        "message": "3.1% missing (expected at most 1%)",
        "count": 31,
        "rows": [4, 9],
    }
    write(state / "steps" / "validate" / "checks.json",
          {"ok": True, "source": "/data/t.csv", "rows": 1000, "columns": 7, "errors": 0,
           "warnings": 1, "findings": [finding]})  # fmt: skip
    features = [
        {"feature": "amount", "kind": "numeric", "psi": 0.41, "drifted": True},
        {"feature": "timestamp", "kind": "numeric", "psi": 0.15, "drifted": False},
        {"feature": "label", "kind": "numeric", "psi": float("nan"), "drifted": False},
    ]
    write(state / "steps" / "validate" / "drift.json",
          {"drifted": ["amount"], "features": features, "skipped": {"user_id": "id-like"},
           "thresholds": {"psi": 0.25, "alpha": 0.01, "min_ks": 0.1}})  # fmt: skip
    write(state / "steps" / "gate-0" / "gate.json", CHECKS)
    write(state / "perf" / "fraud@1.json", {"p50_ms": 99.7, "p99_ms": 110.5, "batch": 32})
    return state


@pytest.fixture
def stopped(tmp_path: Path) -> Path:
    """Validation refused the data: two findings, one of them with hostile text; nothing trained."""
    state = tmp_path / "stopped"
    findings = [
        {"check": "dtype", "severity": "error", "column": "amount",
         "message": "expected numbers, found 'abc' in 12 rows", "count": 12, "rows": [3, 8, 21]},
        {"check": "range", "severity": "error", "column": "<b>weird</b>", "message": HOSTILE,
         "count": 2, "rows": []},
    ]  # fmt: skip
    checks = {"ok": False, "source": "/data/t.csv", "rows": 500, "columns": 7, "errors": 2,
              "warnings": 0, "findings": findings}  # fmt: skip
    reason = f"2 problem(s) in t.csv: amount: expected numbers; {HOSTILE}"
    record(state, "validate", "stopped", reason=reason,
           report={"checks": checks, "drifted": []})  # fmt: skip
    write(state / "steps" / "validate" / "checks.json", checks)
    steps = [step("validate", "stopped", reason=reason)]
    steps += [step(n, "not_run", reason="validate stopped")
              for n in ("train-0", "perf-0", "gate-0", "deploy")]  # fmt: skip
    summary(state, "stopped", f"validation stopped the run: {reason}", steps,
            attempt_status="stopped")  # fmt: skip
    return state


@pytest.fixture
def failed(tmp_path: Path) -> Path:
    """Training raised an error; its record holds the traceback."""
    state = tmp_path / "failed"
    trace = 'Traceback (most recent call last):\n  File "train.py", line 3\nValueError: x < 0'
    reason = "ValueError: x < 0"
    record(state, "validate", "done", {"table": "/data/t.csv", "checked": True, "rows": 10})
    record(state, "train-0", "failed", reason=reason,
           report={"error": "ValueError", "traceback": trace})  # fmt: skip
    steps = [step("validate", "done", {"table": "/data/t.csv", "checked": True, "rows": 10}),
             step("train-0", "failed", reason=reason)]  # fmt: skip
    steps += [step(n, "not_run", reason="train-0 failed") for n in ("perf-0", "gate-0", "deploy")]
    summary(state, "failed", f"train-0 failed: {reason}", steps, attempt_status="failed")
    return state


def svgs(html: str) -> list[str]:
    return re.findall(r"<svg.*?</svg>", html, flags=re.S)


def test_deployed_run_shows_outcome_steps_drift_metrics_gate_and_performance(deployed: Path):
    html = render_report(deployed)
    assert 'background:#2e7d32">deployed</span>' in html
    assert "fraud:2 passed the gate &amp; is now production" in html
    assert "replacing fraud:1" in html and "Pipeline fraud" in html
    for name in ("validate", "train-0", "perf-0", "gate-0", "deploy"):
        assert f"<td>{name}</td>" in html
    assert "device_id" in html and "3.1% missing (expected at most 1%)" in html
    assert "<td>4, 9</td>" in html
    assert "1 feature(s) drifted: amount" in html and "user_id (id-like)" in html
    assert "0.62<span" in html and "[0.37, 0.84]" in html  # metric with its interval
    assert "test_positives" not in html and "val_auprc" not in html
    assert "production: fraud:1" in html and "0.6</td>" in html
    assert "134.9" in html and "0.000234" in html and "99.7" in html  # production's p50
    charts = svgs(html)
    assert len(charts) == 4  # drift, metrics, gate, latency
    for chart in charts:
        ET.fromstring(chart)  # well-formed XML


def test_drift_chart_colours_drifted_bars_and_draws_the_thresholds():
    features = [
        {"feature": "amount", "psi": 0.41, "drifted": True},
        {"feature": "hour", "psi": 0.15, "drifted": False},
        {"feature": "label", "psi": None, "drifted": False},
    ]
    svg = svg_drift_chart(features, psi_threshold=0.25)
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    dashed = [e for e in root.iter(f"{ns}line") if e.get("stroke-dasharray")]
    assert len(dashed) == 2
    x_moderate, x_major = (float(e.get("x1")) for e in dashed)
    assert x_moderate < x_major
    bars = {e.find(f"{ns}title").text.split(":")[0]: e for e in root.iter(f"{ns}rect")
            if e.find(f"{ns}title") is not None}  # fmt: skip
    assert bars["amount"].get("fill") == "#d64545" and bars["hour"].get("fill") == "#e0a030"
    assert float(bars["amount"].get("width")) > float(bars["hour"].get("width"))
    assert "label" not in bars and ">-</text>" in svg


def test_drift_thresholds_match_the_drift_module():
    drift = pytest.importorskip("abyssal.data.drift")
    assert (PSI_MODERATE, PSI_MAJOR) == (drift.PSI_MODERATE, drift.PSI_MAJOR)


def test_run_stopped_by_validation_lists_every_finding_and_escapes_text(stopped: Path):
    html = render_report(stopped)
    assert 'background:#b26a00">stopped</span>' in html
    assert "validation stopped the run" in html
    assert "<script>" not in html and "<b>weird</b>" not in html
    assert escape(HOSTILE) in html and "&lt;b&gt;weird&lt;/b&gt;" in html
    assert "<td>amount</td>" in html
    assert (
        escape("expected numbers, found 'abc' in 12 rows") in html and "<td>3, 8, 21</td>" in html
    )
    assert "500 rows, 7 columns, 2 error(s)" in html
    assert "No version was trained in this run." in html
    assert "No gate checked a version" in html and "No performance test ran" in html
    assert "Drift: no report (not measured)" in html
    assert "<td>deploy</td><td>" in html and "</span></td><td>-</td><td>validate stopped" in html
    for chart in svgs(html):
        ET.fromstring(chart)


def test_failed_run_shows_the_traceback(failed: Path):
    html = render_report(failed)
    assert 'background:#b71c1c">failed</span>' in html
    assert "train-0 failed: ValueError: x &lt; 0" in html
    assert "<details open><summary>train-0 failed: ValueError</summary>" in html
    assert 'File "train.py", line 3' in html.replace("&quot;", '"')
    assert "nothing deployed" in html


def test_missing_drift_and_gate_files_do_not_crash(deployed: Path):
    (deployed / "steps" / "validate" / "drift.json").unlink()
    shutil.rmtree(deployed / "steps" / "gate-0")
    (deployed / "steps" / "validate" / "checks.json").unlink()
    html = render_report(deployed)
    assert "Drift: no report (not measured)" in html
    assert "1000 rows" in html  # from the validate step's outputs
    assert "test_auprc" in html  # the gate's checks are in its outputs as well
    run = read_run(deployed)
    assert run.checks is None and run.drift is None and run.production == "fraud:1"


def test_a_gate_without_checks_anywhere_is_reported_as_no_gate(deployed: Path):
    shutil.rmtree(deployed / "steps" / "gate-0")
    data = json.loads((deployed / "summary.json").read_text())
    data["attempts"][0]["steps"][3]["outputs"] = {}
    (deployed / "summary.json").write_text(json.dumps(data))
    (deployed / "steps" / "gate-0.json").unlink()
    html = render_report(deployed)
    assert "No gate checked a version in this run." in html
    assert "production: fraud:1" not in html


def test_nan_and_missing_values_show_as_a_dash(deployed: Path):
    data = json.loads((deployed / "summary.json").read_text())
    data["attempts"][0]["steps"][2]["outputs"] = {"p50_ms": None, "p99_ms": "fast"}
    data["attempts"][0]["steps"][1]["outputs"]["metrics"]["test_auroc"] = math.nan
    (deployed / "summary.json").write_text(json.dumps(data))
    html = render_report(deployed)
    row = re.search(r"<tr><td>attempt 0: fraud:2</td>.*?</tr>", html).group(0)
    assert row.count("<td class=n>-</td>") == 6  # batch, p50, p99, throughput, size, cost
    assert "<tr><td>test_auroc</td><td class=n>-</td>" in html
    assert "NaN" not in html and "nan<" not in html


def test_write_report_writes_report_html(deployed: Path):
    path = write_report(deployed)
    assert path == deployed / "report.html"
    assert path.read_text() == render_report(deployed)
    assert not list(deployed.glob(".*.tmp"))


def test_write_chart_saves_a_standalone_svg(deployed: Path, tmp_path: Path):
    for chart in CHARTS:
        out = write_chart(deployed, tmp_path / f"{chart}.svg", chart)
        text = out.read_text()
        assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<svg')
        ET.fromstring(text.split("\n", 1)[1])
    assert "fraud:1" in (tmp_path / "gate.svg").read_text()


def test_write_chart_refuses_unknown_or_missing_charts(stopped: Path, tmp_path: Path):
    with pytest.raises(AbyssalError, match="choose one of drift, gate, metrics, latency"):
        write_chart(stopped, tmp_path / "x.svg", "pie")
    with pytest.raises(AbyssalError, match="no gate checks"):
        write_chart(stopped, tmp_path / "x.svg", "gate")
    with pytest.raises(AbyssalError, match="no drift report"):
        write_chart(stopped, tmp_path / "x.svg", "drift")
    assert not (tmp_path / "x.svg").exists()


def test_a_folder_without_summary_is_a_clear_error(tmp_path: Path):
    with pytest.raises(AbyssalError, match=r"no summary\.json"):
        render_report(tmp_path)
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(AbyssalError, match=r"summary\.json: not readable JSON"):
        render_report(tmp_path)


def test_grouped_bars_check_their_shape_and_escape_names():
    with pytest.raises(AbyssalError, match="2 rows of 1"):
        svg_grouped_bars(["a", "b"], ["s"], [[1.0]])
    svg = svg_grouped_bars(["<a>"], ["s&t"], [[float("inf")]], title="T <1>")
    ET.fromstring(svg)
    assert "&lt;a&gt;" in svg and "s&amp;t" in svg and ">-</text>" in svg


def test_gate_chart_marks_failed_rules_and_escapes_why():
    checks = [{"metric": "test_auprc", "value": 0.12, "passed": False, "production": 0.68,
               "why": "0.12 < production's 0.68 & <worse>"}]  # fmt: skip
    svg = svg_gate_chart(checks)
    ET.fromstring(svg)
    assert "FAIL" in svg and "&lt;worse&gt;" in svg and "<worse>" not in svg
    assert 'fill="#d64545"' in svg and "0.68" in svg
