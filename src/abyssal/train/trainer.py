"""The training loop: any :class:`~abyssal.train.task.TrainTask`, on any :class:`Strategy`.

The loop knows nothing about a solution's data or model. Per epoch it reseeds every RNG from
``(seed, epoch)``, trains with gradient accumulation, clipping and mixed precision, validates, logs
a row to the run, keeps the best weights and writes a checkpoint. Because each epoch starts from a
state that the checkpoint fully determines, a run resumed after a crash (or ``kill -9``) ends with
exactly the weights and metrics of a run that was never interrupted.

Example:
    >>> run = Run.create("train", "toy", cfg)  # doctest: +SKIP
    >>> result = Trainer(task, cfg, run, metric="accuracy").fit()  # doctest: +SKIP
    >>> result.best_epoch, result.best_metrics  # doctest: +SKIP
    (7, {'accuracy': 0.93})
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import clip_grad_norm_
from tqdm.auto import tqdm

from abyssal.core.devices import (
    autocast_dtype,
    derive_seed,
    deterministic_kernels,
    seed_everything,
)
from abyssal.core.errors import AbyssalError, ConfigError
from abyssal.core.runs import Run
from abyssal.train.checkpoint import (
    TrainState,
    checkpoint_exists,
    read_checkpoint,
    restore_checkpoint,
    save_checkpoint,
)
from abyssal.train.strategy import STRATEGIES, Strategy
from abyssal.train.task import TrainConfig, TrainTask

RESERVED_KEYS = ("epoch", "step", "train_loss", "time")


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` returns.

    Args:
        model: the unwrapped model with the best weights loaded, in eval mode.
        best_metrics: the validation metrics of the best epoch (empty if no epoch had a finite
            value of the watched metric).
        best_epoch: the best epoch (0-based), or ``None``.
        epochs_run: epochs completed, including those before a resume.
        stopped_early: whether early stopping ended training.
        history: the metric rows, one per epoch, as in the run's ``metrics.jsonl``.
    """

    model: nn.Module
    best_metrics: dict[str, float]
    best_epoch: int | None
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, Any]]


