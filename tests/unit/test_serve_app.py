"""The HTTP service on a stand-in predictor: health and readiness, single and batched requests,
requests batched across clients, and every refusal with its status (404, 413, 422, 503, 504,
500); Prometheus metrics; a real registered model served end to end."""

from __future__ import annotations

import csv
import json
import re
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from abyssal.core.errors import DataError
from abyssal.serve.app import ServedModel, ServeSettings, create_app
from abyssal.serve.batcher import BatchPolicy

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("prometheus_client")
from fastapi.testclient import TestClient

TABULAR = Path(__file__).resolve().parents[2] / "configs" / "tabular" / "quickstart.yaml"


class Doubler:
    """Parses ``{"x": number}``; predicts 2x; ``x == 13`` fails in predict."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay, self.batches = delay, []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def parse(self, payload: Mapping[str, Any]) -> float:
        x = payload.get("x")
        if isinstance(x, bool) or not isinstance(x, int | float):
            raise DataError(f"'x' must be a number, got {type(x).__name__}", column="x")
        return float(x)

    def predict(self, items: Sequence[float]) -> list[Any]:
        self.entered.set()
        self.gate.wait(5)
        time.sleep(self.delay)
        self.batches.append(list(items))
        return [
            RuntimeError("thirteen") if x == 13 else {"y": 2 * x, "nan": float("nan")}
            for x in items
        ]


def client(predictor: Doubler, **policy: Any) -> TestClient:
    settings = ServeSettings(BatchPolicy(**{"max_wait_ms": 5, **policy}), max_body_bytes=2000)
    app = create_app([ServedModel("double", "double:1", predictor, "toy")], settings)
    return TestClient(app)


def until(condition: Any, seconds: float = 5.0) -> None:
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.005)


def test_health_readiness_and_the_model_list() -> None:
    with client(Doubler()) as c:
        assert c.get("/healthz").json() == {"status": "alive"}
        assert c.get("/readyz").json() == {"status": "ready", "models": ["double"]}
        listed = c.get("/v1/models").json()["models"][0]
        assert listed["version"] == "double:1" and listed["solution"] == "toy"
        assert "/v1/models/{name}/predict" in c.get("/openapi.json").json()["paths"]


def test_one_request_and_several_in_one_body_are_answered_in_order() -> None:
    with client(Doubler()) as c:
        one = c.post("/v1/models/double/predict", json={"x": 2})
        assert one.status_code == 200 and one.json()["predictions"][0]["y"] == 4
        assert one.json()["predictions"][0]["nan"] is None  # NaN is written null
        assert one.headers["x-request-id"]
        many = c.post("/v1/models/double/predict", json={"instances": [{"x": i} for i in range(5)]})
        assert [p["y"] for p in many.json()["predictions"]] == [0, 2, 4, 6, 8]
        assert many.json()["model"] == "double:1"


def test_concurrent_clients_share_batches() -> None:
    predictor = Doubler()
    model = ServedModel("double", "double:1", predictor)
    policy = BatchPolicy(max_batch_size=8, max_wait_ms=200)
    answers: list[Any] = [None] * 8
    with TestClient(create_app([model], ServeSettings(policy))) as c:
        predictor.gate.clear()

        def call(i: int) -> None:
            answers[i] = c.post("/v1/models/double/predict", json={"x": i}).json()

        threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        until(lambda: model.batcher.stats.submitted == 8)  # all arrived; none answered yet
        predictor.gate.set()
        for t in threads:
            t.join()
    assert [a["predictions"][0]["y"] for a in answers] == [2 * i for i in range(8)]
    sizes = [len(b) for b in predictor.batches]
    assert sum(sizes) == 8 and len(sizes) < 8  # requests of different clients shared batches


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"x": "seven"}, 422, "'x' must be a number"),
        ({"instances": [{"x": 1}, {"x": None}]}, 422, "'x' must be a number"),
        ({"instances": []}, 422, "non-empty list"),
        ({"instances": [1]}, 422, "request 0 is not a JSON object"),
        ([1, 2], 422, "must be a JSON object"),
        ({"x": 13}, 500, "RuntimeError while predicting"),
    ],
)
def test_bad_requests_get_a_status_and_a_message(body: Any, status: int, words: str) -> None:
    with client(Doubler()) as c:
        answer = c.post("/v1/models/double/predict", json=body)
        assert answer.status_code == status and words in answer.json()["error"]
        assert c.get("/healthz").status_code == 200  # the service stays up


def test_refusals_name_the_field_size_and_model() -> None:
    with client(Doubler()) as c:
        bad = c.post("/v1/models/double/predict", json={"instances": [{"x": 1}, {"x": "a"}]})
        assert bad.json()["index"] == 1 and bad.json()["field"] == "x"
        assert c.post("/v1/models/nope/predict", json={"x": 1}).status_code == 404
        big = c.post("/v1/models/double/predict", content=b"{" + b" " * 3000 + b"}")
        assert big.status_code == 413 and "over 2000 bytes" in big.json()["error"]
        junk = c.post("/v1/models/double/predict", content=b"{not json")
        assert junk.status_code == 422 and "not JSON" in junk.json()["error"]
        priority = c.post("/v1/models/double/predict", json={"x": 1}, headers={"X-Priority": "hi"})
        assert priority.status_code == 422


def test_a_full_queue_answers_503_with_retry_after_and_a_slow_model_504() -> None:
    predictor = Doubler()
    model = ServedModel("double", "double:1", predictor)
    policy = BatchPolicy(max_batch_size=1, max_queue=1, max_wait_ms=0, timeout_s=1.0)
    results: dict[str, Any] = {}
    with TestClient(create_app([model], ServeSettings(policy))) as c:
        predictor.gate.clear()

        def call(key: str) -> None:
            results[key] = c.post("/v1/models/double/predict", json={"x": 1})

        first = threading.Thread(target=call, args=("first",))
        first.start()
        until(predictor.entered.is_set)  # the first is running, held at the gate
        second = threading.Thread(target=call, args=("second",))
        second.start()
        until(lambda: model.batcher.stats.queue_depth == 1)  # the second waits: queue full
        third = c.post("/v1/models/double/predict", json={"x": 1})
        assert third.status_code == 503 and int(third.headers["retry-after"]) >= 1
        first.join()
        second.join()
        predictor.gate.set()
    assert results["first"].status_code == 504 and "no answer within" in results["first"].text
    assert results["second"].status_code == 504


def test_metrics_count_requests_batches_and_latency() -> None:
    with client(Doubler()) as c:
        c.post("/v1/models/double/predict", json={"x": 1})
        c.post("/v1/models/double/predict", json={"x": "bad"})
        c.post("/v1/models/nothing/predict", json={"x": 1})
        text = c.get("/metrics").text
    assert 'abyssal_errors_total{kind="unknown_model",model="unknown",version="-"} 1.0' in text
    assert 'abyssal_requests_total{model="double",status="200",version="double:1"} 1.0' in text
    assert 'abyssal_requests_total{model="double",status="422",version="double:1"} 1.0' in text
    refused = 'abyssal_errors_total{kind="invalid_request",model="double",version="double:1"} 1.0'
    assert refused in text
    assert "abyssal_batch_size_count" in text and "abyssal_request_seconds_bucket" in text
    assert "abyssal_queue_depth" in text


def test_load_reports_busy_seconds_queue_and_statefulness_for_an_autoscaler() -> None:
    with client(Doubler(delay=0.05)) as c:
        before = c.get("/v1/load").json()
        for x in range(4):
            c.post("/v1/models/double/predict", json={"x": x})
        after = c.get("/v1/load").json()
        metrics = c.get("/metrics").text
        listed = c.get("/v1/models").json()["models"][0]
    model = after["models"]["double"]
    # four batches of at least 50 ms each ran on the model's thread
    assert model["busy_s"] - before["models"]["double"]["busy_s"] >= 0.2
    assert after["busy_s"] == model["busy_s"] and after["queue"] == model["queue"] == 0
    assert after["cpu_s"] >= before["cpu_s"] and after["uptime_s"] > before["uptime_s"]
    assert model["stateful"] is False and listed["stateful"] is False
    assert 'abyssal_busy_seconds{model="double"}' in metrics


def new_rows(folder: Path, n: int) -> list[dict[str, str]]:
    with open(folder / "new_rows.csv", newline="") as f:
        return list(csv.DictReader(f))[:n]


def test_a_registered_tabular_model_is_served(tabular_model: tuple[Path, Path]) -> None:
    from abyssal.core.errors import ConfigError
    from abyssal.core.store import ModelStore
    from abyssal.serve.models import load_served

    home, data = tabular_model
    store = ModelStore(home)
    served = load_served(["tabular:1"], store=store)
    assert (served[0].name, served[0].ref) == ("tabular", "tabular:1")
    assert served[0].solution == "tabular"
    with pytest.raises(ConfigError, match="serve one version of a name"):
        load_served(["tabular:1", "tabular:1"], store=store)
    rows = new_rows(data, 3)
    with TestClient(create_app(served)) as c:
        answer = c.post("/v1/models/tabular/predict", json={"instances": rows})
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        assert len(predictions) == 3 and all(isinstance(p, dict) and p for p in predictions)
        bad = c.post("/v1/models/tabular/predict", json={**rows[0], "mean radius": "wide"})
        assert bad.status_code == 422 and bad.json()["field"] == "mean radius"


def test_the_cli_serves_on_a_real_socket_and_stops_cleanly(
    tabular_model: tuple[Path, Path],
) -> None:
    import os
    import signal
    import socket
    import subprocess
    import sys

    import httpx

    home, data = tabular_model
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "ABYSSAL_HOME": str(home)}
    command = [sys.executable, "-m", "abyssal", "serve", "tabular:1", "--port", str(port)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        until(lambda: _ready(httpx, url) or server.poll() is not None, seconds=60)
        assert server.poll() is None, server.stdout.read().decode()
        answer = httpx.post(f"{url}/v1/models/tabular/predict", json=new_rows(data, 1)[0])
        assert answer.status_code == 200 and answer.json()["model"] == "tabular:1"
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=30)[0].decode()
    # uvicorn re-raises the signal once it has shut down gracefully
    assert server.returncode in (0, -signal.SIGTERM), output
    assert "tabular:1: POST" in output and "Application shutdown complete" in output
    requests = [json.loads(line) for line in output.splitlines() if '"request"' in line]
    assert requests and requests[-1]["status"] == 200 and requests[-1]["model"] == "tabular:1"


def _ready(httpx: Any, url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_serving_an_unknown_model_says_so_before_listening(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from abyssal.cli.main import main

    monkeypatch.setenv("ABYSSAL_HOME", str(tmp_path))
    assert main(["serve", "nothing:1", "--port", "1"]) != 0
    assert "nothing" in capsys.readouterr().err


class Tripler(Doubler):
    def predict(self, items: Sequence[float]) -> list[Any]:
        return [{"y": 3 * x} for x in items]


def test_a_moved_alias_swaps_the_model_without_dropping_requests_in_flight() -> None:
    from abyssal.serve.models import AliasFollower

    old = Doubler()
    model = ServedModel("double", "double:1", old, follow="double:production")
    target = {"ref": "double:1"}
    follower = AliasFollower(
        0.02, resolve=lambda ref: target["ref"], load=lambda ref: ("double:2", Tripler())
    )
    policy = BatchPolicy(max_batch_size=4, max_wait_ms=1)
    answers: dict[str, Any] = {}
    with TestClient(create_app([model], ServeSettings(policy), follower=follower)) as c:
        old.gate.clear()

        def call(key: str, x: int) -> None:
            answers[key] = c.post("/v1/models/double/predict", json={"x": x})

        running = threading.Thread(target=call, args=("running", 1))
        running.start()
        until(old.entered.is_set)  # held inside the old version
        waiting = threading.Thread(target=call, args=("waiting", 2))
        waiting.start()
        until(lambda: model.batcher.stats.queue_depth == 1)  # queued on the old version
        target["ref"] = "double:2"  # the alias moves
        until(lambda: model.ref == "double:2")
        after = c.post("/v1/models/double/predict", json={"x": 5})
        assert after.json() == {"model": "double:2", "predictions": [{"y": 15}]}
        old.gate.set()
        running.join()
        waiting.join()
        assert c.get("/readyz").status_code == 200
    # the two requests the old version held were answered by it, not dropped or failed
    assert answers["running"].json()["model"] == "double:1"
    assert answers["running"].json()["predictions"][0]["y"] == 2
    assert answers["waiting"].json()["predictions"][0]["y"] == 4


def test_a_failed_reload_keeps_the_current_version(caplog: pytest.LogCaptureFixture) -> None:
    from abyssal.serve.models import AliasFollower

    def broken(ref: str) -> tuple[str, Any]:
        raise OSError("the store is unreachable")

    model = ServedModel("double", "double:1", Doubler(), follow="double:production")
    follower = AliasFollower(0.01, resolve=lambda ref: "double:2", load=broken)
    with TestClient(create_app([model], follower=follower)) as c:
        until(lambda: "following aliases failed" in caplog.text)
        answer = c.post("/v1/models/double/predict", json={"x": 1})
    assert answer.json()["model"] == "double:1" and model.ref == "double:1"


def test_load_served_follows_aliases_and_not_pinned_versions(
    tabular_model: tuple[Path, Path],
) -> None:
    import asyncio

    from abyssal.core.store import ModelStore
    from abyssal.serve.models import AliasFollower, load_served
    from abyssal.train.api import train

    home, data = tabular_model
    store = ModelStore(home)
    store.set_alias("tabular", "production", 1)
    pinned = load_served(["tabular:1"], store=store)
    followed = load_served(["tabular:production"], store=store)
    assert pinned[0].follow is None and followed[0].follow == "tabular:production"
    swaps: list[tuple[str, Any]] = []

    async def swap(model: ServedModel, ref: str, predictor: Any) -> None:
        swaps.append((ref, predictor))

    follower = AliasFollower(1.0, store=store)
    assert asyncio.run(follower.check(followed, swap)) == []  # the alias has not moved
    overrides = [f"data.path={data / 'train.csv'}", "train.progress=false", "train.epochs=1"]
    second = train("tabular", TABULAR, overrides, home=home)
    assert second is not None and second.version.ref == "tabular:2"
    store.set_alias("tabular", "production", 2)
    assert asyncio.run(follower.check(followed, swap)) == ["tabular:2"]
    assert swaps[0][0] == "tabular:2" and hasattr(swaps[0][1], "predict")
    assert asyncio.run(follower.check(pinned, swap)) == []  # a pinned version never moves


def test_a_canary_answers_its_share_and_can_be_asked_for_by_version() -> None:
    canary = ServedModel("double", "double:2", Tripler(), "toy", share=0.25)
    main = ServedModel("double", "double:1", Doubler(), "toy", canaries=[canary])
    url = "/v1/models/double/predict"
    with TestClient(create_app([main])) as c:
        listed = {m["version"]: m["share"] for m in c.get("/v1/models").json()["models"]}
        assert listed == {"double:1": 0.75, "double:2": 0.25}
        answers = [c.post(url, json={"x": 1}).json() for _ in range(400)]
        by_version = {"double:1": 0, "double:2": 0}
        for answer in answers:  # each version answers with its own model
            y = {"double:1": 2, "double:2": 3}[answer["model"]]
            assert answer["predictions"][0]["y"] == y
            by_version[answer["model"]] += 1
        assert 60 <= by_version["double:2"] <= 140  # 100 expected; 5 standard deviations
        pinned = c.post(url, json={"x": 1}, headers={"X-Model-Version": "double:2"})
        assert pinned.json()["model"] == "double:2"
        unknown = c.post(url, json={"x": 1}, headers={"X-Model-Version": "double:9"})
        assert unknown.status_code == 404 and "double serves double:1, double:2" in unknown.text
        metrics = c.get("/metrics").text
    assert 'abyssal_requests_total{model="double",status="200",version="double:2"}' in metrics


@pytest.mark.parametrize(
    ("shares", "words"),
    [([0.0], "share in (0, 1)"), ([0.6, 0.5], "take 110% of its requests")],
)
def test_canary_shares_out_of_range_are_refused(shares: list[float], words: str) -> None:
    from abyssal.core.errors import ConfigError

    canaries = [
        ServedModel("double", f"double:{k + 2}", Tripler(), share=share)
        for k, share in enumerate(shares)
    ]
    with pytest.raises(ConfigError, match=re.escape(words)):
        create_app([ServedModel("double", "double:1", Doubler(), canaries=canaries)])


def test_load_served_attaches_a_canary_to_its_main_version(
    tabular_model: tuple[Path, Path],
) -> None:
    from abyssal.core.errors import ConfigError
    from abyssal.core.store import ModelStore
    from abyssal.serve.models import load_served
    from abyssal.train.api import train

    home, data = tabular_model
    store = ModelStore(home)
    if len(store.list_versions("tabular")) < 2:
        overrides = [f"data.path={data / 'train.csv'}", "train.progress=false", "train.epochs=1"]
        train("tabular", TABULAR, overrides, home=home)
    served = load_served(["tabular:2@10%", "tabular:1"], store=store)
    assert [(m.ref, [(c.ref, c.share) for c in m.canaries]) for m in served] == [
        ("tabular:1", [("tabular:2", 0.1)])
    ]
    with pytest.raises(ConfigError, match="no main version of 'tabular'"):
        load_served(["tabular:2@10"], store=store)
    with pytest.raises(ConfigError, match="a canary is REF@PERCENT"):
        load_served(["tabular:1", "tabular:2@ten"], store=store)
    with pytest.raises(ConfigError, match=r"others as canaries \(tabular:2@10"):
        load_served(["tabular:1", "tabular:2"], store=store)


class FileReader(Doubler):
    """Takes ``{"path": FILE, "x": n}``; answers the file's size and where it was."""

    file_fields = ("path",)

    def parse(self, payload: Mapping[str, Any]) -> Any:
        path = Path(str(payload.get("path", "")))
        if not path.is_file():
            raise DataError(f"no such file {path.name}", column="path")
        return {"bytes": len(path.read_bytes()), "name": path.name, "at": str(path), **payload}

    def predict(self, items: Sequence[Any]) -> list[Any]:
        return list(items)


