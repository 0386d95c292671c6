"""Every registered solution honours the one protocol (one test for all, as timm checks every
model), and listing solutions imports none of them."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing

import pytest

from abyssal.contracts.solution import MetricLayout, Solution
from abyssal.contracts.train_config import TrainConfig
from abyssal.core.config import config_help
from abyssal.core.errors import AbyssalError
from abyssal.solutions import SOLUTIONS, get_solution


@pytest.mark.parametrize("name", SOLUTIONS.names())
def test_solution_declares_everything_the_generic_layers_use(name: str) -> None:
    solution = get_solution(name)
    assert isinstance(solution, Solution) and solution.name == name
    assert SOLUTIONS.summary(name), f"{name} has no summary"
    cfg = solution.config_cls()
    hints = typing.get_type_hints(solution.config_cls)
    assert hints["train"] is TrainConfig and isinstance(cfg.train, TrainConfig)
    keys = [row[0] for row in config_help(solution.config_cls)]
    assert "train.lr" in keys and "train.schedule" in keys
    layout = solution.metric_layout
    assert isinstance(layout, MetricLayout) and layout.columns
    assert layout.headline.startswith("test_")
    assert solution.default_metric.startswith("val_")
    assert dataclasses.is_dataclass(solution.sample_config_cls)
    solution.sample_config_cls()  # the defaults are valid


def test_a_solution_without_a_serving_half_says_so() -> None:
    class Bare(Solution):
        name = "bare"
        config_cls = TrainConfig
        default_metric = "val_x"
        metric_layout = MetricLayout(columns=(("x", "x"),))

        def prepare(self, cfg):
            return None

        def task(self, cfg, data):
            return None

        def model_spec(self, cfg, data):
            return {}

        def build_model(self, cfg, spec):
            return None

        def evaluate(self, cfg, model, data):
            return {}

    with pytest.raises(AbyssalError, match="solution 'bare' does not provide example model"):
        Bare().example_inputs(None, {})
    with pytest.raises(AbyssalError, match=r"does not provide request parsing"):
        Bare().predictor(None)
    with pytest.raises(AbyssalError, match=r"does not provide sample data"):
        Bare().generate_sample(None, None)


def test_metric_layout_drops_columns_no_row_has() -> None:
    layout = MetricLayout(
        columns=(("auroc", "AUROC"), ("rmse", "RMSE")), models=(("", "net"), ("gbdt_", "trees"))
    )
    metrics = {"val_auroc": 0.9, "test_auroc": 0.8, "gbdt_test_auroc": 0.7, "best_epoch": 3}
    headers, rows = layout.table(metrics)
    assert headers == ["model", "split", "AUROC"]
    assert rows == [["net", "val", 0.9], ["net", "test", 0.8], ["trees", "test", 0.7]]
    assert layout.extra_values(metrics) == {"best_epoch": 3}


def test_listing_solutions_imports_no_solution_package() -> None:
    script = (
        "import sys\n"
        "from abyssal.cli.main import main\n"
        "assert main(['solutions']) == 0\n"
        "heavy = [m for m in sys.modules if m.startswith(('abyssal.solutions.', 'torch_geometric',"
        " 'sklearn'))]\n"
        "assert heavy == [], heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "fraud" in done.stdout and "tabular" in done.stdout
    assert "classification or regression" in done.stdout
