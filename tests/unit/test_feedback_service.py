"""``POST /v1/models/{name}/feedback``: the service logs what it decided, takes confirmed labels
for it (all or none), refuses unknown models and bad records with the reason, and asks for the
same API keys as ``predict``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from abyssal.core.store import ModelStore
from abyssal.decide.feedback import labels_path, read_labels, read_predictions
from abyssal.decide.points import OperatingPoint
from abyssal.decide.predictor import DecidingPredictor
from abyssal.serve.app import ServedModel, ServeSettings, create_app
from abyssal.serve.auth import KeyRing, new_key

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("prometheus_client")
from fastapi.testclient import TestClient

PREDICT, FEEDBACK = "/v1/models/fraud/predict", "/v1/models/fraud/feedback"


class Risk:
    """Parses ``{"transaction_id", "risk", "timestamp"}``; answers the id and the risk."""

    def parse(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        return dict(payload)

    def predict(self, items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"transaction_id": i["transaction_id"], "risk": i["risk"]} for i in items]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    ModelStore(tmp_path).register("fraud", {"w": torch.ones(1)}, solution="fraud", config={},
                                  metrics={})  # fmt: skip
    return tmp_path


def app(home: Path, settings: ServeSettings | None = None) -> Any:
    point = OperatingPoint("cost", "cost", 0.5, 0.8, {}, {})
    predictor = DecidingPredictor(Risk(), point, lambda r: r["risk"], ref="fraud:1", home=home)
    return create_app([ServedModel("fraud", "fraud:1", predictor, "fraud")], settings)


def scored(client: TestClient) -> None:
    batch = {"instances": [{"transaction_id": "T1", "risk": 0.9, "timestamp": 1000},
                           {"transaction_id": "T2", "risk": 0.1, "timestamp": 2000}]}  # fmt: skip
    answer = client.post(PREDICT, json=batch)
    assert answer.status_code == 200
    assert [p["decision"]["action"] for p in answer.json()["predictions"]] == ["block", "approve"]


def test_decisions_are_logged_and_labels_come_back_for_them(home: Path) -> None:
    with TestClient(app(home)) as client:
        scored(client)
        body = {"labels": [{"id": "T1", "label": 1, "timestamp": "1970-01-01T01:00:00Z"},
                           {"transaction_id": "T2", "label": 0, "labelled_at": 2500}],
                "source": "chargebacks"}  # fmt: skip
        answer = client.post(FEEDBACK, json=body)
        assert answer.status_code == 200 and answer.json() == {"stored": 2}
    logged = read_predictions("fraud", home)
    assert logged["id"].tolist() == ["T1", "T2"] and logged["event_time"].tolist() == [1000, 2000]
    labels = read_labels("fraud", home)
    assert labels["id"].tolist() == ["T1", "T2"] and labels["label"].tolist() == [1, 0]
    assert labels["labelled_at"].tolist() == [3600.0, 2500.0]
    assert set(labels["source"]) == {"chargebacks"}


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"labels": [{"id": "T1", "label": 1, "timestamp": 5000},
                     {"id": "T2", "label": "yes", "timestamp": 5000}]}, 422,
         "record 1 (id 'T2'): label 'yes' is not a class (0 or 1)"),
        ({"labels": [{"id": "T7", "label": 1, "timestamp": 5000}]}, 422,
         "1 id has no logged prediction of fraud"),
        ({"labels": [{"id": "T1", "label": 1, "timestamp": 10**12}]}, 422,
         "is in the future (now is 2"),
        ({"labels": [{"id": "T1", "label": 1, "timestamp": 1.7e12}]}, 422, "milliseconds"),
        ({"labels": [{"id": "T2", "label": 1, "timestamp": 1500}]}, 422, "before its prediction"),
        ({"labels": []}, 422, "no feedback records"),
        ({"labels": {"id": "T1"}}, 422, 'the body must be {"labels"'),
        ({"labels": [{"id": "T1", "label": 1, "timestamp": 5000}], "source": 3}, 422,
         "'source' must be non-empty text"),
    ],
)  # fmt: skip
def test_bad_records_are_refused_and_nothing_is_stored(
    home: Path, body: Any, status: int, words: str
) -> None:
    with TestClient(app(home)) as client:
        scored(client)
        answer = client.post(FEEDBACK, json=body)
        assert answer.status_code == status and words in answer.json()["error"]
        not_json = client.post(FEEDBACK, content=b"{labels", headers={"content-type": "x"})
        assert not_json.status_code == 422 and "not JSON" in not_json.json()["error"]
    assert not labels_path("fraud", home).exists()


def test_unknown_models_are_404(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {"labels": [{"id": "T1", "label": 1, "timestamp": 5000}]}
    with TestClient(app(home)) as client:
        answer = client.post("/v1/models/fruad/feedback", json=body)
        assert answer.status_code == 404 and "no served model 'fruad'" in answer.json()["error"]
    monkeypatch.setenv("ABYSSAL_HOME", str(home))
    ghost = ServedModel("ghost", "ghost:1", Risk(), "toy")  # served, but not in the store
    with TestClient(create_app([ghost])) as client:
        answer = client.post("/v1/models/ghost/feedback", json=body)
        assert answer.status_code == 404 and "unknown model 'ghost'" in answer.json()["error"]


def test_feedback_needs_the_same_keys_as_predict(home: Path) -> None:
    key, entry = new_key("bank-a", models=["fraud"])
    other, elsewhere = new_key("bank-b", models=["text"])
    body = {"labels": [{"id": "T1", "label": 1, "timestamp": 5000}]}
    with TestClient(app(home, ServeSettings(keys=KeyRing([entry, elsewhere])))) as client:
        assert client.post(FEEDBACK, json=body).status_code == 401
        assert client.post(FEEDBACK, json=body, headers={"X-API-Key": other}).status_code == 403
        assert not labels_path("fraud", home).exists()
        headers = {"X-API-Key": key}
        batch = {"transaction_id": "T1", "risk": 0.9, "timestamp": 1000}
        assert client.post(PREDICT, json=batch, headers=headers).status_code == 200
        answer = client.post(FEEDBACK, json=body, headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 200 and answer.json() == {"stored": 1}
