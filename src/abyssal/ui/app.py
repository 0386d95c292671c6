"""The dashboard's web app (FastAPI, served by uvicorn like :mod:`abyssal.serve.app`).

Pages (server-rendered HTML, inline CSS and SVG, nothing fetched from elsewhere):

- ``/``: counts and the newest versions, runs, pipeline runs and benchmark runs.
- ``/models`` (``?q=`` filters), ``/models/{name}/{version}``: a version's facts, lineage graph
  (each node a link), metrics, artifacts, config, audit verdict and alias history; a version may
  be named by number or alias (``/models/tabular/production`` redirects to the number).
- ``/runs`` (``?kind=``), ``/runs/{id}``: status, metric curves from its rows, log.
- ``/pipelines``, ``/pipelines/{name}/{run}``: steps and gate decisions with their reasons;
  ``.../report`` serves the run's own HTML report.
- ``/bench``, ``/bench/{id}``: leaderboards (:mod:`abyssal.ui.leaderboard`).
- ``/audits``, ``/audits/{name}/{version}``: the newest audit report of a version, as stored.
- ``/services``: live readings of the watched services (:mod:`abyssal.ui.services`).
- JSON twins under ``/api/...``; ``/healthz``.

Viewing needs no key. The one write, ``POST /models/{name}/aliases`` (form fields ``alias``,
``version``, ``key``) or ``POST /api/models/{name}/aliases`` (JSON ``{"alias", "version"}``),
moves an alias and needs an API key of the keys file (:class:`~abyssal.serve.auth.KeyRing`, the
format of ``abyssal keys new``) that may use the model: sent as ``X-API-Key``, ``Authorization:
Bearer KEY`` or the form's ``key`` field. Without a keys file the dashboard is read only and
answers 403 saying so; 401 no or an unknown key, 403 a key that may not use the model, 429 over
its rate. An unknown id is a 404 page (JSON under ``/api``) naming it.

Example:
    >>> app = create_dashboard("~/.abyssal", services=["http://127.0.0.1:8000"])  # doctest: +SKIP
    >>> uvicorn.run(app, port=8600)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from abyssal.core.errors import StoreError
from abyssal.core.optional import require
from abyssal.pipeline.charts import esc
from abyssal.serve.auth import AuthError, KeyRing
from abyssal.ui import leaderboard, pages
from abyssal.ui.data import DashboardData, NotFound, check_id, headline, parent_of
from abyssal.ui.layout import not_found_page, page
from abyssal.ui.services import ServiceWatch, services_page

log = logging.getLogger(__name__)

READ_ONLY = (
    "this dashboard is read only: it was started without --keys, so no alias can be moved "
    "here (start it with `abyssal ui --keys FILE`, a keys file of `abyssal keys new`)"
)


def create_dashboard(
    home: str | Path | None = None,
    *,
    keys: KeyRing | None = None,
    services: Sequence[str] = (),
) -> Any:
    """The dashboard over an abyssal home (see the module's docstring).

    Args:
        home: the abyssal home; ``None`` uses ``$ABYSSAL_HOME`` or ``~/.abyssal``.
        keys: the API keys that may move aliases; ``None``: read only.
        services: base URLs of running services to watch (``/services``).

    Returns:
        A FastAPI app.

    Example:
        >>> client = TestClient(create_dashboard(tmp_home))  # doctest: +SKIP
        >>> client.get("/models/tabular/1").status_code  # doctest: +SKIP
        200
    """
    fastapi = require("fastapi", extra="serve", purpose="abyssal ui")
    responses = require("fastapi.responses", extra="serve", purpose="abyssal ui")
    HTML, JSON = responses.HTMLResponse, responses.JSONResponse
    data = DashboardData(home)
    watch = ServiceWatch(services)
    app = fastapi.FastAPI(title="abyssal dashboard", version="1", docs_url=None, redoc_url=None)
    app.state.data, app.state.keys, app.state.watch = data, keys, watch

    def refuse(request: Any, status: int, message: str, headers: dict | None = None) -> Any:
        if request.url.path.startswith("/api/"):
            return JSON({"error": message}, status, headers=headers)
        body = [f"<h1>{status}</h1>", f'<p class="fail" data-testid="error">{esc(message)}</p>']
        return HTML(page(f"{status}", body), status, headers=headers)

    @app.exception_handler(NotFound)
    async def not_found(request: Any, exc: NotFound) -> Any:
        if request.url.path.startswith("/api/"):
            return JSON({"error": str(exc)}, 404)
        return HTML(not_found_page(str(exc)), 404)

    @app.exception_handler(404)
    async def no_route(request: Any, exc: Any) -> Any:
        detail = getattr(exc, "detail", None)
        message = f"page {request.url.path} not found" if detail in (None, "Not Found") else detail
        return await not_found(request, NotFound(str(message)))

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "alive", "home": str(data.home), "writable": keys is not None}

    # -- pages ---------------------------------------------------------------------------------

    @app.get("/", response_class=HTML)
    def overview() -> str:
        return pages.overview_page(data)

    @app.get("/models", response_class=HTML)
    def models(q: str = "") -> str:
        return pages.models_page(data, q)

    @app.get("/models/{name}/{selector}", response_class=HTML)
    def version(name: str, selector: str, moved: str = "") -> Any:
        mv = data.version(name, selector)
        if selector != str(mv.version):
            return responses.RedirectResponse(f"/models/{quote(mv.name)}/{mv.version}", 307)
        message = f"{mv.name}:{moved} now points at {mv.ref}" if moved else ""
        return pages.version_page(data, mv, can_write=keys is not None, message=message)

    async def move_alias_form(name: str, request: Any) -> Any:
        form = {k: v[-1] for k, v in parse_qs((await request.body()).decode()).items()}
        result = _move(
            request, name, form.get("alias", ""), form.get("version", ""), form.get("key")
        )
        if not isinstance(result, dict):
            return result
        target = f"/models/{quote(name)}/{result['version']}?moved={quote(result['alias'])}"
        return responses.RedirectResponse(target, 303)

    @app.get("/runs", response_class=HTML)
    def runs(kind: str | None = None) -> str:
        return pages.runs_page(data, kind)

    @app.get("/runs/{run_id}", response_class=HTML)
    def run(run_id: str) -> str:
        return pages.run_page(data, data.run(run_id))

    @app.get("/pipelines", response_class=HTML)
    def pipelines() -> str:
        return pages.pipelines_page(data)

    @app.get("/pipelines/{name}/{run_id}", response_class=HTML)
    def pipeline(name: str, run_id: str) -> str:
        return pages.pipeline_page(data, name, run_id)

    @app.get("/pipelines/{name}/{run_id}/report", response_class=HTML)
    def pipeline_report(name: str, run_id: str) -> Any:
        _, report = data.pipeline_run(name, run_id)
        if report is None:
            raise NotFound(f"pipeline run {name}/{run_id} has no HTML report")
        return responses.FileResponse(report, media_type="text/html")

    @app.get("/bench", response_class=HTML)
    def bench() -> str:
        return leaderboard.bench_index_page(data)

    @app.get("/bench/{bench_id}", response_class=HTML)
    def bench_run(bench_id: str) -> str:
        return leaderboard.bench_page(data, data.bench_run(bench_id))

    @app.get("/bench/{bench_id}/{file}")
    def bench_file(bench_id: str, file: str) -> Any:
        path = data.bench_file(bench_id, file)
        kind = "text/html" if path.suffix == ".html" else "text/markdown; charset=utf-8"
        return responses.FileResponse(path, media_type=kind)

    @app.get("/audits", response_class=HTML)
    def audits() -> str:
        return pages.audits_page(data)

    @app.get("/audits/{name}/{number}", response_class=HTML)
    def audit(name: str, number: str) -> Any:
        found = data.audit(name, number)
        if found is None:
            raise NotFound(f"no audit of {name}:{number} (abyssal audit {name}:{number})")
        if found["html"] is None:
            return pages.audit_summary_page(f"{name}:{number}", found["record"])
        return responses.FileResponse(found["html"], media_type="text/html")

    @app.get("/services", response_class=HTML)
    async def services_view() -> str:
        return services_page(await watch.poll())

    # -- JSON ----------------------------------------------------------------------------------

    @app.get("/api/overview")
    def api_overview() -> dict[str, Any]:
        return {"home": str(data.home), "counts": data.counts()}

    @app.get("/api/models")
    def api_models(q: str = "") -> dict[str, Any]:
        return {"versions": [_version_row(mv) for mv in data.versions(q)]}

    @app.get("/api/models/{name}/{selector}")
    def api_version(name: str, selector: str) -> dict[str, Any]:
        mv = data.version(name, selector)
        graph = data.lineage(mv)
        audit = data.audit(mv.name, str(mv.version))
        return {
            **mv.to_dict(),
            "lineage_graph": {
                "nodes": list(graph.nodes.values()),
                "edges": [list(e) for e in graph.edges],
            },
            "audit": None if audit is None else audit["record"],
        }

    async def move_alias_json(name: str, request: Any) -> Any:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return refuse(request, 422, 'expected a JSON body {"alias": ..., "version": ...}')
        body = body if isinstance(body, dict) else {}
        result = _move(request, name, str(body.get("alias", "")), str(body.get("version", "")))
        return result

    for handler in (move_alias_form, move_alias_json):  # the request object, not a parameter
        handler.__annotations__["request"] = fastapi.Request
    app.post("/models/{name}/aliases")(move_alias_form)
    app.post("/api/models/{name}/aliases")(move_alias_json)

    @app.get("/api/runs")
    def api_runs(kind: str | None = None) -> dict[str, Any]:
        return {"runs": [{**r.info, "status": r.status} for r in data.runs(kind)]}

    @app.get("/api/runs/{run_id}")
    def api_run(run_id: str) -> dict[str, Any]:
        found = data.run(run_id)
        return {**found.info, "status": found.status, "rows": found.metrics_history()}

    @app.get("/api/pipelines")
    def api_pipelines() -> dict[str, Any]:
        return {
            "runs": [
                {"pipeline": p["pipeline"], "run": p["run"].id, **p["summary"]}
                for p in data.pipeline_runs()
            ]
        }

    @app.get("/api/bench")
    def api_bench() -> dict[str, Any]:
        return {
            "runs": [
                {k: b.get(k) for k in ("id", "suite", "title", "created", "models")}
                for b in data.bench_runs()
            ]
        }

    @app.get("/api/bench/{bench_id}")
    def api_bench_run(bench_id: str) -> dict[str, Any]:
        return data.bench_run(bench_id)

    @app.get("/api/services")
    async def api_services() -> dict[str, Any]:
        return {"services": await watch.poll()}

    def _move(
        request: Any, name: str, alias: str, selector: str, form_key: str | None = None
    ) -> Any:
        """Check the key, then move the alias; a refusal is returned as a response."""
        if keys is None:
            return refuse(request, 403, READ_ONLY)
        try:
            check_id(name, "model")
            holder = keys.check(_key(request) or form_key, name)
        except AuthError as e:
            headers = {"Retry-After": str(max(1, round(e.retry_after)))} if e.retry_after else None
            return refuse(request, e.status, str(e), headers)
        if not alias or not selector:
            return refuse(request, 422, "moving an alias needs an alias and a version")
        try:
            mv = data.move_alias(name, alias, selector)
        except NotFound:
            raise
        except StoreError as e:
            return refuse(request, 422, str(e))
        log.info("%s moved %s:%s to %s", holder.name, name, alias, mv.ref)
        return {
            "name": mv.name,
            "alias": alias,
            "version": mv.version,
            "ref": mv.ref,
            "by": holder.name,
        }

    return app


def _key(request: Any) -> str | None:
    """The API key of a request: ``X-API-Key``, or ``Authorization: Bearer KEY``."""
    key = request.headers.get("x-api-key")
    if key:
        return key
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _version_row(mv: Any) -> dict[str, Any]:
    metric, value = headline(mv)
    parent = parent_of(mv)
    return {
        "ref": mv.ref,
        "name": mv.name,
        "version": mv.version,
        "solution": mv.solution,
        "headline": {"metric": metric, "value": value},
        "aliases": list(mv.aliases),
        "parent": parent[0] if parent else None,
        "created": mv.created_at,
    }