def test_files_come_as_uploads_and_paths_only_when_allowed(tmp_path: Path) -> None:
    secret = tmp_path / "server-side.txt"
    secret.write_text("not for clients")
    model = ServedModel("reader", "reader:1", FileReader())
    url = "/v1/models/reader/predict"
    with TestClient(create_app([model])) as c:
        refused = c.post(url, json={"path": str(secret)})
        assert refused.status_code == 422 and "send 'path' as a file upload" in refused.text
        upload = {"path": ("../../etc/scan.nii.gz", b"12345", "application/octet-stream")}
        answer = c.post(url, files=upload, data={"x": "3"})
        assert answer.status_code == 200, answer.text
        got = answer.json()["predictions"][0]
        assert got["bytes"] == 5 and got["x"] == 3  # form values parsed as JSON where they can
        nan = c.post(url, files=upload, data={"x": "NaN"}).json()["predictions"][0]
        assert nan["x"] == "NaN"  # not JSON: the words, for the model to judge
        assert got["name"].endswith("scan.nii.gz") and "/" not in got["name"]  # suffix kept
        assert not Path(got["at"]).exists()  # the upload is gone once parsed
        wrong = c.post(url, files={"other": ("a.png", b"x")})
        assert wrong.status_code == 422 and "unexpected file field 'other'" in wrong.text
        empty = c.post(url, files={"path": ("a.png", b"")}, data={})
        assert empty.status_code == 200 and empty.json()["predictions"][0]["bytes"] == 0
    trusted = ServeSettings(allow_paths=True)
    with TestClient(create_app([ServedModel("reader", "reader:1", FileReader())], trusted)) as c:
        read = c.post(url, json={"path": str(secret)})
        assert read.status_code == 200 and read.json()["predictions"][0]["bytes"] == 15


