"""``abyssal deploy up`` with three tiers of a real tabular model as local processes: under
overload, sensitive requests stay on edge and private while plain ones overflow to public; the
overload scales the private tier out and, once it is over, back in; killing every private
replica fails over within the stated bound with every request answered; ``deploy status`` and
``deploy down``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from abyssal.deploy.local import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FAILOVER_BOUND_S = 2.0  # from the kill to the first request answered by another tier


def deployment(tmp: Path, port: int) -> Path:
    tier = {"models": ["tabular"], "max_inflight": 2, "startup_s": 5}
    body = {
        "name": "trio",
        "tiers": [
            {
                **tier,
                "name": "edge",
                "kind": "edge",
                "replicas": {"min": 1, "max": 1},
                "price_per_hour": 0.1,
            },
            {
                **tier,
                "name": "private",
                "kind": "private",
                "replicas": {"min": 1, "max": 2},
                "price_per_hour": 1.0,
            },
            {
                **tier,
                "name": "public",
                "kind": "public",
                "replicas": {"min": 0, "max": 1, "start": 1},
                "price_per_hour": 3.0,
            },
        ],
        "policies": {"wait_s": 5, "objective_p99_ms": 10_000, "health": {"every_s": 0.25}},
        "autoscale": {
            "every_s": 1,
            "out_after": 1,
            "in_after": 2,
            "cooldown_s": 2,
            "scale_in_below": 0.3,
            "target_utilization": 0.5,
            "scale_out_above": 0.6,
        },
        "local": {"port": port, "restart_s": 600},
    }
    path = tmp / "trio.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


class Up:
    """``abyssal deploy up`` in its own process."""

    def __init__(self, home: Path, file: Path, port: int, log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, "ABYSSAL_HOME": str(home), "PYTHONPATH": str(ROOT / "src"),
                    "OMP_NUM_THREADS": "1"}  # fmt: skip
        self.log = log
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "abyssal", "deploy", "up", str(file)],
                env=self.env, stdout=out, stderr=out,
            )  # fmt: skip

    def status(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/v1/deploy/status", timeout=5).json()

    def tier(self, name: str) -> dict[str, Any]:
        return next(t for t in self.status()["tiers"] if t["name"] == name)

    def wait(self, what: Callable[[], bool], seconds: float, why: str) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-4000:]
            try:
                if what():
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{why} not within {seconds} s: {json.dumps(self.status())[:3000]}")

    def ready(self, tier: str) -> int:
        return sum(r["state"] == "ready" for r in self.tier(tier)["replicas"])

    def cli(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "abyssal", "deploy", *argv],
            env=self.env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip


@pytest.fixture
def up(tabular_model: tuple[Path, Path], tmp_path: Path) -> Iterator[tuple[Up, list[dict]]]:
    home, data = tabular_model
    port = free_port()
    service = Up(home, deployment(tmp_path, port), port, tmp_path / "up.log")
    try:
        service.wait(
            lambda: all(service.ready(t) == 1 for t in ("edge", "private", "public")),
            180, "three tiers ready",
        )  # fmt: skip
        rows = pd.read_csv(data / "new_rows.csv").drop(columns=["id"]).head(40)
        yield (
            service,
            [{k: v for k, v in r.items() if pd.notna(v)} for r in rows.to_dict("records")],
        )
    finally:
        if service.process.poll() is None:
            service.process.send_signal(signal.SIGTERM)
            try:
                service.process.wait(60)
            except subprocess.TimeoutExpired:
                service.process.kill()


async def load(
    url: str, rows: list[dict], seconds: float, rate: float, sensitive_every: int = 2
) -> list[dict]:
    """Open-loop traffic: ``rate`` requests a second, every ``sensitive_every``-th marked
    sensitive; each answer's status, tier, sensitivity, send time and latency."""
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:

        async def one(k: int) -> dict:
            sensitive = k % sensitive_every == 0
            headers = {"x-data-sensitivity": "sensitive"} if sensitive else {}
            sent = time.monotonic()
            try:
                r = await http.post(f"{url}/v1/models/tabular/predict", json=rows[k % len(rows)],
                                    headers=headers)  # fmt: skip
                status, tier = r.status_code, r.headers.get("x-abyssal-tier")
                replica = r.headers.get("x-abyssal-replica")
            except httpx.HTTPError as e:
                status, tier, replica = type(e).__name__, None, None
            took = 1000 * (time.monotonic() - sent)
            return {"status": status, "tier": tier, "replica": replica, "sensitive": sensitive,
                    "sent": sent, "ms": took}  # fmt: skip

        tasks, start = [], time.monotonic()
        for k in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, start + k / rate - time.monotonic()))
            tasks.append(asyncio.create_task(one(k)))
        return list(await asyncio.gather(*tasks))


