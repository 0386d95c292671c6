"""A resumable pipeline of steps: the engine under ``abyssal pipeline``.

A :class:`Pipeline` is a set of named :class:`Step` s, each depending on others by name (a
DAG: unknown names, cycles and duplicates are refused before anything runs). Steps run in a
topological order that keeps their declared order where it can. Each step is fingerprinted
from what defines it: its own parameters (``inputs``, plain JSON-able data), the content of the
files it reads (``files``: a data file or folder, a config), and the outputs of the steps it
needs. What a step returns (its outputs, plain JSON-able data) is recorded in the state folder,
one JSON file per step, written atomically. A step that re-runs and returns what it returned
before does not make the steps after it run again, so a step must put into its outputs what its
followers read (a model version's ref, the digest of a file it wrote).

Running again skips every step whose fingerprint matches a finished record and reuses its
outputs, so a pipeline stopped by a crash, a failed step or Ctrl-C resumes where it stopped, and
a changed data file or parameter re-runs exactly the steps it reaches. ``force`` re-runs named
steps (and so what follows them).

A step ends in one of three ways:

- it returns its outputs: ``done``;
- it raises :class:`StepStopped`: ``stopped``, a deliberate end (data validation refused the
  data, the quality gate refused the model), with a report; the steps after it do not run;
- it raises anything else: ``failed``, with the error; the steps after it do not run.

A stopped or failed step is run again next time (its record is not a finished one).

Example:
    >>> import tempfile
    >>> steps = [
    ...     Step("load", lambda ctx: {"rows": 3}),
    ...     Step("double", lambda ctx: {"rows": 2 * ctx.outputs["load"]["rows"]}, needs=("load",)),
    ... ]
    >>> with tempfile.TemporaryDirectory() as state:
    ...     first = Pipeline(steps).run(state)
    ...     again = Pipeline(steps).run(state)
    >>> first.status, first.outputs["double"], [r.status for r in again.steps]
    ('done', {'rows': 6}, ['skipped', 'skipped'])
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abyssal.core.atomic import write_text_atomic
from abyssal.core.digest import fingerprint_path
from abyssal.core.errors import AbyssalError, ConfigError

RECORD_VERSION = 1
"""The layout of a step's record file; a record of another layout is run again."""


