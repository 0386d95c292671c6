"""``abyssal ui``, the dashboard, through FastAPI's test client over a real home: tabular versions
trained here (one made from another), two real pipeline runs (one deployed, one refused by its
gate), an audit report rendered by the audit's own HTML writer, and a benchmark run folder
written by :func:`write_leaderboard` (the schema-1 ``leaderboard.json``). The pages show the
recorded values, link the lineage, escape what they show, name what is not found, and move an
alias only with a key."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from abyssal.core.store import ModelStore
from abyssal.pipeline.charts import num
from abyssal.serve.auth import KeyRing, new_key

fastapi_testclient = pytest.importorskip("fastapi.testclient")

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "configs" / "tabular" / "quickstart.yaml"
HOSTILE = "<script>alert('x')</script>"
BENCH_ID = "20261130-011500-tabular"


# -- the home ---------------------------------------------------------------------------------


def build_demo_home(
    root: Path, *, real_audit: bool = False, hostile: bool = True
) -> dict[str, Any]:
    """A home with tabular:1 (trained), tabular:2 (deployed by a pipeline, ``production``),
    tabular:3 (refused by the next run's gate), tabular:4 (made from tabular:1, audited) and
    a benchmark run of tabular:4 against tabular:1.

    Args:
        root: an empty folder; the home is ``root / "home"``.
        real_audit: audit tabular:4 with :func:`abyssal.govern.audit.audit_version` (seconds:
            the model runs, the PDF is drawn) instead of rendering a recorded card.
        hostile: put markup in recorded text (the child's data, the benchmark's title), which
            the pages must escape; ``False`` for pictures.
    """
    marked = f" {HOSTILE}" if hostile else ""
    from abyssal.pipeline.run import run_pipeline
    from abyssal.pipeline.spec import load_pipeline
    from abyssal.solutions.tabular.config import TabularSampleConfig
    from abyssal.solutions.tabular.sample import generate_sample
    from abyssal.train.api import train

    home = root / "home"
    generate_sample(TabularSampleConfig(), root / "data")
    fast = [
        f"data.path={root / 'data' / 'train.csv'}",
        "train.progress=false",
        "model.hidden=16",
        "baselines=false",
    ]
    first = train("tabular", QUICKSTART, [*fast, "train.epochs=12"], home=home)
    runs = {"train": first.run.id}
    for name, epochs, rules in (
        ("deployed", 3, [{"metric": "test_auroc", "min": 0.5}]),
        ("refused", 2, [{"metric": "test_auroc", "min": 0.9999}]),
    ):
        spec = {
            "name": "tabular-daily",
            "solution": "tabular",
            "config": str(QUICKSTART),
            "overrides": [*fast, f"train.epochs={epochs}"],
            "validate": {"label": "diagnosis"},
            "gate": {"rules": [*rules, {"metric": "p99_ms", "max": 60000}]},
            "perf": {"batch": 8, "reps": 3},
        }
        (root / f"{name}.yaml").write_text(yaml.safe_dump(spec))
        runs[name] = run_pipeline(load_pipeline(root / f"{name}.yaml"), home=home).run_id
    store = ModelStore(home)
    parent = store.get("tabular", 1)
    metrics = {**parent.metrics, "test_auroc": 0.9876}
    child = store.register(
        "tabular",
        store.load_weights(parent.ref),
        solution="tabular",
        config=parent.config,
        metrics=metrics,
        lineage={"parent": parent.ref, "data": f"{parent.lineage.get('data')}; fine-tuned{marked}"},
    )
    if real_audit:
        from abyssal.govern.audit import audit_version
        from abyssal.govern.policy import load_policy

        policy = root / "clinic.yaml"
        policy.write_text(
            yaml.safe_dump(
                {
                    "intended_use": "a second reader for breast-cancer biopsies",
                    "metrics": [{"metric": "test_auroc", "min": 0.5}],
                    "fairness": {"attribute": "size_band", "key": "id", "bootstrap": 100},
                    "explain": {"items": 2},
                }
            )
        )
        audit_version(child.ref, load_policy(str(policy), []), home=home)
    else:
        write_audit(home, child.ref)
    write_leaderboard(home / "bench" / BENCH_ID, ["tabular:4", "tabular:1"], marked)
    return {"home": home, "runs": runs, "child": child.ref, "parent": parent.ref}


def write_audit(home: Path, ref: str, passed: bool = True) -> Path:
    """An audit of ``ref`` where the audit keeps it (``audits/NAME/N/TIME/``, ``latest.json``),
    rendered by the audit's own HTML writer from a recorded card."""
    from abyssal.govern.audit import AuditResult, Check, audits_folder
    from abyssal.govern.render import write_html

    folder = audits_folder(ref, home) / "20261130T010000000000Z"
    folder.mkdir(parents=True)
    card = {
        "model": {"solution": "tabular", "lineage": [ref, "tabular:1"]},
        "metrics": [{"metric": "test_auroc", "value": 0.9876, "low": 0.97, "high": 0.99}],
        "audit": {"time": "2026-11-30T01:00:00+00:00", "passed": passed},
    }
    checks = [Check("metric test_auroc", passed, "0.9876 >= 0.5")]
    result = AuditResult(ref, "clinic", passed, checks, card, folder)
    (folder / "audit.json").write_text(json.dumps(result.to_dict()))
    write_html(result, folder / "audit.html")
    (folder.parent / "latest.json").write_text(json.dumps({"folder": folder.name}))
    return folder


def _m(value: float, low: float, high: float) -> dict[str, float]:
    return {"value": value, "low": low, "high": high}


def write_leaderboard(folder: Path, models: list[str], marked: str = f" {HOSTILE}") -> Path:
    """A benchmark run folder in the schema-1 format of ``abyssal bench`` (two models on one
    task, an anchor, a paired test, a perturbation and a slice each)."""
    leader, second = models
    result = {
        "model": leader,
        "rank": 1,
        "n": 114,
        "versus": None,
        "metrics": {"auroc": _m(0.991, 0.982, 0.998), "accuracy": _m(0.96, 0.93, 0.98)},
        "perturbations": [
            {
                "name": "feature_noise 0.1",
                "metrics": {"auroc": _m(0.97, 0.95, 0.99)},
                "drop": {"difference": 0.021, "low": -0.004, "high": 0.05, "p_value": 0.1},
            }
        ],
        "slices": [
            {
                "name": "large tumours",
                "where": "mean_radius > 15",
                "n": 40,
                "metrics": {"auroc": _m(0.95, 0.9, 0.99)},
            }
        ],
    }
    runner_up = {
        "model": second,
        "rank": 2,
        "n": 114,
        "metrics": {"auroc": _m(0.962, 0.94, 0.98), "accuracy": _m(0.91, 0.86, 0.95)},
        "versus": {
            "model": leader,
            "metric": "auroc",
            "difference": -0.029,
            "low": -0.05,
            "high": -0.008,
            "p_value": 0.0042,
            "p_adjusted": 0.0084,
        },
        "perturbations": [
            {
                "name": "feature_noise 0.1",
                "metrics": {"auroc": _m(0.88, 0.84, 0.92)},
                "drop": {"difference": 0.082, "low": 0.05, "high": 0.11, "p_value": 0.001},
            }
        ],
        "slices": [],
    }
    board = {
        "schema": 1,
        "id": folder.name,
        "suite": "tabular",
        "title": f"Tabular models{marked}",
        "created": "2026-11-30T01:15:00+00:00",
        "models": models,
        "environment": {
            "date": "2026-11-30T01:15:00+00:00",
            "machine": {"cpu": "AMD EPYC", "cores": 2, "gpu": None},
            "versions": {"abyssal": "0.1.0", "torch": "2.14.1"},
            "git_commit": "feeb26ed46a5",
            "git_dirty": False,
        },
        "command": "abyssal bench run tabular tabular:4 tabular:1",
        "tasks": [
            {
                "name": "breast-cancer",
                "title": "Breast cancer (WDBC)",
                "solution": "tabular",
                "data": "569 tumours, 20 % held out",
                "protocol": {"kind": "fixed", "seed": 0},
                "primary": "auroc",
                "metrics": ["auroc", "accuracy"],
                "confidence": 0.95,
                "anchors": [
                    {
                        "name": "logistic regression",
                        "metric": "auroc",
                        "value": 0.975,
                        "source": f"a textbook baseline{marked}",
                        "url": "https://example.org/wdbc",
                    }
                ],
                "results": [result, runner_up],
            }
        ],
    }
    folder.mkdir(parents=True)
    (folder / "leaderboard.json").write_text(json.dumps(board, indent=1))
    (folder / "leaderboard.md").write_text("# Tabular\n")
    (folder / "leaderboard.html").write_text("<h1>Tabular leaderboard</h1>")
    return folder


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return build_demo_home(tmp_path_factory.mktemp("ui"))


def client(home: Path, keys: KeyRing | None = None) -> Any:
    from abyssal.ui.app import create_dashboard

    return fastapi_testclient.TestClient(create_dashboard(home, keys=keys))


@pytest.fixture(scope="module")
def view(demo: dict[str, Any]) -> Any:
    return client(demo["home"])


# -- pages ------------------------------------------------------------------------------------


def test_the_overview_counts_what_the_home_holds(view, demo) -> None:
    html = view.get("/").text
    counts = dict(re.findall(r'data-testid="count-([a-z-]+)"><b>(\d+)</b>', html))
    assert counts["versions"] == "4" and counts["models"] == "1"
    assert counts["pipeline-runs"] == "2" and counts["benchmark-runs"] == "1"
    assert counts["audits"] == "1"
    assert 'href="/models/tabular/4"' in html and f'href="/bench/{BENCH_ID}"' in html


def test_the_models_page_filters_by_alias(view) -> None:
    everything = view.get("/models").text
    assert all(f'data-row="tabular:{n}"' in everything for n in (1, 2, 3, 4))
    html = view.get("/models", params={"q": "production"}).text
    assert re.findall(r'data-row="([^"]+)"', html) == ["tabular:2"]
    assert 'value="production"' in html


def test_a_version_page_shows_its_metrics_lineage_and_audit(view, demo) -> None:
    store = ModelStore(demo["home"])
    child, parent = store.resolve(demo["child"]), store.resolve(demo["parent"])
    html = view.get("/models/tabular/4").text
    row = re.search(r'<tr data-row="test_auroc">(.*?)</tr>', html).group(1)
    assert num(child.metrics["test_auroc"]) in row and "0.9876" in row
    low = num(child.metrics["test_auroc_low"], 3)
    assert f"[{low}," in row  # the interval sits beside the value
    parent_link = re.search(r'<a href="([^"]+)" data-testid="parent-link">([^<]+)</a>', html)
    assert parent_link.groups() == ("/models/tabular/1", parent.ref)
    graph = re.search(r'<svg[^>]*data-testid="lineage-graph".*?</svg>', html, re.S).group(0)
    assert 'href="/models/tabular/1"' in graph and 'data-ref="tabular:4"' in graph
    assert 'href="/audits/tabular/4" data-testid="audit-link"' in html
    assert HOSTILE not in html and "&lt;script&gt;" in html  # the lineage's data, escaped
    parent_page = view.get("/models/tabular/1").text
    assert 'data-testid="child-link">tabular:4</a>' in parent_page
    assert "not audited" in parent_page


def test_an_alias_names_the_version_it_points_at(view) -> None:
    answer = view.get("/models/tabular/production", follow_redirects=False)
    assert answer.status_code == 307 and answer.headers["location"] == "/models/tabular/2"
    api = view.get("/api/models/tabular/production").json()
    assert api["ref"] == "tabular:2" and "production" in api["aliases"]


def test_unknown_ids_are_404_pages_naming_them(view) -> None:
    for path, named in (
        ("/models/tabular/99", "tabular:99"),
        ("/models/nomodel/1", "nomodel:1"),
        ("/runs/no-such-run", "no-such-run"),
        ("/bench/no-such-bench", "no-such-bench"),
        ("/pipelines/tabular-daily/no-run", "no-run"),
        ("/audits/tabular/2", "tabular:2"),
        ("/nowhere", "/nowhere"),
    ):
        answer = view.get(path)
        assert answer.status_code == 404, path
        assert named in answer.text and 'data-testid="not-found"' in answer.text, path
    api = view.get("/api/models/tabular/99")
    assert api.status_code == 404 and "tabular:99" in api.json()["error"]
    assert view.get("/runs/..%2F..%2Fetc").status_code == 404


def test_a_run_page_draws_a_curve_per_metric_from_its_rows(view, demo) -> None:
    from abyssal.core.runs import Run

    run = Run.open(demo["runs"]["train"], root=demo["home"])
    rows = run.metrics_history()
    html = view.get(f"/runs/{run.id}").text
    curve = re.search(r'<svg[^>]*data-testid="curve-val_auroc".*?</svg>', html, re.S).group(0)
    assert curve.count("<circle") == len(rows) == 12
    assert f"{rows[-1]['val_auroc']:.4g}" in curve
    assert 'data-testid="curve-train_loss"' in html and 'data-testid="curve-epoch"' not in html
    assert 'href="/models/tabular/1"' in html  # its output


def test_pipeline_runs_show_each_gate_decision_and_its_reason(view, demo) -> None:
    listing = view.get("/pipelines").text
    assert listing.count('data-testid="pipeline-link"') == 2
    deployed = view.get(f"/pipelines/tabular-daily/{demo['runs']['deployed']}").text
    assert "deployed" in deployed and 'href="/models/tabular/2"' in deployed
    refused = view.get(f"/pipelines/tabular-daily/{demo['runs']['refused']}").text
    gate = re.search(r'data-testid="gate-table".*?</table>', refused, re.S).group(0)
    assert '<span class="fail">FAIL</span>' in gate and "0.9999" in gate
    assert "refused" in refused
    report = view.get(f"/pipelines/tabular-daily/{demo['runs']['deployed']}/report")
    assert report.status_code == 200 and "Pipeline tabular-daily" in report.text


def test_a_leaderboard_shows_ranks_intervals_tests_anchors_and_slices(view) -> None:
    html = view.get(f"/bench/{BENCH_ID}").text
    board = re.search(r'data-testid="leaderboard-0".*?</table>', html, re.S).group(0)
    assert re.findall(r'data-row="([^"]+)"', board) == ["tabular:4", "tabular:1"]
    assert '<a href="/models/tabular/4" data-testid="bench-model-link">tabular:4</a>' in board
    assert "0.991" in board and "[0.982, 0.998]" in board and "p = 0.0042" in board
    chart = re.search(r'<svg[^>]*data-testid="leaderboard-chart-0".*?</svg>', html, re.S).group(0)
    assert chart.count('class="whisker"') == 2 and chart.count('class="anchor"') == 1
    assert "feature_noise 0.1" in html and "mean_radius &gt; 15" in html
    assert '0.082 <span class="muted">[0.05, 0.11]' in html  # the drop and its interval
    assert "on AMD EPYC (2 cores), no GPU" in html and "abyssal bench run tabular" in html
    assert HOSTILE not in html and "Tabular models &lt;script&gt;" in html
    assert view.get(f"/bench/{BENCH_ID}/leaderboard.html").text.startswith("<h1>Tabular")
    assert view.get(f"/bench/{BENCH_ID}/other.json").status_code == 404


def test_the_audit_report_is_served_as_stored(view) -> None:
    html = view.get("/audits/tabular/4").text
    assert "Model card and audit: tabular:4" in html and "PASSED" in html
    index = view.get("/audits").text
    assert 'href="/audits/tabular/4"' in index


def test_a_down_service_shows_as_down(demo) -> None:
    from abyssal.ui.app import create_dashboard

    dead = "http://127.0.0.1:9"  # the discard port: nothing answers HTTP there
    app = create_dashboard(demo["home"], services=[dead])
    with fastapi_testclient.TestClient(app) as c:
        reading = c.get("/api/services").json()["services"][0]
        assert reading["url"] == dead and reading["up"] is False and reading["error"]
        page = c.get("/services").text
        assert "down" in page and "setInterval(refresh, 2000)" in page


def test_a_live_service_reading_has_totals_and_rates() -> None:
    import asyncio

    import httpx

    from abyssal.ui.services import ServiceWatch

    state = {"requests": 3}

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"models": [{"name": "t", "version": "t:2"}]})
        if request.url.path == "/v1/load":
            return httpx.Response(200, json={"queue": 1, "busy_s": 0.5, "uptime_s": 10})
        text = (
            f'abyssal_requests_total{{model="t",version="t:2",status="200"}} {state["requests"]}\n'
            'abyssal_request_seconds_sum{model="t",version="t:2"} 0.3\n'
            'abyssal_request_seconds_count{model="t",version="t:2"} 3\n'
        )
        return httpx.Response(200, text=text)

    async def twice() -> list[dict[str, Any]]:
        watch = ServiceWatch(["http://svc"])
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as c:
            await watch.poll_one(c, "http://svc")
            state["requests"] = 13
            return [await watch.poll_one(c, "http://svc")]

    reading = asyncio.run(twice())[0]
    assert reading["up"] and reading["models"][0]["version"] == "t:2"
    assert reading["metrics"]["requests"] == 13 and reading["metrics"]["requests_200"] == 13
    assert reading["rates"]["mean_latency_ms"] == pytest.approx(100.0)
    assert reading["rates"]["requests_per_s"] > 0


