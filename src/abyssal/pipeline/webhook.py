"""A webhook that lets an alert start a pipeline run: Prometheus Alertmanager's ``webhook_configs``
posts its alerts here, and a firing alert starts ``abyssal pipeline run FILE``.

Endpoints (:meth:`AlertTrigger.handle`, served by :func:`serve_webhook`):

- ``POST /alerts``: an Alertmanager webhook body (version ``"4"``)::

      {"version": "4", "status": "firing", "alerts": [
          {"status": "firing", "labels": {"alertname": "FraudDrift", ...},
           "annotations": {...}, "startsAt": "2026-11-28T10:15:02Z"}, ...], ...}

  When at least one alert is firing (and, with :attr:`AlertTrigger.alerts`, is one of those
  names) the pipeline's command starts in its own session (a Ctrl-C to the webhook leaves it
  running), its output in ``<state>/triggered/<UTC time>.log``: 202 ``{"action": "started",
  "pid": ..., "log": ...}``. No second run starts while the one it started is still going (202
  ``{"action": "running", "pid": ...}``) nor within ``cooldown_s`` of the last start (202
  ``{"action": "cooling", "seconds_left": ...}``): Alertmanager repeats a notification while
  its alert fires, and one run is enough. A batch with nothing matching firing is answered 200
  ``{"action": "ignored", "why": ...}``. Every accepted batch adds one JSON line to
  ``<state>/alerts.jsonl``: the time, the alerts' names and statuses, and what was done.
- ``GET /healthz``: 200 ``{"status": "alive", "running": bool, "last_started": ISO or null}``.

Errors are JSON ``{"error": message}``: 400 a body that is not a JSON object; 401 no or a wrong
``Authorization: Bearer TOKEN`` (when a token is set); 404 an unknown path; 405 the wrong
method; 413 a body over :data:`MAX_BODY_BYTES` (refused before it is read); 422 a body that is
not an Alertmanager batch, the field named (``alerts[2].labels.alertname is missing``); 500 a
command that could not start. Alertmanager retries 5xx answers, never 4xx ones.

Example:
    >>> trigger = AlertTrigger("pipelines/fraud.yaml", alerts={"FraudDrift"})  # doctest: +SKIP
    >>> serve_webhook(trigger, port=9095).serve_forever()  # doctest: +SKIP
"""

from __future__ import annotations

import hmac
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from abyssal.core.atomic import append_atomic
from abyssal.core.clock import utc_now
from abyssal.core.errors import AbyssalError, ConfigError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
"""A larger body is refused with 413 (Alertmanager's batches are a few KiB)."""

ROUTES = {"/alerts": "POST", "/healthz": "GET"}
"""Each path and the one method it answers."""

ALERT_STATUSES = ("firing", "resolved")


