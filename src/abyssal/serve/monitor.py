"""Watch a running service: what comes in (feature drift), what goes out (prediction drift), how
fast it answers (latency) and how often it fails (error rate); export it as Prometheus metrics
and raise alerts, in Alertmanager's webhook format, to a URL.

Each served name gets a :class:`ModelMonitor`. The service hands it every answered request (the
JSON fields of the request, the fields of its prediction) and every outcome (status and time).

- **Inputs** are the requests' scalar fields (numbers, booleans, short text as categories; a
  field holding free text, with spaces, also gives its length in characters, ``FIELD:chars``).
  Their reference is the table the served version was trained on, when its config names one
  that is still on disk (``data.path``: the fraud and tabular solutions), else the version's
  first ``reference_size`` requests.
- **Outputs** are the predictions' scalar fields (a probability, a risk, a class); their
  reference is the version's first ``reference_size`` answers.
- Drift compares the last ``window`` requests with the reference through
  :func:`abyssal.data.drift.table_drift` (PSI and KS per field; id-like text is left out), once
  at least ``min_samples`` are in the window. A swap to another version starts afresh.
- Latency (99th percentile) and the error rate (refusals of bad input and failures; not
  authentication or rate limits, which are the client's set-up) are over the same window.

Alerts (:data:`ALERTS`): each is a condition on one served name, evaluated every
``interval_s``; when it starts holding the monitor posts a ``firing`` alert to the webhook,
and when it stops, ``resolved``: the body Prometheus' Alertmanager sends, so one receiver
(:mod:`abyssal.pipeline.webhook`, which can start the pipeline) takes both. :func:`alert_rules`
writes the same alerts as Prometheus rules over the exported metrics, for a service Prometheus
scrapes.

Example:
    >>> monitor = ModelMonitor("fraud", "fraud:3", MonitorSettings(min_samples=50))
    >>> monitor.observe([{"amount": 12.0}], [{"risk": 0.1}])
    >>> monitor.check().samples
    1
"""

from __future__ import annotations

import json
import logging
import math
import threading
import urllib.request
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from abyssal.core.errors import AbyssalError, ConfigError, DataError
from abyssal.data.drift import PSI_MAJOR, table_drift
from abyssal.data.tables import read_table, trained_table

log = logging.getLogger(__name__)

NOT_ERRORS = frozenset({401, 403, 429})
"""Statuses that are the client's set-up (key, permission, rate), not the service failing."""
MAX_TEXT_CATEGORY = 64
"""Text longer than this, or with spaces, is free text: its length is watched, not its value."""
MAX_REFERENCE_ROWS = 5000
"""A longer training table is sampled (seeded) to this many rows for the reference."""