def test_uploads_over_the_limit_get_413() -> None:
    model = ServedModel("reader", "reader:1", FileReader())
    with TestClient(create_app([model], ServeSettings(max_body_bytes=100))) as c:
        big = c.post("/v1/models/reader/predict", files={"path": ("a.bin", b"0" * 500)})
    assert big.status_code == 413


class CachingDoubler(Doubler):
    """Keeps 2x in the feature cache under its version."""

    def __init__(self, ref: str) -> None:
        super().__init__()
        self.ref, self.cache, self.computed, self.early = ref, None, 0, 0

    def use_cache(self, cache: Any) -> bool:
        self.cache = cache
        return True

    def predict_cached(self, items: Sequence[float]) -> list[Any]:
        from abyssal.nn.features import answers_from_cache

        def answer(vectors: Any, rows: list[int]) -> list[Any]:
            self.early += len(rows)
            return [{"y": float(v[0])} for v in vectors]

        return answers_from_cache(self.cache, self.ref, list(items), answer)

    def predict(self, items: Sequence[float]) -> list[Any]:
        import numpy as np

        from abyssal.core.digest import content_digest

        self.batches.append(list(items))
        out = []
        for x in items:
            found = self.cache.get(self.ref, content_digest(x))
            if found is None:
                self.computed += 1
                found = np.array([2 * x])
                self.cache.put(self.ref, content_digest(x), found)
            out.append({"y": float(found[0])})
        return out


