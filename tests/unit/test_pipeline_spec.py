"""The pipeline file: defaults filled in, and each bad setting refused naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from abyssal.core.errors import ConfigError
from abyssal.pipeline.spec import load_pipeline
from abyssal.pipeline.steps import judge


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "daily.yaml"
    path.write_text(text)
    return path


def test_name_and_model_default_to_the_file_and_the_solution(tmp_path: Path) -> None:
    cfg = load_pipeline(write(tmp_path, "solution: fraud\ngate: {rules: [{metric: a, min: 1}]}\n"))
    assert (cfg.name, cfg.model, cfg.deploy.alias) == ("daily", "fraud", "production")
    assert cfg.gate.rules[0].min == 1.0
    over = load_pipeline(write(tmp_path, "solution: fraud\n"), ["model=fraud-eu", "perf.batch=8"])
    assert (over.model, over.perf.batch) == ("fraud-eu", 8)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gate: {rules: []}\n", "names its solution"),
        ("solution: fraud\ngates: {}\n", "unknown key 'gates'"),
        (
            "solution: fraud\ngate: {rules: [{metric: auc}]}\n",
            "give min, max, max_drop or max_rise",
        ),
        ("solution: fraud\ngate: {rules: [{min: 1}]}\n", "every rule names a metric"),
        ("solution: fraud\nretrain: {attempts: [[epochs]]}\n", "['epochs'] are not key=value"),
        ("solution: fraud\nvalidate: {max_drifted: 2}\n", "validate.max_drifted must be in [0, 1]"),
        ("solution: fraud\nperf: {batch: 0}\n", "perf.batch and perf.reps must be >= 1"),
    ],
)
def test_bad_settings_are_refused_by_name(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_pipeline(write(tmp_path, text))


def test_a_gate_rule_judges_bounds_and_the_drop_from_production(tmp_path: Path) -> None:
    cfg = load_pipeline(
        write(
            tmp_path, "solution: fraud\ngate: {rules: [{metric: auc, min: 0.5, max_drop: 0.02}]}\n"
        )
    )
    rule = cfg.gate.rules[0]
    assert judge(rule, {"auc": 0.9}, {"auc": 0.91})["passed"]
    worse = judge(rule, {"auc": 0.85}, {"auc": 0.9})
    assert not worse["passed"] and "below production's 0.9 (max drop 0.02)" in worse["why"]
    assert not judge(rule, {"auc": 0.4}, {})["passed"]
    missing = judge(rule, {"loss": 1.0}, {})
    assert not missing["passed"] and missing["why"] == "auc: not measured (measured: loss)"