# -- the one write ----------------------------------------------------------------------------


def test_without_keys_the_dashboard_refuses_to_move_an_alias(view, demo) -> None:
    html = view.get("/models/tabular/1").text
    assert 'data-testid="alias-form"' not in html and "Read only" in html
    answer = view.post("/models/tabular/aliases", data={"alias": "candidate", "version": "1"})
    assert answer.status_code == 403 and "read only" in answer.text and "--keys" in answer.text
    api = view.post(
        "/api/models/tabular/aliases",
        json={"alias": "candidate", "version": 1},
        headers={"X-API-Key": "anything"},
    )
    assert api.status_code == 403 and "read only" in api.json()["error"]
    assert "candidate" not in ModelStore(demo["home"]).aliases("tabular")


def test_a_key_moves_an_alias_and_the_store_shows_it(demo) -> None:
    key, entry = new_key("release-manager", models=["tabular"])
    other, other_entry = new_key("someone-else", models=["fraud"])
    c = client(demo["home"], KeyRing([entry, other_entry]))
    assert 'data-testid="alias-form"' in c.get("/models/tabular/3").text
    body = {"alias": "candidate", "version": 3}
    assert c.post("/api/models/tabular/aliases", json=body).status_code == 401
    wrong = c.post("/api/models/tabular/aliases", json=body, headers={"X-API-Key": other})
    assert wrong.status_code == 403 and "may not use model 'tabular'" in wrong.json()["error"]
    assert (
        c.post(
            "/api/models/tabular/aliases", json=body, headers={"X-API-Key": "ak_wrong"}
        ).status_code
        == 401
    )
    moved = c.post(
        "/api/models/tabular/aliases", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert moved.status_code == 200 and moved.json()["ref"] == "tabular:3"
    assert ModelStore(demo["home"]).aliases("tabular")["candidate"] == 3
    form = c.post(
        "/models/tabular/aliases",
        data={"alias": "candidate", "version": "4", "key": key},
        follow_redirects=False,
    )
    assert form.status_code == 303 and form.headers["location"].startswith("/models/tabular/4")
    assert ModelStore(demo["home"]).aliases("tabular")["candidate"] == 4
    shown = c.get(form.headers["location"]).text
    assert "tabular:candidate now points at tabular:4" in shown
    bad = c.post(
        "/api/models/tabular/aliases",
        json={"alias": "9bad", "version": 4},
        headers={"X-API-Key": key},
    )
    assert bad.status_code == 422 and "bad alias" in bad.json()["error"]
    missing = c.post(
        "/api/models/tabular/aliases",
        json={"alias": "candidate", "version": 99},
        headers={"X-API-Key": key},
    )
    assert missing.status_code == 404 and "tabular:99" in missing.json()["error"]


# -- pieces -----------------------------------------------------------------------------------


def test_an_empty_home_shows_empty_pages(tmp_path: Path) -> None:
    c = client(tmp_path / "empty")
    for path in ("/", "/models", "/runs", "/pipelines", "/bench", "/audits", "/services"):
        assert c.get(path).status_code == 200, path
    assert not (tmp_path / "empty").exists()  # reading creates nothing


def test_charts_escape_and_draw_what_they_are_given() -> None:
    from abyssal.ui.svg import nice_range, svg_curve, svg_interval_bars, svg_lineage

    assert nice_range(0.91, 0.99) == (0.9, 1.0) and nice_range(2.0, 10.0)[0] == 0.0
    bars = svg_interval_bars(HOSTILE, [("a", 0.9, 0.8, 0.95), ("b", None, None, None)])
    assert HOSTILE not in bars and bars.count('class="whisker"') == 1 and ">-</text>" in bars
    assert svg_curve("m", [(0, float("nan"))]).count("no value recorded") == 1
    nodes = {
        "x:1": {"label": HOSTILE, "href": "/models/x/1", "depth": 0},
        "hub:base": {"label": "hub:base", "href": None, "depth": 0, "external": True},
        "x:2": {"label": "x:2", "href": "/models/x/2", "depth": 1},
    }
    svg = svg_lineage(nodes, [("x:1", "x:2", "parent"), ("hub:base", "x:2", "base")], "x:2")
    assert svg.count("<a ") == 2 and "stroke-dasharray" in svg and HOSTILE not in svg


def test_the_cli_registers_abyssal_ui() -> None:
    import argparse

    from abyssal.cli.ui import add_ui

    parser = argparse.ArgumentParser()
    add_ui(parser.add_subparsers())
    args = parser.parse_args(["ui", "--service", "http://a:1", "--service", "http://b:2"])
    assert args.port == 8600 and args.service == ["http://a:1", "http://b:2"]
    assert args.keys is None and args.host == "127.0.0.1"