@dataclass(frozen=True)
class MonitorSettings:
    """What a monitor compares and when it alerts.

    Attributes:
        window: the most recent requests compared with the reference.
        reference_size: requests (and answers) that make a version's reference when it has no
            training table (answers: always).
        min_samples: requests in the window before drift is judged.
        psi: PSI from which a field drifted (0.25: a major change).
        max_drifted: share of the input fields that may drift before the feature-drift alert
            (0: any one).
        prediction_psi: PSI of an output field from which the prediction-drift alert fires.
        p99_ms: the latency alert's limit on the window's 99th percentile.
        error_rate: the error-rate alert's limit on the window's share of failed requests.
        interval_s: seconds between alert evaluations.
        webhook: where alerts are posted (Alertmanager's webhook body); ``None``: exported
            and logged only.
        ignore: request and prediction fields left out of drift (e.g. a timestamp, which
            always moves, or a prediction's own latency).
    """

    window: int = 1000
    reference_size: int = 500
    min_samples: int = 200
    psi: float = PSI_MAJOR
    max_drifted: float = 0.0
    prediction_psi: float = PSI_MAJOR
    p99_ms: float = 1000.0
    error_rate: float = 0.05
    interval_s: float = 15.0
    webhook: str | None = None
    ignore: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("window", "reference_size", "min_samples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"monitor {name} must be >= 1, got {getattr(self, name)}")
        if self.min_samples > self.window:
            raise ConfigError(
                f"monitor min_samples ({self.min_samples}) is more than its window ({self.window})"
            )
        for name in ("psi", "prediction_psi", "p99_ms", "interval_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"monitor {name} must be > 0, got {getattr(self, name)}")
        for name in ("max_drifted", "error_rate"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"monitor {name} must be in [0, 1), got {getattr(self, name)}")
        if self.webhook is not None and not self.webhook.startswith(("http://", "https://")):
            raise ConfigError(f"the alert webhook must be an http(s) URL, got {self.webhook!r}")


@dataclass(frozen=True)
class Alert:
    """One alert: its name, severity and what it means."""

    name: str
    severity: str
    summary: str


ALERTS = (
    Alert("AbyssalFeatureDrift", "warning", "requests drifted from the model's reference data"),
    Alert("AbyssalPredictionDrift", "warning", "predictions drifted from the model's first ones"),
    Alert("AbyssalSlowAnswers", "critical", "99th-percentile latency over the limit"),
    Alert("AbyssalErrors", "critical", "share of failed requests over the limit"),
)
"""The monitor's alerts, in the order they are evaluated."""


@dataclass
class MonitorState:
    """A monitor's reading of its window.

    Attributes:
        model: the served name.
        version: the version served.
        samples: answered requests in the window.
        requests: requests in the window, refused ones included (latency, error rate).
        judged: whether there were enough (``min_samples``) to judge drift.
        reference: where the input reference came from (``training table PATH`` or
            ``first N requests``), ``None`` while it is being collected.
        feature_psi: PSI of each compared input field.
        drifted: the input fields that drifted.
        prediction_psi: PSI of each compared output field.
        p99_ms: 99th-percentile latency of the window (NaN without requests).
        error_rate: share of failed requests in the window (NaN without requests).
        problem: why drift could not be compared, if it could not.
        firing: the alerts whose condition holds.
    """

    model: str
    version: str
    samples: int = 0
    requests: int = 0
    judged: bool = False
    reference: str | None = None
    feature_psi: dict[str, float] = field(default_factory=dict)
    drifted: list[str] = field(default_factory=list)
    prediction_psi: dict[str, float] = field(default_factory=dict)
    p99_ms: float = math.nan
    error_rate: float = math.nan
    problem: str | None = None
    firing: list[str] = field(default_factory=list)


class ModelMonitor:
    """The window, references and alert state of one served name (thread-safe: requests are
    observed on the event loop, checks run on a worker thread)."""

    def __init__(
        self,
        model: str,
        version: str,
        settings: MonitorSettings | None = None,
        reference: pd.DataFrame | None = None,
        reference_source: str | None = None,
    ) -> None:
        self.model = model
        self.settings = settings or MonitorSettings()
        self._lock = threading.Lock()
        self.firing: dict[str, str] = {}  # alert name -> when it started firing
        self.reset(version, reference, reference_source)

    def reset(
        self, version: str, reference: pd.DataFrame | None = None, source: str | None = None
    ) -> None:
        """Start afresh for ``version`` (after a swap): empty windows, new references."""
        s = self.settings
        with self._lock:
            self.version = version
            self.inputs: deque[dict[str, Any]] = deque(maxlen=s.window)
            self.outputs: deque[dict[str, Any]] = deque(maxlen=s.window)
            self.outcomes: deque[tuple[bool, float]] = deque(maxlen=s.window)
            self.ref_inputs: list[dict[str, Any]] = []
            self.ref_outputs: list[dict[str, Any]] = []
            self.table = None if reference is None else features(reference, s.ignore)
            self.table_source = source

    def observe(self, requests: Sequence[Any], answers: Sequence[Any]) -> None:
        """Record answered requests (JSON objects) and their answers."""
        ins = [scalars(r, self.settings.ignore) for r in requests]
        outs = [scalars(a, self.settings.ignore) for a in answers]
        n = self.settings.reference_size
        with self._lock:
            self.inputs.extend(ins)
            self.outputs.extend(outs)
            if self.table is None and len(self.ref_inputs) < n:
                self.ref_inputs.extend(ins[: n - len(self.ref_inputs)])
            if len(self.ref_outputs) < n:
                self.ref_outputs.extend(outs[: n - len(self.ref_outputs)])

    def outcome(self, status: int, seconds: float) -> None:
        """Record one request's outcome (answered or refused) and its time."""
        if status in NOT_ERRORS:
            return
        with self._lock:
            self.outcomes.append((status >= 400, seconds))

    def check(self) -> MonitorState:
        """Compare the window with the references; which alerts' conditions hold."""
        s = self.settings
        with self._lock:
            version, inputs, outputs = self.version, list(self.inputs), list(self.outputs)
            outcomes = list(self.outcomes)
            table, ref_inputs, ref_outputs = self.table, list(self.ref_inputs), self.ref_outputs[:]
            source = self.table_source
        state = MonitorState(self.model, version, samples=len(inputs), requests=len(outcomes))
        if outcomes:
            failed = np.array([f for f, _ in outcomes])
            state.error_rate = float(failed.mean())
            state.p99_ms = float(np.percentile([t for _, t in outcomes], 99) * 1000)
        if table is not None:
            state.reference = source or "training table"
        elif len(ref_inputs) >= s.reference_size:
            state.reference = f"first {len(ref_inputs)} requests"
        if len(inputs) >= s.min_samples and state.reference is not None:
            state.judged = True
            reference = table if table is not None else pd.DataFrame(ref_inputs)
            state.feature_psi, state.drifted, state.problem = _drift(
                reference, pd.DataFrame(inputs), s.psi
            )
            if len(ref_outputs) >= s.reference_size:
                state.prediction_psi, _, problem = _drift(
                    pd.DataFrame(ref_outputs), pd.DataFrame(outputs), s.prediction_psi
                )
                state.problem = state.problem or problem
        state.firing = [a.name for a in ALERTS if _holds(a.name, state, s)]
        return state


def _holds(alert: str, state: MonitorState, s: MonitorSettings) -> bool:
    if alert == "AbyssalFeatureDrift":
        compared = max(1, len(state.feature_psi))
        return bool(state.drifted) and len(state.drifted) / compared > s.max_drifted
    if alert == "AbyssalPredictionDrift":
        return any(v >= s.prediction_psi for v in state.prediction_psi.values())
    enough = state.requests >= s.min_samples
    if alert == "AbyssalSlowAnswers":
        return enough and state.p99_ms > s.p99_ms
    return enough and state.error_rate > s.error_rate


def _drift(
    reference: pd.DataFrame, current: pd.DataFrame, psi: float
) -> tuple[dict[str, float], list[str], str | None]:
    """PSI per shared field and the drifted ones; ``({}, [], why)`` when nothing compares."""
    try:
        report = table_drift(reference, current, psi_threshold=psi)
    except DataError as e:
        return {}, [], str(e)
    return {f.feature: float(f.psi) for f in report.features}, list(report.drifted), None


def scalars(item: Any, ignore: Sequence[str] = ()) -> dict[str, Any]:
    """The fields of a JSON object a monitor compares: numbers, booleans and short text as
    they are, and free text's length as ``FIELD:chars`` (lists and objects are left out)."""
    out: dict[str, Any] = {}
    if not isinstance(item, Mapping):
        return out
    for key, value in item.items():
        name = str(key)
        if name in ignore or value is None:
            continue
        if isinstance(value, bool | int | float):
            out[name] = float(value) if not isinstance(value, bool) else value
        elif isinstance(value, str):
            if _free_text(value):
                out[f"{name}:chars"] = float(len(value))
            else:
                out[name] = value
    return out


def _free_text(value: str) -> bool:
    return len(value) > MAX_TEXT_CATEGORY or " " in value.strip()


def trained_reference(ref: str) -> tuple[pd.DataFrame | None, str | None]:
    """The table version ``ref`` was trained on (its config's ``data.path``, through the model
    store) and where it came from; ``(None, None)`` when it has none on disk (its first requests
    then make the reference)."""
    from abyssal.core.store import ModelStore

    try:
        path = trained_table(ModelStore().resolve(ref).config)
        if path is None:
            return None, None
        return read_table(path), f"training table {path.name}"
    except AbyssalError as e:
        log.warning("%s: no reference table (%s); its first requests make the reference", ref, e)
        return None, None


def features(table: pd.DataFrame, ignore: Sequence[str] = ()) -> pd.DataFrame:
    """A training table as a monitor sees requests: its columns but ``ignore``, a free-text
    column also as its length (``COLUMN:chars``), at most :data:`MAX_REFERENCE_ROWS` rows."""
    if len(table) > MAX_REFERENCE_ROWS:
        table = table.sample(MAX_REFERENCE_ROWS, random_state=0)
    out = table.drop(columns=[c for c in ignore if c in table.columns])
    for column in list(out.columns):
        values = out[column]
        if values.dtype == object or pd.api.types.is_string_dtype(values):
            text = values.dropna().astype(str)
            if len(text) and text.map(_free_text).mean() > 0.5:
                out[f"{column}:chars"] = values.map(
                    lambda v: len(v) if isinstance(v, str) else None
                )
    return out.reset_index(drop=True)


# -- alerts -------------------------------------------------------------------------------------


def transitions(monitor: ModelMonitor, state: MonitorState) -> list[dict[str, Any]]:
    """The alerts that started or stopped firing since the last check, as Alertmanager alert
    objects (``status`` ``firing`` or ``resolved``); updates the monitor's firing set."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    changed = []
    for alert in ALERTS:
        holds = alert.name in state.firing
        began = monitor.firing.get(alert.name)
        if holds and began is None:
            monitor.firing[alert.name] = now
            changed.append(_alert(alert, state, "firing", now, None))
        elif not holds and began is not None:
            del monitor.firing[alert.name]
            changed.append(_alert(alert, state, "resolved", began, now))
    return changed


def _alert(
    alert: Alert, state: MonitorState, status: str, starts: str, ends: str | None
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": alert.name, "severity": alert.severity, "model": state.model,
                   "version": state.version, "source": "abyssal"},
        "annotations": {"summary": alert.summary, "description": describe(alert.name, state)},
        "startsAt": starts,
        "endsAt": ends or "0001-01-01T00:00:00Z",
    }  # fmt: skip


def describe(alert: str, state: MonitorState) -> str:
    """One line on what an alert saw."""
    if alert == "AbyssalFeatureDrift":
        worst = sorted(state.feature_psi.items(), key=lambda kv: -kv[1])[:3]
        shown = ", ".join(f"{k} (PSI {v:.2f})" for k, v in worst)
        return (f"{len(state.drifted)} of {len(state.feature_psi)} input fields drifted from "
                f"{state.reference} over the last {state.samples} requests: {shown}")  # fmt: skip
    if alert == "AbyssalPredictionDrift":
        worst = sorted(state.prediction_psi.items(), key=lambda kv: -kv[1])[:3]
        return "outputs drifted: " + ", ".join(f"{k} (PSI {v:.2f})" for k, v in worst)
    if alert == "AbyssalSlowAnswers":
        return f"p99 {state.p99_ms:.0f} ms over the last {state.requests} requests"
    return (f"{state.error_rate:.1%} of the last {state.requests} requests failed or were "
            "refused as bad input")  # fmt: skip


def webhook_body(alerts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Alertmanager's webhook body (version 4) around ``alerts``."""
    firing = any(a["status"] == "firing" for a in alerts)
    common = {k: v for k, v in alerts[0]["labels"].items() if k in ("model", "source")}
    return {
        "version": "4",
        "status": "firing" if firing else "resolved",
        "receiver": "abyssal",
        "groupKey": f"abyssal/{common.get('model', '')}",
        "groupLabels": {"model": common.get("model", "")},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "",
        "alerts": list(alerts),
    }


def post_alerts(url: str, alerts: Sequence[dict[str, Any]], timeout_s: float = 5.0) -> int:
    """POST ``alerts`` to ``url`` in Alertmanager's webhook body; the HTTP status.

    Raises:
        AbyssalError: the webhook cannot be reached or answered an error.
    """
    data = json.dumps(webhook_body(alerts)).encode()
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            return int(answer.status)
    except OSError as e:  # URLError and HTTPError are OSErrors
        raise AbyssalError(f"the alert webhook {url} failed: {e}") from None


# -- Prometheus ---------------------------------------------------------------------------------


class MonitorMetrics:
    """The monitors' gauges in a service's Prometheus registry."""

    def __init__(self, prom: Any, registry: Any) -> None:
        labels = ["model", "version"]

        def gauge(name: str, text: str, extra: Sequence[str] = ()) -> Any:
            return prom.Gauge(name, text, [*labels, *extra], registry=registry)

        self.feature_psi = gauge("abyssal_feature_psi", "PSI of a request field", ["feature"])
        self.drifted = gauge("abyssal_features_drifted", "request fields that drifted")
        self.compared = gauge("abyssal_features_compared", "request fields compared")
        self.prediction_psi = gauge(
            "abyssal_prediction_psi", "PSI of a prediction field", ["output"]
        )
        self.samples = gauge("abyssal_monitor_samples", "answered requests in the window")
        self.p99 = gauge("abyssal_window_p99_seconds", "99th-percentile latency of the window")
        self.errors = gauge("abyssal_window_error_ratio", "share of failed requests in the window")
        self.firing = prom.Gauge("abyssal_alert_firing", "1 while an alert fires",
                                 ["model", "alertname"], registry=registry)  # fmt: skip
        self.fired = prom.Counter("abyssal_alerts", "alerts that started firing",
                                  ["model", "alertname"], registry=registry)  # fmt: skip

    def update(self, state: MonitorState) -> None:
        """Set every gauge of ``state``'s model from it."""
        keys = (state.model, state.version)
        for name, value in state.feature_psi.items():
            self.feature_psi.labels(*keys, name).set(value)
        for name, value in state.prediction_psi.items():
            self.prediction_psi.labels(*keys, name).set(value)
        self.drifted.labels(*keys).set(len(state.drifted))
        self.compared.labels(*keys).set(len(state.feature_psi))
        self.samples.labels(*keys).set(state.samples)
        self.p99.labels(*keys).set(state.p99_ms / 1000)
        self.errors.labels(*keys).set(state.error_rate)
        for alert in ALERTS:
            self.firing.labels(state.model, alert.name).set(int(alert.name in state.firing))


def alert_rules(settings: MonitorSettings | None = None, *, for_: str = "5m") -> str:
    """Prometheus alerting rules (YAML) for the monitor's :data:`ALERTS`, with ``settings``'
    limits, over the metrics a service exports: drift from the monitor's gauges, latency and
    errors from the request counters and histogram (so Prometheus computes them over its own
    window)."""
    s = settings or MonitorSettings()
    not_errors = "|".join(("unauthenticated", "forbidden", "rate_limited"))
    exprs = {
        "AbyssalFeatureDrift": (
            f"abyssal_features_drifted > {s.max_drifted} * abyssal_features_compared"
            " and abyssal_features_drifted > 0"
        ),
        "AbyssalPredictionDrift": f"max by (model, version) (abyssal_prediction_psi) >= "
        f"{s.prediction_psi:g}",
        "AbyssalSlowAnswers": (
            "histogram_quantile(0.99, sum by (model, le) "
            f"(rate(abyssal_request_seconds_bucket[5m]))) > {s.p99_ms / 1000:g}"
        ),
        "AbyssalErrors": (
            f'sum by (model) (rate(abyssal_errors_total{{kind!~"{not_errors}"}}[5m])) / '
            f"sum by (model) (rate(abyssal_requests_total[5m])) > {s.error_rate:g}"
        ),
    }
    lines = [
        "# Prometheus alerting rules for an abyssal service (generated by `abyssal alert-rules`).",
        "# Load with `rule_files: [abyssal-alerts.yml]`; route them to `abyssal pipeline webhook`",
        "# through Alertmanager to start the pipeline when one fires.",
        "groups:",
        "  - name: abyssal",
        "    rules:",
    ]
    for alert in ALERTS:
        lines += [
            f"      - alert: {alert.name}",
            f"        expr: {json.dumps(exprs[alert.name])}",
            f"        for: {for_}",
            "        labels:",
            f"          severity: {alert.severity}",
            "          source: abyssal",
            "        annotations:",
            f"          summary: {json.dumps(alert.summary + ' ({{ $labels.model }})')}",
        ]
    return "\n".join(lines) + "\n"