class WebhookRefusal(AbyssalError):
    """A request the webhook refuses: ``status`` is the HTTP status, the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Alert:
    """One alert of a batch: its ``alertname`` label and its status (``firing``/``resolved``)."""

    name: str
    status: str


def parse_alerts(body: bytes) -> list[Alert]:
    """The alerts of an Alertmanager webhook body.

    Raises:
        WebhookRefusal: 400 the body is not a JSON object; 422 it is not an Alertmanager batch
            (the field named, e.g. ``alerts[2].labels.alertname is missing``).

    Example:
        >>> parse_alerts(b'{"alerts": [{"status": "firing", "labels": {"alertname": "Up"}}]}')
        [Alert(name='Up', status='firing')]
    """
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise WebhookRefusal(400, f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise WebhookRefusal(400, f"the body is a JSON {_json_type(data)}, not an object")
    version = data.get("version")
    if version is not None and version != "4":
        raise _unprocessable(f'version is {version!r}; this webhook reads Alertmanager\'s "4"')
    if "status" in data:
        _check_status(data["status"], "status")
    if "alerts" not in data:
        raise _unprocessable("alerts is missing")
    if not isinstance(data["alerts"], list):
        raise _unprocessable(f"alerts must be an array, got {_json_type(data['alerts'])}")
    return [_parse_alert(item, f"alerts[{k}]") for k, item in enumerate(data["alerts"])]


def _parse_alert(item: Any, where: str) -> Alert:
    if not isinstance(item, dict):
        raise _unprocessable(f"{where} must be an object, got {_json_type(item)}")
    for key in ("status", "labels"):
        if key not in item:
            raise _unprocessable(f"{where}.{key} is missing")
    status = _check_status(item["status"], f"{where}.status")
    labels = item["labels"]
    if not isinstance(labels, dict):
        raise _unprocessable(f"{where}.labels must be an object, got {_json_type(labels)}")
    if "alertname" not in labels:
        raise _unprocessable(f"{where}.labels.alertname is missing")
    name = labels["alertname"]
    if not isinstance(name, str) or not name:
        raise _unprocessable(f"{where}.labels.alertname must be a non-empty string, got {name!r}")
    for key, kind in (("annotations", dict), ("startsAt", str), ("endsAt", str)):
        if key in item and not isinstance(item[key], kind):
            expected = "an object" if kind is dict else "a string"
            got = _json_type(item[key])
            raise _unprocessable(f"{where}.{key} must be {expected}, got {got}")
    return Alert(name, status)


def _check_status(value: Any, where: str) -> str:
    if value not in ALERT_STATUSES:
        raise _unprocessable(f"{where} must be 'firing' or 'resolved', got {value!r}")
    return value


def _unprocessable(message: str) -> WebhookRefusal:
    return WebhookRefusal(422, message)


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type (``object``, ``array``, ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    names = {dict: "object", list: "array", str: "string", int: "number", float: "number"}
    return names.get(type(value), type(value).__name__)


class AlertTrigger:
    """Starts a pipeline's run when an alert fires (see the module's docstring).

    Args:
        file: the pipeline YAML; it is loaded now, so a broken file fails at start, not at the
            first alert.
        overrides: ``key=value`` over the file, as for ``abyssal pipeline run``.
        state: where the webhook's records go (``alerts.jsonl``, ``triggered/*.log``); default
            the pipeline's state folder (:func:`abyssal.pipeline.run.state_folder`). When given,
            the default command passes it on (``--state``).
        alerts: the alert names that may start a run; ``None``: any firing alert.
        cooldown_s: no new run within this many seconds of the last start.
        token: when set, ``POST /alerts`` needs ``Authorization: Bearer TOKEN``.
        command: what a firing alert runs; default ``python -m abyssal pipeline run FILE
            [key=value ...]``.

    Raises:
        ConfigError: a bad pipeline file, an empty ``alerts`` or ``token``, a negative
            ``cooldown_s`` or an empty ``command``.
    """

    def __init__(
        self,
        file: str | Path,
        overrides: Sequence[str] = (),
        *,
        state: str | Path | None = None,
        alerts: Collection[str] | None = None,
        cooldown_s: float = 600.0,
        token: str | None = None,
        command: Sequence[str] | None = None,
    ) -> None:
        from abyssal.pipeline.run import state_folder
        from abyssal.pipeline.spec import load_pipeline

        cfg = load_pipeline(file, list(overrides))
        self.pipeline = cfg.name
        self.state = Path(state) if state is not None else state_folder(cfg)
        if isinstance(alerts, str):
            alerts = {alerts}
        if alerts is not None and not alerts:
            raise ConfigError("alerts names no alert; give None to let any firing alert start")
        self.alerts = frozenset(alerts) if alerts is not None else None
        if not cooldown_s >= 0:
            raise ConfigError(f"cooldown_s must be >= 0 seconds, got {cooldown_s}")
        self.cooldown_s = float(cooldown_s)
        if token is not None and not token:
            raise ConfigError("the webhook's token is empty; give None for no token")
        self._token = token
        if command is None:
            command = [sys.executable, "-m", "abyssal", "pipeline", "run", str(file), *overrides]
            if state is not None:
                command += ["--state", str(state)]
        if not command:
            raise ConfigError("the webhook's command is empty")
        self.command = [str(part) for part in command]
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._last_start: float | None = None  # time.monotonic() of the last start
        self._last_started: str | None = None  # its UTC time, ISO-8601

    @property
    def running(self) -> bool:
        """Whether a run this trigger started is still going."""
        with self._lock:
            return self._is_running()

    def _is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the last run it started to end; its exit status (``None``: none started).

        Raises:
            subprocess.TimeoutExpired: it is still running after ``timeout`` seconds.
        """
        with self._lock:
            proc = self._proc
        return None if proc is None else proc.wait(timeout)

    def check_request(
        self, method: str, path: str, headers: Mapping[str, str]
    ) -> tuple[int, dict[str, Any]] | None:
        """The refusal of a request by its path, method and token (404, 405, 401), or ``None``
        when the body is worth reading."""
        route = urlsplit(path).path
        if route not in ROUTES:
            return 404, {"error": f"no such path {route!r}: POST /alerts or GET /healthz"}
        if method.upper() != ROUTES[route]:
            return 405, {"error": f"{route} answers {ROUTES[route]}, not {method}"}
        if route == "/alerts" and self._token is not None:
            given = _bearer(headers)
            if given is None:
                return 401, {"error": "no token: send the header 'Authorization: Bearer TOKEN'"}
            if not hmac.compare_digest(given.encode(), self._token.encode()):
                return 401, {"error": "wrong token in the Authorization header"}
        return None

    def handle(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        """Answer one request: its HTTP status and JSON body (see the module's docstring)."""
        refused = self.check_request(method, path, headers)
        if refused is not None:
            return refused
        if urlsplit(path).path == "/healthz":
            return 200, self.health()
        if len(body) > MAX_BODY_BYTES:
            return 413, {"error": f"the body is over {MAX_BODY_BYTES} bytes"}
        try:
            alerts = parse_alerts(body)
        except WebhookRefusal as exc:
            return exc.status, {"error": str(exc)}
        return self._decide(alerts)

    def health(self) -> dict[str, Any]:
        """``{"status": "alive", "running": bool, "last_started": ISO or None}``."""
        with self._lock:
            return {"status": "alive", "running": self._is_running(),
                    "last_started": self._last_started}  # fmt: skip

    def _decide(self, alerts: list[Alert]) -> tuple[int, dict[str, Any]]:
        firing = [a for a in alerts if a.status == "firing"]
        matching = [a for a in firing if self.alerts is None or a.name in self.alerts]
        with self._lock:
            if not matching:
                status, answer = 200, {"action": "ignored", "why": self._why_ignored(firing)}
            elif self._is_running():
                assert self._proc is not None
                status, answer = 202, {"action": "running", "pid": self._proc.pid}
            elif (left := self._cooldown_left()) > 0:
                status, answer = 202, {"action": "cooling", "seconds_left": round(left, 1)}
            else:
                status, answer = self._start(matching)
            self._record(alerts, answer)
        batch = ", ".join(f"{a.name} ({a.status})" for a in alerts) or "no alerts"
        done = {k: v for k, v in answer.items() if k != "action"}
        log.info("%s: %s -> %s %s", self.pipeline, batch, answer["action"], _brief(done))
        return status, answer

    def _why_ignored(self, firing: list[Alert]) -> str:
        if not firing:
            return "no alert in the batch is firing"
        names = ", ".join(sorted({a.name for a in firing}))
        assert self.alerts is not None
        return f"the firing alerts ({names}) are not among {', '.join(sorted(self.alerts))}"

    def _cooldown_left(self) -> float:
        if self._last_start is None:
            return 0.0
        return self.cooldown_s - (time.monotonic() - self._last_start)

    def _start(self, matching: list[Alert]) -> tuple[int, dict[str, Any]]:
        """Start the command, its output in a new ``triggered/<UTC time>.log``."""
        names = ", ".join(sorted({a.name for a in matching}))
        path = _new_log(self.state / "triggered")
        with path.open("ab") as out:
            out.write(f"# {utc_now()}: started by {names}: {' '.join(self.command)}\n".encode())
            out.flush()
            try:
                proc = subprocess.Popen(
                    self.command,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                message = f"could not start {self.command[0]}: {exc}"
                out.write(f"# {message}\n".encode())
                return 500, {"action": "failed", "error": message, "log": str(path)}
        self._proc = proc
        self._last_start = time.monotonic()
        self._last_started = utc_now(timespec="seconds")
        return 202, {"action": "started", "pid": proc.pid, "log": str(path)}

    def _record(self, alerts: list[Alert], answer: dict[str, Any]) -> None:
        """One line in ``alerts.jsonl``; a failed write is logged, not raised (the decision
        stands, and Alertmanager would only retry it)."""
        line = {"time": utc_now(), "alerts": [{"name": a.name, "status": a.status} for a in alerts],
                **answer}  # fmt: skip
        try:
            self.state.mkdir(parents=True, exist_ok=True)
            append_atomic(self.state / "alerts.jsonl", (json.dumps(line) + "\n").encode())
        except OSError as exc:
            log.warning("could not record the alerts in %s: %s", self.state / "alerts.jsonl", exc)


def _new_log(folder: Path) -> Path:
    """A new, empty ``<folder>/<UTC time>.log`` (``-2``, ``-3``, ... when the second is taken)."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for k in range(1, 1000):
        path = folder / (f"{stamp}.log" if k == 1 else f"{stamp}-{k}.log")
        try:
            path.open("xb").close()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free log name {stamp}-*.log in {folder}")


def _bearer(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, or ``None``."""
    value = headers.get("Authorization")
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _brief(fields: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in fields.items())


class WebhookServer(ThreadingHTTPServer):
    """A threading HTTP server answering through an :class:`AlertTrigger`."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], trigger: AlertTrigger) -> None:
        self.trigger = trigger
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: WebhookServer
    server_version = "abyssal-webhook"

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def do_PUT(self) -> None:
        self._answer()

    def do_DELETE(self) -> None:
        self._answer()

    def do_PATCH(self) -> None:
        self._answer()

    def _answer(self) -> None:
        trigger = self.server.trigger
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self._send(400, {"error": "Content-Length is not a whole number >= 0"})
            return
        if length > MAX_BODY_BYTES:  # refused unread; HTTP/1.0 closes the connection
            refused = trigger.check_request(self.command, self.path, self.headers)
            self._send(*(refused or (413, {"error": f"the body is over {MAX_BODY_BYTES} bytes"})))
            return
        body = self.rfile.read(length)
        self._send(*trigger.handle(self.command, self.path, self.headers, body))

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", "Bearer")
        if status == 405:
            self.send_header("Allow", ROUTES[urlsplit(self.path).path])
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def serve_webhook(
    trigger: AlertTrigger, host: str = "127.0.0.1", port: int = 9095
) -> ThreadingHTTPServer:
    """A server bound to ``host:port`` (0: any free port, see ``server.server_address``) that
    answers through ``trigger``; the caller runs ``serve_forever()`` and ``server_close()``.

    Example:
        >>> server = serve_webhook(AlertTrigger("pipelines/fraud.yaml"), port=0)  # doctest: +SKIP
        >>> threading.Thread(target=server.serve_forever, daemon=True).start()  # doctest: +SKIP
    """
    server = WebhookServer((host, port), trigger)
    log.info("webhook for %s listening on %s:%s", trigger.pipeline, *server.server_address[:2])
    return server
