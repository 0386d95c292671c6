"""What the dashboard shows, read from an abyssal home: model versions and their lineage, runs
and their metric rows, pipeline runs, benchmark leaderboards and audits. Read only: nothing here
writes (moving an alias is :meth:`DashboardData.move_alias`, the one exception, behind a key).

Where each thing lives under the home::

    store.db, blobs/                     model versions (:class:`~abyssal.core.store.ModelStore`)
    runs/<id>/                           run records (:mod:`abyssal.core.runs`)
    pipelines/<name>/                    a pipeline's state folder (the last run's records)
    runs/<id>/summary.json, report.html  each pipeline run's own (kind ``pipeline``)
    bench/<id>/leaderboard.json          benchmark results (schema 1; .md and .html beside)
    audits/<name>/<N>/<time>/            audits of version N (``latest.json`` names the newest)

Example:
    >>> data = DashboardData("/tmp/home")  # doctest: +SKIP
    >>> [v.ref for v in data.versions()]  # doctest: +SKIP
    ['tabular:1', 'tabular:2']
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abyssal.core.artifacts import ExternalBase
from abyssal.core.errors import AbyssalError
from abyssal.core.home import abyssal_home
from abyssal.core.runs import Run, list_runs
from abyssal.core.store import ModelStore, ModelVersion

SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}")
"""A path segment the dashboard turns into a file path (run ids, bench ids, names)."""
PIPELINE_KIND = "pipeline"


class NotFound(AbyssalError):
    """What a URL names does not exist; the message names it (the page's 404)."""


def check_id(value: str, what: str) -> str:
    """``value`` if it is a safe path segment, else :class:`NotFound` naming it."""
    if not SAFE_ID.fullmatch(value) or ".." in value:
        raise NotFound(f"{what} {value!r} not found (not a valid id)")
    return value


@dataclass
class LineageGraph:
    """The versions around one: its ancestors (parents, bases) and descendants.

    Attributes:
        focus: the version the graph is drawn for (``name:N``).
        nodes: ref -> ``{"ref", "label", "href", "depth", "external"}``; ``href`` is ``None``
            for an external base.
        edges: ``(parent, child)`` pairs, each with its kind (``parent`` or ``base``).
    """

    focus: str
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    edges: list[tuple[str, str, str]] = field(default_factory=list)


def parent_of(mv: ModelVersion) -> tuple[str, str] | None:
    """What ``mv`` was made from: ``(ref, "parent" | "base")``; an external base is named by
    its ``str``; ``None`` for a root version."""
    parent = mv.lineage.get("parent") if isinstance(mv.lineage, dict) else None
    if isinstance(parent, str) and parent:
        return parent, "parent"
    if isinstance(mv.base, str):
        return mv.base, "base"
    if isinstance(mv.base, ExternalBase):
        return str(mv.base), "base"
    return None


def version_href(ref: str) -> str:
    """The page of the version ``name:N``."""
    name, _, number = ref.partition(":")
    return f"/models/{name}/{number}"


def headline(mv: ModelVersion) -> tuple[str, Any]:
    """The version's headline metric (its solution's choice when it was registered)."""
    name = mv.config.get("headline_metric") if isinstance(mv.config, dict) else None
    if not name:
        name = next((k for k in sorted(mv.metrics) if k.startswith("test_")), "")
    return str(name), mv.metrics.get(name)


class DashboardData:
    """Reads an abyssal home for the dashboard.

    Args:
        home: the abyssal home; ``None`` uses ``$ABYSSAL_HOME`` or ``~/.abyssal``.
    """

    def __init__(self, home: str | Path | None = None) -> None:
        self.home = abyssal_home(home).absolute()
        self.store = ModelStore(self.home)

    # -- model versions -----------------------------------------------------------------------

    def versions(self, query: str = "") -> list[ModelVersion]:
        """Every version, newest first; with ``query``, those whose ref, solution or aliases
        contain it (case-insensitive)."""
        found = sorted(self.store.list_versions(), key=lambda v: v.created_at, reverse=True)
        words = query.lower().split()
        if not words:
            return found
        return [v for v in found if all(w in _haystack(v) for w in words)]

    def version(self, name: str, selector: str) -> ModelVersion:
        """The version ``name:selector`` (a number, an alias or ``latest``).

        Raises:
            NotFound: no such model or version; the store's message says what there is.
        """
        try:
            return self.store.resolve(f"{name}:{selector}")
        except AbyssalError as e:
            raise NotFound(f"model version {name}:{selector} not found: {e}") from None

    def lineage(self, mv: ModelVersion) -> LineageGraph:
        """The lineage graph around ``mv``: every ancestor up to its root (or external base)
        and every descendant, each node at its depth from the oldest ancestor."""
        every = {v.ref: v for v in self.store.list_versions()}
        children: dict[str, list[str]] = {}
        for v in every.values():
            found = parent_of(v)
            if found is not None:
                children.setdefault(found[0], []).append(v.ref)
        graph = LineageGraph(mv.ref)
        chain = [mv.ref]
        while (up := _parent_ref(every.get(chain[-1]))) and up not in chain and len(chain) < 64:
            chain.append(up)
        for depth, ref in enumerate(reversed(chain)):
            _add_node(graph, ref, depth, every)
        for child_ref, parent in itertools.pairwise(chain):
            graph.edges.append((parent, child_ref, parent_of(every[child_ref])[1]))  # type: ignore[index]
        todo = [mv.ref]
        while todo:  # descendants, breadth first
            ref = todo.pop(0)
            for child in sorted(children.get(ref, []), key=_ref_order):
                if child in graph.nodes:
                    continue
                _add_node(graph, child, graph.nodes[ref]["depth"] + 1, every)
                graph.edges.append((ref, child, parent_of(every[child])[1]))  # type: ignore[index]
                todo.append(child)
        return graph

    def children(self, mv: ModelVersion) -> list[ModelVersion]:
        """The versions made directly from ``mv``."""
        return [v for v in self.store.list_versions() if (parent_of(v) or ("",))[0] == mv.ref]

    def alias_history(self, name: str) -> list[Any]:
        """Every alias move of ``name``, newest first."""
        return list(reversed(self.store.alias_history(name)))

    def move_alias(self, name: str, alias: str, selector: str) -> ModelVersion:
        """Point ``name:alias`` at ``name:selector`` (the dashboard's one write).

        Raises:
            NotFound: no such version.
            StoreError: a bad alias name.
        """
        mv = self.version(name, selector)
        self.store.set_alias(mv.name, alias, mv.version)
        return self.store.get(mv.name, mv.version)

    # -- runs ---------------------------------------------------------------------------------

    def runs(self, kind: str | None = None) -> list[Run]:
        """Every run (newest first), or those of one kind."""
        found = list_runs(self.home)
        return [r for r in found if kind is None or r.info.get("kind") == kind]

    def run(self, run_id: str) -> Run:
        """The run ``run_id``.

        Raises:
            NotFound: no such run, or its record is damaged.
        """
        check_id(run_id, "run")
        try:
            return Run.open(run_id, root=self.home)
        except AbyssalError as e:
            raise NotFound(f"run {run_id} not found: {e}") from None

    def run_log(self, run: Run, lines: int = 60) -> list[str]:
        """The last ``lines`` lines of the run's ``log.txt``."""
        try:
            return (run.path / "log.txt").read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return []

    # -- pipelines ----------------------------------------------------------------------------

    def pipeline_runs(self) -> list[dict[str, Any]]:
        """Each pipeline run (newest first): ``run`` (its record), ``pipeline`` (its name)
        and its ``summary.json`` (``status``, ``reason``, ``deployed``; ``{}`` while running)."""
        out = []
        for run in self.runs(PIPELINE_KIND):
            summary = _read_json(run.path / "summary.json")
            summary = summary if isinstance(summary, dict) else {}
            name = summary.get("pipeline") or _pipeline_name(run)
            out.append({"run": run, "pipeline": str(name or "?"), "summary": summary})
        return out

    def pipeline_run(self, name: str, run_id: str) -> tuple[Any, Path | None]:
        """The record of one pipeline run (:class:`~abyssal.pipeline.report.PipelineRecord`)
        and its HTML report (``None`` if it has none).

        The state folder holds the step records of the last run only, so that run is read from
        there (gate checks of a refused attempt live in its step records); earlier runs from
        the ``summary.json`` their run record kept.

        Raises:
            NotFound: no such run of that pipeline, or a run that has not ended.
        """
        from abyssal.pipeline.report import read_run

        check_id(name, "pipeline")
        run = self.run(run_id)
        found = next((p for p in self.pipeline_runs() if p["run"].id == run.id), None)
        if found is None or found["pipeline"] != name:
            raise NotFound(f"pipeline run {name}/{run_id} not found")
        if not found["summary"]:
            raise NotFound(f"pipeline run {name}/{run_id} has no summary yet (status {run.status})")
        state = self.home / "pipelines" / name
        latest = _read_json(state / "summary.json")
        folder = state if isinstance(latest, dict) and latest.get("run") == run.id else run.path
        report = run.path / "report.html"
        return read_run(folder), (report if report.is_file() else None)

    # -- benchmarks ---------------------------------------------------------------------------

    def bench_runs(self) -> list[dict[str, Any]]:
        """Each benchmark run's ``leaderboard.json`` (newest first), with ``id`` set to its
        folder's name; unreadable ones are listed with an ``error``."""
        folder = self.home / "bench"
        found = []
        for path in sorted(folder.glob("*/leaderboard.json")) if folder.is_dir() else []:
            board = _read_json(path)
            if not isinstance(board, dict):
                board = {"error": f"{path} is not readable JSON", "tasks": []}
            board["id"] = path.parent.name
            found.append(board)
        return sorted(found, key=lambda b: str(b.get("created") or b["id"]), reverse=True)

    def bench_run(self, bench_id: str) -> dict[str, Any]:
        """One benchmark run's leaderboard (``id`` set to its folder's name).

        Raises:
            NotFound: no such folder, or no readable ``leaderboard.json`` in it.
        """
        path = self.home / "bench" / check_id(bench_id, "benchmark run") / "leaderboard.json"
        board = _read_json(path)
        if not isinstance(board, dict):
            known = ", ".join(b["id"] for b in self.bench_runs()[:10]) or "(none)"
            raise NotFound(f"benchmark run {bench_id} not found; recent ones: {known}")
        board["id"] = bench_id
        return board

    def bench_file(self, bench_id: str, name: str) -> Path:
        """One of the benchmark run's own files (``leaderboard.html`` or ``.md``)."""
        path = self.home / "bench" / check_id(bench_id, "benchmark run") / name
        if name not in ("leaderboard.html", "leaderboard.md") or not path.is_file():
            raise NotFound(f"benchmark run {bench_id} has no {name}")
        return path

    # -- audits -------------------------------------------------------------------------------

    def audit(self, name: str, number: str) -> dict[str, Any] | None:
        """The newest audit of ``name:number``: ``{"record", "html", "folder"}`` (``record``:
        its ``audit.json``; ``html``: its page, or ``None``), or ``None`` without one."""
        folder = self.home / "audits" / check_id(name, "model") / check_id(number, "version")
        latest = _read_json(folder / "latest.json")
        if not isinstance(latest, dict) or not isinstance(latest.get("folder"), str):
            return None
        stamp = folder / check_id(latest["folder"], "audit")
        record = _read_json(stamp / "audit.json")
        if not isinstance(record, dict):
            return None
        html = stamp / "audit.html"
        return {"record": record, "html": html if html.is_file() else None, "folder": stamp}

    def audits(self) -> list[dict[str, Any]]:
        """The newest audit of each audited version: ``ref`` and what :meth:`audit` gives."""
        root = self.home / "audits"
        out = []
        for latest in sorted(root.glob("*/*/latest.json")) if root.is_dir() else []:
            name, number = latest.parent.parent.name, latest.parent.name
            found = self.audit(name, number) if SAFE_ID.fullmatch(name) else None
            if found is not None:
                out.append({"ref": f"{name}:{number}", **found})
        return out

    def counts(self) -> dict[str, int]:
        """How many of each thing there is (the overview's figures)."""
        versions = self.store.list_versions()
        return {
            "models": len({v.name for v in versions}),
            "versions": len(versions),
            "runs": len(self.runs()),
            "pipeline runs": len(self.runs(PIPELINE_KIND)),
            "benchmark runs": len(self.bench_runs()),
            "audits": len(self.audits()),
        }


def _haystack(mv: ModelVersion) -> str:
    return " ".join([mv.ref, mv.solution, *mv.aliases, *(f"{mv.name}:{a}" for a in mv.aliases)])


def _parent_ref(mv: ModelVersion | None) -> str | None:
    found = parent_of(mv) if mv is not None else None
    return found[0] if found else None


def _add_node(graph: LineageGraph, ref: str, depth: int, every: dict[str, ModelVersion]) -> None:
    mv = every.get(ref)
    label = ref if mv is None else f"{ref}" + (f" ({', '.join(mv.aliases)})" if mv.aliases else "")
    graph.nodes[ref] = {
        "ref": ref,
        "label": label,
        "href": version_href(ref) if mv is not None else None,
        "depth": depth,
        "external": mv is None,
        "solution": mv.solution if mv is not None else "external",
    }


def _ref_order(ref: str) -> tuple[str, int]:
    name, _, number = ref.partition(":")
    return name, int(number) if number.isdigit() else 0


def _pipeline_name(run: Run) -> str | None:
    """A running pipeline's name, from the first line of its log (``pipeline NAME: ...``)."""
    try:
        first = (run.path / "log.txt").read_text().split("\n", 1)[0]
    except OSError:
        return None
    found = re.search(r"pipeline (\S+):", first)
    return found.group(1) if found else None


def _read_json(path: Path) -> Any:
    """The file's JSON, or ``None`` when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
