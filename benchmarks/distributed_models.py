"""What ``benchmarks/distributed.py`` trains, and how: synthetic-data tasks for ResNet-50 and a
GPT-style language model, the hand-written DDP loop the trainer is measured against, and the
worker each ``torchrun`` process runs (``python distributed_models.py SPEC``: the launch's jobs
one after the other, each rank writing ``<job id>/rank<r>.json``).

Both tasks follow :class:`abyssal.contracts.task.TrainTask`. Their data is generated once per
device from a fixed seed (:meth:`SyntheticTask.move_batch` turns a :class:`BatchKey` into tensors
already on the device, cached), so no host-to-device copy or data loading enters the timings,
and the trainer and the plain loop train on the very same tensors.

Example:
    >>> task = make_task("lm", steps=2, batch=2, vocab=64, dim=32, layers=1, heads=2, seq_len=8)
    >>> x, y = task.move_batch(task.train_batches(0, Shard())[0], torch.device("cpu"))
    >>> tuple(x.shape), tuple(y.shape)
    ((2, 8), (2, 8))
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import resource
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from abyssal.contracts.task import Shard


@dataclass(frozen=True)
class BatchKey:
    """A placeholder batch: ``split`` (``train`` or ``val``) of ``size`` items; the tensors are
    made on the device by :meth:`SyntheticTask.move_batch`."""

    split: str
    size: int

    def __len__(self) -> int:
        return self.size


class SyntheticTask:
    """A :class:`~abyssal.contracts.task.TrainTask` over one fixed random batch per split.

    Every epoch is ``steps`` batches; each is the same tensors (the benchmark measures speed, not
    learning). Subclasses define ``build_model`` and ``make_batch``.

    Args:
        steps: batches per epoch (the run's length with ``max_steps=steps``).
        batch: items per batch on each process.
        validate: whether ``val_batches`` holds a batch; with ``False`` the trainer's evaluation
            costs nothing (a compiled model would otherwise compile again for inference) and
            ``val_loss`` is NaN.
        seed: the data's seed.
    """

    metric = "val_loss"

    def __init__(self, steps: int, batch: int, validate: bool = True, seed: int = 0) -> None:
        self.steps, self.batch, self.validate, self.seed = steps, batch, validate, seed
        self.val_size = min(batch, 16)
        self._cache: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def make_batch(
        self, size: int, generator: torch.Generator, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def train_batches(self, epoch: int, shard: Shard) -> list[BatchKey]:
        """``steps`` keys of this process's (synthetic) batch."""
        return [BatchKey("train", self.batch)] * self.steps

    def val_batches(self, shard: Shard) -> list[BatchKey]:
        """One small batch, or none when the task does not validate."""
        return [BatchKey("val", self.val_size)] if self.validate else []

    def move_batch(self, batch: BatchKey, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's tensors on ``device``, generated there on first use from the seed."""
        device = torch.device(device)
        key = (batch.split, str(device))
        if key not in self._cache:
            seed = self.seed + (0 if batch.split == "train" else 1)
            generator = torch.Generator(device=device).manual_seed(seed)
            self._cache[key] = self.make_batch(batch.size, generator, device)
        return self._cache[key]

    def training_loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> Any:
        """Cross-entropy of the model's logits against the targets."""
        inputs, targets = batch
        return classification_loss(model(inputs), targets)

    def validation_step(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict:
        """Per-item loss, ``{"loss": (B,)}``."""
        inputs, targets = batch
        logits = model(inputs)
        loss = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), reduction="none"
        )
        return {"loss": loss.reshape(targets.size(0), -1).mean(dim=1)}

    def validation_metrics(self, outputs: Mapping[str, np.ndarray]) -> dict[str, float]:
        """``{"val_loss": mean}``; NaN without validation batches."""
        losses = outputs.get("loss")
        return {"val_loss": float(np.mean(losses)) if losses is not None else math.nan}


def classification_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy; logits ``(..., K)``, targets ``(...)`` (images or tokens alike)."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


class ResNet50Task(SyntheticTask):
    """torchvision ResNet-50 (``weights=None``, 1000 classes) in ``channels_last``, on random
    images of ``image_size`` pixels and random labels.

    Shapes:
        batch: images ``(B, 3, S, S)`` (channels_last), labels ``(B,)``.
    """

    def __init__(
        self,
        steps: int,
        batch: int = 256,
        image_size: int = 224,
        channels_last_weights: bool = True,
        **kwargs: Any,
    ):
        super().__init__(steps, batch, **kwargs)
        self.image_size = image_size
        self.channels_last_weights = channels_last_weights

    def build_model(self) -> nn.Module:
        from torchvision.models import resnet50

        model = resnet50(weights=None)
        # NHWC inputs alone already run the convolutions channels-last; FSDP2 needs the
        # parameters contiguous, so it gets them NCHW (channels_last_weights=False)
        if self.channels_last_weights:
            model = model.to(memory_format=torch.channels_last)
        return model

    def make_batch(
        self, size: int, generator: torch.Generator, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.image_size
        images = torch.randn(size, 3, s, s, generator=generator, device=device)
        labels = torch.randint(0, 1000, (size,), generator=generator, device=device)
        return images.contiguous(memory_format=torch.channels_last), labels


class LMTask(SyntheticTask):
    """Next-token prediction with :class:`GPT` on uniformly random tokens.

    Shapes:
        batch: inputs ``(B, T)`` and targets ``(B, T)`` (the inputs shifted by one), int64.
    """

    def __init__(
        self,
        steps: int,
        batch: int = 16,
        vocab: int = 50304,
        dim: int = 768,
        layers: int = 12,
        heads: int = 12,
        seq_len: int = 1024,
        **kwargs: Any,
    ):
        super().__init__(steps, batch, **kwargs)
        self.shape = {"vocab": vocab, "dim": dim, "layers": layers, "heads": heads}
        self.seq_len = seq_len

    def build_model(self) -> nn.Module:
        return GPT(**self.shape, seq_len=self.seq_len)

    def make_batch(
        self, size: int, generator: torch.Generator, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        vocab = self.shape["vocab"]
        tokens = torch.randint(
            0, vocab, (size, self.seq_len + 1), generator=generator, device=device
        )  # (B, T + 1)
        return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention through ``F.scaled_dot_product_attention`` (flash or
    memory-efficient kernels on GPUs).

    Shapes:
        x: ``(B, T, C)`` -> ``(B, T, C)``.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not a multiple of heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)  # 3 x (B, T, C)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, C / H)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))  # (B, T, C)


class Block(nn.Module):
    """A pre-norm transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``; FSDP shards the
    model one ``Block`` at a time.

    Shapes:
        x: ``(B, T, C)`` -> ``(B, T, C)``.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads)
        self.ln2 = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, 4 * dim, bias=False)
        self.out = nn.Linear(4 * dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    """A GPT-2-style decoder-only language model: token and learned position embeddings,
    ``layers`` :class:`Block` s, a final LayerNorm and a head tied to the token embedding.

    Radford et al., "Language Models are Unsupervised Multitask Learners" (2019); the layout
    follows nanoGPT. :meth:`init_weights` initialises every tensor, so the model can be built on
    the ``meta`` device and materialised shard by shard (FSDP).

    Shapes:
        tokens: ``(B, T)`` int64, ``T <= seq_len`` -> logits ``(B, T, vocab)``.

    Example:
        >>> GPT(vocab=16, dim=8, layers=1, heads=2, seq_len=4)(torch.zeros(1, 4).long()).shape
        torch.Size([1, 4, 16])
    """

    def __init__(self, vocab: int, dim: int, layers: int, heads: int, seq_len: int) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, dim)
        self.wpe = nn.Embedding(seq_len, dim)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.wte.weight  # tied
        self.init_weights()

    def init_weights(self) -> None:
        """GPT-2 initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2 layers)."""
        residual_std = 0.02 / math.sqrt(2 * len(self.blocks))
        with torch.no_grad():
            for name, module in self.named_modules():
                if isinstance(module, nn.LayerNorm):
                    nn.init.ones_(module.weight)
                    nn.init.zeros_(module.bias)
                elif isinstance(module, (nn.Linear, nn.Embedding)) and module is not self.head:
                    std = residual_std if name.endswith(("attn.proj", ".out")) else 0.02
                    nn.init.normal_(module.weight, std=std)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.size(1), device=tokens.device)  # (T,)
        x = self.wte(tokens) + self.wpe(positions)  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))  # (B, T, vocab)


GIB = 2**30
TASKS: dict[str, type[SyntheticTask]] = {"resnet50": ResNet50Task, "lm": LMTask}


def make_task(name: str, steps: int, **sizes: Any) -> SyntheticTask:
    """A task by name (``resnet50`` or ``lm``) with its sizes as keyword arguments."""
    if name not in TASKS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name](steps, **sizes)


def training_state_bytes(model: nn.Module) -> int:
    """Bytes of fp32 parameters, gradients and AdamW's two moments: 16 per parameter."""
    return 16 * sum(p.numel() for p in model.parameters())


def plain_ddp_loop(
    task: SyntheticTask,
    device: torch.device,
    *,
    dtype: torch.dtype | None,
    compile: bool,
    lr: float,
    weight_decay: float,
    clip: float | None,
    on_step: Callable[[int], None],
    seed: int = 0,
) -> tuple[nn.Module, float]:
    """The reference: a hand-written DDP training loop, nanoGPT-style, on the task's model and
    data, under the already joined default process group. Returns the (wrapped) model and the
    last step's loss.

    It matches the trainer's step: the model built after ``torch.manual_seed(seed)``, DDP with the
    same bucket settings (25 MiB, gradients as bucket views, no buffer broadcast), compiled after
    wrapping (so DDP's optimizer splits the graph at bucket boundaries and communication overlaps
    the backward), autocast in ``dtype``, AdamW with weight decay on >= 2-D tensors only,
    gradient clipping to ``clip`` (none if ``None``), ``zero_grad(set_to_none=True)``.
    """
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.manual_seed(seed)
    model = task.build_model().to(device)
    model = DDP(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        bucket_cap_mb=25.0,
        gradient_as_bucket_view=True,
        broadcast_buffers=False,
    )
    if compile:
        model = torch.compile(model)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))
    inputs, targets = task.move_batch(task.train_batches(0, Shard())[0], device)
    loss = torch.zeros(())
    for step in range(1, task.steps + 1):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(inputs)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        on_step(step)
    return model, float(loss.item())


