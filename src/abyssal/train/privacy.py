"""Differentially private training: DP-SGD through Opacus, with the epsilon it spends.

``train.privacy.enabled=true`` makes the trainer run DP-SGD (Abadi et al., "Deep Learning with
Differential Privacy", CCS 2016) with Opacus (Yousefpour et al., "Opacus: User-Friendly
Differential Privacy Library in PyTorch", 2021):

- the model is wrapped in Opacus' ``GradSampleModule``, which computes every example's own
  gradient (``p.grad_sample``) in the backward pass;
- the optimizer is wrapped in ``DPOptimizer``: each step clips every example's gradient to
  ``max_grad_norm`` (L2 over all trained parameters), sums them, adds Gaussian noise of standard
  deviation ``noise_multiplier * max_grad_norm`` and divides by the expected batch size before
  the usual update. The per-example clipping replaces ``train.clip_grad_norm``;
- every optimizer step is one step of the accountant, with sample rate ``q = 1 / batches per
  epoch`` (the batch size over the number of training examples ``N``). ``rdp``: Renyi DP of the
  sampled Gaussian mechanism (Mironov, "Renyi Differential Privacy", CSF 2017; Mironov et al.,
  "Renyi Differential Privacy of the Sampled Gaussian Mechanism", 2019), converted to
  ``(epsilon, delta)`` as Opacus' ``RDPAccountant`` does (Balle et al., AISTATS 2020); ``prv``:
  Opacus' ``PRVAccountant`` (Gopi et al., "Numerical Composition of Differential Privacy",
  NeurIPS 2021). All steps share one noise multiplier and sample rate, so the accountant's
  history is the single entry ``(noise_multiplier, q, steps)``, rebuilt from the step counter:
  a run resumed from a checkpoint accounts the steps taken before the interruption.
- ``delta`` defaults to ``1 / N``; the usual advice is a delta well below ``1 / N`` (set
  ``train.privacy.delta``). With ``train.privacy.target_epsilon`` the noise multiplier is chosen
  by Opacus' ``get_noise_multiplier`` so that the planned steps (``train.epochs`` or
  ``train.max_steps``) spend that epsilon; early stopping spends less.

Where epsilon shows: the ``epsilon`` column of every evaluation's row in the run's metrics, the
run's log, a line printed when training ends, and ``epsilon``, ``delta``, ``noise_multiplier``
and ``max_grad_norm`` among the trained model version's metrics. The reported epsilon covers
every step taken, not only those before the best evaluation: choosing the best checkpoint looks
at all of them.

What the guarantee rests on, stated honestly:

- **Sampling.** The accountants assume Poisson sampling (each example joins each batch
  independently with probability ``q``). The trainer trains on the task's batches, which are
  shuffled fixed-size partitions of the training examples (every example once per epoch). The
  epsilon reported is the one of Poisson sampling at ``q = batch size / N``: the usual
  approximation of DP-SGD implementations and papers, not a proof for shuffled batches, for
  which the true epsilon can be larger (Chua et al., "How Private are DP-SGD Implementations?",
  ICML 2024).
- **Only the gradient steps are private.** What a solution computes from the training examples
  outside the gradient (feature scaling, category vocabularies and target scaling fitted on the
  training rows and stored with the model, balanced class weights, baselines such as the tabular
  solution's boosted trees) is not covered by epsilon. Validation examples are not protected.
- **Per-example losses.** The task's loss must be the mean of per-example losses over the batch:
  a loss that couples examples (a weighted mean normalised by the batch's weights, a contrastive
  loss across the batch) bends the per-example gradients the clipping relies on.
- **Noise** comes from torch's generator, seeded like the rest of the run so that a resumed run
  repeats exactly; it is not Opacus' ``secure_mode`` (cryptographically safe noise).

What is refused, before a run exists where possible (:class:`ConfigError`, naming the reason):
strategies other than ``local``; ``train.grad_accum_steps > 1``; ``train.precision`` ``bf16`` or
``fp16`` (``auto`` trains in fp32); ``train.compile``; tasks whose batches do not hold separate
examples (no ``len()``, per-example gradients of another size, or ``per_example_batches = False``
on the task), such as the fraud solution's whole-graph batches; models with layers Opacus cannot
give per-example gradients (named, e.g. BatchNorm, which mixes the examples of a batch: replace it
in the model with GroupNorm or LayerNorm, e.g. by ``opacus.validators.ModuleValidator.fix``; it is
not done automatically because a stored model version must rebuild the architecture it trained).

Example:
    >>> cfg = TrainConfig(privacy=PrivacyConfig(enabled=True))  # doctest: +SKIP
    >>> Trainer(task, cfg, run, metric="val_auroc").fit().best_metrics["epsilon"]  # doctest: +SKIP
    2.71
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import torch
from torch import nn

from abyssal.contracts.task import Shard, TrainTask
from abyssal.contracts.train_config import TrainConfig
from abyssal.core.errors import ConfigError
from abyssal.core.optional import require

__all__ = [
    "PrivacyPlan",
    "PrivateStrategy",
    "layer_problems",
    "plan_privacy",
    "private_optimizer",
    "refuse_unsupported",
]

# Opacus' default RDP orders plus larger ones, for small epsilons (more orders: a tighter bound).
_EXTRA_ORDERS = [80.0, 96.0, 128.0, 192.0, 256.0, 512.0]
# torch warns on every backward that Opacus' hook on the first layer sees inputs without
# gradients (data never has them): expected, so kept out of the output.
_HOOK_WARNING = "Full backward hook is firing when gradients are computed with respect to module"


def opacus() -> ModuleType:
    """The ``opacus`` package (with its validators and accountants), or a clear error."""
    module = require("opacus", extra="govern", purpose="differentially private training")
    require("opacus.validators", extra="govern", purpose="differentially private training")
    require("opacus.accountants", extra="govern", purpose="differentially private training")
    return module


@dataclass(frozen=True)
class PrivacyPlan:
    """The DP-SGD settings of one run and its privacy accounting.

    Args:
        noise_multiplier: noise standard deviation over ``max_grad_norm``.
        max_grad_norm: the L2 norm every example's gradient is clipped to.
        delta: the delta of the ``(epsilon, delta)`` guarantee.
        train_items: training examples ``N`` (one epoch's batches' lengths summed).
        batches_per_epoch: optimizer steps per epoch.
        planned_steps: all optimizer steps the run plans, when known.
        accountant: ``rdp`` or ``prv``.
        target_epsilon: the epsilon the noise multiplier was chosen for, if any.

    Example:
        >>> plan = PrivacyPlan(1.0, 1.0, 1e-3, train_items=600, batches_per_epoch=10)
        >>> plan.sample_rate, plan.expected_batch_size
        (0.1, 60.0)
        >>> 0 < plan.epsilon(10) < plan.epsilon(100)
        True
    """

    noise_multiplier: float
    max_grad_norm: float
    delta: float
    train_items: int
    batches_per_epoch: int
    planned_steps: int | None = None
    accountant: Literal["rdp", "prv"] = "rdp"
    target_epsilon: float | None = None

    @property
    def sample_rate(self) -> float:
        """``q``: the expected batch size over the training examples (1 / batches per epoch)."""
        return 1.0 / self.batches_per_epoch

    @property
    def expected_batch_size(self) -> float:
        """The mean batch size, ``N * q``: what the noisy gradient sum is divided by."""
        return self.train_items / self.batches_per_epoch

    def epsilon(self, steps: int) -> float:
        """The epsilon spent after ``steps`` optimizer steps, at :attr:`delta`.

        ``0`` before the first step; ``inf`` without noise.
        """
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        if steps == 0:
            return 0.0
        if self.noise_multiplier == 0:
            return math.inf
        return _epsilon(self.accountant, self.noise_multiplier, self.sample_rate, steps, self.delta)

    def metrics(self, steps: int) -> dict[str, float]:
        """What a trained model version records: ``epsilon`` (after ``steps``), ``delta``,
        ``noise_multiplier`` and ``max_grad_norm``."""
        return {
            "epsilon": self.epsilon(steps),
            "delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": self.max_grad_norm,
        }

    def describe(self, steps: int) -> str:
        """One line for people: the guarantee after ``steps`` and how it was computed."""
        chosen = (
            f", chosen for target epsilon {self.target_epsilon:g}"
            if self.target_epsilon is not None
            else ""
        )
        return (
            f"differential privacy: epsilon={self.epsilon(steps):.4g} at delta={self.delta:.3g} "
            f"after {steps} steps ({self.accountant} accountant, sample rate "
            f"{self.sample_rate:.4g} = {self.expected_batch_size:.4g} of {self.train_items} "
            f"examples, shuffled batches accounted as Poisson sampling; noise_multiplier="
            f"{self.noise_multiplier:.4g}{chosen}, max_grad_norm={self.max_grad_norm:g})"
        )


@functools.lru_cache(maxsize=4096)
def _epsilon(accountant: str, sigma: float, q: float, steps: int, delta: float) -> float:
    if accountant == "rdp":
        analysis = require(
            "opacus.accountants.analysis.rdp", extra="govern", purpose="privacy accounting"
        )
        orders, one_step = _rdp_one_step(sigma, q)
        with (
            warnings.catch_warnings()
        ):  # "optimal order is the largest alpha": still an upper bound
            warnings.simplefilter("ignore", UserWarning)
            eps, _ = analysis.get_privacy_spent(orders=orders, rdp=one_step * steps, delta=delta)
        return float(eps)
    accountants = opacus().accountants
    acc = accountants.create_accountant(mechanism=accountant)
    acc.history = [(sigma, q, steps)]
    return float(acc.get_epsilon(delta=delta))


@functools.lru_cache(maxsize=64)
def _rdp_one_step(sigma: float, q: float) -> tuple[list[float], Any]:
    """The RDP of one step at every order: RDP adds up over steps (what ``RDPAccountant`` does
    for a history entry of ``steps`` steps), so epsilon after any number of steps is cheap."""
    import numpy as np

    rdp_accountant = require("opacus.accountants.rdp", extra="govern", purpose="accounting")
    analysis = require("opacus.accountants.analysis.rdp", extra="govern", purpose="accounting")
    orders = [float(a) for a in rdp_accountant.RDPAccountant.DEFAULT_ALPHAS] + _EXTRA_ORDERS
    one = analysis.compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=orders)
    return orders, np.asarray(one, dtype=np.float64)


def refuse_unsupported(cfg: TrainConfig, strategy_name: str, world_size: int = 1) -> None:
    """Refuse the settings DP-SGD is not implemented for here (before anything is built).

    Raises:
        ConfigError: naming the setting and what to change.
    """
    if strategy_name != "local" or world_size != 1:
        raise ConfigError(
            f"train.privacy runs on train.strategy=local only (one process), not "
            f"{strategy_name} on {world_size} process(es): per-example clipping and the noise "
            "would have to be coordinated across processes"
        )
    if cfg.grad_accum_steps != 1:
        raise ConfigError(
            f"train.privacy needs train.grad_accum_steps=1 (got {cfg.grad_accum_steps}): "
            "each optimizer step must be one accounted batch; raise data.batch_size instead"
        )
    if cfg.precision in ("bf16", "fp16"):
        raise ConfigError(
            f"train.privacy trains in fp32, not train.precision={cfg.precision}: per-example "
            "gradient norms and the fp16 loss scale would distort the clipping; set "
            "train.precision=auto or fp32"
        )
    if cfg.compile:
        raise ConfigError(
            "train.privacy cannot be used with train.compile=true: Opacus' per-example "
            "gradient hooks do not run inside a compiled graph"
        )


def count_examples(task: TrainTask, shard: Shard) -> tuple[int, int, Any]:
    """Training examples and batches of one epoch, and its first batch.

    Raises:
        ConfigError: the task says its batches are not per-example, or its batches (or the
            batch list) do not tell their size.
    """
    name = type(task).__name__
    if getattr(task, "per_example_batches", True) is False:
        raise ConfigError(
            f"train.privacy cannot protect examples of {name}: the task declares that its "
            "batches are not separate examples (per_example_batches = False)"
        )
    batches = task.train_batches(0, shard)
    if not hasattr(batches, "__len__"):
        raise ConfigError(
            f"train.privacy needs to know how many batches an epoch has (the sample rate); "
            f"the training batches of {name} have no len()"
        )
    count, items, first = len(batches), 0, None
    for batch in batches:
        if not hasattr(batch, "__len__"):
            raise ConfigError(
                f"train.privacy needs batches of separate examples, and the batches of {name} "
                f"({type(batch).__name__}) do not say how many examples they hold (no len()). "
                "A batch that is a graph (the fraud solution's whole graph or sampled "
                "subgraphs) carries each node's features into its neighbours' outputs, so no "
                "gradient belongs to one example alone and per-example privacy cannot be "
                "accounted"
            )
        first = batch if first is None else first
        items += len(batch)
    if count < 1 or items < 1 or first is None:
        raise ConfigError(f"train.privacy: {name} yields no training examples")
    return items, count, first


def layer_problems(model: nn.Module) -> list[str]:
    """The layers of ``model`` that DP-SGD cannot train, each as ``"name (Type): why"``.

    Opacus' ``ModuleValidator`` checks each trainable layer (its message kept, shortened); batch
    normalisation is refused anywhere, with or without parameters, because it mixes the examples
    of a batch; so is a trainable layer that keeps buffers (they are not private).

    Example:
        >>> layer_problems(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)))[0][:20]
        '1 (BatchNorm1d): bat'
    """
    validators = opacus().validators.ModuleValidator
    found = []
    for name, sub in model.named_modules():
        where = f"{name or '(model)'} ({type(sub).__name__})"
        if isinstance(sub, nn.modules.batchnorm._BatchNorm):
            found.append(f"{where}: batch normalisation mixes the examples of a batch")
            continue
        if not any(p.requires_grad for p in sub.parameters(recurse=False)):
            continue
        check = validators.VALIDATORS.get(type(sub))
        was = sub.training
        sub.train()
        errors = list(check(sub)) if check is not None else []
        sub.train(was)
        found += [f"{where}: {_shorten(str(e))}" for e in errors]
        if not errors and any(True for _ in sub.buffers(recurse=False)):
            found.append(f"{where}: a trainable layer with buffers (they would not be private)")
    return found


def check_model(model: nn.Module) -> None:
    """Refuse a model with layers DP-SGD cannot train, naming them (:func:`layer_problems`)."""
    problems = layer_problems(model)
    if problems:
        raise ConfigError(
            "train.privacy cannot train these layers with per-example gradients: "
            + "; ".join(problems)
            + ". Replace them in the model (opacus.validators.ModuleValidator.fix(model) swaps "
            "BatchNorm for GroupNorm and LSTM for DPLSTM; LayerNorm also works)"
        )


def probe_per_example(
    task: TrainTask, model: nn.Module, batch: Any, device: torch.device | str = "cpu"
) -> None:
    """Run one forward and backward of ``batch`` with per-example gradients and check that every
    trained parameter gets one gradient per example of the batch (``len(batch)``).

    Raises:
        ConfigError: a parameter gets no per-example gradient (unused in the loss: freeze it
            with ``train.frozen``) or one of another count (the batch's rows are not its
            examples).
    """
    gsm_cls = opacus().GradSampleModule
    wrapped = gsm_cls(model.to(device), batch_first=True, loss_reduction="mean", strict=False)
    wrapped.train()
    size = len(batch)
    try:
        with _quiet_hooks():
            loss = task.training_loss(wrapped, task.move_batch(batch, device))
            loss.reshape(()).backward()
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        missing = [n for n, p in named if getattr(p, "grad_sample", None) is None]
        if missing:
            raise ConfigError(
                "train.privacy: these trained parameters get no per-example gradient from the "
                f"loss: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}; freeze them "
                "with train.frozen"
            )
        wrong = [(n, int(_rows(p.grad_sample))) for n, p in named if _rows(p.grad_sample) != size]
        if wrong:
            shown = ", ".join(f"{n}: {k}" for n, k in wrong[:4])
            raise ConfigError(
                f"train.privacy needs batches of separate examples, but a batch of "
                f"{type(task).__name__} holds {size} examples (len) and its per-example "
                f"gradients count otherwise ({shown}): its rows are not the batch's examples"
            )
    finally:
        wrapped._close()
        for p in model.parameters():
            p.grad = None


def _rows(grad_sample: Any) -> int:
    if isinstance(grad_sample, list):
        return sum(g.shape[0] for g in grad_sample)
    return int(grad_sample.shape[0])


def plan_privacy(
    cfg: TrainConfig,
    task: TrainTask,
    *,
    strategy_name: str = "local",
    world_size: int = 1,
    shard: Shard | None = None,
    build_model: Callable[[], nn.Module] | None = None,
    device: torch.device | str = "cpu",
    planned_steps: int | None = None,
) -> PrivacyPlan:
    """Check that ``task`` can be trained privately under ``cfg`` and settle the numbers.

    Args:
        cfg: the ``train`` config (``cfg.privacy`` enabled).
        task: the task; its epoch-0 batches give ``N`` and the batches per epoch.
        strategy_name: the strategy's name; ``world_size`` its processes.
        shard: the process's shard (the whole data for ``local``).
        build_model: builds a fresh model (``task.build_model`` by default) for the layer check
            and the per-example probe.
        device: where the probe runs.
        planned_steps: all steps the run plans (for ``target_epsilon``); by default
            ``cfg.epochs`` epochs, or ``cfg.max_steps`` if fewer.

    Returns:
        The plan: noise multiplier, clipping norm, delta, ``N``, batches per epoch.

    Raises:
        ConfigError: what cannot be made private (see the module's notes), or a
            ``target_epsilon`` too small to reach.
    """
    p = cfg.privacy
    refuse_unsupported(cfg, strategy_name, world_size)
    items, count, first = count_examples(task, shard or Shard())
    model = (build_model or task.build_model)()
    model.train()
    check_model(model)
    probe_per_example(task, model, first, device)
    if planned_steps is None:
        planned_steps = cfg.epochs * count
        if cfg.max_steps is not None:
            planned_steps = min(planned_steps, cfg.max_steps)
    delta = p.delta if p.delta is not None else 1.0 / items
    sigma = p.noise_multiplier
    if p.target_epsilon is not None:
        utils = require("opacus.accountants.utils", extra="govern", purpose="DP-SGD noise")
        try:
            with warnings.catch_warnings():  # "optimal order is the largest alpha"
                warnings.simplefilter("ignore", UserWarning)
                sigma = float(
                    utils.get_noise_multiplier(
                        target_epsilon=p.target_epsilon,
                        target_delta=delta,
                        sample_rate=1.0 / count,
                        steps=planned_steps,
                        accountant=p.accountant,
                    )
                )
        except ValueError as exc:
            raise ConfigError(
                f"train.privacy.target_epsilon={p.target_epsilon} cannot be reached in "
                f"{planned_steps} steps at sample rate {1.0 / count:.4g} ({exc}): raise it, "
                "or train fewer steps or with larger batches"
            ) from exc
    return PrivacyPlan(
        noise_multiplier=sigma,
        max_grad_norm=p.max_grad_norm,
        delta=delta,
        train_items=items,
        batches_per_epoch=count,
        planned_steps=planned_steps,
        accountant=p.accountant,
        target_epsilon=p.target_epsilon,
    )


def private_optimizer(optimizer: torch.optim.Optimizer, plan: PrivacyPlan) -> Any:
    """``optimizer`` wrapped in Opacus' ``DPOptimizer`` (clip per example, add noise, average
    over the expected batch size). Its ``param_groups`` and ``state_dict`` are the wrapped
    optimizer's, so learning-rate schedules and checkpoints work unchanged."""
    dp = require("opacus.optimizers", extra="govern", purpose="differentially private training")
    return dp.DPOptimizer(
        optimizer,
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=plan.max_grad_norm,
        expected_batch_size=plan.expected_batch_size,
        loss_reduction="mean",
    )


