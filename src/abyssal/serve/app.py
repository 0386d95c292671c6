"""The HTTP service: registered model versions behind one ASGI app (FastAPI), each with its own
dynamic batcher, answering through its solution's predictor (``parse`` on arrival, ``predict``
on a batch).

Endpoints:

- ``GET /healthz``: the process is alive. ``GET /readyz``: every model is loaded and its
  batcher running (503 before and while shutting down).
- ``GET /v1/models``: what is served (name, version, solution, canary share, batching policy).
- ``POST /v1/models/{name}/predict``: a JSON body, either one request (the solution's own
  fields, e.g. ``{"text": "..."}``) or ``{"instances": [request, ...]}``. The answer is
  ``{"model": version, "predictions": [...]}``, one per request, in order.
- ``POST /v1/models/{name}/feedback``: confirmed labels of the model's logged decisions,
  ``{"labels": [{"id", "label", "timestamp"}, ...], "source": "..."}`` -> ``{"stored": n}``,
  all stored or none (:mod:`abyssal.serve.feedback`); the same API keys as ``predict``.
- ``GET /metrics``: Prometheus text: requests by model and status, errors by kind
  (:data:`ERROR_KINDS`), latency and batch-size histograms, queue depth; with a monitor
  (``ServeSettings.monitor``, :mod:`abyssal.serve.monitor`), drift of the requests' fields and of
  the predictions, the window's latency and error rate, and which alerts fire.
- ``GET /v1/monitor``: each monitored model's reading now (JSON): drift per field, latency,
  error rate, firing alerts.

Errors are JSON ``{"error": message, ...}``: 404 unknown model; 413 a body over
``max_body_bytes``; 422 a body that is not JSON or a request the predictor refuses (the
request's index and field named); 503 a full queue (with ``Retry-After``); 504 no answer within
the timeout; 500 anything else, named by type. With API keys (``ServeSettings.keys``,
:mod:`abyssal.serve.auth`): 401 no or an unknown key, 403 a model the key may not use, 429 over
the key's rate (with ``Retry-After``); logs name the key's owner, never the key. The
``X-Priority`` header (an integer) puts a request ahead of lower ones in its model's queue.

Canaries: a model may serve other versions beside its own (:attr:`ServedModel.canaries`), each
answering its ``share`` of the requests, drawn at random per call; the answer's ``model`` names
the version that answered, and ``X-Model-Version: name:N`` asks for one served version.

Example:
    >>> app = create_app([ServedModel("text", "text:3", predictor)])  # doctest: +SKIP
    >>> uvicorn.run(app, port=8000)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abyssal.core.errors import AbyssalError, ConfigError, DataError
from abyssal.core.optional import require
from abyssal.serve.auth import AuthError, KeyRing
from abyssal.serve.batcher import BatchPolicy, DynamicBatcher, QueueFull, RequestTimeout
from abyssal.serve.bodies import form_request, json_requests, json_response
from abyssal.serve.cache import FeatureCache
from abyssal.serve.feedback import store_feedback
from abyssal.serve.journal import Journal
from abyssal.serve.monitor import (
    ModelMonitor,
    MonitorMetrics,
    MonitorSettings,
    MonitorState,
    post_alerts,
    trained_reference,
    transitions,
)

log = logging.getLogger(__name__)


ERROR_KINDS = {
    401: "unauthenticated",
    403: "forbidden",
    404: "unknown_model",
    413: "too_large",
    422: "invalid_request",
    429: "rate_limited",
    500: "internal",
    503: "queue_full",
    504: "timeout",
}
"""The ``kind`` label of ``abyssal_errors_total`` for each refusal or failure status."""


@dataclass
class ServeSettings:
    """Service-wide limits; each model's batcher takes ``policy``.

    Attributes:
        policy: batching, queue bound and timeout of each model.
        max_body_bytes: a larger body is refused (413).
        keys: the API keys predictions need (``None``: no key needed).
        allow_paths: let JSON requests name files on the server's disk (trusted clients
            only); otherwise files come as uploads (``multipart/form-data``).
        cache: a feature cache (:class:`abyssal.serve.cache.FeatureCache`, e.g. from
            :func:`~abyssal.serve.cache.open_cache`) handed to every predictor that can use one
            (``use_cache``); its counts are in ``/metrics``.
        monitor: watch each model's inputs, outputs, latency and errors, and raise alerts
            (:mod:`abyssal.serve.monitor`); ``None``: no monitor.
        reference: version ref -> ``(table, where it came from)``, the input reference of a
            monitored version (default: the table it was trained on, from the model store).
    """

    policy: BatchPolicy = field(default_factory=BatchPolicy)
    max_body_bytes: int = 8 << 20
    keys: KeyRing | None = None
    allow_paths: bool = False
    cache: FeatureCache | None = None
    monitor: MonitorSettings | None = None
    reference: Callable[[str], tuple[Any, str | None]] | None = None

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1:
            raise ConfigError(f"max_body_bytes must be >= 1, got {self.max_body_bytes}")


@dataclass
class ServedModel:
    """One served version.

    Attributes:
        name: its path segment (``/v1/models/<name>/predict``).
        ref: the version it serves (``text:3``).
        predictor: the solution's predictor (:class:`~abyssal.contracts.solution.Predictor`).
        solution: the solution's name.
        follow: the ref it follows (an alias such as ``text:production``, or a bare name for
            the newest version), ``None`` for a pinned version.
        journal: where a stateful model's applied requests are logged (replayed when the app
            starts); ``None``: its state lives in memory only.
        share: the fraction of its name's requests a canary answers (0 for the main version).
        canaries: other versions served under this name, each answering its ``share``.
        batcher: its running batcher (set when the app starts).
        monitor: its monitor (set when the app starts, with ``ServeSettings.monitor``).

    ``ref``, ``predictor`` and ``batcher`` change together when the followed alias moves
    (:func:`create_app`'s ``swap``); a request uses the three it found on arrival.
    """

    name: str
    ref: str
    predictor: Any
    solution: str = ""
    follow: str | None = None
    journal: Journal | None = None
    share: float = 0.0
    canaries: list[ServedModel] = field(default_factory=list)
    batcher: DynamicBatcher | None = None
    monitor: ModelMonitor | None = None

    @property
    def stateful(self) -> bool:
        """Whether predicting changes the predictor (the fraud solution's live graph)."""
        return bool(getattr(self.predictor, "stateful", False)) or self.journal is not None


class _Metrics:
    """Prometheus metrics of one app (its own registry, so several apps do not collide)."""

    def __init__(self) -> None:
        prom = require("prometheus_client", extra="serve", purpose="the /metrics endpoint")
        self.prom = prom
        self.registry = prom.CollectorRegistry()
        labels = ["model", "version"]
        self.requests = prom.Counter(
            "abyssal_requests", "requests by outcome", [*labels, "status"], registry=self.registry
        )
        self.errors = prom.Counter(
            "abyssal_errors", "refused or failed requests by kind", [*labels, "kind"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = prom.Histogram(
            "abyssal_request_seconds",
            "time from arrival to answer",
            labels,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.batch = prom.Histogram(
            "abyssal_batch_size",
            "requests per batch",
            labels,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.queue = prom.Gauge(
            "abyssal_queue_depth", "requests waiting", labels, registry=self.registry
        )
        self.busy = prom.Gauge(
            "abyssal_busy_seconds",
            "seconds spent running batches since the service started (its rate is the busy "
            "share: what an autoscaler reads as utilization)",
            ["model"],
            registry=self.registry,
        )
        self.cache = prom.Gauge(
            "abyssal_feature_cache", "feature-cache lookups and entries", ["what"],
            registry=self.registry,
        )  # fmt: skip

    def cache_counts(self, cache: FeatureCache) -> None:
        stats = cache.stats
        for what, value in (
            ("hits", stats.hits),
            ("misses", stats.misses),
            ("hit_rate", stats.hit_rate),
            ("evictions", stats.evictions),
        ):
            self.cache.labels(what).set(value)  # fmt: skip
        if hasattr(cache, "__len__"):
            self.cache.labels("entries").set(len(cache))

    def monitoring(self) -> MonitorMetrics:
        return MonitorMetrics(self.prom, self.registry)

    def text(self) -> bytes:
        return self.prom.generate_latest(self.registry)


def create_app(
    models: Sequence[ServedModel],
    settings: ServeSettings | None = None,
    *,
    follower: Any = None,
) -> Any:
    """The FastAPI app serving ``models`` (their batchers start with the app and drain when it
    stops).

    Args:
        models: what to serve.
        settings: limits, batching and keys.
        follower: runs while the app does, swapping a model whose followed alias moved
            (:class:`~abyssal.serve.models.AliasFollower`; it calls ``app.state.swap``).

    Raises:
        ConfigError: no model, or two with one name.
    """
    fastapi = require("fastapi", extra="serve", purpose="abyssal serve")
    responses = require("fastapi.responses", extra="serve", purpose="abyssal serve")
    settings = settings or ServeSettings()
    if not models:
        raise ConfigError("abyssal serve needs at least one model")
    served: dict[str, ServedModel] = {}
    for model in models:
        if model.name in served:
            raise ConfigError(f"two served models are named {model.name!r}")
        _check_canaries(model)
        served[model.name] = model
    every = [v for m in served.values() for v in (m, *m.canaries)]  # each served version
    rng = random.Random()
    metrics = _Metrics()
    ready = {"value": False}
    busy = {name: 0.0 for name in served}  # seconds in batches per name, across swaps
    started_at = time.monotonic()

    async def start_batcher(
        name: str, ref: str, predictor: Any, journal: Journal | None = None, stateful: bool = False
    ) -> DynamicBatcher:
        observe = metrics.batch.labels(name, ref)
        cacheable = settings.cache is not None and hasattr(predictor, "use_cache")
        if cacheable and predictor.use_cache(settings.cache):
            log.info("%s: feature cache on", ref)

        def run(items: list[Any]) -> list[Any]:
            observe.observe(len(items))
            began = time.perf_counter()
            try:
                return predictor.predict(items)
            finally:
                busy[name] += time.perf_counter() - began

        def run_stateful(items: list[tuple[Mapping[str, Any], Any]]) -> list[Any]:
            """One at a time (a failed request changes nothing and is never re-run), then the
            applied ones made durable before any of the batch is answered."""
            observe.observe(len(items))
            began = time.perf_counter()
            try:
                return apply(items)
            finally:
                busy[name] += time.perf_counter() - began

        def apply(items: list[tuple[Mapping[str, Any], Any]]) -> list[Any]:
            results: list[Any] = []
            applied = []
            for k, (request, parsed) in enumerate(items):
                try:
                    results.append(predictor.predict([parsed])[0])
                    applied.append((k, request))
                except Exception as e:
                    results.append(e)
            if journal is not None:
                try:
                    journal.append([request for _, request in applied])
                except OSError as e:  # not durable, so not acknowledged (and never re-run)
                    log.exception("%s: the journal cannot be written", ref)
                    for k, _ in applied:
                        results[k] = RuntimeError(f"the journal cannot be written: {e}")
                    return results
                if journal.snapshot_due():
                    snapshot(ref, predictor, journal)
            return results

        batcher = DynamicBatcher(run_stateful if stateful else run, settings.policy, name=ref)
        await batcher.start()
        return batcher

    def snapshot(ref: str, predictor: Any, journal: Journal) -> None:
        """The predictor's state written next to its journal; a failure is logged (the journal
        still holds every request, so nothing is lost, only the restart is slower)."""
        started = time.perf_counter()
        try:
            journal.write_snapshot(predictor, ref)
        except Exception:
            log.exception("%s: the snapshot cannot be written; the journal still has everything",
                          ref)  # fmt: skip
            return
        log.info("%s: snapshot of %d requests in %.0f ms", ref, journal.snapshot_seq,
                 1000 * (time.perf_counter() - started))  # fmt: skip

    async def swap(model: ServedModel, ref: str, predictor: Any) -> None:
        """Serve ``ref`` under ``model``'s name: new requests go to it at once; those already
        queued or running on the old version are answered by it (drained), none dropped.

        Raises:
            ConfigError: a stateful model (its state would not carry over).
        """
        if model.stateful:
            raise ConfigError(f"{model.name} is stateful: restart the service to change version")
        batcher = await start_batcher(model.name, ref, predictor)
        old, before = model.batcher, model.ref
        model.ref, model.predictor, model.batcher = ref, predictor, batcher  # no await between
        log.info("%s: now serving %s (was %s)", model.name, ref, before)
        if model.monitor is not None:  # the new version's requests are compared afresh
            table, source = await asyncio.to_thread(reference, ref)
            model.monitor.reset(ref, table, source)
        if old is not None:
            await old.stop(drain=True)
        if settings.cache is not None:  # the old version's vectors are no longer asked for
            await asyncio.to_thread(settings.cache.invalidate, before)

    reference = settings.reference or trained_reference
    monitored = metrics.monitoring() if settings.monitor is not None else None
    readings: dict[str, MonitorState] = {}

    async def check_monitors() -> list[MonitorState]:
        """Each monitor's reading now; gauges set, alert changes logged and posted."""
        states = []
        for model in served.values():
            if model.monitor is None or monitored is None:
                continue
            state = await asyncio.to_thread(model.monitor.check)
            monitored.update(state)
            readings[model.name] = state
            states.append(state)
            changed = transitions(model.monitor, state)
            for alert in changed:
                name = alert["labels"]["alertname"]
                if alert["status"] == "firing":
                    monitored.fired.labels(model.name, name).inc()
                log.warning("alert %s %s: %s", name, alert["status"],
                            alert["annotations"]["description"])  # fmt: skip
            url = settings.monitor.webhook if settings.monitor else None
            if changed and url:
                try:
                    await asyncio.to_thread(post_alerts, url, changed)
                except AbyssalError as e:
                    log.error("%s", e)
        return states

    async def watch(monitor: MonitorSettings) -> None:
        while True:
            await asyncio.sleep(monitor.interval_s)
            try:
                await check_monitors()
            except Exception:
                log.exception("the monitor's check failed; serving goes on")

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        for model in every:
            if model.journal is not None:
                restore = model.journal.restore
                kept, done = await asyncio.to_thread(restore, model.predictor, model.ref)
                log.info("%s: state restored: %d requests from the snapshot, %d replayed from "
                         "the journal", model.ref, kept, done)  # fmt: skip
            model.batcher = await start_batcher(
                model.name, model.ref, model.predictor, model.journal, model.stateful
            )
        if settings.monitor is not None:
            for model in served.values():
                table, source = await asyncio.to_thread(reference, model.ref)
                model.monitor = ModelMonitor(model.name, model.ref, settings.monitor, table, source)
        ready["value"] = True
        log.info("serving %s", ", ".join(f"{m.name} ({m.ref})" for m in every))
        tasks = []
        if follower is not None and any(m.follow for m in every):
            tasks.append(asyncio.create_task(follower.run(every, swap)))
        if settings.monitor is not None:
            tasks.append(asyncio.create_task(watch(settings.monitor)))
        try:
            yield
        finally:
            ready["value"] = False
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(*(m.batcher.stop() for m in every if m.batcher))
            for m in every:  # a restart then starts from here, not from the journal
                j = m.journal
                if j is not None and j.snapshot_every and j.count > j.snapshot_seq:
                    await asyncio.to_thread(snapshot, m.ref, m.predictor, j)

    app = fastapi.FastAPI(title="abyssal", version="1", lifespan=lifespan)
    app.state.swap = swap

    def error(status: int, message: str, **extra: Any) -> Any:
        headers = extra.pop("headers", None)
        return responses.JSONResponse({"error": message, **extra}, status, headers=headers)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz() -> Any:
        if not ready["value"]:
            return error(503, "not ready: models are loading or the service is stopping")
        return {"status": "ready", "models": sorted(served)}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        p = settings.policy
        return {
            "models": [
                {
                    "name": m.name,
                    "version": m.ref,
                    "solution": m.solution,
                    "stateful": m.stateful,
                    "share": _share(m, served[m.name]),
                    "max_batch_size": p.max_batch_size,
                    "max_wait_ms": p.max_wait_ms,
                }
                for m in every
            ]
        }

    @app.get("/v1/load")
    async def load() -> dict[str, Any]:
        """What an autoscaler reads: per model, the requests waiting and the seconds spent
        running batches since start (their rate over an interval is the model's busy share);
        the process's CPU seconds (all threads: HTTP parsing and answering too, which for a
        small model on a CPU cost more than the model)."""
        models = {
            name: {
                "version": m.ref,
                "queue": sum(v.batcher.stats.queue_depth for v in (m, *m.canaries) if v.batcher),
                "busy_s": round(busy[name], 6),
                "stateful": m.stateful,
            }
            for name, m in served.items()
        }
        return {
            "uptime_s": round(time.monotonic() - started_at, 3),
            "busy_s": round(sum(busy.values()), 6),
            "cpu_s": round(time.process_time(), 6),
            "queue": sum(m["queue"] for m in models.values()),
            "models": models,
        }

    @app.get("/metrics")
    async def prometheus() -> Any:
        for m in every:
            if m.batcher is not None:
                metrics.queue.labels(m.name, m.ref).set(m.batcher.stats.queue_depth)
        for name, seconds in busy.items():
            metrics.busy.labels(name).set(seconds)
        if settings.cache is not None:
            metrics.cache_counts(settings.cache)
        return responses.Response(metrics.text(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/monitor")
    async def monitor_now() -> Any:
        if settings.monitor is None:
            return error(404, "this service runs without a monitor (abyssal serve --monitor)")
        states = await check_monitors()
        return {"models": [_reading(state) for state in states]}

    async def fraud_transactions(request: Any) -> Any:
        frauds = [m.name for m in served.values() if m.solution == "fraud"]
        if len(frauds) != 1:
            return error(404, f"this service serves {len(frauds)} fraud models; use "
                         "/v1/models/{name}/predict")  # fmt: skip
        return await predict(frauds[0], request)

    async def predict(name: str, request: Any) -> Any:
        started = time.perf_counter()
        request_id = uuid.uuid4().hex[:12]
        model = served.get(name)
        client, refused = None, None
        if settings.keys is not None:
            try:
                client = settings.keys.check(_key_of(request), name).name
            except AuthError as e:
                refused = e
        if refused is not None:
            status = refused.status
            answer = error(status, str(refused), headers=_retry(refused.retry_after))
        elif model is None:
            status = 404
            answer = error(404, f"no served model {name!r}; served: {sorted(served)}")
        else:
            model, refusal = _route(model, request.headers.get("x-model-version"), rng)
            if refusal is not None:
                status, answer = 404, error(404, refusal)
            else:
                status, answer, seen = await _answer(model, request, settings, error)
                watcher = served[name].monitor if model is served[name] else None
                if watcher is not None:
                    if seen is not None:
                        watcher.observe(*seen)
                    watcher.outcome(status, time.perf_counter() - started)
        labels = (model.name, model.ref) if model is not None else ("unknown", "-")
        metrics.requests.labels(*labels, str(status)).inc()
        if status >= 400:
            metrics.errors.labels(*labels, ERROR_KINDS.get(status, "other")).inc()
        metrics.latency.labels(*labels).observe(time.perf_counter() - started)
        answer.headers["X-Request-Id"] = request_id
        log.info(
            json.dumps(
                {"request": request_id, "model": labels[1], "client": client, "status": status,
                 "ms": round(1000 * (time.perf_counter() - started), 3)}
            )
        )  # fmt: skip
        return answer

    async def feedback(name: str, request: Any) -> Any:
        if settings.keys is not None:
            try:
                settings.keys.check(_key_of(request), name)
            except AuthError as e:
                return error(e.status, str(e), headers=_retry(e.retry_after))
        if name not in served:
            return error(404, f"no served model {name!r}; served: {sorted(served)}")
        home = getattr(served[name].predictor, "feedback_home", None)
        status, content = await store_feedback(name, request, settings.max_body_bytes, home)
        log.info(json.dumps({"feedback": name, "status": status}))
        return json_response(content) if status == 200 else error(status, content)

    # annotations are strings here (``from __future__``); FastAPI needs the class itself
    predict.__annotations__["request"] = fastapi.Request
    fraud_transactions.__annotations__["request"] = fastapi.Request
    feedback.__annotations__["request"] = fastapi.Request
    app.post("/v1/models/{name}/predict")(predict)
    app.post("/v1/models/{name}/feedback")(feedback)
    app.post("/v1/fraud/transactions")(fraud_transactions)
    return app


async def _answer(
    model: ServedModel, request: Any, settings: ServeSettings, error: Any
) -> tuple[int, Any, tuple[list[Any], list[Any]] | None]:
    """``(status, response, (requests, answers))`` for one predict call; the last is
    ``None`` unless it was answered."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > settings.max_body_bytes:
        return 413, error(413, f"the body is over {settings.max_body_bytes} bytes"), None
    try:
        priority = int(request.headers.get("x-priority", "0"))
    except ValueError:
        return 422, error(422, "the X-Priority header must be an integer"), None
    # one consistent version for the whole request, even if the alias moves meanwhile
    ref, predictor, batcher = model.ref, model.predictor, model.batcher
    assert batcher is not None
    files = tuple(getattr(predictor, "file_fields", ()))
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        # uploads are saved to a private folder, read by parse, and deleted with it
        with tempfile.TemporaryDirectory(prefix="abyssal-upload-") as folder:
            instances = await form_request(request, files, Path(folder), settings.max_body_bytes)
            parsed = _parse_all(predictor, instances)
    else:  # no folder: making and removing one cost more than the rest of a small request
        instances = await json_requests(
            request, files, settings.max_body_bytes, settings.allow_paths
        )
        parsed = _parse_all(predictor, instances)
    if isinstance(parsed, tuple):
        status, message, *fields = parsed
        return status, error(status, message, **(fields[0] if fields else {})), None
    if model.stateful:  # the request travels with its parsed form, for the journal
        parsed = list(zip(instances, parsed, strict=True))
    results: list[Any] = [None] * len(parsed)
    cached = getattr(predictor, "cache", None) is not None and hasattr(predictor, "predict_cached")
    if cached and not model.stateful:  # requests whose features are cached: answered at once,
        # on a thread of their own (not behind the batch running on the batcher's), by the
        # predictor's CPU copy of its head (not behind the batch's work on an accelerator)
        results = await asyncio.to_thread(predictor.predict_cached, parsed)
    pending = [k for k, r in enumerate(results) if r is None]
    futures: list[asyncio.Future] = []
    try:
        for k in pending:
            futures.append(batcher.enqueue(parsed[k], priority=priority))
    except QueueFull as e:
        for future in futures:  # the request is refused whole: its queued parts are dropped
            future.cancel()
        return 503, error(503, str(e), headers=_retry(e.retry_after)), None
    waited = await asyncio.gather(*(batcher.wait(f) for f in futures), return_exceptions=True)
    for k, result in zip(pending, waited, strict=True):
        results[k] = result
    for index, result in enumerate(results):
        if isinstance(result, RequestTimeout):
            return 504, error(504, str(result), index=index), None
        if isinstance(result, DataError):
            return 422, error(422, result.reason, index=index, field=result.column), None
        if isinstance(result, AbyssalError):
            return 422, error(422, str(result), index=index), None
        if isinstance(result, BaseException):
            log.exception("predict failed on %s", ref, exc_info=result)
            return 500, error(500, f"{type(result).__name__} while predicting", index=index), None
    seen = (list(instances), list(results))
    return 200, json_response({"model": ref, "predictions": list(results)}), seen


def _parse_all(predictor: Any, instances: Any) -> list[Any] | tuple[Any, ...]:
    """Each instance through ``predictor.parse`` (which reads any uploaded file), or the
    refusal ``(status, message, fields)`` of the first bad one; a refusal ``(status,
    message)`` from the body readers passes through."""
    if isinstance(instances, tuple):
        return instances
    parsed = []
    for index, item in enumerate(instances):
        if not isinstance(item, Mapping):
            return 422, f"request {index} is not a JSON object", {"index": index}
        try:
            parsed.append(predictor.parse(item))
        except DataError as e:
            return 422, e.reason, {"index": index, "field": e.column}
        except AbyssalError as e:
            return 422, str(e), {"index": index}
    return parsed


def _check_canaries(model: ServedModel) -> None:
    """Canary shares in (0, 1) adding up to less than 1, of other versions of a stateless
    model."""
    if not model.canaries:
        return
    if model.stateful:
        raise ConfigError(f"{model.name} is stateful: it cannot share its requests with canaries")
    refs = [model.ref]
    for canary in model.canaries:
        if not 0 < canary.share < 1:
            raise ConfigError(
                f"the canary {canary.ref} must have a share in (0, 1), got {canary.share}"
            )
        if canary.ref in refs or canary.stateful or canary.canaries:
            raise ConfigError(
                f"the canary {canary.ref} of {model.name} must be another, stateless version "
                "without canaries of its own"
            )
        refs.append(canary.ref)
    total = sum(c.share for c in model.canaries)
    if total >= 1:
        raise ConfigError(
            f"the canaries of {model.name} take {total:.0%} of its requests; leave the main "
            "version some"
        )


def _share(model: ServedModel, main: ServedModel) -> float:
    """The fraction of its name's requests a served version answers."""
    return model.share if model is not main else 1 - sum(c.share for c in main.canaries)


def _route(
    model: ServedModel, asked: str | None, rng: random.Random
) -> tuple[ServedModel, str | None]:
    """The version that answers a request for ``model``: the one ``asked`` for (the
    ``X-Model-Version`` header), else a canary for its share of calls, else the main one;
    ``(version, refusal)``."""
    versions = [model, *model.canaries]
    if asked:
        for version in versions:
            if version.ref == asked.strip():
                return version, None
        served = ", ".join(v.ref for v in versions)
        return model, f"{asked.strip()!r} is not served; {model.name} serves {served}"
    draw = rng.random()
    for canary in model.canaries:
        if draw < canary.share:
            return canary, None
        draw -= canary.share
    return model, None


def _key_of(request: Any) -> str | None:
    """The API key of a request: ``X-API-Key``, else ``Authorization: Bearer KEY``."""
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def _retry(seconds: float | None) -> dict[str, str] | None:
    return None if seconds is None else {"Retry-After": str(max(1, math.ceil(seconds)))}


def _reading(state: MonitorState) -> dict[str, Any]:
    """A monitor's reading as JSON (NaN as ``null``)."""
    out = dict(vars(state))
    for key in ("p99_ms", "error_rate"):
        out[key] = None if math.isnan(out[key]) else round(out[key], 6)
    for key in ("feature_psi", "prediction_psi"):
        out[key] = {k: round(v, 6) for k, v in out[key].items()}
    return out
