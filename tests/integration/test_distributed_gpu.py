"""The distributed strategies on CUDA devices with NCCL (skipped without them): one process per
GPU under torchrun trains the toy task like one process does, and a sharded (FSDP) run's
checkpoint loads into one process."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.integration.test_distributed import launch, ok, params

GPU = {"device": "cuda", "precision": "fp32", "deterministic": False}

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
needs_two = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")


@pytest.fixture(scope="module")
def single_gpu(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("single_gpu")
    return ok(launch(tmp, "single", 0, {"train": {**GPU, "strategy": "local"}}))


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_one_gpu_process_under_nccl_equals_the_local_strategy(tmp_path, single_gpu, strategy):
    out = ok(launch(tmp_path, strategy, 1, {"train": {**GPU, "strategy": strategy}}))
    np.testing.assert_allclose(params(out), params(single_gpu), rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@needs_gpu
def test_bf16_fsdp_on_one_gpu_trains(tmp_path):
    spec = {"train": {**GPU, "strategy": "fsdp", "precision": "bf16"}}
    out = ok(launch(tmp_path, "bf16", 1, spec))
    losses = [r["val_loss"] for r in out["history"]]
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.multigpu
@needs_two
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_gpus_equal_one_process_with_the_same_global_batch(tmp_path, single_gpu, strategy):
    out = ok(launch(tmp_path, strategy, 2, {"train": {**GPU, "strategy": strategy}}))
    np.testing.assert_allclose(params(out), params(single_gpu), rtol=1e-4, atol=1e-5)


@pytest.mark.multigpu
@needs_two
def test_two_gpu_fsdp_checkpoint_resumes_on_one_gpu(tmp_path, single_gpu):
    from tests.integration.test_distributed import _only_run

    cut = launch(tmp_path, "cut", 2, {"train": {**GPU, "strategy": "fsdp"}, "exit_at": 10})
    assert cut.returncode != 0
    spec = {"train": {**GPU, "strategy": "local"}, "resume": _only_run(tmp_path / "home")}
    out = ok(launch(tmp_path, "resumed", 0, spec))
    np.testing.assert_allclose(params(out), params(single_gpu), rtol=1e-4, atol=1e-5)
