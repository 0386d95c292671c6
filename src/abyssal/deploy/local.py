"""Local mode (``abyssal deploy up``): every tier's replicas as ``abyssal serve`` processes on
loopback, the router in this process, the autoscaler deciding from what the replicas and the
router measure, and a live status (``GET /v1/deploy/status``, ``abyssal deploy status``).

The supervisor keeps each tier at the autoscaler's target: a replica process that exits is taken
out of the pool at once and started again after ``local.restart_s`` (as a Kubernetes Deployment
would); a tier that shrinks drains its newest replica (no new requests, in-flight ones finish)
before stopping it. Every replica is billed from its start to its stop at its tier's
``price_per_hour``; the cost per 1,000 answered requests is live.

State lives in ``$ABYSSAL_HOME/deployments/<name>/``: ``supervisor.json`` (pid, router URL),
``status.json`` (refreshed every second), ``events.jsonl`` (replicas started, ready, down, exited,
scaled), ``requests.jsonl`` (one line per routed request: a recorded load trace) and ``logs/``
(each replica's output).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abyssal.core.atomic import write_text_atomic
from abyssal.core.clock import utc_now
from abyssal.core.errors import ConfigError
from abyssal.core.home import abyssal_home
from abyssal.core.optional import require
from abyssal.deploy.autoscale import Autoscaler, TierLoad, pack
from abyssal.deploy.pool import Pool, Replica
from abyssal.deploy.router import HealthChecker, create_router, pool_status
from abyssal.deploy.spec import DeploymentConfig

log = logging.getLogger("abyssal.deploy")

KEEP_ALIVE_S = 65  # the router keeps idle client connections longer than clients do (httpx: 5 s,
# browsers: about 60 s), so that a client never reuses one the router is closing
DRAIN_S = 30.0  # longest a shrinking tier's replica finishes its requests before it stops


def deployment_folder(name: str, home: str | Path | None = None) -> Path:
    """Where a local deployment keeps its state."""
    return abyssal_home(home) / "deployments" / name


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Process:
    """One replica's process and its bill."""

    replica: Replica
    popen: subprocess.Popen
    started: float = field(default_factory=time.monotonic)
    stopped: float | None = None

    def billed_s(self, now: float) -> float:
        return (self.stopped or now) - self.started