def test_the_feature_cache_is_handed_out_counted_and_invalidated_on_a_swap() -> None:
    from abyssal.serve.cache import MemoryFeatureCache

    cache = MemoryFeatureCache()
    first = CachingDoubler("double:1")
    model = ServedModel("double", "double:1", first)
    app = create_app([model], ServeSettings(cache=cache))
    with TestClient(app) as c:
        for x in (1, 2, 1, 1):
            c.post("/v1/models/double/predict", json={"x": x})
        assert first.computed == 2 and cache.stats.hits == 2
        assert first.early == 2 and len(first.batches) == 2  # repeats answered without a batch
        mixed = c.post("/v1/models/double/predict", json={"instances": [{"x": 2}, {"x": 5}]})
        assert mixed.json()["predictions"] == [{"y": 4.0}, {"y": 10.0}]  # in order
        assert first.batches[-1] == [5.0] and first.early == 3
        assert (cache.stats.hits, cache.stats.misses) == (3, 3)
        text = c.get("/metrics").text
        assert 'abyssal_feature_cache{what="hit_rate"} 0.5' in text
        assert 'abyssal_feature_cache{what="entries"} 3.0' in text
        second = CachingDoubler("double:2")
        c.portal.call(app.state.swap, model, "double:2", second)  # on the app's loop
        assert second.cache is cache and len(cache) == 0  # double:1's vectors are dropped
        assert c.post("/v1/models/double/predict", json={"x": 1}).json()["model"] == "double:2"


def test_a_stopping_server_answers_the_request_in_flight_first() -> None:
    import socket

    import httpx
    import uvicorn

    predictor = Doubler()
    predictor.gate.clear()
    app = create_app([ServedModel("double", "double:1", predictor)])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = threading.Thread(target=server.run)
    serving.start()
    until(lambda: server.started)
    result: dict[str, Any] = {}
    url = f"http://127.0.0.1:{port}/v1/models/double/predict"
    client = threading.Thread(
        target=lambda: result.update(answer=httpx.post(url, json={"x": 3}, timeout=10))
    )
    client.start()
    until(predictor.entered.is_set)  # the request is inside the model
    server.should_exit = True  # what SIGTERM does
    time.sleep(0.2)
    assert serving.is_alive()  # still serving it
    predictor.gate.set()
    client.join(10)
    serving.join(10)
    assert not serving.is_alive()
    assert result["answer"].status_code == 200
    assert result["answer"].json()["predictions"][0]["y"] == 6
