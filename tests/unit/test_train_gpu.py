"""Step-based training on a CUDA device: bf16 autocast, a cosine schedule, and an exact
mid-epoch resume (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch

from abyssal.core.runs import Run
from tests.unit.test_train_steps import StepTask, _fit, _rows, _same

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA device", allow_module_level=True)


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_mid_epoch_resume_on_cuda_is_exact(precision: str) -> None:
    kw = dict(epochs=3, max_steps=15, eval_every_steps=2, schedule="cosine", warmup_steps=3,
              device="cuda", precision=precision)  # fmt: skip
    straight, _ = _fit(StepTask(), **kw)
    assert next(straight.model.parameters()).device.type == "cuda"
    run = Run.create("train", "toy", None)
    with pytest.raises(KeyboardInterrupt):
        _fit(StepTask(interrupt_at=(1, 3)), run=run, **kw)
    resumed, _ = _fit(StepTask(), run=Run.open(run.id), resume=True, **kw)
    assert _same(resumed.model, straight.model)
    assert _rows(resumed.history) == _rows(straight.history)