class PrivateStrategy:
    """A one-process strategy whose model computes per-example gradients and whose step is
    DP-SGD's; everything else is the wrapped strategy's.

    The model is wrapped in ``GradSampleModule`` after the inner strategy's setup; states,
    checkpoints and :meth:`unwrap` see the plain model, so a private run's checkpoints and
    model versions look like any other. The optimizer handed to :meth:`step` must come from
    :func:`private_optimizer`.

    Args:
        inner: the strategy to wrap (``local``).
        plan: the run's privacy plan.
    """

    def __init__(self, inner: Any, plan: PrivacyPlan) -> None:
        self.inner = inner
        self.plan = plan

    def __getattr__(self, name: str) -> Any:
        if name in ("inner", "plan"):  # not set yet (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.inner, name)

    def setup(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The inner strategy's setup, then ``GradSampleModule`` (mean-reduced losses)."""
        placed = self.inner.setup(model, device)
        return opacus().GradSampleModule(
            placed, batch_first=True, loss_reduction="mean", strict=True
        )

    def unwrap(self, model: nn.Module) -> nn.Module:
        """The plain model inside the ``GradSampleModule``."""
        return self.inner.unwrap(_inside(model))

    @contextlib.contextmanager
    def accumulate(self, model: nn.Module, sync: bool) -> Iterator[None]:
        """The inner strategy's context, without torch's warning about Opacus' hooks."""
        with self.inner.accumulate(_inside(model), sync), _quiet_hooks():
            yield

    def step(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        clip_grad_norm: float | None,
    ) -> None:
        """DP-SGD's step (clip per example, noise, update) and zeroed gradients;
        ``clip_grad_norm`` is not applied (the per-example clipping replaces it)."""
        if scaler.is_enabled():
            raise ConfigError("train.privacy does not train with a loss scale (fp16)")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def model_state(self, model: nn.Module) -> Any:
        """The plain model's state (no ``_module.`` prefixes)."""
        return self.inner.model_state(_inside(model))

    def optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> Any:
        """The wrapped optimizer's state."""
        return self.inner.optimizer_state(_inside(model), optimizer)

    def load_state(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        model_state: Any,
        optimizer_state: Any,
    ) -> None:
        """Load plain states into the plain model and the wrapped optimizer."""
        self.inner.load_state(_inside(model), optimizer, model_state, optimizer_state)

    def release(self, model: nn.Module) -> None:
        """Remove the per-example gradient hooks (the trained model is then a plain module)."""
        if isinstance(model, opacus().GradSampleModule):
            model._close()


@contextlib.contextmanager
def _quiet_hooks() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_HOOK_WARNING, category=UserWarning)
        yield


def _inside(model: nn.Module) -> nn.Module:
    return model._module if isinstance(model, opacus().GradSampleModule) else model


def _shorten(message: str, limit: int = 160) -> str:
    first = message.strip().split(". ")[0].rstrip(".")
    return first if len(first) <= limit else first[: limit - 3] + "..."
