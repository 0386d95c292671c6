"""The training loop: any :class:`~abyssal.contracts.task.TrainTask`, on any :class:`Strategy`.

The loop knows nothing about a solution's data or model. Each epoch reseeds every RNG from
``(seed, epoch)`` and trains on the strategy's shard of the task's batches, with gradient
accumulation, clipping, mixed precision and a learning-rate schedule; it validates after every
epoch (or every ``eval_every_steps`` optimizer steps), logs a row to the run, keeps the best
weights and writes a checkpoint. Validation outputs are gathered from every process before the
task computes metrics. Because each epoch starts from a state that the checkpoint fully
determines, and a checkpoint written mid-epoch records how many batches the epoch had used, a run
resumed after a crash (or ``kill -9``) ends with exactly the weights and metrics of a run that was
never interrupted. With ``train.privacy.enabled`` the loop runs DP-SGD and reports the epsilon spent
(:mod:`abyssal.train.privacy`).

Example:
    >>> run = Run.create("train", "toy", cfg)  # doctest: +SKIP
    >>> result = Trainer(task, cfg, run, metric="accuracy").fit()  # doctest: +SKIP
    >>> result.best_epoch, result.best_metrics  # doctest: +SKIP
    (7, {'accuracy': 0.93})
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from abyssal.contracts.task import TrainTask
from abyssal.contracts.train_config import TrainConfig
from abyssal.core.devices import (
    autocast_dtype,
    derive_seed,
    deterministic_kernels,
    seed_everything,
)
from abyssal.core.errors import AbyssalError, ConfigError
from abyssal.core.runs import Run
from abyssal.train.checkpoint import (
    Checkpoint,
    TrainState,
    capture_rng,
    checkpoint_exists,
    read_checkpoint,
    restore_rng,
    save_checkpoint,
)
from abyssal.train.optim import build_optimizer, lr_factor, set_learning_rate, trainable_parameters
from abyssal.train.prefetch import Prefetcher
from abyssal.train.privacy import PrivacyPlan, PrivateStrategy, plan_privacy, private_optimizer
from abyssal.train.sharded import load_sharded_full, load_sharded_into, sharded_state, write_sharded
from abyssal.train.strategy import Strategy, load_model_state, make_strategy
from abyssal.train.validation import validate_task
from abyssal.train.warm import load_warm, warm_state

__all__ = ["FitResult", "Trainer", "validate_task"]

RESERVED_KEYS = ("epoch", "step", "train_loss", "time")
_MIN_HINTS = ("loss", "rmse", "mse", "mae", "error")
_CUDA_LOSS_CHECK_EVERY = 50  # steps between loss checks on a GPU (each one waits for the GPU)


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` returns.

    Args:
        model: the unwrapped model with the best weights loaded, in eval mode.
        best_metrics: the validation metrics of the best evaluation (empty if no evaluation had a
            finite value of the watched metric).
        best_epoch: the epoch of the best evaluation (0-based), or ``None``.
        epochs_run: epochs started, including those before a resume.
        stopped_early: whether early stopping ended training.
        history: the metric rows, one per evaluation, as in the run's ``metrics.jsonl``.
        best_step: the optimizer step of the best evaluation, or ``None``.
        privacy: with ``train.privacy``: ``epsilon`` (after every step taken), ``delta``,
            ``noise_multiplier`` and ``max_grad_norm``; empty otherwise.
    """

    model: nn.Module
    best_metrics: dict[str, float]
    best_epoch: int | None
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, Any]]
    best_step: int | None = None
    privacy: dict[str, float] = field(default_factory=dict)


