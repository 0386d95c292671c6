"""API keys: hashed entries, constant-time lookup, per-model permission, token-bucket rate limits,
keys files refused with the entry named; the service's 401, 403 and 429, and logs without keys."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from abyssal.core.errors import ConfigError
from abyssal.serve.auth import AuthError, KeyRing, hash_key, new_key


def test_a_new_key_is_stored_only_as_its_digest() -> None:
    key, entry = new_key("bank-a", models=["text"], rate_per_s=2.5)
    assert key.startswith("ak_") and len(key) > 40
    assert entry == {
        "name": "bank-a", "sha256": hash_key(key), "models": ["text"], "rate_per_s": 2.5,
        "burst": 3,
    }  # fmt: skip
    assert key not in json.dumps(entry)


def test_keys_are_checked_for_existence_then_model() -> None:
    key, entry = new_key("bank-a", models=["text"])
    other, everything = new_key("ops")
    ring = KeyRing([entry, everything])
    assert ring.check(key, "text").name == "bank-a"
    assert ring.check(other, "defect").name == "ops"  # "*": every model
    with pytest.raises(AuthError, match="no API key") as e:
        ring.check(None, "text")
    assert e.value.status == 401
    with pytest.raises(AuthError, match="unknown API key") as e:
        ring.check("ak_guess", "text")
    assert e.value.status == 401
    with pytest.raises(AuthError, match="'bank-a' may not use model 'defect'") as e:
        ring.check(key, "defect")
    assert e.value.status == 403


def test_the_rate_limit_is_a_token_bucket() -> None:
    now = [0.0]
    key, entry = new_key("bank-a", rate_per_s=2, burst=3)
    ring = KeyRing([entry], clock=lambda: now[0])
    for _ in range(3):  # the burst
        ring.check(key, "text")
    with pytest.raises(AuthError, match=r"over 2 requests/s") as e:
        ring.check(key, "text")
    assert e.value.status == 429 and e.value.retry_after == pytest.approx(0.5)
    now[0] = 0.5  # one token back
    ring.check(key, "text")
    with pytest.raises(AuthError):
        ring.check(key, "text")
    now[0] = 100.0  # refilled, never beyond the burst
    for _ in range(3):
        ring.check(key, "text")
    with pytest.raises(AuthError):
        ring.check(key, "text")


@pytest.mark.parametrize(
    ("entries", "words"),
    [
        ([{"sha256": "0" * 64}], "entry 0 has no name"),
        ([{"name": "a", "sha256": "xyz"}], "64 hex digits"),
        ([{"name": "a", "sha256": "0" * 64, "rate_per_s": 0}], "rate_per_s must be > 0"),
        ([{"name": "a", "sha256": "0" * 64, "models": "text"}], "models must be a list"),
        ([{"name": "a", "sha256": "0" * 64, "burst": 0}], "burst must be"),
        ([{"name": "a", "sha256": "0" * 64}, {"name": "a", "sha256": "1" * 64}], "repeats"),
    ],
)
def test_bad_entries_are_refused_by_index_and_name(entries: list, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        KeyRing(entries)


def test_a_keys_file_is_read_and_its_problems_named(tmp_path: Path) -> None:
    key, entry = new_key("bank-a")
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": [entry]}))
    assert len(KeyRing.from_file(path)) == 1 and KeyRing.from_file(path).check(key, "m")
    with pytest.raises(ConfigError, match="does not exist"):
        KeyRing.from_file(tmp_path / "none.json")
    path.write_text("{nope")
    with pytest.raises(ConfigError, match="is not JSON"):
        KeyRing.from_file(path)
    path.write_text(json.dumps({"keys": [{"name": "x"}]}))
    with pytest.raises(ConfigError, match=r"keys\.json: keys entry 0 \('x'\)"):
        KeyRing.from_file(path)


class Echo:
    def parse(self, payload: Mapping[str, Any]) -> Any:
        return dict(payload)

    def predict(self, items: Sequence[Any]) -> list[Any]:
        return list(items)


def test_the_service_answers_401_403_429_and_logs_the_owner_not_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from abyssal.serve.app import ServedModel, ServeSettings, create_app

    key, entry = new_key("bank-a", models=["echo"], rate_per_s=1, burst=2)
    settings = ServeSettings(keys=KeyRing([entry]))
    models = [ServedModel("echo", "echo:1", Echo()), ServedModel("other", "other:1", Echo())]
    url = "/v1/models/echo/predict"
    app = create_app(models, settings)
    with caplog.at_level(logging.INFO, logger="abyssal.serve.app"), TestClient(app) as c:
        assert c.post(url, json={"a": 1}).status_code == 401
        assert c.post(url, json={"a": 1}, headers={"X-API-Key": "ak_x"}).status_code == 401
        denied = c.post("/v1/models/other/predict", json={"a": 1}, headers={"X-API-Key": key})
        assert denied.status_code == 403 and "may not use model 'other'" in denied.text
        ok = c.post(url, json={"a": 1}, headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200 and ok.json()["predictions"] == [{"a": 1}]
        assert c.post(url, json={"a": 2}, headers={"X-API-Key": key}).status_code == 200
        # the two answered requests took the burst's two tokens (a refusal takes none)
        limited = c.post(url, json={"a": 1}, headers={"X-API-Key": key})
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        metrics = c.get("/metrics").text
    assert 'status="401"' in metrics and 'status="429"' in metrics
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert '"client": "bank-a"' in logged and key not in logged


def test_the_cli_makes_keys_and_refuses_a_broken_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from abyssal.cli.main import main

    path = tmp_path / "keys.json"
    assert main(["keys", "new", "bank-a", "--file", str(path), "--models", "text,defect"]) == 0
    key = capsys.readouterr().out.split()[1]
    stored = json.loads(path.read_text())["keys"]
    assert stored[0]["models"] == ["text", "defect"] and key not in path.read_text()
    assert KeyRing.from_file(path).check(key, "defect").name == "bank-a"
    assert main(["keys", "new", "bank-a", "--file", str(path)]) != 0  # the name is taken
    assert "already has a key named 'bank-a'" in capsys.readouterr().err
    assert main(["keys", "new", "ops", "--file", str(path), "--rate", "3"]) == 0
    assert len(KeyRing.from_file(path)) == 2
    path.write_text("{broken")
    assert main(["keys", "new", "x", "--file", str(path)]) != 0
    assert "is not JSON" in capsys.readouterr().err
