"""The service monitor: what it compares (request fields, free text's length, prediction
fields), each alert's condition firing and resolving, the Alertmanager body it posts, the
Prometheus rules it writes, and a monitored service end to end (drifted requests -> an alert
at a webhook)."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
import yaml

from abyssal.core.errors import AbyssalError, ConfigError, DataError
from abyssal.serve.monitor import (
    ALERTS,
    ModelMonitor,
    MonitorSettings,
    alert_rules,
    features,
    post_alerts,
    scalars,
    transitions,
    webhook_body,
)

SMALL = MonitorSettings(window=200, reference_size=200, min_samples=100)


def feed(monitor: ModelMonitor, amounts: Sequence[float], risk: float = 0.1) -> None:
    monitor.observe(
        [{"amount": float(a), "shop": "s" + str(int(a) % 3)} for a in amounts],
        [{"risk": risk + 0.01 * (k % 5), "flagged": False} for k in range(len(amounts))],
    )


def test_scalars_keep_numbers_booleans_and_short_text_and_measure_free_text() -> None:
    item = {"amount": 3, "ok": True, "shop": "s1", "note": "two words", "ids": [1, 2],
            "meta": {"a": 1}, "ts": 5, "none": None}  # fmt: skip
    assert scalars(item, ignore=["ts"]) == {
        "amount": 3.0, "ok": True, "shop": "s1", "note:chars": 9.0
    }  # fmt: skip
    assert scalars(["not", "an", "object"]) == {}
    table = features(pd.DataFrame({"text": ["a long review here"] * 3, "x": [1, 2, 3]}))
    assert list(table.columns) == ["text", "x", "text:chars"]
    assert table["text:chars"].tolist() == [18, 18, 18]


def test_the_first_requests_make_the_reference_and_a_shift_is_feature_drift() -> None:
    rng = np.random.default_rng(0)
    monitor = ModelMonitor("fraud", "fraud:1", SMALL)
    feed(monitor, rng.normal(100, 10, 150))
    state = monitor.check()
    assert state.reference is None and not state.judged  # still collecting the reference
    feed(monitor, rng.normal(100, 10, 150))
    state = monitor.check()
    assert state.reference == "first 200 requests" and state.judged
    assert state.drifted == [] and state.firing == []
    feed(monitor, rng.normal(160, 10, 200))  # the whole window moved
    state = monitor.check()
    assert state.drifted == ["amount"] and state.feature_psi["amount"] > 1
    assert state.firing == ["AbyssalFeatureDrift"]


def test_a_training_table_is_the_reference_when_there_is_one() -> None:
    rng = np.random.default_rng(1)
    table = pd.DataFrame({"amount": rng.normal(100, 10, 2000), "label": 0, "ts": 1})
    settings = MonitorSettings(window=200, min_samples=100, ignore=("ts",))
    monitor = ModelMonitor("fraud", "fraud:1", settings, table, "training table tx.csv")
    feed(monitor, rng.normal(100, 10, 100))
    state = monitor.check()
    assert state.reference == "training table tx.csv" and state.judged
    assert set(state.feature_psi) == {"amount"}  # label and ts never come in requests
    assert state.firing == []
    feed(monitor, rng.normal(100, 40, 200))  # same mean, four times the spread
    assert monitor.check().drifted == ["amount"]


def test_predictions_drift_against_the_versions_first_answers() -> None:
    rng = np.random.default_rng(2)
    monitor = ModelMonitor("fraud", "fraud:1", SMALL)
    feed(monitor, rng.normal(100, 10, 200), risk=0.1)
    assert monitor.check().firing == []
    feed(monitor, rng.normal(100, 10, 200), risk=0.8)
    state = monitor.check()
    assert state.prediction_psi["risk"] > 1 and "flagged" in state.prediction_psi
    assert state.firing == ["AbyssalPredictionDrift"]


def test_errors_and_latency_alert_over_their_limits_and_auth_refusals_do_not_count() -> None:
    monitor = ModelMonitor("m", "m:1", MonitorSettings(window=100, min_samples=50, p99_ms=100))
    for k in range(100):
        monitor.outcome(422 if k % 10 == 0 else 200, 0.01)
    for _ in range(500):
        monitor.outcome(401, 0.01)  # the client's key, not the service
    state = monitor.check()
    assert state.error_rate == pytest.approx(0.1) and state.firing == ["AbyssalErrors"]
    for _ in range(100):
        monitor.outcome(200, 0.5)
    state = monitor.check()
    assert state.error_rate == 0 and state.p99_ms == pytest.approx(500)
    assert state.firing == ["AbyssalSlowAnswers"]


def test_alerts_fire_once_then_resolve_in_alertmanagers_body() -> None:
    rng = np.random.default_rng(3)
    monitor = ModelMonitor("fraud", "fraud:1", SMALL)
    feed(monitor, rng.normal(100, 10, 200))
    assert transitions(monitor, monitor.check()) == []
    feed(monitor, rng.normal(170, 10, 200))
    fired = transitions(monitor, monitor.check())
    assert [(a["labels"]["alertname"], a["status"]) for a in fired] == [
        ("AbyssalFeatureDrift", "firing")
    ]
    assert "amount (PSI" in fired[0]["annotations"]["description"]
    assert transitions(monitor, monitor.check()) == []  # still firing: not sent again
    feed(monitor, rng.normal(100, 10, 200))
    resolved = transitions(monitor, monitor.check())
    assert [(a["labels"]["alertname"], a["status"]) for a in resolved] == [
        ("AbyssalFeatureDrift", "resolved")
    ]
    body = webhook_body(fired)
    assert body["version"] == "4" and body["status"] == "firing"
    assert body["commonLabels"] == {"model": "fraud", "source": "abyssal"}


def test_a_swap_starts_the_windows_and_references_afresh() -> None:
    monitor = ModelMonitor("fraud", "fraud:1", SMALL)
    feed(monitor, range(150))
    monitor.reset("fraud:2")
    state = monitor.check()
    assert (state.version, state.samples, state.reference) == ("fraud:2", 0, None)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"window": 0}, "window"),
        ({"min_samples": 5000}, "min_samples"),
        ({"psi": 0}, "psi"),
        ({"error_rate": 1.5}, "error_rate"),
        ({"webhook": "ftp://x"}, "webhook"),
    ],
)
def test_bad_settings_are_refused_by_name(changes: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        MonitorSettings(**changes)


class Catcher(BaseHTTPRequestHandler):
    bodies: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        size = int(self.headers["Content-Length"])
        type(self).bodies.append(json.loads(self.rfile.read(size)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Any:
    Catcher.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Catcher)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/alerts", Catcher.bodies
    server.shutdown()


def test_alerts_are_posted_and_an_unreachable_webhook_is_named(receiver: Any) -> None:
    url, bodies = receiver
    monitor = ModelMonitor("m", "m:1", MonitorSettings(window=10, min_samples=5))
    for _ in range(10):
        monitor.outcome(500, 0.01)
    alerts = transitions(monitor, monitor.check())
    assert post_alerts(url, alerts) == 200
    assert bodies[0]["alerts"][0]["labels"]["alertname"] == "AbyssalErrors"
    with pytest.raises(AbyssalError, match=r"127\.0\.0\.1:9/alerts"):
        post_alerts("http://127.0.0.1:9/alerts", alerts, timeout_s=2)


def test_the_rules_file_names_the_metrics_a_service_exports(tmp_path: Path) -> None:
    text = alert_rules(MonitorSettings(p99_ms=250, error_rate=0.02))
    rules = yaml.safe_load(text)["groups"][0]["rules"]
    assert [r["alert"] for r in rules] == [a.name for a in ALERTS]
    assert "> 0.25" in rules[2]["expr"] and "> 0.02" in rules[3]["expr"]
    prom = pytest.importorskip("prometheus_client")
    from abyssal.serve.monitor import MonitorMetrics

    registry = prom.CollectorRegistry()
    MonitorMetrics(prom, registry)
    exported = {m.name for m in registry.collect()} | {
        "abyssal_request_seconds_bucket", "abyssal_errors_total", "abyssal_requests_total"
    }  # fmt: skip
    for rule in rules:
        named = {w for w in _words(rule["expr"]) if w.startswith("abyssal_")}
        assert named and named <= exported, rule["alert"]
    committed = Path(__file__).resolve().parents[2] / "monitoring" / "abyssal-alerts.yml"
    assert committed.read_text() == alert_rules(), "regenerate: abyssal alert-rules --out ..."
    if shutil.which("promtool"):
        out = subprocess.run(["promtool", "check", "rules", str(committed)],
                             capture_output=True, text=True)  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr


def _words(expr: str) -> set[str]:
    import re

    return set(re.findall(r"[a-z_]+", expr))


class Amounts:
    """Parses ``{"amount": number, ...}``; answers a risk that grows with the amount."""

    def parse(self, payload: Mapping[str, Any]) -> float:
        if not isinstance(payload.get("amount"), int | float):
            raise DataError("'amount' must be a number", column="amount")
        return float(payload["amount"])

    def predict(self, items: Sequence[float]) -> list[Any]:
        return [{"risk": min(1.0, x / 200)} for x in items]


def test_a_monitored_service_alerts_the_webhook_on_drifted_requests(receiver: Any) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from abyssal.serve.app import ServedModel, ServeSettings, create_app

    url, bodies = receiver
    rng = np.random.default_rng(4)
    table = pd.DataFrame({"amount": rng.normal(100, 10, 1000), "label": 0})
    monitor = MonitorSettings(window=100, min_samples=50, reference_size=50, interval_s=0.05,
                              webhook=url)  # fmt: skip
    settings = ServeSettings(monitor=monitor, reference=lambda ref: (table, f"table of {ref}"))
    app = create_app([ServedModel("fraud", "fraud:1", Amounts(), "toy")], settings)
    with TestClient(app) as c:
        calm = [{"amount": float(a)} for a in rng.normal(100, 10, 100)]
        assert c.post("/v1/models/fraud/predict", json={"instances": calm}).status_code == 200
        reading = c.get("/v1/monitor").json()["models"][0]
        assert reading["reference"] == "table of fraud:1" and reading["drifted"] == []
        assert reading["samples"] == 100 and reading["error_rate"] == 0
        wild = [{"amount": float(a)} for a in rng.normal(180, 10, 100)]
        assert c.post("/v1/models/fraud/predict", json={"instances": wild}).status_code == 200
        c.post("/v1/models/fraud/predict", json={"amount": "text"})  # one refusal (422)
        deadline = time.time() + 5
        while not bodies and time.time() < deadline:
            time.sleep(0.05)
        metrics = c.get("/metrics").text
    names = {a["labels"]["alertname"] for b in bodies for a in b["alerts"]}
    assert {"AbyssalFeatureDrift", "AbyssalPredictionDrift"} <= names
    assert 'abyssal_feature_psi{feature="amount",model="fraud",version="fraud:1"}' in metrics
    assert 'abyssal_alert_firing{alertname="AbyssalFeatureDrift",model="fraud"} 1.0' in metrics
    assert 'abyssal_alerts_total{alertname="AbyssalFeatureDrift",model="fraud"} 1.0' in metrics


def test_a_service_without_a_monitor_says_so() -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from abyssal.serve.app import ServedModel, create_app

    with TestClient(create_app([ServedModel("fraud", "fraud:1", Amounts())])) as c:
        answer = c.get("/v1/monitor")
    assert answer.status_code == 404 and "--monitor" in answer.json()["error"]
