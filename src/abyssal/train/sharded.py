"""Sharded checkpoints: each process writes its own shards with ``torch.distributed.checkpoint``.

Under ``fsdp`` (``train.fsdp.sharded_checkpoints``, on by default) the model and optimizer states
are never gathered onto one process: every rank writes its shards into a folder with
``torch.distributed.checkpoint`` (DCP), then rank 0 hashes the files, moves the finished folder
into place and writes the checkpoint's JSON sidecar last (see :mod:`abyssal.train.checkpoint`),
which names the folder and every file's sha256. A process killed mid-write leaves a temporary
folder that the next save removes, and the JSON still names the previous, intact folder.

DCP records each tensor's global shape and every shard's place, so a checkpoint written by N
processes loads into M: an FSDP run reads only its own new shards; another strategy (or one
process) reads full tensors into a plain model built on the CPU and loads them as usual.

Example:
    >>> state = sharded_state(model, optimizer)  # doctest: +SKIP
    >>> folder, files = write_sharded(ckpt_dir, "last", state, strategy)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from abyssal.core.digest import sha256_file
from abyssal.core.errors import AbyssalError


def write_sharded(
    directory: str | Path, name: str, state: dict[str, Any], strategy: Any
) -> tuple[str, dict[str, str]] | None:
    """Write ``state`` (DTensor shards and plain tensors) from every process into one folder.

    Call on every process. Returns, on the main process, the folder's name (``<name>-<sha16>.dcp``,
    the hash over its files' hashes) and each file's sha256; ``None`` on the others.
    """
    import torch.distributed.checkpoint as dcp

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    token = strategy.broadcast(uuid.uuid4().hex[:12] if strategy.is_main else None)
    tmp = directory / f".{name}-{token}.dcp.tmp"
    dcp.save(state, checkpoint_id=tmp)
    strategy.barrier()  # every shard is on disk
    if not strategy.is_main:
        return None
    files = {
        p.relative_to(tmp).as_posix(): sha256_file(p, fsync=True)
        for p in sorted(tmp.rglob("*"))
        if p.is_file()
    }
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    final = directory / f"{name}-{digest[:16]}.dcp"
    if final.exists():  # the same bytes again (nothing trained since): keep the one in place
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, final)
    _fsync_dir(directory)
    return final.name, files


def verify_sharded(directory: Path, entry: Mapping[str, Any]) -> str | None:
    """Why the sharded folder a checkpoint names is not intact, or ``None`` when it is."""
    folder = directory / entry["folder"]
    if not folder.is_dir():
        return f"{folder.name} is missing"
    for rel, expected in entry["files"].items():
        path = folder / rel
        if not path.is_file():
            return f"{folder.name}/{rel} is missing"
        got = sha256_file(path)
        if got != expected:
            return f"{folder.name}/{rel} has sha256 {got[:16]}..., expected {expected[:16]}..."
    return None


def sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    """The model's (and optimizer's) state as DCP saves and loads it: FQN keys, DTensor shards
    for a sharded model, full tensors for a plain one (the optimizer's state initialised)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    if optimizer is None:
        return {"model": get_model_state_dict(model)}
    msd, osd = get_state_dict(model, optimizer)
    return {"model": msd, "optim": osd}


def load_sharded_into(
    folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None
) -> None:
    """Load a sharded checkpoint into a sharded (FSDP) model and its optimizer, each process
    reading its own new shards (call on every process of the group)."""
    _load_into(folder, model, optimizer, no_dist=False)


def load_sharded_full(
    folder: Path,
    build: Callable[[], nn.Module],
    build_optimizer: Callable[[nn.Module], torch.optim.Optimizer] | None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Full states from a sharded checkpoint, read by this process alone into a plain model built
    on the CPU: the model's ``state_dict`` and (with ``build_optimizer``) the optimizer's, keyed
    by parameter index like ``Optimizer.state_dict()``."""
    model = build()
    optimizer = build_optimizer(model) if build_optimizer is not None else None
    _load_into(folder, model, optimizer, no_dist=True)
    return model.state_dict(), (optimizer.state_dict() if optimizer is not None else None)


def prune_sharded(directory: Path, name: str, keep: set[str]) -> None:
    """Delete ``name``'s sharded folders that ``keep`` does not name, and stale temporary ones."""
    for path in directory.glob(f"{name}-*.dcp"):
        if path.name not in keep and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def remove_stale_sharded(directory: Path, name: str) -> None:
    """Temporary folders of a killed save (the main process calls it after its own save)."""
    for path in directory.glob(f".{name}-*.dcp.tmp"):
        shutil.rmtree(path, ignore_errors=True)


def _load_into(
    folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None, *, no_dist: bool
) -> None:
    """Read the folder into the model's (and optimizer's) own state layout and load it."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import set_state_dict

    state = sharded_state(model, optimizer)
    try:
        dcp.load(state, checkpoint_id=folder, no_dist=no_dist)
    except (Exception, CheckpointException) as exc:  # the latter is a BaseException
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise AbyssalError(
            f"the sharded checkpoint {folder.name} does not fit this model (another model or "
            f"configuration?): {lines[-1][:300] if lines else type(exc).__name__}"
        ) from exc
    set_state_dict(
        model,
        optimizer if optimizer is not None else [],
        model_state_dict=state["model"],
        optim_state_dict=state.get("optim", {}),
    )


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