@dataclass
class _Session:
    """The live objects of one ``fit`` call."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    device: torch.device
    dtype: torch.dtype | None
    state: TrainState = field(default_factory=TrainState)
    history: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """Trains a task and records it in a run; resumable from the run's last checkpoint.

    Args:
        task: what to train (model, batches, loss, validation).
        cfg: how to train.
        run: where metrics, logs and checkpoints go.
        metric: the validation metric to watch when ``cfg.early_stopping_metric`` is ``None``
            (normally the solution's default metric).
        strategy: where to train; ``STRATEGIES.get(cfg.strategy)()`` by default.

    Raises:
        ConfigError: no metric to watch.

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
        strategy: Strategy | None = None,
    ) -> None:
        self.task = task
        self.cfg = cfg
        self.run = run
        self.metric = cfg.early_stopping_metric or metric
        if not self.metric:
            raise ConfigError("no validation metric to watch: set train.early_stopping_metric")
        self.strategy = strategy if strategy is not None else STRATEGIES.get(cfg.strategy)()

    def fit(self, resume: bool = False) -> FitResult:
        """Train to the end (``cfg.epochs`` or early stopping) and return the best model.

        Args:
            resume: continue from the run's last checkpoint (its model, optimizer, scaler,
                counters, best-so-far and metric history); a run that has already reached its
                end just returns its result.

        Returns:
            The result, with the best weights loaded.

        Raises:
            AbyssalError: a non-finite training loss (naming the epoch and step), a missing
                validation metric, a damaged checkpoint, or ``resume=False`` on a run that already
                has checkpoints. The run is marked ``failed`` (``interrupted`` on Ctrl-C).
        """
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

    def _start(self, resume: bool) -> _Session:
        cfg = self.cfg
        device = self.strategy.device(cfg.device)
        dtype = autocast_dtype(cfg.precision, device)
        seed_everything(cfg.seed)
        model = self.strategy.setup(self.task.build_model(), device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        s = _Session(model, optimizer, scaler, device, dtype)
        if resume:
            self._resume(s)
        elif checkpoint_exists(self.run.checkpoint_dir, "last"):
            raise AbyssalError(
                f"run {self.run.id} already has checkpoints; resume it or start a new run"
            )
        if self.strategy.is_main:
            self.run.set_status("running")
        self._log(f"training on {device}, precision {dtype or torch.float32}, metric {self.metric}")
        return s

    def _resume(self, s: _Session) -> None:
        folder = self.run.checkpoint_dir
        if not checkpoint_exists(folder, "last"):
            self._log("resume: no checkpoint yet, starting from epoch 0")
            if self.strategy.is_main:
                self.run.truncate_metrics(-1)
            return
        ckpt = read_checkpoint(folder, "last")
        if ckpt.note:
            self._log(ckpt.note)
        model = self.strategy.unwrap(s.model)
        s.state = restore_checkpoint(ckpt, model=model, optimizer=s.optimizer, scaler=s.scaler)
        if self.strategy.is_main:
            self.run.truncate_metrics(s.state.epoch)
        s.history = [r for r in self.run.metrics_history() if r.get("epoch", -1) <= s.state.epoch]
        self._log(f"resumed after epoch {s.state.epoch} (step {s.state.global_step})")

    def _finished(self, s: _Session) -> bool:
        return s.state.stopped_early or s.state.epoch + 1 >= self.cfg.epochs

    def _loop(self, s: _Session) -> None:
        cfg = self.cfg
        first = s.state.epoch + 1
        bar = tqdm(
            total=cfg.epochs,
            initial=first,
            desc=f"train {self.run.id}",
            unit="epoch",
            disable=not (cfg.progress and self.strategy.is_main),
            dynamic_ncols=True,
        )
        with bar:
            for epoch in range(first, cfg.epochs):
                row = self._run_epoch(s, epoch)
                shown = {
                    "train_loss": f"{row['train_loss']:.4g}",
                    self.metric: f"{row[self.metric]:.4g}",
                }
                bar.set_postfix(shown, refresh=False)
                bar.update(1)
                if s.state.stopped_early:
                    break

    def _run_epoch(self, s: _Session, epoch: int) -> dict[str, Any]:
        # Every epoch starts from RNG states fixed by (seed, epoch) alone, so a resumed run
        # draws the same dropout masks as an uninterrupted one.
        seed_everything(derive_seed(self.cfg.seed, epoch))
        start = time.perf_counter()
        train_loss = self._train_epoch(s, epoch)
        metrics = self._validate(s)
        elapsed = round(time.perf_counter() - start, 4)
        row = {"epoch": epoch, "step": s.state.global_step, "train_loss": train_loss}
        row.update(metrics, time=elapsed)
        improved = self._update_best(s.state, epoch, metrics[self.metric])
        s.state.epoch = epoch
        s.history.append(row)
        self._record(s, row, improved)
        return row

    def _train_epoch(self, s: _Session, epoch: int) -> float:
        s.model.train()
        s.optimizer.zero_grad(set_to_none=True)
        k = self.cfg.grad_accum_steps
        total, window, pending, batches = 0.0, None, 0, 0
        for batch in self.task.train_batches(epoch):
            loss = self._backward(s, batch)
            window = loss if window is None else window + loss
            pending, batches = pending + 1, batches + 1
            if pending == k:
                total += self._step(s, epoch, window, pending)
                window, pending = None, 0
        if pending:  # flush the partial accumulation at the end of the epoch
            total += self._step(s, epoch, window, pending)
        if batches == 0:
            raise AbyssalError(f"the task yielded no training batches for epoch {epoch}")
        return total / batches

    def _backward(self, s: _Session, batch: Any) -> torch.Tensor:
        """Forward and backward one batch; gradients add up, scaled by 1/k. Returns the loss."""
        batch = self.task.move_batch(batch, s.device)
        with self._autocast(s):
            loss = self.task.training_loss(s.model, batch)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise AbyssalError(f"training_loss must return a scalar tensor, got {loss!r:.80}")
        s.scaler.scale(loss.reshape(()) / self.cfg.grad_accum_steps).backward()
        return loss.detach().float().reshape(())

    def _step(self, s: _Session, epoch: int, window: torch.Tensor, count: int) -> float:
        """One optimizer step over ``count`` accumulated batches. Returns their summed loss."""
        value = window.item()
        step = s.state.global_step + 1
        if not math.isfinite(value):
            raise AbyssalError(
                f"training loss is {value} at epoch {epoch}, step {step}: lower train.lr, "
                "set train.clip_grad_norm, or check the data and the loss"
            )
        k = self.cfg.grad_accum_steps
        if count < k:  # a partial window: make its gradient the mean over `count` batches
            for param in s.model.parameters():
                if param.grad is not None:
                    param.grad.mul_(k / count)
        if self.cfg.clip_grad_norm is not None:
            s.scaler.unscale_(s.optimizer)
            clip_grad_norm_(s.model.parameters(), self.cfg.clip_grad_norm)
        s.scaler.step(s.optimizer)
        s.scaler.update()
        s.optimizer.zero_grad(set_to_none=True)
        s.state.global_step = step
        return value

    def _validate(self, s: _Session) -> dict[str, float]:
        model = self.strategy.unwrap(s.model)
        model.eval()
        try:
            with torch.no_grad(), self._autocast(s):
                raw = self.task.validate(model)
        finally:
            s.model.train()
        metrics = self.strategy.reduce_metrics({k: float(v) for k, v in raw.items()})
        clash = sorted(set(metrics) & set(RESERVED_KEYS))
        if clash:
            raise AbyssalError(f"validate() returned reserved metric names: {', '.join(clash)}")
        if self.metric not in metrics:
            got = ", ".join(metrics) or "(none)"
            raise AbyssalError(
                f"validation metric '{self.metric}' is missing; validate() gave: {got}"
            )
        return metrics

    def _update_best(self, state: TrainState, epoch: int, value: float) -> bool:
        best = state.best_metric
        larger = self.cfg.early_stopping_mode == "max"
        better = math.isfinite(value) and (
            best is None or (value > best if larger else value < best)
        )
        if better:
            state.best_metric, state.best_epoch, state.epochs_since_improvement = value, epoch, 0
        else:
            state.epochs_since_improvement += 1
        patience = self.cfg.patience
        if patience and state.epochs_since_improvement >= patience:
            state.stopped_early = True
        return better

    def _record(self, s: _Session, row: dict[str, Any], improved: bool) -> None:
        """Log the epoch's row and write the best and last checkpoints that are due."""
        if self.strategy.is_main:
            self.run.log_metrics(row)
            self.run.log(_describe(row, self.metric, s.state))
            folder, model = self.run.checkpoint_dir, self.strategy.unwrap(s.model)
            if improved:
                save_checkpoint(folder, "best", model=model, state=s.state, rng=False)
            if self._checkpoint_due(s.state):
                save_checkpoint(
                    folder,
                    "last",
                    model=model,
                    state=s.state,
                    optimizer=s.optimizer,
                    scaler=s.scaler,
                )
        self.strategy.barrier()

    def _checkpoint_due(self, state: TrainState) -> bool:
        done = state.epoch + 1
        return (
            done % self.cfg.checkpoint_every == 0 or done >= self.cfg.epochs or state.stopped_early
        )

    def _finish(self, s: _Session) -> FitResult:
        model = self.strategy.unwrap(s.model)
        if s.state.best_epoch is not None:
            model.load_state_dict(read_checkpoint(self.run.checkpoint_dir, "best").model_state())
        model.eval()
        row = next((r for r in s.history if r.get("epoch") == s.state.best_epoch), {})
        best = {k: v for k, v in row.items() if k not in RESERVED_KEYS}
        result = FitResult(
            model, best, s.state.best_epoch, s.state.epoch + 1, s.state.stopped_early, s.history
        )
        if self.strategy.is_main:
            self.run.set_metrics(best)
            self.run.set_status("completed")
            stop = "stopped early" if s.state.stopped_early else "finished"
            self.run.log(f"{stop} after {result.epochs_run} epochs; best epoch {result.best_epoch}")
        return result

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


def _describe(row: dict[str, Any], metric: str, state: TrainState) -> str:
    values = " ".join(
        f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in row.items()
        if k not in ("epoch", "time")
    )
    best = f"best {metric}={state.best_metric} at epoch {state.best_epoch}"
    return f"epoch {row['epoch']}: {values} ({best}) {row['time']}s"