@dataclass
class _Session:
    """The live objects of one ``fit`` call."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    device: torch.device
    dtype: torch.dtype | None
    total_steps: int | None
    state: TrainState = field(default_factory=TrainState)
    history: list[dict[str, Any]] = field(default_factory=list)
    pending_rng: Checkpoint | None = None  # RNG to restore after skipping a resumed epoch's batches
    bar: Any = None
    clock: float = field(default_factory=time.perf_counter)
    loss_window: torch.Tensor | None = None  # summed loss of steps not yet checked, on the device
    window_first_step: int = 0  # the first step loss_window covers
    local_items: int | None = 0  # items this process trained on in the epoch (None: unknown)
    topology_offset: int | None = None  # items of the resumed epoch done under another topology
    trimmed: bool = False  # already said that ranks trim epochs to a common batch count
    ema: Any = None  # train.ema_decay: the weights' moving average (torch AveragedModel)


class Trainer:
    """Trains a task and records it in a run; resumable from the run's last checkpoint.

    Args:
        task: what to train (model, batches, loss, validation).
        cfg: how to train.
        run: where metrics, logs and checkpoints go.
        metric: the validation metric to watch when ``cfg.early_stopping_metric`` is ``None``
            (normally the solution's choice).
        mode: whether larger ``metric`` is better; used when ``cfg.early_stopping_mode`` is
            ``auto``.
        strategy: where to train; ``make_strategy(cfg)`` by default.
        end_status: the run's status when training ends: ``completed``, or ``trained`` for a
            caller that still has to register the model (:func:`abyssal.train.api.train` then
            sets ``completed``), so that a run killed in between does not read as completed.
        on_step: called with the counters after every optimizer step, on every training process
            (e.g. to time steps); it must not change them.

    Raises:
        ConfigError: no metric to watch, or an ``end_status`` other than these two.

    Example:
        >>> trainer = Trainer(task, TrainConfig(epochs=5), run, metric="auc")  # doctest: +SKIP
        >>> trainer.fit().epochs_run  # doctest: +SKIP
        5
    """

    def __init__(
        self,
        task: TrainTask,
        cfg: TrainConfig,
        run: Run,
        *,
        metric: str | None = None,
        mode: Literal["max", "min"] = "max",
        strategy: Strategy | None = None,
        end_status: Literal["completed", "trained"] = "completed",
        on_step: Callable[[TrainState], None] | None = None,
    ) -> None:
        if end_status not in ("completed", "trained"):
            raise ConfigError(f"end_status must be 'completed' or 'trained', got {end_status!r}")
        self.end_status = end_status
        self.task = task
        self.cfg = cfg
        self.run = run
        self.metric = cfg.early_stopping_metric or metric
        if not self.metric:
            raise ConfigError("no validation metric to watch: set train.early_stopping_metric")
        self.mode = _resolve_mode(cfg, metric, mode)
        self.strategy = strategy if strategy is not None else make_strategy(cfg)
        self.on_step = on_step
        self.privacy: PrivacyPlan | None = None  # set when training starts (train.privacy)
        self._warm: tuple[str, dict[str, torch.Tensor]] | None = None  # train.init_from

    def fit(self, resume: bool = False) -> FitResult:
        """Train to the end (``cfg.epochs``, ``cfg.max_steps`` or early stopping).

        Call it on every training process of the strategy; only the main one writes the run's
        records and checkpoints.

        Args:
            resume: continue from the run's last checkpoint (model, optimizer, scaler, counters,
                best-so-far, metric history, and the position inside a partly trained epoch,
                also when the number of processes changed); a run that has already reached its
                end just returns its result.

        Returns:
            The result, with the best weights loaded into a plain (unwrapped, unsharded) model.

        Raises:
            RunLockedError: another process is training the run (nothing is changed then).
            AbyssalError: a non-finite training loss (naming the epoch and steps), a missing
                validation metric, a damaged checkpoint or one of another model, or
                ``resume=False`` on a run that already has checkpoints. The run is marked
                ``failed`` (``interrupted`` on Ctrl-C).
        """
        if not self.strategy.trains:
            raise AbyssalError("this process serves the others (strategy.serve), it does not train")
        if self.strategy.is_main:
            self.run.lock()  # before anything else: a second trainer changes nothing
        try:
            with deterministic_kernels(self.cfg.deterministic):
                return self._fit(resume)
        except KeyboardInterrupt:
            self._mark_stopped("interrupted", "interrupted by the user (KeyboardInterrupt)")
            raise
        except BaseException as exc:
            self._mark_stopped("failed", f"{type(exc).__name__}: {exc}")
            raise

    def _fit(self, resume: bool) -> FitResult:
        s = self._start(resume)
        if not self._finished(s):
            self._loop(s)
        return self._finish(s)

    def build_model(self) -> nn.Module:
        """The task's model as every process builds it: seeded, with frozen parameters set."""
        seed_everything(self.cfg.seed)
        raw = self.task.build_model()
        if self.cfg.init_from:  # a warm start: the stored version's weights, read once
            if self._warm is None:
                self._warm = warm_state(self.cfg.init_from)
            load_warm(raw, self._warm[1], self._warm[0])
        trainable_parameters(raw, self.cfg.trainable, self.cfg.frozen)  # freeze before wrapping
        return raw

    def _start(self, resume: bool) -> _Session:
        cfg = self.cfg
        device = self.strategy.device(cfg.device)
        if cfg.privacy.enabled and self.privacy is None:
            self._make_private(device)
        dtype = autocast_dtype("fp32" if self.privacy else cfg.precision, device)
        total = self._total_steps()
        model = self.strategy.setup(self.build_model(), device)
        ema = self._averaged(model) if cfg.ema_decay else None  # copied before compiling
        if cfg.compile:
            model.compile()  # in place: parameter names and checkpoints stay as they are
        optimizer = build_optimizer(self.strategy.unwrap(model), cfg)
        if self.privacy is not None:
            optimizer = private_optimizer(optimizer, self.privacy)
        scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        s = _Session(model, optimizer, scaler, device, dtype, total)
        s.ema = ema
        if resume:
            self._resume(s)
        elif checkpoint_exists(self.run.checkpoint_dir, "last"):
            raise AbyssalError(
                f"run {self.run.id} already has checkpoints; resume it or start a new run"
            )
        if self.strategy.is_main:
            self.run.set_status("running")
        trained = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
        where = f"{device}"
        if self.strategy.world_size > 1:
            where = f"{self.strategy.world_size} processes ({self.strategy.name}, {device} here)"
        self._log(
            f"training on {where}, precision {dtype or torch.float32}, metric {self.metric} "
            f"({self.mode}), {trained:,} trainable parameters, {total or 'unknown'} steps"
        )
        return s

    def _averaged(self, model: nn.Module) -> nn.Module:
        """A moving average of ``model``'s weights and buffers (``train.ema_decay`` per step;
        the first step copies them)."""
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        return AveragedModel(
            self.strategy.unwrap(model),
            multi_avg_fn=get_ema_multi_avg_fn(self.cfg.ema_decay),
            use_buffers=True,
        )

    def _make_private(self, device: torch.device) -> None:
        """DP-SGD: check the task and settings, plan the noise, wrap the strategy."""
        self.privacy = plan = plan_privacy(
            self.cfg,
            self.task,
            strategy_name=self.strategy.name,
            world_size=self.strategy.world_size,
            shard=self.strategy.shard,
            build_model=self.build_model,
            device=device,
            planned_steps=self._total_steps(),
        )
        self.strategy = PrivateStrategy(self.strategy, plan)
        self._log(
            f"DP-SGD: noise_multiplier={plan.noise_multiplier:.4g}, max_grad_norm="
            f"{plan.max_grad_norm:g} per example (replaces train.clip_grad_norm), delta="
            f"{plan.delta:.3g}, sample rate {plan.sample_rate:.4g} ({plan.train_items} examples, "
            f"{plan.batches_per_epoch} batches an epoch), epsilon after {plan.planned_steps} "
            f"planned steps: {plan.epsilon(plan.planned_steps or 0):.4g}"
        )

    def _batch_count(self, batches: Any) -> int | None:
        """The epoch's batch count every process trains: the fewest any has, so that processes
        end their epochs together (in lockstep, DDP and FSDP collectives need it; a parameter
        server at staleness 0 waits for every worker's push)."""
        count = len(batches) if hasattr(batches, "__len__") else None
        if self.strategy.world_size == 1:
            return count
        if count is None:
            raise ConfigError(
                f"train.strategy={self.strategy.name} has every process train the same number "
                "of batches each epoch, and this task's batches have no length"
            )
        return self.strategy.agree(count, "min")

    def _total_steps(self) -> int | None:
        """All optimizer steps of the run, when the task's batches have a length (or max_steps)."""
        cfg = self.cfg
        count = self._batch_count(self.task.train_batches(0, self.strategy.shard))
        total = None
        if count is not None:
            total = cfg.epochs * math.ceil(count / cfg.grad_accum_steps)
        if cfg.max_steps is not None:
            total = cfg.max_steps if total is None else min(total, cfg.max_steps)
        if total is None and cfg.schedule != "constant":
            raise ConfigError(
                f"train.schedule={cfg.schedule} needs the run's length, and this task's batches "
                "have no length: set train.max_steps"
            )
        return total

    def _resume(self, s: _Session) -> None:
        folder = self.run.checkpoint_dir
        if not checkpoint_exists(folder, "last"):
            self._log("resume: no checkpoint yet, starting from the beginning")
            if self.strategy.is_main:
                self.run.truncate_metrics(-1)
            return
        ckpt = read_checkpoint(folder, "last")
        if ckpt.note:
            self._log(ckpt.note)
        self._load_states(s, ckpt)
        if s.ema is not None:  # a checkpoint without an average starts one at the next step
            averaged = ckpt.averaged_state()
            if averaged is not None:
                s.ema.load_state_dict(averaged)
        if s.scaler.is_enabled() and ckpt.meta.get("scaler"):
            s.scaler.load_state_dict(ckpt.meta["scaler"])
        s.state = st = ckpt.state
        moved = st.world_size != self.strategy.world_size
        if st.batches_in_epoch:
            s.pending_rng = ckpt
            if moved:
                self._resume_elsewhere(s, st)
        step = st.global_step
        if self.strategy.is_main:
            self.run.truncate_metrics_after_step(step)
        s.history = [r for r in self.run.metrics_history() if r.get("step", -1) <= step]
        where = f"{st.batches_in_epoch} batches into epoch {st.epoch + 1}"
        if s.topology_offset is not None:
            where = f"{s.topology_offset} items into epoch {st.epoch + 1}"
        elif not st.batches_in_epoch:
            where = f"after epoch {st.epoch}"
        was = f", written by {st.world_size} processes" if moved else ""
        self._log(f"resumed {where} (step {step}{was})")

    def _load_states(self, s: _Session, ckpt: Checkpoint) -> None:
        """The checkpoint's model and optimizer state into the set-up model and optimizer."""
        folder = ckpt.sharded_folder
        if folder is None:
            model, optimizer = ckpt.model_state(), ckpt.optimizer_state()
        elif self.strategy.sharded_checkpoints:  # each process reads its own new shards
            load_sharded_into(folder, s.model, s.optimizer)
            return
        else:  # full states, read by each process from the shards of another run's layout
            cfg = self.cfg
            model, optimizer = load_sharded_full(
                folder, self.build_model, lambda m: build_optimizer(m, cfg)
            )
        self.strategy.load_state(s.model, s.optimizer, model, optimizer)

    def _resume_elsewhere(self, s: _Session, st: TrainState) -> None:
        """A mid-epoch checkpoint of another number of processes: continue the epoch's order
        after the items already trained on, dealt over this run's processes."""
        if st.items_in_epoch is None:
            raise AbyssalError(
                f"cannot resume mid-epoch on {self.strategy.world_size} processes: the checkpoint "
                f"was written by {st.world_size} after {st.batches_in_epoch} batches of epoch "
                f"{st.epoch + 1}, and this task's batches do not tell their size (len), so the "
                f"position cannot be carried over; resume on {st.world_size} processes"
            )
        s.topology_offset = st.items_in_epoch
        st.batches_in_epoch = 0

    def _finished(self, s: _Session) -> bool:
        st, cfg = s.state, self.cfg
        if st.stopped_early or (cfg.max_steps is not None and st.global_step >= cfg.max_steps):
            return True
        return (
            st.epoch + 1 >= cfg.epochs and st.batches_in_epoch == 0 and (s.topology_offset is None)
        )

    def _loop(self, s: _Session) -> None:
        by_step = self.cfg.max_steps is not None
        s.bar = tqdm(
            total=self.cfg.max_steps if by_step else self.cfg.epochs,
            initial=s.state.global_step if by_step else s.state.epoch + 1,
            desc=f"train {self.run.id}",
            unit="step" if by_step else "epoch",
            disable=not (self.cfg.progress and self.strategy.is_main),
            dynamic_ncols=True,
        )
        with s.bar:
            epoch = s.state.epoch + 1
            while not self._finished(s):
                self._run_epoch(s, epoch)
                epoch += 1

    def _run_epoch(self, s: _Session, epoch: int) -> None:
        # Every epoch starts from RNG states fixed by (seed, epoch) alone, so a resumed run
        # draws the same batches and dropout masks as an uninterrupted one.
        seed_everything(derive_seed(self.cfg.seed, epoch))
        batches, remaining = self._epoch_batches(s, epoch)
        depth = self.cfg.prefetch_batches
        with Prefetcher(batches, depth) if depth else contextlib.nullcontext(batches) as batches:
            self._train_batches(s, epoch, batches, remaining)

    def _train_batches(
        self, s: _Session, epoch: int, batches: Iterator[Any], remaining: int | None
    ) -> None:
        k, window, pending = self.cfg.grad_accum_steps, None, 0
        for i, batch in enumerate(batches):
            last = remaining is not None and i + 1 == remaining
            loss = self._backward(s, batch, sync=pending + 1 == k or last)
            window = loss if window is None else window + loss
            pending += 1
            s.state.batches_in_epoch += 1
            if s.local_items is not None:
                s.local_items = s.local_items + len(batch) if hasattr(batch, "__len__") else None
            if pending == k:
                self._step(s, epoch, window, pending)
                window, pending = None, 0
                if self._after_step(s, epoch):
                    return
        if s.state.batches_in_epoch == 0 and s.topology_offset is None:
            raise AbyssalError(f"the task yielded no training batches for epoch {epoch}")
        if pending:  # flush the partial accumulation at the end of the epoch
            self._step(s, epoch, window, pending)
            if self._after_step(s, epoch):
                return
        self._end_epoch(s, epoch)

    def _epoch_batches(self, s: _Session, epoch: int) -> tuple[Iterator[Any], int | None]:
        """The epoch's batches on this process, past those a resumed run already trained on,
        and how many there are (``None``: unknown)."""
        st = s.state
        shard = self.strategy.shard
        if st.epoch_offset:
            shard = dataclasses.replace(shard, offset=st.epoch_offset)
        skip = st.batches_in_epoch
        if s.topology_offset is not None:  # resumed on another number of processes
            st.epoch_offset = s.topology_offset
            shard = dataclasses.replace(shard, offset=s.topology_offset)
            s.topology_offset, skip = None, 0
        s.local_items = 0
        listed = self.task.train_batches(epoch, shard)
        count = self._batch_count(listed)
        own = len(listed) if hasattr(listed, "__len__") else None
        if count is not None and own is not None and count < own and not s.trimmed:
            s.trimmed = True
            self._log(f"processes hold unequal batch counts: each trains {count} per epoch")
        batches = iter(listed)
        for done in range(skip):
            batch = next(batches, None)
            if batch is None:
                raise AbyssalError(
                    f"cannot resume: epoch {epoch} now has {done} batches, the checkpoint was "
                    f"written after {skip} (the data or the batch size changed)"
                )
            if s.local_items is not None:
                s.local_items = s.local_items + len(batch) if hasattr(batch, "__len__") else None
        if s.pending_rng is not None:  # the RNG as it was when the checkpoint was written
            restore_rng(s.pending_rng, self.strategy.rank)
            s.pending_rng = None
        if count is None:
            return batches, None
        return itertools.islice(batches, max(0, count - skip)), max(0, count - skip)

    def _end_epoch(self, s: _Session, epoch: int) -> None:
        st = s.state
        st.epoch, st.batches_in_epoch = epoch, 0
        st.epoch_offset, st.items_in_epoch, s.local_items = 0, 0, 0
        if self.cfg.max_steps is None:
            s.bar.update(1)
        every = self.cfg.eval_every_steps
        if every is None or (self._finished(s) and st.last_eval_step != st.global_step):
            self._evaluate(s, epoch)

    def _after_step(self, s: _Session, epoch: int) -> bool:
        """Evaluate if due; whether training must stop now (max_steps or early stopping)."""
        st, cfg = s.state, self.cfg
        if cfg.max_steps is not None:
            s.bar.update(1)
        reached = cfg.max_steps is not None and st.global_step >= cfg.max_steps
        due = cfg.eval_every_steps is not None and st.global_step % cfg.eval_every_steps == 0
        if reached or due:
            self._evaluate(s, epoch)
        return reached or st.stopped_early

    def _backward(self, s: _Session, batch: Any, sync: bool) -> torch.Tensor:
        """Forward and backward one batch; gradients add up, scaled by 1/k. Returns the loss.

        ``sync=False`` on micro-batches that do not end an accumulation window: the strategy
        then skips gradient synchronisation (DDP's ``no_sync``)."""
        batch = self.task.move_batch(batch, s.device)
        with self.strategy.accumulate(s.model, sync):
            with self._autocast(s):
                loss = self.task.training_loss(s.model, batch)
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise AbyssalError(f"training_loss must return a scalar tensor, got {loss!r:.80}")
            s.scaler.scale(loss.reshape(()) / self.cfg.grad_accum_steps).backward()
        return loss.detach().float().reshape(())

    def _step(self, s: _Session, epoch: int, window: torch.Tensor, count: int) -> None:
        """One optimizer step over ``count`` accumulated batches at the scheduled rate."""
        cfg, st = self.cfg, s.state
        k = cfg.grad_accum_steps
        if count < k:  # a partial window: make its gradient the mean over `count` batches
            for param in s.model.parameters():
                if param.grad is not None:
                    param.grad.mul_(k / count)
        if s.loss_window is None:
            s.loss_window, s.window_first_step = window, st.global_step + 1
        else:
            s.loss_window = s.loss_window + window
        st.loss_batches += count
        if s.device.type == "cpu" or (st.global_step + 1) % _CUDA_LOSS_CHECK_EVERY == 0:
            self._check_loss(s, epoch, st.global_step + 1)  # before the step, where it is cheap
        factor = lr_factor(
            cfg.schedule,
            step=st.global_step,
            total=s.total_steps,
            warmup=cfg.warmup_steps,
            min_ratio=cfg.min_lr_ratio,
        )
        set_learning_rate(s.optimizer, factor, epoch=epoch, delay_epochs=cfg.delay_epochs)
        self.strategy.step(s.model, s.optimizer, s.scaler, cfg.clip_grad_norm)
        if s.ema is not None:
            s.ema.update_parameters(self.strategy.unwrap(s.model))
        st.global_step += 1
        if self.on_step is not None:
            self.on_step(st)

    def _check_loss(self, s: _Session, epoch: int, step: int) -> None:
        """Move the device-side loss sum into the counters; fail on a non-finite loss.

        On a GPU this waits for the device, so it runs every few dozen steps and before each
        evaluation, not every step. Processes in lockstep agree on the verdict."""
        if s.loss_window is None:
            return
        value = s.loss_window.item()
        if self.strategy.lockstep and self.strategy.world_size > 1:
            value = self.strategy.mean(value)
        first, s.loss_window = s.window_first_step, None
        if not math.isfinite(value):
            steps = f"step {step}" if first == step else f"steps {first}-{step}"
            raise AbyssalError(
                f"training loss is {value} at epoch {epoch}, {steps}: lower train.lr, set "
                "train.clip_grad_norm, or check the data and the loss"
            )
        s.state.loss_sum += value

    def _evaluate(self, s: _Session, epoch: int) -> None:
        st = s.state
        self._check_loss(s, epoch, st.global_step)
        metrics = self._validate(s)
        train_loss = self.strategy.mean(st.loss_sum / max(1, st.loss_batches))
        now = time.perf_counter()
        row = {"epoch": epoch, "step": st.global_step, "train_loss": train_loss}
        if self.privacy is not None:
            metrics = {**metrics, "epsilon": self.privacy.epsilon(st.global_step)}
        row.update(metrics, time=round(now - s.clock, 4))
        s.clock = now
        st.loss_sum, st.loss_batches = 0.0, 0
        st.evaluations += 1
        st.last_eval_step = st.global_step
        improved = self._update_best(st, epoch, metrics[self.metric])
        s.history.append(row)
        self._record(s, row, improved)
        shown = {"train_loss": f"{train_loss:.4g}", self.metric: f"{row[self.metric]:.4g}"}
        if self.privacy is not None:
            shown["epsilon"] = f"{row['epsilon']:.3g}"
        s.bar.set_postfix(shown, refresh=False)

    def _validate(self, s: _Session) -> dict[str, float]:
        model = s.model if s.ema is None else s.ema.module  # the average: what will be kept
        raw = validate_task(self.task, model, self.strategy, s.device, s.dtype)
        return self._check_metrics(raw)

    def _check_metrics(self, raw: Mapping[str, Any]) -> dict[str, float]:
        metrics = {k: float(v) for k, v in raw.items()}
        clash = sorted(set(metrics) & set(RESERVED_KEYS))
        if clash:
            raise AbyssalError(
                f"validation_metrics() returned reserved metric names: {', '.join(clash)}"
            )
        if self.metric not in metrics:
            got = ", ".join(metrics) or "(none)"
            raise AbyssalError(
                f"validation metric '{self.metric}' is missing; validation_metrics() gave: {got}"
            )
        return metrics

    def _update_best(self, state: TrainState, epoch: int, value: float) -> bool:
        best = state.best_metric
        larger = self.mode == "max"
        better = math.isfinite(value) and (
            best is None or (value > best if larger else value < best)
        )
        if better:
            state.best_metric, state.best_epoch = value, epoch
            state.best_step, state.evals_since_improvement = state.global_step, 0
        else:
            state.evals_since_improvement += 1
        patience = self.cfg.patience
        if patience and state.evals_since_improvement >= patience:
            state.stopped_early = True
        return better

    def _record(self, s: _Session, row: dict[str, Any], improved: bool) -> None:
        """Log the evaluation's row and write the best and last checkpoints that are due.

        States are gathered on every process (collectives under FSDP or a parameter server);
        only the main process writes."""
        st, strategy = s.state, self.strategy
        last_due = st.evaluations % self.cfg.checkpoint_every == 0 or self._finished(s)
        folder = self.run.checkpoint_dir
        weights = optimizer = rngs = best_shards = last_shards = averaged = None
        if strategy.sharded_checkpoints:  # every process writes its shards
            weights, optimizer = {}, None
            if improved:
                best_shards = write_sharded(folder, "best", sharded_state(s.model, None), strategy)
            if last_due:
                state = sharded_state(s.model, s.optimizer)
                last_shards = write_sharded(folder, "last", state, strategy)
        elif improved or last_due:
            weights = strategy.model_state(s.model)
            if last_due:
                optimizer = strategy.optimizer_state(s.model, s.optimizer)
            if s.ema is not None:  # best: the average; last: the trained weights and the average
                averaged = {k: v.detach().cpu() for k, v in s.ema.state_dict().items()}
        best_weights = weights
        if averaged is not None:
            prefix = "module."
            best_weights = {
                k[len(prefix) :]: v for k, v in averaged.items() if k.startswith(prefix)
            }
        if last_due:
            rngs = strategy.all_gather(capture_rng(all_devices=strategy.world_size == 1))
            items = strategy.all_gather(s.local_items)
            st.world_size = strategy.world_size
            st.items_in_epoch = None if None in items else st.epoch_offset + sum(items)
        if strategy.is_main:
            self.run.log_metrics(row)
            self.run.log(_describe(row, self.metric, st))
            if improved:
                save_checkpoint(
                    folder, "best", model=best_weights, state=st, rng=False, sharded=best_shards
                )
            if last_due:
                save_checkpoint(
                    folder,
                    "last",
                    model=weights,
                    state=st,
                    optimizer=optimizer,
                    scaler=s.scaler,
                    rng=rngs,
                    sharded=last_shards,
                    averaged=averaged,
                )
        strategy.barrier()

    def _finish(self, s: _Session) -> FitResult:
        st = s.state
        if isinstance(self.strategy, PrivateStrategy):
            self.strategy.release(s.model)  # the trained model without per-example hooks
        model = self._best_model(s)
        model.eval()
        row = next((r for r in s.history if r.get("step") == st.best_step), {})
        best = {k: v for k, v in row.items() if k not in RESERVED_KEYS}
        privacy = self.privacy.metrics(st.global_step) if self.privacy is not None else {}
        best.update(privacy)  # epsilon of every step taken, not only those up to the best
        epochs_run = st.epoch + 1 + (1 if st.batches_in_epoch else 0)
        result = FitResult(
            model,
            best,
            st.best_epoch,
            epochs_run,
            st.stopped_early,
            s.history,
            st.best_step,
            privacy,
        )
        if self.strategy.is_main:
            if self.privacy is not None:
                self.run.log(self.privacy.describe(st.global_step))
                print(self.privacy.describe(st.global_step))
            self.run.set_metrics(best)
            self.run.set_status(self.end_status)
            stop = "stopped early" if st.stopped_early else "finished"
            self.run.log(
                f"{stop} after {result.epochs_run} epochs ({st.global_step} steps); "
                f"best epoch {result.best_epoch}, step {st.best_step}"
            )
        return result

    def _best_model(self, s: _Session) -> nn.Module:
        """A plain model with the best weights (the last ones when no evaluation was finite).

        One process: the trained module itself. Several: on the main process, a fresh model on
        its device with the full state (wrapped and sharded models are not what a model version
        holds); only the main process reads the best checkpoint."""
        folder, has_best = self.run.checkpoint_dir, s.state.best_step is not None
        if self.strategy.world_size == 1 and self.strategy.name == "local":
            model = self.strategy.unwrap(s.model)
            if has_best:
                model.load_state_dict(read_checkpoint(folder, "best").model_state())
            elif s.ema is not None:
                model.load_state_dict(s.ema.module.state_dict())
            return model
        last = None if has_best else self.strategy.model_state(s.model)  # a collective
        if last is not None and s.ema is not None:
            last = {k: v.detach().cpu() for k, v in s.ema.module.state_dict().items()}
        if not self.strategy.is_main:
            return self.strategy.unwrap(s.model)
        if has_best:
            ckpt = read_checkpoint(folder, "best")
            shards = ckpt.sharded_folder
            last = ckpt.model_state() if shards is None else None
            if shards is not None:  # read by this process alone into a plain CPU model
                last, _ = load_sharded_full(shards, self.build_model, None)
        model = self.build_model()
        load_model_state(model, last)
        return model.to(s.device)

    def _autocast(self, s: _Session) -> torch.autocast:
        return torch.autocast(s.device.type, dtype=s.dtype, enabled=s.dtype is not None)

    def _log(self, line: str) -> None:
        if self.strategy.is_main:
            self.run.log(line)

    def _mark_stopped(self, status: str, error: str) -> None:
        if not self.strategy.is_main:
            return
        # Never hide the original error behind a failed record write.
        with contextlib.suppress(Exception):
            self.run.set_status(status, error)
            self.run.log(f"{status}: {error}")


def _resolve_mode(
    cfg: TrainConfig, metric: str | None, mode: Literal["max", "min"]
) -> Literal["max", "min"]:
    """The configured mode; ``auto`` takes the solution's mode for its own metric and guesses
    from the name for another (``loss``, ``rmse``, ``mae``, ``error``: smaller is better)."""
    if cfg.early_stopping_mode != "auto":
        return cfg.early_stopping_mode
    watched = cfg.early_stopping_metric
    if watched is None or watched == metric:
        return mode
    return "min" if any(h in watched.lower() for h in _MIN_HINTS) else "max"


def _describe(row: dict[str, Any], metric: str, state: TrainState) -> str:
    values = " ".join(
        f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in row.items()
        if k not in ("epoch", "time")
    )
    best = f"best {metric}={state.best_metric} at step {state.best_step}"
    return f"epoch {row['epoch']}: {values} ({best}) {row['time']}s"