class StepClock:
    """Times optimizer steps ``warmup + 1 .. steps``: the clock starts when step ``warmup`` ends
    and stops when step ``steps`` ends, each time after waiting for the device.

    Call it once per optimizer step (any arguments are ignored, so it serves as the trainer's
    ``on_step``). It also records the peak device memory when the last step ends.
    """

    def __init__(self, warmup: int, steps: int, device: torch.device) -> None:
        if not 1 <= warmup < steps:
            raise ValueError(f"need 1 <= warmup < steps, got warmup {warmup}, steps {steps}")
        self.warmup, self.steps, self.device = warmup, steps, device
        self.count = 0
        self.start: float | None = None
        self.seconds: float | None = None
        self.peak_allocated: int | None = None
        self.peak_reserved: int | None = None

    def __call__(self, *_: Any) -> None:
        self.count += 1
        if self.count not in (self.warmup, self.steps):
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        if self.count == self.warmup:
            self.start = now
            return
        self.seconds = now - (self.start or now)
        if self.device.type == "cuda":
            self.peak_allocated = torch.cuda.max_memory_allocated(self.device)
            self.peak_reserved = torch.cuda.max_memory_reserved(self.device)

    @property
    def timed_steps(self) -> int:
        return self.steps - self.warmup


# ------------------------------------------------- one launch's jobs, inside each torchrun process


