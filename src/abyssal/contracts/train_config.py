"""How to train (not what): :class:`TrainConfig`, the ``train`` section of every solution's config.

Optimizers and learning-rate schedules are chosen by name from the registries in
:mod:`abyssal.train.optim`, strategies from :data:`abyssal.train.strategy.STRATEGIES`; the names
are checked there before a run starts. Each built-in distributed strategy has its own section
(``train.ddp``, ``train.fsdp``, ``train.parameter_server``); ``train.backend`` and
``train.timeout_s`` apply to all of them. ``train.privacy`` turns on differentially private
training (DP-SGD, :mod:`abyssal.train.privacy`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from abyssal.core.config import field
from abyssal.core.errors import ConfigError


@dataclass
class DDPConfig:
    """``train.strategy=ddp``: torch ``DistributedDataParallel``."""

    bucket_cap_mb: float = field(25.0, help="gradient all-reduce bucket size in MiB")
    find_unused_parameters: bool = field(
        False, help="allow parameters that some steps do not use (slower; off unless needed)"
    )
    static_graph: bool = field(
        False, help="the set of used parameters never changes between steps (lets DDP optimise)"
    )
    gradient_as_bucket_view: bool = field(
        True, help="gradients are views into the all-reduce buckets (saves one copy)"
    )

    def __post_init__(self) -> None:
        if self.bucket_cap_mb <= 0:
            raise ConfigError(f"train.ddp.bucket_cap_mb must be > 0, got {self.bucket_cap_mb}")


@dataclass
class FSDPConfig:
    """``train.strategy=fsdp``: fully sharded data parallelism (FSDP2 ``fully_shard``)."""

    reshard_after_forward: bool = field(
        True,
        help="free gathered parameters after each block's forward (less memory, one more "
        "all-gather in backward)",
    )
    param_dtype: Literal["auto", "fp32", "bf16", "fp16"] = field(
        "auto",
        help="dtype parameters are gathered and computed in; auto: bf16/fp16 when "
        "train.precision asks for it, else fp32",
    )
    reduce_dtype: Literal["fp32", "bf16"] = field(
        "fp32", help="dtype gradients are reduced in (fp32 keeps sums exact)"
    )
    cpu_offload: bool = field(
        False,
        help="keep sharded parameters, gradients and optimizer state in CPU memory (for models "
        "whose state does not fit the GPUs even sharded; the step runs on the CPU)",
    )
    sharded_checkpoints: bool = field(
        True,
        help="each process writes its own shards (torch.distributed.checkpoint); false: full "
        "states gathered onto rank 0's CPU. Either resumes on any number of processes",
    )
    shard_modules: list[str] = field(
        default_factory=list,
        help="class names of the blocks sharded one by one (e.g. ['TransformerBlock']); empty: "
        "the outermost members of ModuleLists and of Sequentials of two or more, then the model",
    )


@dataclass
class ParameterServerConfig:
    """``train.strategy=parameter_server``: asynchronous training against parameter servers."""

    servers: int = field(
        1, help="how many of the launched processes hold parameters (the others are workers)"
    )
    staleness: int = field(
        0,
        help="how many steps a worker may run ahead of the slowest one; 0: synchronous (every "
        "step waits for all workers' gradients)",
    )

    def __post_init__(self) -> None:
        if self.servers < 1:
            raise ConfigError(f"train.parameter_server.servers must be >= 1, got {self.servers}")
        if self.staleness < 0:
            raise ConfigError(
                f"train.parameter_server.staleness must be >= 0, got {self.staleness}"
            )


@dataclass
class PrivacyConfig:
    """``train.privacy``: differentially private training, DP-SGD (Abadi et al., "Deep Learning
    with Differential Privacy", CCS 2016) through Opacus; see :mod:`abyssal.train.privacy`.

    Each example's gradient is clipped to ``max_grad_norm`` and Gaussian noise of standard
    deviation ``noise_multiplier * max_grad_norm`` is added to every batch's sum before the
    optimizer steps; an accountant turns the steps taken into an ``(epsilon, delta)`` guarantee
    for the training examples.
    """

    enabled: bool = field(False, help="train with DP-SGD and report epsilon")
    noise_multiplier: float = field(
        1.0,
        help="noise standard deviation as a multiple of max_grad_norm (more: smaller epsilon, "
        "less accuracy); ignored when target_epsilon is set",
    )
    max_grad_norm: float = field(
        1.0, help="each example's gradient is clipped to this L2 norm (replaces clip_grad_norm)"
    )
    delta: float | None = field(
        None,
        help="the delta of the (epsilon, delta) guarantee; null: 1 / the number of training "
        "examples (a smaller delta is a stronger guarantee)",
    )
    target_epsilon: float | None = field(
        None,
        help="choose the noise multiplier (Opacus get_noise_multiplier) so that the planned "
        "steps spend this epsilon; null: use noise_multiplier",
    )
    accountant: Literal["rdp", "prv"] = field(
        "rdp",
        help="privacy accountant: rdp (Renyi DP, Mironov 2017) or prv (privacy random "
        "variables, Gopi et al. 2021; tighter)",
    )

    def __post_init__(self) -> None:
        if not self.noise_multiplier > 0:
            raise ConfigError(
                "train.privacy.noise_multiplier must be > 0 (0 adds no noise: no privacy), "
                f"got {self.noise_multiplier}"
            )
        if not self.max_grad_norm > 0:
            raise ConfigError(f"train.privacy.max_grad_norm must be > 0, got {self.max_grad_norm}")
        if self.delta is not None and not 0 < self.delta < 1:
            raise ConfigError(f"train.privacy.delta must be in (0, 1) or null, got {self.delta}")
        if self.target_epsilon is not None and not 0 < self.target_epsilon < float("inf"):
            raise ConfigError(
                "train.privacy.target_epsilon must be a finite number > 0 or null, got "
                f"{self.target_epsilon}"
            )
        if self.accountant not in ("rdp", "prv"):
            raise ConfigError(
                f"train.privacy.accountant must be rdp or prv, got {self.accountant!r}"
            )


@dataclass
class TrainConfig:
    """Optimisation, schedule, precision, evaluation, stopping and checkpoints.

    Example:
        >>> TrainConfig(max_steps=100, schedule="cosine", warmup_steps=10).schedule
        'cosine'
    """

    epochs: int = field(50, help="maximum number of epochs")
    max_steps: int | None = field(
        None, help="stop after this many optimizer steps (also mid-epoch); null: epochs only"
    )
    optimizer: str = field("adamw", help="optimizer by name: adamw, adam or sgd")
    lr: float = field(3e-3, help="peak learning rate")
    weight_decay: float = field(1e-4, help="weight decay (on weight matrices only, by default)")
    decay_norm_and_bias: bool = field(
        False, help="also decay 1-D parameters (biases, norm scales); false: only >= 2-D tensors"
    )
    betas: list[float] = field(
        default_factory=lambda: [0.9, 0.999], help="adam/adamw: the two moment decay rates"
    )
    momentum: float = field(0.9, help="sgd: momentum")
    schedule: str = field(
        "constant", help="learning-rate schedule after warmup: constant, cosine or linear"
    )
    warmup_steps: int = field(0, help="steps of linear warmup from 0 to train.lr")
    min_lr_ratio: float = field(0.0, help="cosine/linear: final learning rate as a share of lr")
    trainable: list[str] | None = field(
        None,
        help="glob patterns of parameter names to train (e.g. ['head.*']); null: every parameter "
        "that requires a gradient",
    )
    frozen: list[str] = field(
        default_factory=list,
        help="glob patterns of parameter names to freeze (e.g. ['backbone.*'])",
    )
    lr_multipliers: dict[str, float] = field(
        default_factory=dict,
        help="discriminative learning rates: glob pattern of parameter names -> multiplier of "
        "train.lr (e.g. {'backbone.layer4.*': 0.1, 'backbone.*': 0.01}); the first pattern that "
        "matches a parameter applies, unmatched parameters train at train.lr",
    )
    delayed: list[str] = field(
        default_factory=list,
        help="glob patterns of parameters held still (learning rate 0) for the first "
        "train.delay_epochs epochs, then trained: staged fine-tuning (head first, then backbone)",
    )
    delay_epochs: int = field(0, help="epochs the train.delayed parameters are held still")
    grad_accum_steps: int = field(1, help="batches whose gradients are summed before a step")
    clip_grad_norm: float | None = field(1.0, help="clip gradients to this L2 norm; null: no clip")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = field(
        "auto", help="auto: bf16 autocast on CUDA devices that support it, fp32 on CPU"
    )
    device: str = field("auto", help="auto, cpu, cuda or cuda:N")
    seed: int = field(0, help="seed for weights, batches and dropout")
    init_from: str | None = field(
        None,
        help="a stored version (name:N or name:alias) whose weights the model starts from: "
        "warm-started fine-tuning, e.g. continual updates of production; every tensor must "
        "match the built model by name and shape",
    )
    eval_every_steps: int | None = field(
        None, help="validate every N optimizer steps and at the end; null: after every epoch"
    )
    early_stopping_metric: str | None = field(
        None, help="validation metric to watch; null: the solution's default"
    )
    early_stopping_mode: Literal["auto", "max", "min"] = field(
        "auto", help="whether larger is better; auto: the solution's choice for its metric"
    )
    patience: int = field(10, help="evaluations without improvement before stopping; 0: never stop")
    checkpoint_every: int = field(1, help="write a resumable checkpoint every N evaluations")
    progress: bool = field(True, help="show a progress bar with ETA and live metrics")
    strategy: str = field(
        "local",
        help="local: one process, CPU or one CUDA device; ddp: data parallel over processes "
        "(launch with --nproc N or torchrun); fsdp: fully sharded data parallel; "
        "parameter_server: asynchronous workers and parameter servers",
    )
    backend: Literal["auto", "nccl", "gloo"] = field(
        "auto", help="distributed strategies: auto picks nccl on CUDA devices, gloo on CPUs"
    )
    timeout_s: float = field(
        600.0,
        help="distributed strategies: a collective that waits longer than this (a rank died or "
        "hangs) fails the run instead of hanging",
    )
    ddp: DDPConfig = field(default_factory=DDPConfig, help="train.strategy=ddp settings")
    fsdp: FSDPConfig = field(default_factory=FSDPConfig, help="train.strategy=fsdp settings")
    parameter_server: ParameterServerConfig = field(
        default_factory=ParameterServerConfig, help="train.strategy=parameter_server settings"
    )
    privacy: PrivacyConfig = field(
        default_factory=PrivacyConfig,
        help="differentially private training (DP-SGD): train.privacy.enabled=true",
    )
    compile: bool = field(
        False, help="torch.compile the model's forward for training (first steps compile)"
    )
    prefetch_batches: int = field(
        0,
        help="build up to this many next training batches in a background thread while the "
        "model trains (for tasks that make batches on the fly, e.g. sampled graphs); 0: build "
        "each when it is due",
    )
    ema_decay: float = field(
        0.0,
        help="keep an exponential moving average of the weights (e.g. 0.99 per optimizer step): "
        "validation, early stopping, the best checkpoint and the model version use the "
        "averaged weights; 0: off. With strategy local or ddp",
    )
    deterministic: bool = field(
        True,
        help="deterministic kernels (torch.use_deterministic_algorithms), so that a run repeats "
        "and resumes bit for bit on the same machine, also with several threads",
    )

    def __post_init__(self) -> None:
        for name in ("epochs", "grad_accum_steps", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_steps", "eval_every_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"train.{name} must be >= 1 or null, got {value}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"train.weight_decay must be >= 0, got {self.weight_decay}")
        if self.patience < 0 or self.warmup_steps < 0:
            raise ConfigError("train.patience and train.warmup_steps must be >= 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"train.betas must be two numbers in [0, 1), got {self.betas}")
        if self.delay_epochs < 0:
            raise ConfigError(f"train.delay_epochs must be >= 0, got {self.delay_epochs}")
        for pattern, mult in self.lr_multipliers.items():
            if not isinstance(mult, int | float) or mult < 0 or mult != mult:
                raise ConfigError(
                    f"train.lr_multipliers['{pattern}'] must be a number >= 0, got {mult!r}"
                )
        if self.prefetch_batches < 0:
            raise ConfigError(f"train.prefetch_batches must be >= 0, got {self.prefetch_batches}")
        if self.timeout_s <= 0:
            raise ConfigError(f"train.timeout_s must be > 0, got {self.timeout_s}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.ema_decay and self.strategy not in ("local", "ddp"):
            raise ConfigError(
                f"train.ema_decay works with strategy local or ddp, not {self.strategy} (its "
                "weights are sharded or live on a server)"
            )
        if self.ema_decay and self.privacy.enabled:
            raise ConfigError(
                "train.ema_decay is not supported with train.privacy yet (the private model's "
                "per-example gradient wrapper is not averaged); set one of them"
            )
        if self.clip_grad_norm is not None and self.clip_grad_norm <= 0:
            raise ConfigError(
                f"train.clip_grad_norm must be > 0 or null, got {self.clip_grad_norm}"
            )
