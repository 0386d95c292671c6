"""Live readings of running services (``abyssal serve``): each URL's ``/v1/models``,
``/v1/load`` and ``/metrics``, polled from the dashboard's server (the browser talks only to
the dashboard). A service that does not answer is shown as down with the reason, never an error
page. Successive polls give rates (requests per second, busy share).

Example:
    >>> watch = ServiceWatch(["http://127.0.0.1:8000"])  # doctest: +SKIP
    >>> (await watch.poll())[0]["up"]  # doctest: +SKIP
    True
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

from abyssal.core.optional import require
from abyssal.pipeline.charts import esc, num
from abyssal.ui.layout import badge, muted, page

POLL_TIMEOUT_S = 1.5
"""How long one service may take to answer a poll before it counts as down."""


def metric_totals(text: str) -> dict[str, float]:
    """The figures the dashboard shows, summed over labels, from Prometheus text: requests
    (total and by status), errors, latency sum and count, queue depth.

    Example:
        >>> metric_totals('abyssal_requests_total{model="a",version="a:1",status="200"} 3.0')
        {'requests': 3.0, 'requests_200': 3.0}
    """
    parser = require("prometheus_client.parser", extra="serve", purpose="reading /metrics")
    out: dict[str, float] = {}
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            key = _key(sample.name, sample.labels)
            if key:
                out[key] = out.get(key, 0.0) + float(sample.value)
                if key == "requests" and "status" in sample.labels:
                    status = f"requests_{sample.labels['status']}"
                    out[status] = out.get(status, 0.0) + float(sample.value)
    return out


def _key(name: str, labels: Mapping[str, str]) -> str | None:
    return {
        "abyssal_requests_total": "requests",
        "abyssal_errors_total": "errors",
        "abyssal_request_seconds_sum": "latency_sum",
        "abyssal_request_seconds_count": "latency_count",
        "abyssal_queue_depth": "queue",
    }.get(name)


class ServiceWatch:
    """Polls services and remembers the last reading of each, for rates.

    Args:
        urls: each service's base URL (``http://host:port``).
        timeout_s: how long a service may take to answer.
    """

    def __init__(self, urls: Sequence[str], timeout_s: float = POLL_TIMEOUT_S) -> None:
        self.urls = [u.rstrip("/") for u in urls]
        self.timeout_s = timeout_s
        self._last: dict[str, tuple[float, dict[str, float], float]] = {}

    async def poll(self) -> list[dict[str, Any]]:
        """One reading of every service, in the order given (see :meth:`poll_one`)."""
        if not self.urls:
            return []
        httpx = require("httpx", extra="serve", purpose="polling services")
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            return list(await asyncio.gather(*(self.poll_one(client, u) for u in self.urls)))

    async def poll_one(self, client: Any, url: str) -> dict[str, Any]:
        """``{"url", "up", "error", "models", "load", "metrics", "rates"}``: what the service
        serves, its load, its metric totals, and the rates since the last poll."""
        out: dict[str, Any] = {
            "url": url,
            "up": False,
            "error": None,
            "models": [],
            "load": {},
            "metrics": {},
            "rates": {},
        }
        try:
            models, load, metrics = await asyncio.gather(
                client.get(f"{url}/v1/models"),
                client.get(f"{url}/v1/load"),
                client.get(f"{url}/metrics"),
            )
            for answer in (models, load, metrics):
                answer.raise_for_status()
            out["models"] = models.json().get("models", [])
            out["load"] = load.json()
            out["metrics"] = metric_totals(metrics.text)
        except Exception as e:  # down, refusing, or not an abyssal service: shown, not raised
            out["error"] = f"{type(e).__name__}: {e}"[:300]
            return out
        out["up"] = True
        out["rates"] = self._rates(url, out["metrics"], float(out["load"].get("busy_s") or 0.0))
        return out

    def _rates(self, url: str, totals: dict[str, float], busy: float) -> dict[str, float]:
        now = time.monotonic()
        before = self._last.get(url)
        self._last[url] = (now, totals, busy)
        count, seconds = totals.get("latency_count", 0.0), totals.get("latency_sum", 0.0)
        rates = {"mean_latency_ms": 1000 * seconds / count} if count else {}
        if before is None or now - before[0] <= 0:
            return rates
        dt = now - before[0]
        rates["requests_per_s"] = (
            max(0.0, totals.get("requests", 0.0) - before[1].get("requests", 0.0)) / dt
        )
        rates["busy_share"] = max(0.0, busy - before[2]) / dt
        return rates


def services_rows(readings: Sequence[Mapping[str, Any]]) -> str:
    """The ``<tbody>`` rows of the services table (the page's first render; the script
    rebuilds the same cells from ``/api/services``)."""
    rows = []
    for r in readings:
        served = ", ".join(f"{m.get('name')} ({m.get('version')})" for m in r.get("models") or [])
        m, rates, load = r.get("metrics") or {}, r.get("rates") or {}, r.get("load") or {}
        rows.append(
            [
                esc(r["url"]),
                badge("up" if r.get("up") else "down"),
                esc(served or r.get("error") or "-"),
                num(m.get("requests")),
                num(rates.get("requests_per_s"), 3),
                num(m.get("errors")),
                num(rates.get("mean_latency_ms"), 3),
                num(load.get("queue")),
                num(rates.get("busy_share"), 3),
                num(load.get("uptime_s"), 4),
            ]
        )
    return "".join(
        f'<tr data-row="{esc(r["url"])}">' + "".join(f"<td>{c}</td>" for c in row) + "</tr>"
        for r, row in zip(readings, rows, strict=True)
    )


HEADERS = [
    "service",
    "state",
    "serving (or why down)",
    "requests",
    "req/s",
    "errors",
    "mean latency ms",
    "queue",
    "busy share",
    "uptime s",
]

SCRIPT = """
const body = document.querySelector('[data-testid=services-table] tbody');
const fmt = (v, d) => (v === undefined || v === null) ? '-' : Number(v).toPrecision(d || 4) * 1;
function cell(text, cls) { const td = document.createElement('td'); td.textContent = text;
  if (cls) { td.className = cls; } return td; }
