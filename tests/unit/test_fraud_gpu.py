"""The fraud solution trains and scores on a CUDA device (skipped without one)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from abyssal.core.config import load_config
from abyssal.core.runs import Run
from abyssal.solutions.fraud.solution import FraudSolution, score_graph
from abyssal.train.trainer import Trainer

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA device", allow_module_level=True)


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_fraud_trains_on_cuda_and_scores_like_cpu(precision: str) -> None:
    sol = FraudSolution()
    cfg = load_config(
        sol.config_cls,
        overrides=["data.synthetic_users=300", "data.synthetic_rings=3", "train.epochs=4",
                   "train.device=cuda", f"train.precision={precision}", "train.progress=false"],
    )  # fmt: skip
    data = sol.prepare(cfg)
    run = Run.create("train", "fraud", cfg)
    fit = Trainer(sol.task(cfg, data), cfg.train, run, metric=sol.default_metric).fit()
    model = fit.model
    assert next(model.parameters()).device.type == "cuda"
    assert fit.epochs_run == 4 and np.isfinite(fit.history[-1]["train_loss"])
    gpu_risk, gpu_txn = score_graph(model, data)
    cpu_risk, cpu_txn = score_graph(model.cpu(), data)
    np.testing.assert_allclose(gpu_risk, cpu_risk, atol=1e-4)
    np.testing.assert_allclose(gpu_txn, cpu_txn, atol=1e-4)
    metrics = sol.evaluate(cfg, model, data)
    assert 0.0 <= metrics["test_auprc"] <= 1.0


def test_train_evaluates_on_the_training_device() -> None:
    from abyssal.train.api import train

    seen: list[str] = []
    original = FraudSolution.evaluate

    def spy(self, cfg, model, data):
        seen.append(next(model.parameters()).device.type)
        return original(self, cfg, model, data)

    overrides = ["data.synthetic_users=300", "data.synthetic_rings=3", "train.epochs=2",
                 "train.device=cuda", "train.progress=false", "baselines=false"]  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(FraudSolution, "evaluate", spy)
        out = train("fraud", overrides=overrides)
    assert seen == ["cuda"] and 0.0 <= out.metrics["test_auprc"] <= 1.0