class StepStopped(AbyssalError):
    """A step ends the pipeline on purpose (e.g. validation refused the data), with a report.

    Args:
        reason: one line a person reads.
        report: plain JSON-able details (the findings, the failed checks).
    """

    def __init__(self, reason: str, report: Mapping[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.report = dict(report or {})


@dataclass
class StepContext:
    """What a running step sees.

    Attributes:
        name: the step's name.
        outputs: the outputs of every step that finished before it (done or skipped), by name.
        folder: a folder of its own under the state folder, for files it writes (reports,
            plots); it is kept with the step's record.
    """

    name: str
    outputs: dict[str, dict[str, Any]]
    folder: Path


@dataclass(frozen=True)
class Step:
    """One step of a pipeline.

    Attributes:
        name: unique in its pipeline (letters, digits, ``-`` and ``_``).
        run: ``context -> outputs``: a mapping of plain JSON-able data.
        needs: the names of the steps whose outputs it reads (they run first, and their
            outputs are part of its fingerprint).
        after: steps that must finish first without their outputs defining this one (an
            ordering only: validation before training).
        inputs: plain JSON-able parameters that define the step (a config section); changing
            them re-runs it.
        files: files or folders whose content defines the step (data, a config file).
    """

    name: str
    run: Callable[[StepContext], Mapping[str, Any]]
    needs: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    inputs: Mapping[str, Any] = field(default_factory=dict)
    files: tuple[str | Path, ...] = ()


@dataclass
class StepResult:
    """How one step ended in one run: ``done``, ``skipped`` (unchanged since a finished run),
    ``stopped``, ``failed`` or ``not_run`` (an earlier step stopped or failed)."""

    name: str
    status: str
    fingerprint: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    reason: str | None = None
    report: dict[str, Any] = field(default_factory=dict)


@dataclass
class PipelineResult:
    """A run of a pipeline: ``done`` when every step is done or skipped, else the status of the
    step that ended it (``stopped`` or ``failed``), named by ``ended_by``."""

    status: str
    steps: list[StepResult]
    ended_by: str | None = None

    @property
    def outputs(self) -> dict[str, dict[str, Any]]:
        """The outputs of the steps that are done or skipped, by name."""
        return {r.name: r.outputs for r in self.steps if r.status in ("done", "skipped")}

    def summary(self) -> str:
        """One line per step, for a terminal."""
        lines = []
        for k, r in enumerate(self.steps, 1):
            took = f" in {r.seconds:.1f} s" if r.status == "done" else ""
            why = f": {r.reason}" if r.reason else ""
            lines.append(f"[{k}/{len(self.steps)}] {r.name}: {r.status}{took}{why}")
        return "\n".join(lines)


class Pipeline:
    """Steps in dependency order, run resumably (see the module's docstring).

    Raises:
        ConfigError: a duplicate or badly formed name, an unknown step in ``needs``, a cycle.
    """

    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = {}
        for step in steps:
            if not step.name or not all(c.isalnum() or c in "-_" for c in step.name):
                raise ConfigError(f"step name {step.name!r}: use letters, digits, '-' and '_'")
            if step.name in self.steps:
                raise ConfigError(f"two steps are named {step.name!r}")
            self.steps[step.name] = step
        for step in steps:
            unknown = [n for n in (*step.needs, *step.after) if n not in self.steps]
            if unknown:
                raise ConfigError(
                    f"step {step.name!r} needs {unknown}, which no step is named; steps: "
                    f"{list(self.steps)}"
                )
        self.order = _topological(self.steps)

    def run(
        self,
        state: str | Path,
        *,
        force: Iterable[str] = (),
        progress: Callable[[int, int, StepResult], None] | None = None,
    ) -> PipelineResult:
        """Run the steps in order, skipping the unchanged finished ones.

        Args:
            state: the folder of this pipeline's records (created if missing).
            force: steps to run even if unchanged (the steps after one re-run only if its
                outputs change).
            progress: called as each step starts (status ``running``) and ends, with its
                position, the step count and its result.

        Returns:
            How every step ended.
        """
        forced = set(force)
        unknown = sorted(forced - set(self.steps))
        if unknown:
            raise ConfigError(f"force: no step is named {unknown}; steps: {self.order}")
        root = Path(state)
        (root / "steps").mkdir(parents=True, exist_ok=True)
        outputs: dict[str, dict[str, Any]] = {}
        results: list[StepResult] = []
        ended: StepResult | None = None
        for k, name in enumerate(self.order, 1):
            step = self.steps[name]
            if ended is not None:
                results.append(StepResult(name, "not_run", reason=f"{ended.name} {ended.status}"))
                continue
            fingerprint = _fingerprint(step, outputs)
            record = _read_record(root, name)
            if (
                name not in forced
                and record.get("status") == "done"
                and record.get("fingerprint") == fingerprint
            ):
                result = StepResult(name, "skipped", fingerprint, dict(record.get("outputs", {})))
            else:
                if progress is not None:
                    progress(k, len(self.order), StepResult(name, "running", fingerprint))
                result = _run_step(step, root, fingerprint, outputs)
                _write_record(root, result)
            results.append(result)
            if result.status in ("done", "skipped"):
                outputs[name] = result.outputs
            else:
                ended = result
            if progress is not None:
                progress(k, len(self.order), result)
        if ended is None:
            return PipelineResult("done", results)
        return PipelineResult(ended.status, results, ended.name)


def _topological(steps: Mapping[str, Step]) -> list[str]:
    """Names in dependency order, declared order among the ready ones; a cycle is refused,
    naming the steps on it."""
    order: list[str] = []
    placed: set[str] = set()
    while len(order) < len(steps):
        ready = [n for n, s in steps.items() if n not in placed and {*s.needs, *s.after} <= placed]
        if not ready:
            stuck = [n for n in steps if n not in placed]
            raise ConfigError(f"the steps {stuck} depend on each other in a cycle")
        order.append(ready[0])
        placed.add(ready[0])
    return order


def _fingerprint(step: Step, outputs: Mapping[str, Mapping[str, Any]]) -> str:
    """SHA-256 over the step's name, inputs, files' contents and its needs' outputs."""
    try:
        inputs = json.dumps(step.inputs, sort_keys=True, default=_plain)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"step {step.name!r}: its inputs are not plain data ({e})") from e
    files = {}
    for path in step.files:
        try:
            files[str(path)] = fingerprint_path(path)
        except FileNotFoundError:
            files[str(path)] = "missing"  # the step itself says what is wrong with it
    needs = {n: outputs[n] for n in step.needs}  # their outputs, not how they were made
    text = json.dumps(
        {"step": step.name, "inputs": inputs, "files": files, "needs": needs},
        sort_keys=True,
        default=_plain,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-able")


def _run_step(
    step: Step, root: Path, fingerprint: str, outputs: Mapping[str, dict[str, Any]]
) -> StepResult:
    folder = root / "steps" / step.name
    folder.mkdir(parents=True, exist_ok=True)
    context = StepContext(step.name, {n: dict(v) for n, v in outputs.items()}, folder)
    started = time.perf_counter()
    try:
        produced = step.run(context)
        if not isinstance(produced, Mapping):
            raise TypeError(f"step {step.name!r} returned {type(produced).__name__}, not a mapping")
        plain = json.loads(json.dumps(dict(produced), default=_plain))
    except StepStopped as e:
        seconds = time.perf_counter() - started
        return StepResult(step.name, "stopped", fingerprint, {}, seconds, e.reason, e.report)
    except Exception as e:  # recorded, and the pipeline ends here
        seconds = time.perf_counter() - started
        detail = {"error": type(e).__name__, "traceback": traceback.format_exc(limit=8)}
        reason = f"{type(e).__name__}: {e}"
        return StepResult(step.name, "failed", fingerprint, {}, seconds, reason, detail)
    return StepResult(step.name, "done", fingerprint, plain, time.perf_counter() - started)


def _record_path(root: Path, name: str) -> Path:
    return root / "steps" / f"{name}.json"


def _read_record(root: Path, name: str) -> dict[str, Any]:
    """The step's last record, or ``{}`` when there is none or it cannot be read (it then runs)."""
    path = _record_path(root, name)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(record, dict) or record.get("version") != RECORD_VERSION:
        return {}
    return record


def _write_record(root: Path, result: StepResult) -> None:
    record = {
        "version": RECORD_VERSION,
        "step": result.name,
        "status": result.status,
        "fingerprint": result.fingerprint,
        "outputs": result.outputs,
        "seconds": round(result.seconds, 3),
        "reason": result.reason,
        "report": result.report,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_text_atomic(_record_path(root, result.name), json.dumps(record, indent=1) + "\n")
