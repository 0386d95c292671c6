"""Devices, mixed precision and seeding: where a model runs and how its randomness is fixed.

Example:
    >>> device = resolve_device("cpu")
    >>> autocast_dtype("auto", device) is None
    True
    >>> seed_everything(0)
"""

from __future__ import annotations

import contextlib
import os
import random
import re
from collections.abc import Iterator

import numpy as np
import torch

from abyssal.core.errors import AbyssalError, ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")

_DEVICE_SPEC = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(spec: str) -> torch.device:
    """The torch device named by a config value.

    Args:
        spec: ``"auto"`` (CUDA when available, else the CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Returns:
        The device.

    Raises:
        AbyssalError: the spec is malformed, or names a CUDA device this machine does not have.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    spec = spec.strip().lower()
    if not _DEVICE_SPEC.match(spec):
        raise ConfigError(f"device '{spec}' is not one of: auto, cpu, cuda, cuda:N")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        _check_cuda(device)
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a precision setting on a device; ``None`` means plain fp32.

    ``auto`` picks bf16 on CUDA devices that support it, fp16 on older CUDA devices and fp32 on the
    CPU. ``bf16`` is allowed on the CPU (autocast supports it there); ``fp16`` is not.

    Args:
        precision: one of ``auto``, ``fp32``, ``bf16``, ``fp16``.
        device: the device the model runs on.

    Returns:
        ``torch.bfloat16``, ``torch.float16`` or ``None``.

    Raises:
        ConfigError: an unknown precision, fp16 on the CPU, or bf16 on a CUDA device without it.

    Example:
        >>> autocast_dtype("bf16", torch.device("cpu"))
        torch.bfloat16
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision '{precision}' is not one of: {', '.join(PRECISIONS)}")
    cuda = device.type == "cuda"
    if precision == "fp32" or (precision == "auto" and not cuda):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "fp16" and not cuda:
        raise ConfigError(f"precision fp16 needs a CUDA device, got {device}; use bf16 or fp32")
    if precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"precision bf16 is not supported on {device}; use fp16 or fp32")
    return torch.bfloat16 if precision == "bf16" else torch.float16


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device).

    Args:
        seed: any integer; it is reduced modulo 2**32 for NumPy.

    Example:
        >>> seed_everything(3); a = torch.rand(1)
        >>> seed_everything(3); bool(torch.equal(a, torch.rand(1)))
        True
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(seed: int, *keys: int) -> int:
    """A well-mixed 63-bit seed from a base seed and integer keys (e.g. the epoch number).

    Args:
        seed: the base seed.
        *keys: further non-negative integers that must give distinct streams.

    Returns:
        A non-negative integer below 2**63.

    Example:
        >>> derive_seed(0, 1) != derive_seed(0, 2)
        True
    """
    words = np.random.SeedSequence([seed % 2**64, *keys]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def _check_cuda(device: torch.device) -> None:
    if not torch.cuda.is_available():
        raise AbyssalError(f"device '{device}' was requested but CUDA is not available here")
    index = 0 if device.index is None else device.index
    count = torch.cuda.device_count()
    if index >= count:
        raise AbyssalError(
            f"device '{device}' does not exist: this machine has {count} CUDA devices"
        )


@contextlib.contextmanager
def deterministic_kernels(enabled: bool = True) -> Iterator[None]:
    """Use deterministic kernels inside the block (restoring the previous setting after).

    Multi-threaded CPU scatter reductions, as graph layers use, otherwise sum in an order that
    varies from run to run. On CUDA, cuBLAS also needs ``CUBLAS_WORKSPACE_CONFIG``, set here when
    absent. Operations without a deterministic kernel warn instead of failing.
    """
    before = torch.are_deterministic_algorithms_enabled()
    before_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=before_warn)
