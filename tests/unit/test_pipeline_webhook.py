"""The Alertmanager webhook: refusals, starting the pipeline's command once, the cooldown, the
alert-name filter, its records, one HTTP round trip and the CLI."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from abyssal.pipeline import webhook
from abyssal.pipeline.webhook import MAX_BODY_BYTES, AlertTrigger, parse_alerts, serve_webhook

SLEEP_1S = [sys.executable, "-c", "import time; time.sleep(1)"]


@pytest.fixture
def pipeline_file(tmp_path: Path) -> Path:
    path = tmp_path / "nightly.yaml"
    path.write_text("solution: fraud\n")
    return path


def make(pipeline_file: Path, tmp_path: Path, **kwargs: Any) -> AlertTrigger:
    kwargs.setdefault("state", tmp_path / "state")
    kwargs.setdefault("command", [sys.executable, "-c", "pass"])
    return AlertTrigger(pipeline_file, **kwargs)


def batch(*alerts: tuple[str, str]) -> bytes:
    """An Alertmanager webhook body with ``(alertname, status)`` alerts."""
    items = [
        {"status": status, "labels": {"alertname": name, "severity": "page"},
         "annotations": {"summary": "s"}, "startsAt": "2026-11-28T10:15:02Z"}
        for name, status in alerts
    ]  # fmt: skip
    status = "firing" if any(s == "firing" for _, s in alerts) else "resolved"
    body = {"version": "4", "status": status, "receiver": "abyssal", "alerts": items}
    return json.dumps(body).encode()


def post(trigger: AlertTrigger, body: bytes, headers: dict[str, str] | None = None) -> Any:
    return trigger.handle("POST", "/alerts", headers or {}, body)


def records(trigger: AlertTrigger) -> list[dict[str, Any]]:
    path = trigger.state / "alerts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{broken", 400, "the body is not JSON"),
        (b"\xff\xfe\x00", 400, "the body is not JSON"),
        (b"[1, 2]", 400, "the body is a JSON array, not an object"),
        (b'{"version": "3", "alerts": []}', 422, "version is '3'"),
        (b'{"status": "odd", "alerts": []}', 422, "status must be 'firing' or 'resolved'"),
        (b'{"version": "4"}', 422, "alerts is missing"),
        (b'{"alerts": {}}', 422, "alerts must be an array, got object"),
        (b'{"alerts": [7]}', 422, "alerts[0] must be an object, got number"),
        (b'{"alerts": [{"labels": {"alertname": "A"}}]}', 422, "alerts[0].status is missing"),
        (b'{"alerts": [{"status": "on", "labels": {}}]}', 422, "alerts[0].status must be"),
        (b'{"alerts": [{"status": "firing"}]}', 422, "alerts[0].labels is missing"),
        (b'{"alerts": [{"status": "firing", "labels": []}]}', 422, "labels must be an object"),
        (
            b'{"alerts": [{"status": "firing", "labels": {"alertname": "A"}}, '
            b'{"status": "firing", "labels": {"alertname": "B"}}, '
            b'{"status": "firing", "labels": {"severity": "page"}}]}',
            422,
            "alerts[2].labels.alertname is missing",
        ),
        (
            b'{"alerts": [{"status": "firing", "labels": {"alertname": ""}}]}',
            422,
            "alerts[0].labels.alertname must be a non-empty string",
        ),
        (
            b'{"alerts": [{"status": "firing", "labels": {"alertname": "A"}, "annotations": 1}]}',
            422,
            "alerts[0].annotations must be an object, got number",
        ),
        (
            b'{"alerts": [{"status": "firing", "labels": {"alertname": "A"}, "startsAt": null}]}',
            422,
            "alerts[0].startsAt must be a string, got null",
        ),
    ],
)
def test_a_bad_body_is_refused_with_the_field_named(
    pipeline_file: Path, tmp_path: Path, body: bytes, status: int, message: str
) -> None:
    trigger = make(pipeline_file, tmp_path)
    got, answer = post(trigger, body)
    assert got == status and message in answer["error"], answer
    assert not trigger.running and not (trigger.state / "alerts.jsonl").exists()


def test_paths_methods_size_and_token_are_checked(pipeline_file: Path, tmp_path: Path) -> None:
    trigger = make(pipeline_file, tmp_path, token="s3cret")
    body = batch(("FraudDrift", "firing"))
    assert trigger.handle("POST", "/nope", {}, body)[0] == 404
    status, answer = trigger.handle("GET", "/alerts", {}, b"")
    assert status == 405 and "/alerts answers POST, not GET" in answer["error"]
    assert trigger.handle("POST", "/healthz", {}, b"")[0] == 405
    status, answer = post(trigger, body)
    assert status == 401 and "no token" in answer["error"]
    status, answer = post(trigger, body, {"Authorization": "Bearer wrong"})
    assert status == 401 and "wrong token" in answer["error"]
    assert post(trigger, body, {"Authorization": "Basic s3cret"})[0] == 401
    big = b" " * (MAX_BODY_BYTES + 1)
    status, answer = post(trigger, big, {"authorization": "Bearer s3cret"})
    assert status == 413 and str(MAX_BODY_BYTES) in answer["error"]
    status, answer = post(trigger, body, {"authorization": "Bearer s3cret"})
    assert status == 202 and answer["action"] == "started"
    assert trigger.wait(10) == 0
    # the health check needs no token
    status, health = trigger.handle("GET", "/healthz?probe=1", {}, b"")
    assert status == 200 and health["status"] == "alive" and health["running"] is False
    assert health["last_started"].endswith("+00:00")


def test_bad_settings_are_refused(pipeline_file: Path, tmp_path: Path) -> None:
    from abyssal.core.errors import ConfigError

    with pytest.raises(ConfigError, match="names no alert"):
        make(pipeline_file, tmp_path, alerts=set())
    with pytest.raises(ConfigError, match="cooldown_s must be >= 0"):
        make(pipeline_file, tmp_path, cooldown_s=-1)
    with pytest.raises(ConfigError, match="token is empty"):
        make(pipeline_file, tmp_path, token="")
    with pytest.raises(ConfigError, match="does not exist"):
        make(tmp_path / "missing.yaml", tmp_path)


def test_a_firing_alert_starts_the_command(pipeline_file: Path, tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    command = [
        sys.executable, "-c",
        "import pathlib, sys; pathlib.Path(sys.argv[1]).write_text('ran'); print('hello')",
        str(ran),
    ]  # fmt: skip
    trigger = make(pipeline_file, tmp_path, command=command)
    assert trigger.health() == {"status": "alive", "running": False, "last_started": None}
    status, answer = post(trigger, batch(("FraudDrift", "firing"), ("DiskFull", "resolved")))
    assert status == 202 and answer["action"] == "started" and answer["pid"] > 0
    assert trigger.wait(10) == 0
    assert ran.read_text() == "ran"
    log = Path(answer["log"])
    assert log.parent == trigger.state / "triggered" and log.name.endswith("Z.log")
    assert "started by FraudDrift" in log.read_text() and "hello" in log.read_text()
    [line] = records(trigger)
    assert line["action"] == "started" and line["pid"] == answer["pid"]
    assert line["alerts"] == [
        {"name": "FraudDrift", "status": "firing"},
        {"name": "DiskFull", "status": "resolved"},
    ]
    assert line["time"].endswith("+00:00")


def test_a_second_alert_while_running_starts_nothing(pipeline_file: Path, tmp_path: Path) -> None:
    trigger = make(pipeline_file, tmp_path, command=SLEEP_1S, cooldown_s=0)
    status, first = post(trigger, batch(("FraudDrift", "firing")))
    assert status == 202 and first["action"] == "started"
    assert trigger.handle("GET", "/healthz", {}, b"")[1]["running"] is True
    status, second = post(trigger, batch(("FraudDrift", "firing")))
    assert status == 202 and second == {"action": "running", "pid": first["pid"]}
    assert trigger.wait(10) == 0
    status, third = post(trigger, batch(("FraudDrift", "firing")))  # no cooldown: starts again
    assert status == 202 and third["action"] == "started" and third["pid"] != first["pid"]
    assert third["log"] != first["log"]
    trigger.wait(10)
    assert [r["action"] for r in records(trigger)] == ["started", "running", "started"]


def test_the_cooldown_holds_off_a_new_run(pipeline_file: Path, tmp_path: Path) -> None:
    trigger = make(pipeline_file, tmp_path, cooldown_s=60)
    assert post(trigger, batch(("FraudDrift", "firing")))[1]["action"] == "started"
    trigger.wait(10)
    status, answer = post(trigger, batch(("FraudDrift", "firing")))
    assert status == 202 and answer["action"] == "cooling" and 50 < answer["seconds_left"] <= 60

    short = make(pipeline_file, tmp_path, cooldown_s=0.3, state=tmp_path / "short")
    assert post(short, batch(("FraudDrift", "firing")))[1]["action"] == "started"
    short.wait(10)
    time.sleep(0.35)
    assert post(short, batch(("FraudDrift", "firing")))[1]["action"] == "started"
    short.wait(10)


def test_only_the_named_alerts_start_a_run(pipeline_file: Path, tmp_path: Path) -> None:
    trigger = make(pipeline_file, tmp_path, alerts={"FraudDrift", "FraudAUPRCDrop"})
    status, answer = post(trigger, batch(("DiskFull", "firing"), ("FraudDrift", "resolved")))
    assert status == 200 and answer["action"] == "ignored"
    assert "(DiskFull) are not among FraudAUPRCDrop, FraudDrift" in answer["why"]
    assert not trigger.running and not (trigger.state / "triggered").exists()
    status, answer = post(trigger, batch(("DiskFull", "firing"), ("FraudDrift", "firing")))
    assert status == 202 and answer["action"] == "started"
    trigger.wait(10)
    assert [r["action"] for r in records(trigger)] == ["ignored", "started"]


def test_resolved_alerts_and_empty_batches_are_ignored(pipeline_file: Path, tmp_path: Path) -> None:
    trigger = make(pipeline_file, tmp_path)
    status, answer = post(trigger, batch(("FraudDrift", "resolved")))
    assert status == 200 and answer == {
        "action": "ignored",
        "why": "no alert in the batch is firing",
    }
    assert post(trigger, b'{"alerts": []}')[1]["action"] == "ignored"
    assert trigger.wait(1) is None
    assert [r["alerts"] for r in records(trigger)] == [
        [{"name": "FraudDrift", "status": "resolved"}],
        [],
    ]


def test_a_command_that_cannot_start_is_a_500(pipeline_file: Path, tmp_path: Path) -> None:
    trigger = make(pipeline_file, tmp_path, command=[str(tmp_path / "no-such-program")])
    status, answer = post(trigger, batch(("FraudDrift", "firing")))
    assert status == 500 and answer["action"] == "failed"
    assert "could not start" in answer["error"]
    assert records(trigger)[0]["action"] == "failed"
    assert trigger.health()["last_started"] is None


def test_the_default_command_runs_the_pipeline(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    trigger = AlertTrigger(root / "pipelines" / "fraud.yaml", ["perf.batch=8"], alerts="Drift")
    assert trigger.pipeline == "fraud" and trigger.alerts == frozenset({"Drift"})
    assert trigger.state == tmp_path / "abyssal-home" / "pipelines" / "fraud"
    assert trigger.command[1:4] == ["-m", "abyssal", "pipeline"]
    assert trigger.command[-2:] == [str(root / "pipelines" / "fraud.yaml"), "perf.batch=8"]
    given = AlertTrigger(root / "pipelines" / "fraud.yaml", state=tmp_path / "s")
    assert given.command[-2:] == ["--state", str(tmp_path / "s")]


def test_parse_alerts_reads_names_and_statuses() -> None:
    alerts = parse_alerts(batch(("A", "firing"), ("B", "resolved")))
    assert [(a.name, a.status) for a in alerts] == [("A", "firing"), ("B", "resolved")]


def test_an_http_round_trip(
    pipeline_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ran = tmp_path / "ran"
    command = [sys.executable, "-c", "import pathlib, sys; pathlib.Path(sys.argv[1]).touch()"]
    trigger = make(pipeline_file, tmp_path, command=[*command, str(ran)], token="s3cret")
    server = serve_webhook(trigger, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    url = f"http://{host}:{port}"
    try:
        with caplog.at_level("INFO", logger=webhook.__name__):
            request = urllib.request.Request(
                f"{url}/alerts",
                data=batch(("FraudDrift", "firing")),
                headers={"Authorization": "Bearer s3cret", "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as reply:
                answer = json.loads(reply.read())
                assert reply.status == 202 and reply.headers["Content-Type"] == "application/json"
        assert answer["action"] == "started"
        assert trigger.wait(10) == 0 and ran.exists()
        assert any("FraudDrift (firing) -> started" in r.getMessage() for r in caplog.records)

        with urllib.request.urlopen(f"{url}/healthz", timeout=10) as reply:
            assert json.loads(reply.read())["last_started"] is not None

        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(f"{url}/alerts", data=b"{}"), timeout=10)
        assert refused.value.code == 401 and refused.value.headers["WWW-Authenticate"] == "Bearer"
        assert "no token" in json.loads(refused.value.read())["error"]

        # an oversized body is refused from its Content-Length, before any of it is sent
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(
                b"POST /alerts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n"
                + f"Content-Length: {MAX_BODY_BYTES + 1}\r\n\r\n".encode()
            )
            reply_bytes = sock.makefile("rb").read()
        assert reply_bytes.startswith(b"HTTP/1.0 413") and b"is over" in reply_bytes
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_the_cli_takes_the_webhook_arguments(pipeline_file: Path, tmp_path: Path) -> None:
    from abyssal.cli.main import build_parser
    from abyssal.cli.pipeline import cmd_pipeline_webhook

    args, extra = build_parser().parse_known_args(
        ["pipeline", "webhook", str(pipeline_file), "perf.batch=8", "--host", "0.0.0.0",
         "--port", "0", "--state", str(tmp_path / "s"), "--alerts", "A, B", "--cooldown-s",
         "30", "--token-env", "HOOK_TOKEN"]
    )  # fmt: skip
    assert not extra and args.handler is cmd_pipeline_webhook
    assert (args.file, args.overrides, args.host, args.port) == (
        str(pipeline_file), ["perf.batch=8"], "0.0.0.0", 0
    )  # fmt: skip
    assert (args.alerts, args.cooldown_s, args.token_env) == ("A, B", 30.0, "HOOK_TOKEN")
    defaults, _ = build_parser().parse_known_args(["pipeline", "webhook", str(pipeline_file)])
    assert (defaults.host, defaults.port, defaults.cooldown_s) == ("127.0.0.1", 9095, 600.0)
    assert defaults.alerts is None and defaults.token_env is None and defaults.state is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["pipeline", "webhook", str(pipeline_file), "--port", "70000"])


def test_the_cli_refuses_a_missing_token_variable(
    pipeline_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from abyssal.cli.main import main

    monkeypatch.delenv("HOOK_TOKEN", raising=False)
    hook = ["pipeline", "webhook", str(pipeline_file), "--port", "0"]
    assert main([*hook, "--token-env", "HOOK_TOKEN"]) == 1
    assert "--token-env HOOK_TOKEN: the environment variable is not set" in capsys.readouterr().err
    monkeypatch.setenv("HOOK_TOKEN", "  ")
    assert main([*hook, "--token-env", "HOOK_TOKEN"]) == 1
    assert "the environment variable is empty" in capsys.readouterr().err
    assert main([*hook, "--alerts", " , "]) == 1
    assert "--alerts names no alert" in capsys.readouterr().err


def test_the_cli_serves_until_ctrl_c(
    pipeline_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from abyssal.cli.main import main

    served = []

    def interrupted(server: Any, *args: Any, **kwargs: Any) -> None:
        served.append(server.server_address)
        raise KeyboardInterrupt

    monkeypatch.setattr(webhook.WebhookServer, "serve_forever", interrupted)
    monkeypatch.setenv("HOOK_TOKEN", "s3cret")
    argv = ["pipeline", "webhook", str(pipeline_file), "--port", "0", "--token-env", "HOOK_TOKEN",
            "--state", str(tmp_path / "s")]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    port = served[0][1]
    assert f"listening on http://127.0.0.1:{port}" in out
    assert "webhook_configs:" in out and f"- url: http://127.0.0.1:{port}/alerts" in out
    assert "credentials: <the value of $HOOK_TOKEN>" in out and "s3cret" not in out
    assert out.rstrip().endswith("stopped")