async function refresh() {
  try {
    const answer = await fetch('/api/services'); const data = await answer.json();
    body.replaceChildren(...data.services.map(r => {
      const tr = document.createElement('tr'); tr.dataset.row = r.url;
      const m = r.metrics || {}, rates = r.rates || {}, load = r.load || {};
      const served = (r.models || []).map(x => `${x.name} (${x.version})`).join(', ');
      tr.append(cell(r.url), cell(r.up ? 'up' : 'down', r.up ? 'pass' : 'fail'),
        cell(served || r.error || '-'), cell(fmt(m.requests)), cell(fmt(rates.requests_per_s, 3)),
        cell(fmt(m.errors)), cell(fmt(rates.mean_latency_ms, 3)), cell(fmt(load.queue)),
        cell(fmt(rates.busy_share, 3)), cell(fmt(load.uptime_s)));
      return tr; }));
    document.getElementById('polled').textContent = new Date().toLocaleTimeString();
  } catch (e) { document.getElementById('polled').textContent = 'dashboard unreachable'; }
}
setInterval(refresh, 2000);
"""
"""Refreshes the table every 2 s from ``/api/services`` (text set with ``textContent``, so
nothing a service answers is read as HTML)."""


def services_page(readings: Sequence[Mapping[str, Any]]) -> str:
    """The live table of services (refreshed every 2 s by a few lines of inline script)."""
    if not readings:
        body = [
            "<h1>Services</h1>",
            muted("No service watched: start `abyssal ui --service http://HOST:PORT`."),
        ]
        return page("Services", body, active="/services")
    head = "".join(f"<th>{h}</th>" for h in HEADERS)
    body = [
        "<h1>Services</h1>",
        '<p class="muted">polled from the dashboard every 2 s; last: <span id="polled">now'
        "</span></p>",
        f'<table data-testid="services-table"><thead><tr>{head}</tr></thead>'
        f"<tbody>{services_rows(readings)}</tbody></table>",
    ]
    return page("Services", body, active="/services", script=SCRIPT)
