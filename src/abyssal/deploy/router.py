"""The router in front of the tiers: per request, its sensitivity
(:mod:`abyssal.deploy.sensitivity`), the tiers allowed to take it, the first healthy and
unsaturated one in routing order, the least loaded replica there; retries on another replica
when the call failed; health checks that take dead replicas out and bring them back.

Failover has two paths. A request that cannot reach its replica (connection refused or reset
before an answer) marks the replica down at once and is sent elsewhere: no request is left
unanswered because a replica died. A replica nobody is sending to is taken out by the health
checks within ``policies.health.failover_bound_s`` (``fail_after`` checks ``every_s`` apart,
plus one ``timeout_s``).

Retries: a request that never reached a replica (connection refused, connect timeout) or was
refused before any work (503: queue full or not ready) is always tried again on another replica;
one that may have been processed (reset mid-answer, read timeout, 502, 504) only when the model
is stateless (the replica's ``/v1/models`` says ``stateful``), since applying a fraud transaction
twice would change the model's graph.

Endpoints: ``POST /v1/models/{name}/predict`` (forwarded; the answer carries ``X-Abyssal-Tier``,
``X-Abyssal-Replica``, ``X-Abyssal-Attempts`` and ``X-Abyssal-Sensitive``), ``GET /healthz``,
``GET /readyz`` (some tier has a ready replica), ``GET /v1/deploy/status`` (tiers, replicas,
load, cost) and ``GET /metrics`` (Prometheus).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from abyssal.core.optional import require
from abyssal.deploy.pool import Choice, Pool, Replica
from abyssal.deploy.sensitivity import Verdict, classify

log = logging.getLogger("abyssal.deploy")

FORWARDED_HEADERS = ("content-type", "authorization", "x-api-key", "x-priority", "x-model-version")
ALWAYS_RETRY_STATUS = frozenset({503})
CONNECT_TIMEOUT_S = 5.0  # a replica that does not accept a connection within this is unreachable
IDEMPOTENT_RETRY_STATUS = frozenset({502, 504})


class RouterMetrics:
    """Prometheus metrics of the router (its own registry)."""

    def __init__(self) -> None:
        prom = require("prometheus_client", extra="serve", purpose="the router's /metrics")
        self.prom = prom
        self.registry = prom.CollectorRegistry()
        reg = {"registry": self.registry}
        self.requests = prom.Counter(
            "abyssal_router_requests", "answered requests by tier and status",
            ["tier", "status", "sensitive"], **reg,
        )  # fmt: skip
        self.overflow = prom.Counter(
            "abyssal_router_overflow", "requests passed over a saturated tier", ["tier"], **reg
        )
        self.retries = prom.Counter(
            "abyssal_router_retries", "attempts repeated on another replica", ["reason"], **reg
        )
        self.refused = prom.Counter(
            "abyssal_router_refused", "requests no allowed tier could take", ["sensitive"], **reg
        )
        self.replicas = prom.Gauge(
            "abyssal_router_replicas", "replicas by tier and state", ["tier", "state"], **reg
        )
        self.latency = prom.Histogram(
            "abyssal_router_request_seconds", "time from arrival to answer, by tier", ["tier"],
            buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), **reg,
        )  # fmt: skip

    def text(self, pool: Pool) -> bytes:
        for tier in pool.tiers.values():
            for state in ("starting", "ready", "down", "draining"):
                count = sum(1 for r in tier.replicas if r.state == state)
                self.replicas.labels(tier.name, state).set(count)
        return self.prom.generate_latest(self.registry)


class HealthChecker:
    """Checks every replica's ``/readyz`` every ``policies.health.every_s``: ``fail_after``
    failures in a row take it out, ``ok_after`` passes bring it in; a replica coming in tells
    the pool which of its models are stateful."""

    def __init__(
        self, pool: Pool, http: Any, on_change: Callable[[Replica, str], None] | None = None
    ) -> None:
        self.pool, self.http = pool, http
        self.policy = pool.cfg.policies.health
        self.on_change = on_change

    async def run(self) -> None:
        while True:
            await self.check_all()
            await asyncio.sleep(self.policy.every_s)

    async def check_all(self) -> None:
        replicas = [r for r in self.pool.replicas() if r.state != "draining"]
        results = await asyncio.gather(*(self._ready(r) for r in replicas))
        changed = False
        for replica, ok in zip(replicas, results, strict=True):
            changed |= await self.record(replica, ok)
        if changed:
            await self.pool.notify()

    async def record(self, replica: Replica, ok: bool) -> bool:
        """Count one check's result; whether the replica's state changed."""
        if ok:
            replica.oks, replica.fails = replica.oks + 1, 0
            if replica.state != "ready" and replica.oks >= self.policy.ok_after:
                await self._learn(replica)
                return self._move(replica, "ready", "passed its health checks")
        else:
            replica.fails, replica.oks = replica.fails + 1, 0
            if replica.state == "ready" and replica.fails >= self.policy.fail_after:
                return self._move(replica, "down", f"failed {replica.fails} health checks")
        return False

    def mark_down(self, replica: Replica, why: str) -> bool:
        """Take a replica out at once (a request could not reach it)."""
        replica.fails, replica.oks = max(replica.fails, self.policy.fail_after), 0
        return replica.state == "ready" and self._move(replica, "down", why)

    def _move(self, replica: Replica, state: Any, why: str) -> bool:
        before = replica.state
        if not replica.set_state(state):
            return False
        log.info(json.dumps({"replica": replica.name, "from": before, "to": state, "why": why}))
        if self.on_change is not None:
            self.on_change(replica, why)
        return True

    async def _ready(self, replica: Replica) -> bool:
        try:
            answer = await self.http.get(f"{replica.url}/readyz", timeout=self.policy.timeout_s)
            return answer.status_code == 200
        except Exception:  # any failure to answer is a failed check
            return False

    async def _learn(self, replica: Replica) -> None:
        try:
            answer = await self.http.get(f"{replica.url}/v1/models", timeout=self.policy.timeout_s)
            for model in answer.json().get("models", []):
                self.pool.stateful[model["name"]] = bool(model.get("stateful", True))
        except Exception:  # unknown models stay "stateful": no retry after a possible apply
            pass


def create_router(
    pool: Pool,
    *,
    status: Callable[[], dict[str, Any]] | None = None,
    request_log: Path | None = None,
    max_body_bytes: int = 8 << 20,
    background: Callable[[Any, HealthChecker], list[Any]] | None = None,
    on_stop: Callable[[], Awaitable[None]] | None = None,
    on_replica: Callable[[Replica, str], None] | None = None,
) -> Any:
    """The router's FastAPI app over ``pool``.

    Args:
        pool: the tiers and replicas (filled by the caller: local mode's processes, or a tier's
            ``urls``).
        status: what ``GET /v1/deploy/status`` returns (default: the pool's tiers and replicas).
        request_log: a JSON-lines file with one line per request (time, model, tier, replica,
            sensitive, status, ms): a recorded load trace for the simulator.
        max_body_bytes: larger bodies get 413.
        background: more coroutines to run with the app (given the HTTP client and the health
            checker), e.g. local mode's supervisor and autoscaler.
        on_stop: awaited when the app stops, after the background coroutines are cancelled
            (local mode stops its replicas there: uvicorn re-raises SIGTERM once it has shut
            down, so code after ``server.run()`` never runs).
        on_replica: called with a replica and the reason when it comes in (ready) or goes
            out (down).
    """
    fastapi = require("fastapi", extra="serve", purpose="the deployment router")
    responses = require("fastapi.responses", extra="serve", purpose="the deployment router")
    httpx = require("httpx", extra="serve", purpose="the deployment router")
    aiohttp = require("aiohttp", extra="serve", purpose="the deployment router")
    cfg = pool.cfg
    policies = cfg.policies
    metrics = RouterMetrics()
    state: dict[str, Any] = {}
    logfile = open(request_log, "a", buffering=1) if request_log is not None else None  # noqa: SIM115

    async def lifespan(app: Any) -> Any:
        # idle connections to replicas are dropped before the replicas' own 5 s keep-alive
        # ends: reusing one the replica is closing at that moment fails mid-request
        limits = httpx.Limits(
            max_connections=1024, max_keepalive_connections=256, keepalive_expiry=2.0
        )
        # requests are forwarded by aiohttp: per request it costs about a tenth of the CPU
        # that httpx does, and the router's CPU is what limits it; health checks and load
        # readings (a few a second) go through httpx
        connector = aiohttp.TCPConnector(limit=1024, keepalive_timeout=2.0)
        timeout = aiohttp.ClientTimeout(
            total=policies.timeout_s, connect=min(policies.timeout_s, CONNECT_TIMEOUT_S)
        )
        async with (
            httpx.AsyncClient(timeout=policies.timeout_s, limits=limits) as http,
            aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
        ):
            state["http"], state["session"] = http, session
            checker = HealthChecker(pool, http, on_replica)
            state["checker"] = checker
            await checker.check_all()
            tasks = [asyncio.create_task(checker.run())]
            for job in background(http, checker) if background else []:
                tasks.append(asyncio.create_task(job))
            try:
                yield
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                if logfile is not None:
                    logfile.close()
                if on_stop is not None:
                    await on_stop()

    app = fastapi.FastAPI(title="abyssal router", version="1", lifespan=lifespan)
    app.state.pool = pool

    def error(code: int, message: str, **headers: str) -> Any:
        return responses.JSONResponse({"error": message}, code, headers=headers or None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz() -> Any:
        ready = {t.name: len(t.ready()) for t in pool.tiers.values()}
        if not any(ready.values()):
            return error(503, "no tier has a ready replica")
        return {"status": "ready", "replicas": ready}

    @app.get("/v1/deploy/status")
    async def deploy_status() -> Any:
        return status() if status is not None else pool_status(pool)

    @app.get("/metrics")
    async def prometheus() -> Any:
        return responses.Response(metrics.text(pool), media_type="text/plain; version=0.0.4")

    async def predict(name: str, request: Any) -> Any:
        started = time.perf_counter()
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            return error(413, f"the body is over {max_body_bytes} bytes")
        body = await request.body()
        if len(body) > max_body_bytes:
            return error(413, f"the body is over {max_body_bytes} bytes")
        if name not in cfg.model_names:
            return error(404, f"no tier serves {name!r}; served: {cfg.model_names}")
        content_type = request.headers.get("content-type", "application/json")
        verdict = classify(policies.sensitivity, name, request.headers, body, content_type)
        headers = {k: v for k in FORWARDED_HEADERS if (v := request.headers.get(k)) is not None}
        code, answer, served = await route(name, verdict, body, headers)
        ms = 1000 * (time.perf_counter() - started)
        tier = served.tier if served else "-"
        metrics.requests.labels(tier, str(code), str(verdict.sensitive).lower()).inc()
        if served is not None:
            metrics.latency.labels(tier).observe(ms / 1000)
            pool.tiers[tier].latencies.append((time.monotonic(), ms))
        if logfile is not None:
            line = {"time": round(time.time(), 6), "model": name, "tier": tier,
                    "replica": served.name if served else None, "sensitive": verdict.sensitive,
                    "status": code, "ms": round(ms, 3)}  # fmt: skip
            logfile.write(json.dumps(line) + "\n")
        answer.headers["X-Abyssal-Sensitive"] = "true" if verdict.sensitive else "false"
        return answer

    async def route(
        name: str, verdict: Verdict, body: bytes, headers: dict[str, str]
    ) -> tuple[int, Any, Replica | None]:
        session, checker = state["session"], state["checker"]
        tried: list[str] = []
        last = "no attempt"
        deadline = time.monotonic() + policies.wait_s  # for all attempts' waits together
        for attempt in range(1, policies.retries + 2):
            choice = await wait_for_replica(name, verdict.sensitive, tried, deadline)
            if choice is None:
                break
            replica, tier = choice.replica, choice.tier
            for passed in choice.passed:
                pool.tiers[passed].overflowed += 1
                metrics.overflow.labels(passed).inc()
            tried.append(replica.name)
            replica.inflight += 1
            try:
                url = f"{replica.url}/v1/models/{name}/predict"
                async with session.post(url, data=body, headers=headers) as reply:
                    content = await reply.read()
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as e:
                last = f"{replica.name}: {type(e).__name__}"
                if checker.mark_down(replica, f"a request could not reach it ({type(e).__name__})"):
                    await pool.notify()
                tier.failovers += 1
                metrics.retries.labels("unreachable").inc()
                continue
            except (aiohttp.ClientError, TimeoutError) as e:
                last = f"{replica.name}: {type(e).__name__}"
                replica.errors += 1
                if not idempotent(name):
                    return 502, error(502, f"{last}; not retried: {name} is stateful"), replica
                tier.failovers += 1
                metrics.retries.labels("transport").inc()
                continue
            finally:
                replica.inflight -= 1
                await pool.notify()
            code = reply.status
            again = code in ALWAYS_RETRY_STATUS or (
                code in IDEMPOTENT_RETRY_STATUS and idempotent(name)
            )
            if again and attempt <= policies.retries:
                last = f"{replica.name}: {code}"
                tier.failovers += 1
                metrics.retries.labels(str(code)).inc()
                continue
            replica.answered += 1
            tier.routed += 1
            tier.sensitive += int(verdict.sensitive)
            kept = {
                k: v
                for k, v in reply.headers.items()
                if k.lower() in ("retry-after", "x-request-id")
            }
            answer = responses.Response(
                content, code, media_type=reply.headers.get("content-type"),
                headers={**kept, "X-Abyssal-Tier": tier.name, "X-Abyssal-Replica": replica.name,
                         "X-Abyssal-Attempts": str(attempt)},
            )  # fmt: skip
            return code, answer, replica
        allowed = pool.allowed_names(name, verdict.sensitive)
        metrics.refused.labels(str(verdict.sensitive).lower()).inc()
        for tier_name in allowed:
            pool.tiers[tier_name].refused += 1
        where = ", ".join(allowed) or "none"
        kind = f"sensitive ({verdict.why})" if verdict.sensitive else "this"
        message = (
            f"no replica could take {kind} request within {policies.wait_s} s: tiers allowed: "
            f"{where}; last attempt: {last}"
        )
        return 503, error(503, message, **{"Retry-After": "1"}), None

    async def wait_for_replica(
        name: str, sensitive: bool, tried: list[str], deadline: float
    ) -> Choice | None:
        """A replica now, or as soon as one frees up before ``deadline`` (the request's
        arrival plus ``policies.wait_s``, whatever its attempts). Replicas already tried are
        avoided while others exist."""
        while True:
            choice = pool.choose(name, sensitive, exclude=tried) or pool.choose(name, sensitive)
            if choice is not None:
                return choice
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            async with pool.changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(pool.changed.wait(), timeout=min(left, 0.25))

    def idempotent(name: str) -> bool:
        return not pool.stateful.get(name, True)

    predict.__annotations__["request"] = fastapi.Request
    app.post("/v1/models/{name}/predict")(predict)
    return app


def pool_status(pool: Pool) -> dict[str, Any]:
    """The tiers and their replicas as the router sees them (JSON-ready)."""
    now = time.monotonic()
    return {
        "deployment": pool.cfg.name,
        "tiers": [
            {
                "name": t.name,
                "kind": t.config.kind,
                "trusted": bool(t.config.trusted),
                "models": t.config.models,
                "routed": t.routed,
                "sensitive": t.sensitive,
                "overflowed": t.overflowed,
                "refused": t.refused,
                "failovers": t.failovers,
                "p99_ms": t.p99_ms(now),
                "replicas": [
                    {
                        "name": r.name,
                        "url": r.url,
                        "state": r.state,
                        "inflight": r.inflight,
                        "answered": r.answered,
                        "pid": r.pid,
                        "utilization": r.utilization,
                        "queue": r.queue,
                        "for_s": round(now - r.since, 1),
                    }
                    for r in t.replicas
                ],
            }
            for t in pool.tiers.values()
        ],
    }
