"""A replica's measured service profile: how many requests a second it answers at full load, the
distribution of its per-request service time and its cold start, with where it was measured.
The simulator (:mod:`abyssal.deploy.simulate`) serves from it; :func:`measure_service` measures
a running replica (``abyssal serve``) over HTTP.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from abyssal.core.atomic import write_text_atomic
from abyssal.core.errors import DataError

MEASURE_METHOD = (
    "service time = latencies observed at concurrency 1 (their shape), rescaled to the mean "
    "1/throughput measured in a closed loop at saturation"
)


@dataclass
class ServiceProfile:
    """One replica of one model, as measured.

    Attributes:
        capacity_rps: requests a second one replica answers at full load.
        service_ms: per-request service times (ms), samples of the distribution the simulator
            draws from; their mean is ``1000 / capacity_rps`` (the simulator rescales them to
            a tier's own ``capacity_rps`` where the tier sets one).
        startup_s: cold start, process start to ready (``None``: not measured).
        model: the model it serves.
        method: how ``service_ms`` was obtained.
        measured_on: where and with what it was measured (machine, versions, settings).
        latency_ms: observed client latencies (``c1_p50``, ``c1_p99`` at concurrency 1;
            ``sat_p50``, ``sat_p99`` at saturation).
    """

    capacity_rps: float
    service_ms: np.ndarray
    startup_s: float | None = None
    model: str = ""
    method: str = ""
    measured_on: dict[str, Any] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (isinstance(self.capacity_rps, int | float) and math.isfinite(self.capacity_rps)
                and self.capacity_rps > 0):  # fmt: skip
            raise DataError(f"service profile: capacity_rps must be > 0, got {self.capacity_rps!r}")
        samples = np.asarray(self.service_ms, dtype=np.float64).ravel()
        if samples.size == 0:
            raise DataError("service profile: service_ms is empty")
        if not (np.isfinite(samples).all() and (samples > 0).all()):
            raise DataError("service profile: service_ms must be finite and > 0")
        self.service_ms = samples
        if self.startup_s is not None and not (math.isfinite(self.startup_s)
                                               and self.startup_s >= 0):  # fmt: skip
            raise DataError(f"service profile: startup_s must be >= 0, got {self.startup_s!r}")

    @property
    def mean_service_ms(self) -> float:
        return float(self.service_ms.mean())

    def service_seconds(self, capacity_rps: float | None = None) -> np.ndarray:
        """The samples in seconds, rescaled so that their mean is ``1 / capacity_rps`` (default:
        the profile's own capacity)."""
        rate = capacity_rps or self.capacity_rps
        return self.service_ms * (1.0 / rate) / (self.service_ms.mean() / 1000.0) / 1000.0

    @classmethod
    def synthetic(
        cls,
        capacity_rps: float,
        *,
        cv: float = 0.5,
        samples: int = 4000,
        seed: int = 0,
        startup_s: float | None = None,
        model: str = "",
    ) -> ServiceProfile:
        """A made-up profile: gamma-distributed service times of mean ``1 / capacity_rps`` and
        coefficient of variation ``cv`` (for tests and what-ifs)."""
        if not cv > 0:
            raise DataError(f"synthetic profile: cv must be > 0, got {cv!r}")
        shape = 1.0 / cv**2
        draws = np.random.default_rng(seed).gamma(shape, 1.0 / shape, samples)
        service = draws / draws.mean() * 1000.0 / capacity_rps
        return cls(capacity_rps, service, startup_s, model, f"synthetic gamma, cv {cv:g}",
                   {"synthetic": True})  # fmt: skip

    def to_json(self) -> str:
        """The profile as JSON (:meth:`from_json` reads it back)."""
        data = asdict(self)
        data["service_ms"] = [round(float(v), 6) for v in self.service_ms]
        return json.dumps(data, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ServiceProfile:
        """A profile from :meth:`to_json`'s text.

        Raises:
            DataError: not JSON, or a field missing or wrong (named).
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"service profile: not JSON ({e.msg})") from None
        if not isinstance(data, dict):
            raise DataError("service profile: expected a JSON object")
        for key in ("capacity_rps", "service_ms"):
            if key not in data:
                raise DataError(f"service profile: no {key!r} field", column=key)
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DataError(f"service profile: unknown fields {unknown}; known: {sorted(known)}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as e:
            raise DataError(f"service profile: {e}") from None

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_json` to ``path`` atomically."""
        return write_text_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> ServiceProfile:
        """Read a profile saved by :meth:`save`."""
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise DataError(f"cannot read the service profile: {e}", path=path) from None
        try:
            return cls.from_json(text)
        except DataError as e:
            raise DataError(e.reason, path=path) from None


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in ("abyssal", "torch", "fastapi", "uvicorn", "httpx", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
            "python": platform.python_version()}  # fmt: skip


async def _closed_loop(
    http: Any, endpoint: str, body: Any, concurrency: int, seconds: float
) -> tuple[list[float], dict[str, int], float, str]:
    """``concurrency`` clients, each sending its next request when the last is answered, for
    ``seconds``: latencies (s) of answered (200) requests, counts by status, elapsed seconds, and
    one failed answer's text (empty if none)."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    failure = [""]
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                answer = await http.post(endpoint, json=body)
                status = str(answer.status_code)
                if answer.status_code != 200 and not failure[0]:
                    failure[0] = answer.text[:300]
            except Exception as e:  # a transport error is counted and reported, never hidden
                status = type(e).__name__
                failure[0] = failure[0] or str(e)[:300]
            if status == "200":
                latencies.append(time.perf_counter() - start)
            statuses[status] = statuses.get(status, 0) + 1

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies, statuses, time.perf_counter() - began, failure[0]


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) * 1000.0 if values else float("nan")


async def measure_service_async(
    url: str,
    model: str,
    body: Any,
    *,
    seconds: float = 10.0,
    concurrency: int = 8,
    warmup_s: float = 1.0,
    startup_s: float | None = None,
    timeout_s: float = 60.0,
    transport: Any = None,
) -> ServiceProfile:
    """:func:`measure_service` inside a running event loop."""
    import httpx

    if seconds <= 0 or concurrency < 1 or warmup_s < 0:
        raise DataError("measure_service: seconds > 0, concurrency >= 1 and warmup_s >= 0")
    endpoint = f"{url.rstrip('/')}/v1/models/{model}/predict"
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=timeout_s, transport=transport) as http:
        first = await _one(http, endpoint, body)
        if warmup_s:
            await _closed_loop(http, endpoint, body, concurrency, warmup_s)
        c1_seconds = max(1.0, seconds / 3)
        single, s1, _, fail1 = await _closed_loop(http, endpoint, body, 1, c1_seconds)
        saturated, sn, elapsed, failn = await _closed_loop(
            http, endpoint, body, concurrency, seconds
        )
    for statuses, failure in ((s1, fail1), (sn, failn)):
        bad = {k: v for k, v in statuses.items() if k != "200"}
        if bad:
            raise DataError(
                f"measure_service: {endpoint} answered {bad} (besides {statuses.get('200', 0)} "
                f"x 200): {failure}"
            )
    if not single or not saturated:
        raise DataError(f"measure_service: {endpoint} answered nothing in {seconds:g} s")
    throughput = len(saturated) / elapsed
    shape = np.asarray(single)
    service_ms = shape / shape.mean() * 1000.0 / throughput
    return ServiceProfile(
        capacity_rps=throughput,
        service_ms=service_ms,
        startup_s=startup_s,
        model=str(first.get("model", model)) if isinstance(first, dict) else model,
        method=MEASURE_METHOD,
        measured_on={
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "url": url,
            "concurrency": concurrency,
            "seconds": seconds,
            "c1_seconds": c1_seconds,
            "requests_c1": len(single),
            "requests_saturated": len(saturated),
            "machine": _machine(),
            "versions": _versions(),
        },
        latency_ms={
            "c1_mean": float(shape.mean()) * 1000.0,
            "c1_p50": _pct(single, 50),
            "c1_p99": _pct(single, 99),
            "sat_p50": _pct(saturated, 50),
            "sat_p99": _pct(saturated, 99),
        },
    )


async def _one(http: Any, endpoint: str, body: Any) -> Any:
    try:
        answer = await http.post(endpoint, json=body)
    except Exception as e:
        raise DataError(f"measure_service: {endpoint} cannot be reached: {e}") from None
    if answer.status_code != 200:
        raise DataError(
            f"measure_service: {endpoint} answered {answer.status_code}: {answer.text[:300]}"
        )
    try:
        return answer.json()
    except ValueError:
        return None


def measure_service(
    url: str,
    model: str,
    body: Any,
    *,
    seconds: float = 10.0,
    concurrency: int = 8,
    warmup_s: float = 1.0,
    startup_s: float | None = None,
    timeout_s: float = 60.0,
    transport: Any = None,
) -> ServiceProfile:
    """Measure a running replica (``abyssal serve``) at ``url`` with ``body`` sent to
    ``POST /v1/models/{model}/predict`` by an ``httpx.AsyncClient`` in a closed loop.

    After one request (which must answer 200) and ``warmup_s`` of load: ``max(1, seconds / 3)``
    seconds with one client, whose latencies give the service time's *shape*; then ``seconds``
    with ``concurrency`` clients, each sending its next request when the last is answered, whose
    answered requests a second are the capacity (the replica is saturated when ``concurrency``
    is above what it works on at once). The service time samples are the concurrency-1
    latencies rescaled to the mean ``1 / throughput``: the time a saturated replica spends per
    request (Little's law), so a simulated FIFO replica serves exactly the measured throughput.
    At low load the simulator's latency is then that mean, not the concurrency-1 latency (whose
    HTTP overhead overlaps with other requests under load); both are kept in ``latency_ms``.

    The client shares the machine with the replica when both run here: the capacity measured is
    that of the replica beside its load generator.

    Args:
        url: the replica, ``http://host:port``.
        model: the model's name in the path.
        body: the JSON body of every request (one request, or ``{"instances": [...]}``).
        seconds: the saturated window's length.
        concurrency: clients in the saturated window.
        warmup_s: load before measuring, not counted.
        startup_s: a cold start measured elsewhere, kept in the profile.
        timeout_s: one request's time limit.
        transport: an ``httpx`` async transport to use instead of the network (tests).

    Raises:
        DataError: the replica cannot be reached or answers anything but 200 (the status and
            the answer are named): a profile of errors would be wrong.
    """
    return asyncio.run(
        measure_service_async(url, model, body, seconds=seconds, concurrency=concurrency,
                              warmup_s=warmup_s, startup_s=startup_s, timeout_s=timeout_s,
                              transport=transport)
    )  # fmt: skip