def worker(spec_path: str) -> None:
    """Run a launch's jobs in this process; write ``<job id>/rank<r>.json`` for each."""
    spec = json.loads(Path(spec_path).read_text())
    rank = int(os.environ.get("RANK", "0"))
    torch.backends.cudnn.benchmark = spec["cudnn_benchmark"]
    for job in spec["jobs"]:
        folder = Path(spec["folder"]) / job["id"]
        folder.mkdir(parents=True, exist_ok=True)
        if time.time() > spec["deadline"]:
            record = {"status": "skipped", "error": "time budget spent"}
        else:
            # A fresh rendezvous store per job, hosted by rank 0: joining the default group a
            # second time through torchrun's own store hangs.
            os.environ.update(MASTER_PORT=str(job["port"]), TORCHELASTIC_USE_AGENT_STORE="False")
            record = run_job(job, folder)
        record["rank"] = rank
        (folder / f"rank{rank}.json").write_text(json.dumps(record))
        if rank == 0:
            shutil.rmtree(folder / "home", ignore_errors=True)  # checkpoints: GBs for big models
        _release()


def run_job(job: dict, folder: Path) -> dict:
    """One job on this process: the record of its timings, memory and outcome."""
    device = _device(job)
    if device.type == "cuda" and job["strategy"] != "parameter_server":
        torch.cuda.set_device(device)
        torch.cuda.reset_peak_memory_stats(device)
        if job["memory_cap_gib"]:
            total = torch.cuda.get_device_properties(device).total_memory
            torch.cuda.set_per_process_memory_fraction(job["memory_cap_gib"] * GIB / total, device)
    task = make_task(job["model"], job["steps"], validate=job["validate"], **job["sizes"])
    clock = StepClock(job["warmup"], job["steps"], device)
    record: dict[str, Any] = {"status": "ok"}
    if job["kind"] == "memory":
        with torch.device("meta"):
            record["state_bytes"] = training_state_bytes(task.build_model())
    start = time.perf_counter()
    try:
        if job["runner"] == "plain":
            record.update(_plain(job, task, device, clock))
        else:
            record.update(_trainer(job, task, clock, folder / "home"))
    except Exception as exc:  # recorded: one failed configuration must not end the benchmark
        oom = isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()
        message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if clock.seconds is not None:  # training was measured; it failed afterwards
            record["after_error"] = message
        else:
            record.update(status="oom" if oom else "error", error=message)
            if not oom:
                record["traceback"] = traceback.format_exc()[-3000:]
                print(f"[{job['id']}] {record['traceback']}", file=sys.stderr, flush=True)
    finally:
        _leave_group()
    record["wall_s"] = time.perf_counter() - start
    record.update(seconds=clock.seconds, timed_steps=clock.timed_steps, steps_seen=clock.count)
    record.update(peak_allocated=clock.peak_allocated, peak_reserved=clock.peak_reserved)
    if clock.device.type == "cuda" and (job["strategy"] != "parameter_server" or clock.count):
        record["job_peak_allocated"] = torch.cuda.max_memory_allocated(clock.device)
    record["cpu_maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return record


def _device(job: dict) -> torch.device:
    if job["device"] == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def _trainer(job: dict, task: Any, clock: StepClock, home: Path) -> dict:
    from abyssal.train.api import fit_task

    result = fit_task(
        task,
        _train_config(job),
        metric="val_loss",
        mode="min",
        home=home,
        on_step=_follow_device(clock),
        label=job["id"],
    )
    if result is None:
        return {"trains": False}
    return {"trains": True, "val_loss": result.best_metrics.get("val_loss")}


def _follow_device(clock: StepClock) -> Any:
    """The clock, timing the device the strategy chose (a parameter-server worker's GPU)."""

    def on_step(state: Any) -> None:
        if clock.count == 0 and clock.device.type == "cuda":
            clock.device = torch.device("cuda", torch.cuda.current_device())
        clock(state)

    return on_step


def _train_config(job: dict) -> Any:
    from abyssal.contracts.train_config import FSDPConfig, ParameterServerConfig, TrainConfig

    return TrainConfig(
        epochs=1,
        max_steps=job["steps"],
        lr=job["lr"],
        weight_decay=job["weight_decay"],
        clip_grad_norm=job["clip"],
        precision=job["precision"],
        device=job["device"] if job["device"] != "auto" else "auto",
        strategy=job["strategy"],
        compile=job["compile"],
        deterministic=False,
        progress=False,
        patience=0,
        timeout_s=300.0,  # first steps compile, at different speeds on each rank
        fsdp=FSDPConfig(
            cpu_offload=job["cpu_offload"],
            shard_modules=["Block"] if job["model"] == "lm" else ["Bottleneck"],
        ),
        parameter_server=ParameterServerConfig(servers=1, staleness=job["ps_staleness"]),
    )


def _plain(job: dict, task: Any, device: torch.device, clock: StepClock) -> dict:
    import datetime

    import torch.distributed as dist

    from abyssal.core.devices import autocast_dtype

    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend,
        timeout=datetime.timedelta(seconds=300),
        device_id=device if backend == "nccl" else None,
    )
    dtype = autocast_dtype(job["precision"], device)
    model, loss = plain_ddp_loop(
        task,
        device,
        dtype=dtype,
        compile=job["compile"],
        lr=job["lr"],
        weight_decay=job["weight_decay"],
        clip=job["clip"],
        on_step=clock,
    )
    out: dict[str, Any] = {"trains": True, "last_loss": loss}
    if job["validate"]:
        batch = task.move_batch(task.val_batches(None)[0], device)
        model.eval()
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            losses = task.validation_step(model, batch)["loss"].float().cpu().numpy()
        out["val_loss"] = task.validation_metrics({"loss": losses})["val_loss"]
    return out


def _leave_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def _release() -> None:
    """Free what the last job left: compiled graphs, cached blocks, the memory cap."""
    torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        with contextlib.suppress(Exception):
            torch.cuda.set_per_process_memory_fraction(1.0)


if __name__ == "__main__":
    worker(sys.argv[1])