def test_overload_keeps_sensitive_data_private_and_scales_out_then_in(
    up: tuple[Up, list[dict]],
) -> None:
    service, rows = up
    answers = asyncio.run(load(service.url, rows, seconds=12, rate=150))
    sensitive = [a for a in answers if a["sensitive"]]
    plain = [a for a in answers if not a["sensitive"]]
    assert all(a["tier"] in ("edge", "private") for a in sensitive if a["status"] == 200)
    assert {a["tier"] for a in plain if a["status"] == 200} >= {"public"}
    assert all(a["status"] in (200, 503) for a in answers), {a["status"] for a in answers}
    assert service.tier("public")["sensitive"] == 0
    private = service.tier("private")  # its model's busy share, measured, and its packing
    assert set(private["model_shares"]) == {"tabular"} and private["packing"] == [["tabular"]]
    events = service.status()["events"]
    grew = [e for e in events if e["event"] == "scaled" and e.get("tier") == "private"]
    assert grew and grew[0]["replicas"][1] == 2, events
    service.wait(lambda: service.tier("private")["target"] == 1, 60, "private back to 1")
    service.wait(lambda: len(service.tier("private")["replicas"]) == 1, 60, "the extra drained")
    shown = service.cli("status", "trio")
    assert shown.returncode == 0 and "private" in shown.stdout and "per 1,000" in shown.stdout


def test_killing_the_private_tier_fails_over_with_every_request_answered(
    up: tuple[Up, list[dict]],
) -> None:
    service, rows = up
    killed: dict[str, int] = {}

    async def kill_during_load() -> tuple[list[dict], float]:
        traffic = asyncio.create_task(load(service.url, rows, seconds=8, rate=20))
        await asyncio.sleep(3)
        for replica in service.tier("private")["replicas"]:  # every private replica there is
            killed[replica["name"]] = replica["pid"]
        at = time.monotonic()
        for pid in killed.values():
            os.kill(pid, signal.SIGKILL)
        return await traffic, at

    answers, at = asyncio.run(kill_during_load())
    assert all(a["status"] == 200 for a in answers), [a for a in answers if a["status"] != 200]
    after = [a for a in answers if a["sent"] > at]
    assert after and not [a for a in after if a["replica"] in killed]
    assert all(a["tier"] in ("edge", "private") for a in answers if a["sensitive"])
    # the longest answer around the kill: a request in flight on a killed replica is retried
    around = [a["ms"] for a in answers if at - 1 < a["sent"] < at + FAILOVER_BOUND_S]
    assert max(around) < 1000 * FAILOVER_BOUND_S, max(around)
    states = {r["name"]: r["state"] for r in service.tier("private")["replicas"]}
    assert all(states.get(name, "gone") != "ready" for name in killed), states
    events = service.status()["events"]
    assert any(e["event"] == "down" and e.get("replica") in killed for e in events), events
    alive = [r["pid"] for t in service.status()["tiers"] for r in t["replicas"] if r["pid"]]
    stopped = service.cli("down", "trio")
    assert stopped.returncode == 0, stopped.stderr
    # uvicorn ends by re-raising the SIGTERM it shut down on, once our cleanup has run
    assert service.process.wait(60) in (0, -signal.SIGTERM)
    for pid in alive:  # every replica process stopped with it
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
