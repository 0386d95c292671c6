"""Latency and throughput, measured the same way for every candidate.

Each measurement draws a pool of fresh inputs (different values per call, the same shapes), warms
the model up, then times single calls until ``reps`` calls or ``budget_s`` seconds, whichever
comes first (never fewer than ``min_reps``). On CUDA every call is bracketed by a device
synchronisation, so a time is the whole call as a client sees it. The median (p50) and the 99th
percentile (p99) are reported with the number of calls behind them; throughput is items per
second at the median.

Example:
    >>> timing = measure(model, lambda seed: (torch.randn(1, 8),), batch=1)  # doctest: +SKIP
    >>> timing.p50_ms  # doctest: +SKIP
    0.041
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from abyssal.optimize.subject import Inputs

POOL = 8
"""How many different input sets a measurement cycles through."""
SPREAD = (0, 10, 25, 50, 75, 90, 99, 100)
"""The percentiles of :attr:`Timing.spread_ms` (the latency distribution)."""


@dataclass(frozen=True)
class Timing:
    """One measurement: per-call milliseconds and items per second at the median;
    ``spread_ms`` holds the per-call milliseconds at the :data:`SPREAD` percentiles."""

    batch: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    calls: int
    throughput: float
    spread_ms: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(
    run: Callable[..., Any],
    make_inputs: Callable[[int], Inputs],
    batch: int,
    *,
    device: torch.device | str = "cpu",
    warmup: int = 5,
    reps: int = 100,
    min_reps: int = 10,
    budget_s: float = 20.0,
) -> Timing:
    """Time ``run(*inputs)`` on fresh inputs.

    Args:
        run: the model (or any callable).
        make_inputs: ``seed -> inputs`` already on the right device, each of ``batch`` items.
        batch: items per call (for throughput).
        device: where it runs (CUDA calls are synchronised).
        warmup: untimed calls first (compilation, CUDA graph capture, caches).
        reps: timed calls at most.
        min_reps: timed calls at least, even past the budget.
        budget_s: stop after this long once ``min_reps`` calls are timed.

    Returns:
        The :class:`Timing`.
    """
    cuda = torch.device(device).type == "cuda"
    pool = [make_inputs(seed) for seed in range(POOL)]
    times: list[float] = []
    with torch.inference_mode():
        for i in range(warmup):
            run(*pool[i % POOL])
        _sync(cuda)
        start = time.perf_counter()
        for i in range(reps):
            inputs = pool[i % POOL]
            _sync(cuda)
            t0 = time.perf_counter()
            run(*inputs)
            _sync(cuda)
            times.append(time.perf_counter() - t0)
            if len(times) >= min_reps and time.perf_counter() - start > budget_s:
                break
    ms = np.asarray(times) * 1e3
    p50 = float(np.median(ms))
    return Timing(
        batch=batch,
        p50_ms=p50,
        p99_ms=float(np.percentile(ms, 99)),
        mean_ms=float(ms.mean()),
        calls=len(times),
        throughput=batch / (p50 / 1e3) if p50 > 0 else float("inf"),
        spread_ms=tuple(float(v) for v in np.percentile(ms, SPREAD)),
    )


def _sync(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()
