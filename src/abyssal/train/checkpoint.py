"""Atomic, pickle-free training checkpoints: one safetensors file plus a JSON sidecar.

A checkpoint called ``name`` (``"last"``, ``"best"``) in a folder is::

    <name>-<sha256[:16]>.safetensors   every tensor: model.<key>, optim.state.<param index>.<key>,
                                       rng.torch_cpu (uint8), rng.cuda.<device index> (uint8), and
                                       rng.rank<r>.* for the other ranks of a distributed run
    <name>.json                        everything else, and the file name + sha256 of the tensors
    <name>.prev.json                   the previous <name>.json, kept as a fall-back
    <name>-<sha16>.dcp/                a sharded checkpoint's model and optimizer state, one file
                                       per process (torch.distributed.checkpoint); the JSON then
                                       names the folder and each file's sha256

The JSON holds the training counters (:class:`TrainState`), the optimizer's ``param_groups`` and
non-tensor state, the Python and NumPy RNG states and the ``GradScaler`` state. The model and
optimizer states are full (never sharded) and the optimizer's state is keyed by parameter index,
so a checkpoint written by a run of N processes (any strategy) loads into a run of M processes or
into one model on one CPU. Saving writes the
tensors to a temporary file, renames it into place, then writes the JSON the same way, last. A
killed process therefore leaves the old JSON naming the old, intact tensors file. Loading checks the
tensors against the sha256 that the JSON names; a mismatch (a torn or damaged pair) falls back to
``<name>.prev.json`` or raises a clear error. Nothing is ever unpickled.

Example:
    >>> state = TrainState(epoch=4)
    >>> save_checkpoint(folder, "last", model=model, optimizer=opt, state=state)  # doctest: +SKIP
    >>> ckpt = read_checkpoint(folder, "last")  # doctest: +SKIP
    >>> restore_checkpoint(ckpt, model=model, optimizer=opt).epoch  # doctest: +SKIP
    4
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import nn

from abyssal.core.atomic import move_into_place, pid_temp_file, write_text_atomic
from abyssal.core.clock import utc_now
from abyssal.core.digest import sha256_file
from abyssal.core.errors import AbyssalError
from abyssal.core.state_flatten import storable_tensors

FORMAT = "abyssal-checkpoint"
VERSION = 1


@dataclass
class TrainState:
    """The counters a resumed training run continues from.

    Args:
        epoch: the last completed epoch (0-based); ``-1`` before the first.
        global_step: optimizer steps taken so far.
        batches_in_epoch: batches of the epoch after ``epoch`` already trained on (a checkpoint
            written mid-epoch; ``0`` at an epoch boundary).
        loss_sum: the summed training loss since the last evaluation.
        loss_batches: how many batches ``loss_sum`` covers.
        evaluations: evaluations run so far.
        last_eval_step: ``global_step`` at the last evaluation (``-1`` before the first).
        best_metric: the best value of the watched validation metric, if any.
        best_epoch: the epoch during which ``best_metric`` was reached.
        best_step: the step at which ``best_metric`` was reached.
        evals_since_improvement: evaluations since ``best_step``.
        stopped_early: whether early stopping ended the run.
        world_size: how many processes trained when the checkpoint was written.
        items_in_epoch: how many items (over all processes) of the epoch after ``epoch`` were
            trained on, when the task's batches tell their size; ``None`` when unknown. It lets a
            run resumed mid-epoch on another number of processes continue at the same place.
        epoch_offset: items of the current epoch trained before a resume on another number of
            processes (the epoch's batches then start after them).
    """

    epoch: int = -1
    global_step: int = 0
    batches_in_epoch: int = 0
    loss_sum: float = 0.0
    loss_batches: int = 0
    evaluations: int = 0
    last_eval_step: int = -1
    best_metric: float | None = None
    best_epoch: int | None = None
    best_step: int | None = None
    evals_since_improvement: int = 0
    stopped_early: bool = False
    world_size: int = 1
    items_in_epoch: int | None = 0
    epoch_offset: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        """Counters read from a checkpoint (also one written before per-step training)."""
        data = dict(data)
        if "epochs_since_improvement" in data:  # checkpoints of abyssal 0.1.0
            data["evals_since_improvement"] = data.pop("epochs_since_improvement")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Checkpoint:
    """A verified checkpoint read from disk.

    Args:
        meta: the JSON sidecar.
        tensors: the tensors of the safetensors file, on the CPU.
        path: the JSON file it was read from.
        note: set when the current checkpoint was damaged and the previous one was used instead.
    """

    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    path: Path
    note: str | None = None

    @property
    def state(self) -> TrainState:
        """The training counters saved with the checkpoint."""
        return TrainState.from_dict(self.meta["state"])

    def model_state(self) -> dict[str, torch.Tensor]:
        """The model's ``state_dict`` (CPU tensors)."""
        return {k[6:]: v for k, v in self.tensors.items() if k.startswith("model.")}

    def averaged_state(self) -> dict[str, torch.Tensor] | None:
        """The moving average's ``state_dict`` (``train.ema_decay``), or ``None`` without."""
        state = {k[9:]: v for k, v in self.tensors.items() if k.startswith("averaged.")}
        return state or None

    def optimizer_state(self) -> dict[str, Any] | None:
        """The optimizer's ``state_dict`` (state keyed by parameter index), or ``None`` for a
        weights-only checkpoint."""
        return None if self.meta.get("optimizer") is None else _unflatten_optimizer(self)

    @property
    def sharded_folder(self) -> Path | None:
        """The folder of a sharded checkpoint's model and optimizer state, or ``None``."""
        entry = self.meta.get("sharded")
        return None if not entry else self.path.parent / entry["folder"]

    @property
    def rng_ranks(self) -> int:
        """How many processes' RNG states the checkpoint holds (0 when none)."""
        if self.meta.get("rng") is None:
            return 0
        return 1 + len(self.meta.get("rng_ranks") or [])


def save_checkpoint(
    directory: str | Path,
    name: str,
    *,
    model: nn.Module | Mapping[str, torch.Tensor],
    state: TrainState,
    optimizer: torch.optim.Optimizer | Mapping[str, Any] | None = None,
    scaler: torch.amp.GradScaler | None = None,
    rng: bool | Sequence[RngState] = True,
    sharded: tuple[str, dict[str, str]] | None = None,
    averaged: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write a checkpoint atomically (tensors first, the JSON that names them last).

    Args:
        directory: the checkpoint folder (created if missing).
        name: the checkpoint's name, e.g. ``"last"`` or ``"best"``.
        model: the (unwrapped) model, or its full ``state_dict``.
        state: the training counters.
        optimizer: the optimizer or its full ``state_dict``; ``None`` for a weights-only
            checkpoint.
        scaler: the ``GradScaler``, if mixed precision uses one.
        rng: ``True``: save this process's Python, NumPy, torch CPU and CUDA RNG states;
            ``False``: none; or every process's states in rank order (:func:`capture_rng`).
        sharded: the folder (and its files' sha256) that
            :func:`abyssal.train.sharded.write_sharded` wrote with the model and optimizer
            state; ``model`` and ``optimizer`` are then empty.
        averaged: the ``state_dict`` of the weights' moving average (``train.ema_decay``),
            kept beside the trained weights so that a resumed run goes on averaging.

    Returns:
        The path of the JSON sidecar.

    Example:
        >>> model = nn.Linear(2, 1)
        >>> save_checkpoint(tmp, "best", model=model, state=TrainState())  # doctest: +SKIP
        PosixPath('.../best.json')
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(directory, name)
    weights = model.state_dict() if isinstance(model, nn.Module) else model
    tensors = {f"model.{k}": v for k, v in weights.items()}
    tensors.update({f"averaged.{k}": v for k, v in (averaged or {}).items()})
    meta: dict[str, Any] = {"format": FORMAT, "version": VERSION, "name": name}
    meta["saved"] = utc_now("milliseconds")
    meta["state"] = dataclasses.asdict(state)
    if isinstance(optimizer, torch.optim.Optimizer):
        optimizer = optimizer.state_dict()
    meta["optimizer"] = _flatten_optimizer(optimizer, tensors) if optimizer else None
    meta["scaler"] = scaler.state_dict() if scaler is not None and scaler.is_enabled() else {}
    ranks = [capture_rng()] if rng is True else list(rng or [])
    meta["rng"] = _flatten_rng(ranks[0], tensors, "rng.") if ranks else None
    if len(ranks) > 1:
        meta["rng_ranks"] = [
            _flatten_rng(r, tensors, f"rng.rank{i}.") for i, r in enumerate(ranks[1:], 1)
        ]
    if sharded is not None:
        meta["sharded"] = {"folder": sharded[0], "files": sharded[1]}
    meta["tensors"], meta["sha256"] = _write_tensors(directory, name, tensors)
    current = directory / f"{name}.json"
    if current.exists():
        write_text_atomic(directory / f"{name}.prev.json", current.read_text())
    write_text_atomic(current, json.dumps(meta, indent=1) + "\n")
    _prune(directory, name)
    return current


def read_checkpoint(directory: str | Path, name: str) -> Checkpoint:
    """Read and verify checkpoint ``name``; fall back to its previous version if it is damaged.

    Args:
        directory: the checkpoint folder.
        name: the checkpoint's name.

    Returns:
        The checkpoint; ``note`` says why the previous version was used, if it was.

    Raises:
        AbyssalError: there is no such checkpoint, or neither version is intact (the message says
            what is wrong with each).

    Example:
        >>> read_checkpoint(tmp, "last").state.epoch  # doctest: +SKIP
        4
    """
    directory = Path(directory)
    problems = []
    for candidate in (directory / f"{name}.json", directory / f"{name}.prev.json"):
        if not candidate.exists():
            continue
        try:
            ckpt = _read_verified(candidate)
        except _DamagedCheckpoint as exc:
            problems.append(str(exc))
            continue
        if problems:
            ckpt.note = f"checkpoint '{name}' is damaged ({problems[0]}); using {candidate.name}"
        return ckpt
    if not problems:
        raise AbyssalError(f"no checkpoint '{name}' in {directory}")
    raise AbyssalError(f"checkpoint '{name}' in {directory} is damaged: {'; '.join(problems)}")


def restore_checkpoint(
    ckpt: Checkpoint,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scaler: torch.amp.GradScaler | None = None,
    rng: bool = True,
) -> TrainState:
    """Load a checkpoint into a model and, optionally, an optimizer, a scaler and the RNGs.

    Args:
        ckpt: from :func:`read_checkpoint`.
        model: the (unwrapped) model; its keys must match exactly.
        optimizer: an optimizer over the same parameters, in the same order.
        scaler: the ``GradScaler`` to restore, if any.
        rng: whether to restore the RNG states saved with the checkpoint.

    Returns:
        The saved training counters.

    Raises:
        AbyssalError: an optimizer is given but the checkpoint holds weights only.
    """
    model.load_state_dict(ckpt.model_state())
    if optimizer is not None:
        if ckpt.meta.get("optimizer") is None:
            raise AbyssalError(f"{ckpt.path} holds weights only, no optimizer state")
        optimizer.load_state_dict(_unflatten_optimizer(ckpt))
    if scaler is not None and ckpt.meta.get("scaler"):
        scaler.load_state_dict(ckpt.meta["scaler"])
    if rng:
        restore_rng(ckpt)
    return ckpt.state


def checkpoint_exists(directory: str | Path, name: str) -> bool:
    """Whether checkpoint ``name`` (or its previous version) exists in ``directory``."""
    directory = Path(directory)
    return any((directory / f"{name}{s}.json").exists() for s in ("", ".prev"))


def peek_checkpoint(directory: str | Path, name: str) -> dict[str, Any] | None:
    """The JSON sidecar of checkpoint ``name`` without reading or verifying the tensors.

    Cheap enough to poll (e.g. to watch another process's progress); ``None`` if absent.

    Example:
        >>> peek_checkpoint(tmp, "last")["state"]["epoch"]  # doctest: +SKIP
        4
    """
    path = Path(directory) / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class _DamagedCheckpoint(Exception):
    pass


def _read_verified(path: Path) -> Checkpoint:
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise _DamagedCheckpoint(f"{path.name} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _DamagedCheckpoint(f"{path.name} is not an abyssal checkpoint")
    if meta.get("version") != VERSION:
        raise _DamagedCheckpoint(f"{path.name} has format version {meta.get('version')}")
    tensor_path = path.parent / meta["tensors"]
    if not tensor_path.is_file():
        raise _DamagedCheckpoint(f"{path.name} names {tensor_path.name}, which is missing")
    data = tensor_path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != meta["sha256"]:
        raise _DamagedCheckpoint(
            f"{tensor_path.name} has sha256 {digest[:16]}..., {path.name} expects "
            f"{meta['sha256'][:16]}... (torn or damaged pair)"
        )
    if meta.get("sharded"):
        from abyssal.train.sharded import verify_sharded

        problem = verify_sharded(path.parent, meta["sharded"])
        if problem is not None:
            raise _DamagedCheckpoint(f"{path.name} names a sharded state where {problem}")
    return Checkpoint(meta=meta, tensors=safetensors.torch.load(data), path=path)


def _write_tensors(directory: Path, name: str, tensors: dict[str, torch.Tensor]) -> tuple[str, str]:
    with pid_temp_file(directory, name) as tmp:
        safetensors.torch.save_file(storable_tensors(tensors), tmp, metadata={"format": "pt"})
        digest = sha256_file(tmp, fsync=True)
        filename = f"{name}-{digest[:16]}.safetensors"
        move_into_place(tmp, directory / filename)
    return filename, digest


def _prune(directory: Path, name: str) -> None:
    """Delete tensor files of ``name`` that neither ``name.json`` nor ``name.prev.json`` names."""
    keep, folders = set(), set()
    for suffix in ("", ".prev"):
        meta = peek_checkpoint(directory, f"{name}{suffix}")
        if meta is not None:
            keep.add(meta.get("tensors"))
            folders.add((meta.get("sharded") or {}).get("folder"))
    from abyssal.train.sharded import prune_sharded

    prune_sharded(directory, name, {f for f in folders if f})
    pattern = re.compile(rf"^{re.escape(name)}-[0-9a-f]{{16}}\.safetensors$")
    for path in directory.iterdir():
        if pattern.match(path.name) and path.name not in keep:
            path.unlink(missing_ok=True)


def _remove_stale_temps(directory: Path, name: str) -> None:
    # Temporary files of a killed writer; one process writes a run's checkpoints at a time.
    for path in directory.glob(f".{name}.*.tmp"):
        path.unlink(missing_ok=True)
    from abyssal.train.sharded import remove_stale_sharded

    remove_stale_sharded(directory, name)  # the current save's folder is already in place


def _flatten_optimizer(sd: Mapping[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in sd["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.state.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(ckpt: Checkpoint) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in ckpt.tensors.items():
        if key.startswith("optim.state."):
            index, name = key[len("optim.state.") :].split(".", 1)
            state.setdefault(int(index), {})[name] = value
    saved = ckpt.meta["optimizer"]
    for index, entries in saved["scalars"].items():
        state.setdefault(int(index), {}).update(entries)
    # JSON turned tuples (AdamW's betas) into lists; give them back their type.
    groups = [
        {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in group.items()}
        for group in saved["param_groups"]
    ]
    return {"state": dict(sorted(state.items())), "param_groups": groups}


@dataclass
class RngState:
    """One process's random number generator states (picklable, to gather across ranks)."""

    python: Any
    numpy: dict[str, Any]
    torch_cpu: torch.Tensor
    cuda: list[torch.Tensor]
    cuda_current: bool = False  # ``cuda`` holds the current device's state only


def capture_rng(all_devices: bool = True) -> RngState:
    """This process's Python, NumPy, torch CPU and (initialised) CUDA RNG states.

    Args:
        all_devices: every visible CUDA device's state (one process, one or more GPUs), or only
            the current device's (one process per GPU: touching the others would create a CUDA
            context on each).
    """
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"]["key"] = numpy_state["state"]["key"].tolist()
    states: list[torch.Tensor] = []
    if cuda and all_devices:
        states = list(torch.cuda.get_rng_state_all())
    elif cuda:
        states = [torch.cuda.get_rng_state()]
    return RngState(
        random.getstate(), numpy_state, torch.get_rng_state(), states, cuda and not all_devices
    )


def _flatten_rng(rng: RngState, tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, Any]:
    tensors[f"{prefix}torch_cpu"] = rng.torch_cpu
    for index, value in enumerate(rng.cuda):
        tensors[f"{prefix}cuda.{index}"] = value
    out = {"python": rng.python, "numpy": rng.numpy, "cuda_devices": len(rng.cuda)}
    if rng.cuda_current:
        out["cuda_current"] = True
    return out


def restore_rng(ckpt: Checkpoint, rank: int = 0) -> bool:
    """Restore the Python, NumPy, torch CPU and (same device count) CUDA RNG states of process
    ``rank``, if the checkpoint holds them; returns whether it did."""
    if rank >= ckpt.rng_ranks:
        return False
    saved = ckpt.meta["rng"] if rank == 0 else ckpt.meta["rng_ranks"][rank - 1]
    prefix = "rng." if rank == 0 else f"rng.rank{rank}."
    version, internal, gauss = saved["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(saved["numpy"])
    torch.set_rng_state(ckpt.tensors[f"{prefix}torch_cpu"])
    count = saved["cuda_devices"]
    if saved.get("cuda_current") and count == 1 and torch.cuda.is_available():
        torch.cuda.set_rng_state(ckpt.tensors[f"{prefix}cuda.0"])
    elif count and torch.cuda.is_available() and torch.cuda.device_count() == count:
        torch.cuda.set_rng_state_all([ckpt.tensors[f"{prefix}cuda.{i}"] for i in range(count)])
    return True