class LocalDeployment:
    """The tiers of ``cfg`` as local processes behind a router (see the module docstring)."""

    def __init__(self, cfg: DeploymentConfig, home: str | Path | None = None) -> None:
        self.cfg = cfg
        self.home = abyssal_home(home)
        self.folder = deployment_folder(cfg.name, self.home)
        self.pool = Pool(cfg)
        self.autoscaler = Autoscaler(cfg)
        self.targets = {t.name: t.replicas.initial for t in cfg.tiers}
        self.processes: dict[str, Process] = {}
        self.ended: list[Process] = []
        self.last_exit: dict[str, float] = {}
        self.events: list[dict[str, Any]] = []
        self.began = time.monotonic()
        self.loads: dict[str, TierLoad] = {}
        self._counts: dict[str, tuple[float, int, int]] = {}
        self.router_url = f"http://{cfg.local.host}:{cfg.local.port}"

    # --- running -------------------------------------------------------------------------

    def run(self) -> None:
        """Start everything and serve until SIGINT or SIGTERM; stops every replica on the way
        out."""
        uvicorn = require("uvicorn", extra="serve", purpose="abyssal deploy up")
        self._claim()
        self.folder.joinpath("logs").mkdir(parents=True, exist_ok=True)
        for tier in self.cfg.tiers:
            for url in tier.urls:
                self.pool.add(tier.name, url)
        app = create_router(
            self.pool,
            status=self.status,
            request_log=self.folder / "requests.jsonl",
            background=lambda http, checker: [
                self.supervise(checker),
                self.scale(http),
                self.write_status(),
            ],
            on_stop=self._stopping,
            on_replica=lambda replica, why: self.event(replica.state, replica, why),
        )
        config = uvicorn.Config(
            app,
            host=self.cfg.local.host,
            port=self.cfg.local.port,
            log_level="warning",
            timeout_keep_alive=KEEP_ALIVE_S,
        )
        server = uvicorn.Server(config)
        try:
            server.run()
        finally:  # reached when the server could not start; a signal ends in _stopping
            self.stop_all()
            self.folder.joinpath("supervisor.json").unlink(missing_ok=True)

    async def _stopping(self) -> None:
        """The router is stopping: stop every replica, record the final status."""
        await asyncio.to_thread(self.stop_all)
        self._write_status_file()
        self.folder.joinpath("supervisor.json").unlink(missing_ok=True)

    def _claim(self) -> None:
        """Refuse a second live supervisor of the same deployment; record ours."""
        marker = self.folder / "supervisor.json"
        if marker.is_file():
            try:
                pid = int(json.loads(marker.read_text())["pid"])
            except (ValueError, KeyError, TypeError):
                pid = -1
            if pid > 0 and alive(pid):
                raise ConfigError(
                    f"deployment {self.cfg.name} is already up (pid {pid}); "
                    f"`abyssal deploy down {self.cfg.name}` stops it"
                )
        self.folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(
            marker,
            json.dumps({"pid": os.getpid(), "router": self.router_url, "started": utc_now()}),
        )

    async def supervise(self, checker: HealthChecker) -> None:
        """Keep each tier at its target; notice exited processes at once."""
        while True:
            now = time.monotonic()
            for name, proc in list(self.processes.items()):
                code = proc.popen.poll()
                if code is not None:
                    self._ended(name, proc, f"exited with code {code}")
                    if checker.mark_down(proc.replica, "its process exited"):
                        await self.pool.notify()
                    self.pool.remove(proc.replica)
                    self.last_exit[proc.replica.tier] = now
            for tier in self.cfg.tiers:
                if not tier.urls:
                    await self._reconcile(tier.name, now)
            await asyncio.sleep(0.2)

    async def _reconcile(self, tier: str, now: float) -> None:
        mine = [p for p in self.processes.values() if p.replica.tier == tier]
        live = [p for p in mine if p.replica.state != "draining"]
        target = self.targets[tier]
        if len(live) < target:
            if now - self.last_exit.get(tier, -1e9) < self.cfg.local.restart_s:
                return
            for _ in range(target - len(live)):
                self.start_replica(tier)
        elif len(live) > target:
            # the newest (not ready first) go
            extra = sorted(live, key=lambda p: (p.replica.state == "ready", -p.started))
            for proc in extra[: len(live) - target]:
                proc.replica.set_state("draining")
                self.event("draining", proc.replica, "the tier shrinks")
                asyncio.get_running_loop().create_task(self._drain(proc))

    def start_replica(self, tier: str) -> Replica:
        t = self.cfg.tier(tier)
        host = self.cfg.local.host
        port = free_port(host)
        url = f"http://{host}:{port}"
        replica = self.pool.add(tier, url)
        argv = [sys.executable, "-m", "abyssal", "serve", *t.models, "--host", host,
                "--port", str(port), "--device", t.device, *t.serve_args]  # fmt: skip
        env = {**os.environ, "ABYSSAL_HOME": str(self.home)}
        with open(self.folder / "logs" / f"{replica.name}.log", "ab") as out:
            popen = subprocess.Popen(
                argv, env=env, stdout=out, stderr=out, start_new_session=True,
                preexec_fn=_die_with_parent,
            )  # fmt: skip
        replica.pid = popen.pid
        self.processes[replica.name] = Process(replica, popen)
        self.event("started", replica, f"pid {popen.pid} on {url}")
        return replica

    async def _drain(self, proc: Process) -> None:
        deadline = time.monotonic() + DRAIN_S
        while proc.replica.inflight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.to_thread(_terminate, proc.popen)
        self._ended(proc.replica.name, proc, "stopped after draining")
        self.pool.remove(proc.replica)

    def _ended(self, name: str, proc: Process, why: str) -> None:
        if self.processes.pop(name, None) is None:
            return
        proc.stopped = time.monotonic()
        self.ended.append(proc)
        self.event("ended", proc.replica, why)

    def stop_all(self) -> None:
        for name, proc in list(self.processes.items()):
            _terminate(proc.popen)
            self._ended(name, proc, "the deployment stopped")

    # --- scaling -------------------------------------------------------------------------

    async def scale(self, http: Any) -> None:
        """Every ``autoscale.every_s``: measure the tiers, ask the autoscaler, set targets."""
        every = self.cfg.autoscale.every_s
        while True:
            await asyncio.sleep(every)
            await self._read_loads(http)
            self.loads = self._tier_loads()
            if not self.cfg.autoscale.enabled:
                continue
            for decision in self.autoscaler.decide(time.monotonic(), self.loads):
                tier = self.cfg.tier(decision.tier)
                if tier.urls:
                    continue  # replicas elsewhere: their own platform scales them
                if decision.target == self.targets[decision.tier]:
                    continue  # already ordered (e.g. a replica being restarted)
                self.targets[decision.tier] = decision.target
                self.event(
                    "scaled", None, decision.reason, tier=decision.tier,
                    replicas=[decision.current, decision.target],
                )  # fmt: skip

    async def _read_loads(self, http: Any) -> None:
        async def one(replica: Replica) -> None:
            """Its busy share: the larger of the model's share (batches, e.g. on a GPU) and
            the process's CPU share (a CPU replica of a small model is mostly HTTP work)."""
            try:
                answer = await http.get(f"{replica.url}/v1/load", timeout=1.0)
                body = answer.json()
                now, busy = time.monotonic(), float(body["busy_s"])
                cpu = float(body.get("cpu_s", 0.0))
            except Exception:  # a replica that cannot say stays unknown this round
                return
            models = {
                str(name): float(m.get("busy_s", 0.0))
                for name, m in (body.get("models") or {}).items()
            }
            if replica.busy is not None and now > replica.busy[0]:
                then, busy0, cpu0 = replica.busy
                share = max(busy - busy0, cpu - cpu0) / (now - then)
                replica.utilization = round(min(1.0, max(0.0, share)), 4)
                replica.model_shares = {
                    name: round(max(0.0, b - replica.model_busy.get(name, b)) / (now - then), 4)
                    for name, b in models.items()
                }
            replica.busy, replica.queue = (now, busy, cpu), int(body.get("queue", 0))
            replica.model_busy = models

        ready = [r for r in self.pool.replicas() if r.state == "ready"]
        await asyncio.gather(*(one(r) for r in ready))

    def _tier_loads(self) -> dict[str, TierLoad]:
        now = time.monotonic()
        loads = {}
        for name, tier in self.pool.tiers.items():
            ready = tier.ready()
            then, routed, missed = self._counts.get(name, (self.began, 0, 0))
            span = max(1e-3, now - then)
            self._counts[name] = (now, tier.routed, tier.overflowed + tier.refused)
            known = [r.utilization for r in ready if r.utilization is not None]
            loads[name] = TierLoad(
                replicas=len(ready),
                starting=sum(1 for r in tier.replicas if r.state in ("starting", "down")),
                utilization=sum(known) / len(known) if known else None,
                queue_per_replica=sum(r.queue for r in ready) / len(ready) if ready else 0.0,
                p99_ms=tier.p99_ms(now),
                arrival_rps=(tier.routed - routed) / span,
                overflow_rps=(tier.overflowed + tier.refused - missed) / span,
            )
        return loads

    def packing(self, tier: str) -> tuple[dict[str, float], list[list[str]]]:
        """Each model's busy share of one device, summed over the tier's ready replicas (every
        replica serves all the tier's models on its device), and how many devices those shares
        need packed at the target utilization (:func:`~abyssal.deploy.autoscale.pack`)."""
        shares: dict[str, float] = {}
        for replica in self.pool.tiers[tier].ready():
            for name, share in replica.model_shares.items():
                shares[name] = round(shares.get(name, 0.0) + share, 4)
        if not shares:
            return {}, []
        return shares, pack(shares, capacity=self.cfg.autoscale.target_utilization)

    # --- status --------------------------------------------------------------------------

    def event(self, what: str, replica: Replica | None, why: str, **extra: Any) -> None:
        line = {"time": utc_now(), "event": what, "why": why, **extra}
        if replica is not None:
            line.update(replica=replica.name, tier=replica.tier)
        self.events.append(line)
        del self.events[:-200]
        log.info(json.dumps(line))
        with contextlib.suppress(OSError), open(self.folder / "events.jsonl", "a") as out:
            out.write(json.dumps(line) + "\n")

    def status(self) -> dict[str, Any]:
        """The live status: tiers, replicas, targets, load and cost so far."""
        now = time.monotonic()
        body = pool_status(self.pool)
        total_cost, total_routed = 0.0, 0
        for tier in body["tiers"]:
            cfg = self.cfg.tier(tier["name"])
            seconds = sum(
                p.billed_s(now)
                for p in [*self.processes.values(), *self.ended]
                if p.replica.tier == cfg.name
            )
            load = self.loads.get(cfg.name)
            shares, devices = self.packing(cfg.name)
            tier.update(
                model_shares=shares,
                packing=devices,
                target=self.targets[cfg.name],
                min=cfg.replicas.min,
                max=cfg.replicas.max,
                price_per_hour=cfg.price_per_hour,
                replica_hours=round(seconds / 3600, 6),
                cost=round(seconds / 3600 * cfg.price_per_hour, 6),
                utilization=None if load is None else load.utilization,
                arrival_rps=None if load is None else round(load.arrival_rps, 3),
                external=bool(cfg.urls),
            )
            total_cost += tier["cost"]
            total_routed += tier["routed"]
        body.update(
            router=self.router_url,
            pid=os.getpid(),
            up_s=round(now - self.began, 1),
            answered=total_routed,
            cost=round(total_cost, 6),
            cost_per_1000=round(1000 * total_cost / total_routed, 6) if total_routed else None,
            events=self.events[-12:],
        )
        return body

    async def write_status(self) -> None:
        while True:
            await asyncio.to_thread(self._write_status_file)
            await asyncio.sleep(1.0)

    def _write_status_file(self) -> None:
        with contextlib.suppress(OSError):
            write_text_atomic(self.folder / "status.json", json.dumps(self.status(), indent=1))


def _terminate(popen: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM (the service drains its batches), then SIGKILL after ``grace_s``."""
    if popen.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        popen.send_signal(signal.SIGTERM)
    try:
        popen.wait(grace_s)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait()


def _die_with_parent() -> None:
    """In a replica's process before it runs (Linux): SIGTERM when the supervisor dies, even by
    SIGKILL, so that no replica outlives its deployment."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (not Linux): it answered the signal
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
