"""The router over stand-in replicas (small HTTP services in threads): sensitive requests never
reach the public tier, even with the trusted tiers saturated; overflow to the next tier;
failover with no request lost when a replica dies; retries only where they are safe; health
checks taking replicas out and back; sensitivity rules."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from abyssal.core.config import config_from_dict  # noqa: E402
from abyssal.deploy.pool import Pool  # noqa: E402
from abyssal.deploy.router import create_router  # noqa: E402
from abyssal.deploy.sensitivity import classify  # noqa: E402
from abyssal.deploy.spec import DeploymentConfig, SensitivityPolicy  # noqa: E402


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Fake:
    """A stand-in replica: answers ``{"tier": name}`` after ``delay`` seconds; ``status`` and
    ``ready`` can be changed while it runs; ``stateful`` is what its /v1/models says."""

    def __init__(self, name: str, delay: float = 0.0, stateful: bool = False) -> None:
        self.name, self.delay, self.stateful = name, delay, stateful
        self.status, self.ready, self.hits = 200, True, 0
        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = FastAPI()

        @app.get("/readyz")
        async def readyz() -> Any:
            return JSONResponse({}, 200 if self.ready else 503)

        @app.get("/v1/models")
        async def models() -> Any:
            return {"models": [{"name": "m", "stateful": self.stateful}]}

        async def predict(name: str, request: Request) -> Any:
            self.hits += 1
            await request.body()
            await asyncio.sleep(self.delay)
            return JSONResponse({"tier": self.name}, self.status)

        app.post("/v1/models/{name}/predict")(predict)
        self.server = uvicorn.Server(uvicorn.Config(app, port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> Fake:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)


def deployment(**policies: Any) -> DeploymentConfig:
    tiers = [
        {"name": "edge", "kind": "edge", "models": ["m"], "max_inflight": 1},
        {"name": "private", "kind": "private", "models": ["m"], "max_inflight": 1},
        {"name": "public", "kind": "public", "models": ["m"], "max_inflight": 4},
    ]
    body = {
        "name": "t",
        "tiers": tiers,
        "policies": {"wait_s": 0.3, "health": {"every_s": 0.1, "timeout_s": 0.2}, **policies},
    }
    return config_from_dict(DeploymentConfig, body)


@contextmanager
def routed(fakes: dict[str, Fake], **policies: Any) -> Iterator[tuple[TestClient, Pool]]:
    cfg = deployment(**policies)
    pool = Pool(cfg)
    for tier, fake in fakes.items():
        pool.add(tier, fake.url)
    with TestClient(create_router(pool)) as client:
        deadline = time.monotonic() + 5
        while sum(len(t.ready()) for t in pool.tiers.values()) < len(fakes):
            assert time.monotonic() < deadline, "replicas never became ready"
            time.sleep(0.02)
        yield client, pool


@pytest.fixture
def three() -> Iterator[dict[str, Fake]]:
    fakes = {t: Fake(t, delay=0.2).start() for t in ("edge", "private", "public")}
    yield fakes
    for fake in fakes.values():
        fake.stop()


def burst(client: TestClient, n: int, headers: dict[str, str] | None = None) -> list[Any]:
    """``n`` requests at once (threads: the test client is synchronous)."""
    answers: list[Any] = [None] * n

    def one(k: int) -> None:
        answers[k] = client.post("/v1/models/m/predict", json={"x": k}, headers=headers or {})

    threads = [threading.Thread(target=one, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def test_sensitive_requests_never_reach_public_even_when_trusted_tiers_are_saturated(
    three: dict[str, Fake],
) -> None:
    with routed(three) as (client, pool):
        answers = burst(client, 12, {"X-Data-Sensitivity": "sensitive"})
    tiers = [a.headers.get("x-abyssal-tier") for a in answers if a.status_code == 200]
    assert three["public"].hits == 0
    assert set(tiers) <= {"edge", "private"}
    # the trusted tiers take one each at a time: the rest wait their turn or get a 503 naming why
    refused = [a for a in answers if a.status_code == 503]
    assert all(
        "public" not in a.json()["error"].split("allowed:")[1].split(";")[0] for a in refused
    )
    assert all(a.headers["x-abyssal-sensitive"] == "true" for a in answers)
    assert pool.tiers["public"].sensitive == 0


def test_plain_requests_overflow_to_public_when_edge_and_private_are_busy(
    three: dict[str, Fake],
) -> None:
    with routed(three) as (client, pool):
        answers = burst(client, 6)
    assert all(a.status_code == 200 for a in answers)
    tiers = [a.headers["x-abyssal-tier"] for a in answers]
    assert tiers.count("public") >= 3
    assert pool.tiers["edge"].overflowed >= 3


def test_pii_in_a_field_makes_a_request_sensitive(three: dict[str, Fake]) -> None:
    with routed(three) as (client, _):
        busy = threading.Thread(target=burst, args=(client, 4))
        busy.start()  # edge and private are taken while the e-mail arrives
        time.sleep(0.05)
        mail = client.post("/v1/models/m/predict", json={"note": "write to ann@example.org"})
        busy.join()
    assert mail.headers["x-abyssal-sensitive"] == "true"
    assert mail.status_code == 200 and mail.headers["x-abyssal-tier"] in ("edge", "private")
    assert three["public"].hits >= 2  # the plain requests did overflow


def test_a_dead_replica_fails_over_with_no_request_lost() -> None:
    fakes = {"private": Fake("private", delay=0.01).start(), "public": Fake("public").start()}
    try:
        with routed(fakes) as (client, pool):
            fakes["private"].stop()  # its port now refuses connections
            answers = [client.post("/v1/models/m/predict", json={"x": k}) for k in range(20)]
            assert all(a.status_code == 200 for a in answers)
            assert {a.headers["x-abyssal-tier"] for a in answers} == {"public"}
            assert answers[0].headers["x-abyssal-attempts"] == "2"  # refused, then public
            assert pool.find("private-1").state == "down"
    finally:
        fakes["public"].stop()


def test_health_checks_take_a_replica_out_and_bring_it_back() -> None:
    fakes = {"private": Fake("private").start(), "public": Fake("public").start()}
    try:
        with routed(fakes) as (client, pool):
            fakes["private"].ready = False
            bound = pool.cfg.policies.health.failover_bound_s
            time.sleep(bound + 0.3)
            assert pool.find("private-1").state == "down"
            assert (
                client.post("/v1/models/m/predict", json={}).headers["x-abyssal-tier"] == "public"
            )
            fakes["private"].ready = True
            time.sleep(0.4)
            assert pool.find("private-1").state == "ready"
            assert (
                client.post("/v1/models/m/predict", json={}).headers["x-abyssal-tier"] == "private"
            )
    finally:
        for fake in fakes.values():
            fake.stop()


@pytest.mark.parametrize(("stateful", "public_hits"), [(False, 1), (True, 0)])
def test_a_504_is_retried_elsewhere_only_for_a_stateless_model(
    stateful: bool, public_hits: int
) -> None:
    fakes = {
        "private": Fake("private", stateful=stateful).start(),
        "public": Fake("public", stateful=stateful).start(),
    }
    fakes["private"].status = 504
    try:
        with routed(fakes) as (client, _):
            answer = client.post("/v1/models/m/predict", json={})
        assert fakes["public"].hits == public_hits
        assert answer.status_code == (200 if public_hits else 504)
    finally:
        for fake in fakes.values():
            fake.stop()


def test_a_503_is_always_retried_elsewhere() -> None:
    fakes = {"private": Fake("private", stateful=True).start(), "public": Fake("public").start()}
    fakes["private"].status = 503
    try:
        with routed(fakes) as (client, _):
            answer = client.post("/v1/models/m/predict", json={})
        assert answer.status_code == 200 and answer.headers["x-abyssal-tier"] == "public"
    finally:
        for fake in fakes.values():
            fake.stop()


def test_unknown_model_oversized_body_and_status() -> None:
    fakes = {"private": Fake("private").start()}
    try:
        with routed(fakes) as (client, _):
            assert client.post("/v1/models/nope/predict", json={}).status_code == 404
            big = client.post("/v1/models/m/predict", content=b"x" * (9 << 20))
            assert big.status_code == 413
            status = client.get("/v1/deploy/status").json()
            assert [t["name"] for t in status["tiers"]] == ["edge", "private", "public"]
            assert client.get("/readyz").status_code == 200
            assert "abyssal_router_requests" in client.get("/metrics").text
    finally:
        fakes["private"].stop()


@pytest.mark.parametrize(
    ("body", "headers", "sensitive"),
    [
        ({"amount": 3.5, "merchant": "shop"}, {}, False),
        ({"amount": 3.5}, {"x-data-sensitivity": "Restricted"}, True),
        ({"note": "card 4111 1111 1111 1111"}, {}, True),
        ({"instances": [{"a": 1}, {"email": "x"}]}, {}, True),
        ({"patient_name": "A. B."}, {}, True),
        ({"user_id": "u1"}, {}, True),  # listed in fields below
        ({"note": "4111 1111 1111 1112"}, {}, False),  # fails the Luhn check: not a card
    ],
)
def test_sensitivity_rules(body: Any, headers: dict[str, str], sensitive: bool) -> None:
    policy = SensitivityPolicy(fields=["user_id"])
    verdict = classify(policy, "m", headers, json.dumps(body).encode())
    assert verdict.sensitive is sensitive, verdict


def test_unreadable_bodies_and_listed_models_are_sensitive() -> None:
    assert classify(SensitivityPolicy(), "m", {}, b"{not json").sensitive
    assert classify(SensitivityPolicy(models=["m"]), "m", {}, b"{}").why == "model m"
    assert not classify(SensitivityPolicy(), "m", {}, b"", "multipart/form-data; b=1").sensitive
