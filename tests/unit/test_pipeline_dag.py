"""The pipeline engine: dependency order, refusals of bad graphs, fingerprints that skip
unchanged steps and re-run changed ones (parameters, file contents, upstream outputs), failed
and stopped steps, forced steps, damaged records, progress."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from abyssal.core.errors import ConfigError
from abyssal.pipeline.dag import Pipeline, Step, StepContext, StepStopped


class Calls:
    """Step functions that count their calls."""

    def __init__(self) -> None:
        self.count: dict[str, int] = {}

    def step(self, name: str, fn: Any, **kw: Any) -> Step:
        def run(ctx: StepContext) -> Any:
            self.count[name] = self.count.get(name, 0) + 1
            return fn(ctx)

        return Step(name, run, **kw)


def chain(calls: Calls, scale: int = 2, data: Path | None = None) -> list[Step]:
    files = (data,) if data else ()
    return [
        calls.step("load", lambda c: {"rows": 3}, files=files),
        calls.step(
            "scale",
            lambda c: {"rows": scale * c.outputs["load"]["rows"]},
            needs=("load",),
            inputs={"scale": scale},
        ),
        calls.step(
            "parity", lambda c: {"even": c.outputs["scale"]["rows"] % 2 == 0}, needs=("scale",)
        ),
    ]


def test_order_follows_needs_and_keeps_declared_order() -> None:
    steps = [
        Step("report", lambda c: {}, needs=("gate", "validate")),
        Step("validate", lambda c: {}),
        Step("train", lambda c: {}, needs=("validate",)),
        Step("gate", lambda c: {}, needs=("train",)),
    ]
    assert Pipeline(steps).order == ["validate", "train", "gate", "report"]


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([Step("a", lambda c: {}), Step("a", lambda c: {})], "two steps are named 'a'"),
        ([Step("a", lambda c: {}, needs=("b",))], "needs ['b'], which no step is named"),
        ([Step("a b", lambda c: {})], "step name 'a b'"),
        (
            [Step("a", lambda c: {}, needs=("b",)), Step("b", lambda c: {}, needs=("a",)),
             Step("c", lambda c: {})],
            "['a', 'b'] depend on each other in a cycle",
        ),
    ],
)  # fmt: skip
def test_bad_graphs_are_refused_naming_the_steps(steps: list[Step], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Pipeline(steps)


def test_a_second_run_skips_everything_and_reuses_outputs(tmp_path: Path) -> None:
    calls = Calls()
    first = Pipeline(chain(calls)).run(tmp_path)
    again = Pipeline(chain(calls)).run(tmp_path)
    assert first.status == again.status == "done"
    assert [r.status for r in first.steps] == ["done"] * 3
    assert [r.status for r in again.steps] == ["skipped"] * 3
    assert again.outputs == {"load": {"rows": 3}, "scale": {"rows": 6}, "parity": {"even": True}}
    assert calls.count == {"load": 1, "scale": 1, "parity": 1}


def test_a_changed_parameter_reruns_its_step_and_what_its_outputs_reach(tmp_path: Path) -> None:
    calls = Calls()
    Pipeline(chain(calls, scale=2)).run(tmp_path)
    changed = Pipeline(chain(calls, scale=4)).run(tmp_path)
    assert [r.status for r in changed.steps] == ["skipped", "done", "done"]
    assert changed.outputs["scale"] == {"rows": 12}
    assert calls.count == {"load": 1, "scale": 2, "parity": 2}


def test_an_unchanged_output_stops_the_rerun_from_spreading(tmp_path: Path) -> None:
    calls = Calls()
    steps = [
        calls.step("a", lambda c: {"v": 1}, inputs={"note": "x"}),
        calls.step("b", lambda c: {"v": c.outputs["a"]["v"] + 1}, needs=("a",)),
    ]
    Pipeline(steps).run(tmp_path)
    steps[0] = calls.step("a", lambda c: {"v": 1}, inputs={"note": "y"})
    result = Pipeline(steps).run(tmp_path)
    assert [r.status for r in result.steps] == ["done", "skipped"]


def test_a_changed_data_file_reruns_the_step_reading_it(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_text("a\n1\n")
    calls = Calls()
    state = tmp_path / "state"
    Pipeline(chain(calls, data=data)).run(state)
    assert [r.status for r in Pipeline(chain(calls, data=data)).run(state).steps] == [
        "skipped", "skipped", "skipped"
    ]  # fmt: skip
    data.write_text("a\n2\n")
    result = Pipeline(chain(calls, data=data)).run(state)
    assert result.steps[0].status == "done"  # its outputs are unchanged, so the rest skips
    assert [r.status for r in result.steps[1:]] == ["skipped", "skipped"]


def test_a_failed_step_ends_the_run_and_runs_again_next_time(tmp_path: Path) -> None:
    calls = Calls()
    broken = {"on": True}

    def flaky(ctx: StepContext) -> dict[str, int]:
        if broken["on"]:
            raise ValueError("the disk is full")
        return {"ok": 1}

    steps = [
        calls.step("a", lambda c: {"v": 1}),
        calls.step("b", flaky, needs=("a",)),
        calls.step("c", lambda c: {}, needs=("b",)),
    ]
    result = Pipeline(steps).run(tmp_path)
    assert (result.status, result.ended_by) == ("failed", "b")
    assert [r.status for r in result.steps] == ["done", "failed", "not_run"]
    assert result.steps[1].reason == "ValueError: the disk is full"
    assert result.steps[2].reason == "b failed"
    record = json.loads((tmp_path / "steps" / "b.json").read_text())
    assert record["status"] == "failed" and "ValueError" in record["report"]["traceback"]
    broken["on"] = False
    again = Pipeline(steps).run(tmp_path)
    assert [r.status for r in again.steps] == ["skipped", "done", "done"]
    assert calls.count == {"a": 1, "b": 2, "c": 1}


def test_a_stopped_step_records_its_report_and_ends_the_run(tmp_path: Path) -> None:
    def validate(ctx: StepContext) -> dict[str, Any]:
        (ctx.folder / "report.txt").write_text("column amount: 3 negative values")
        raise StepStopped("the data failed 1 check", {"failed": ["amount"]})

    steps = [Step("validate", validate), Step("train", lambda c: {}, needs=("validate",))]
    result = Pipeline(steps).run(tmp_path)
    assert (result.status, result.ended_by) == ("stopped", "validate")
    assert result.steps[0].report == {"failed": ["amount"]}
    assert (tmp_path / "steps" / "validate" / "report.txt").exists()
    record = json.loads((tmp_path / "steps" / "validate.json").read_text())
    assert record["reason"] == "the data failed 1 check"
    assert "validate: stopped: the data failed 1 check" in result.summary()
    assert "train: not_run" in result.summary()


def test_bad_step_results_and_inputs_are_named(tmp_path: Path) -> None:
    result = Pipeline([Step("a", lambda c: [1, 2])]).run(tmp_path / "one")  # type: ignore[arg-type]
    assert result.status == "failed" and "returned list, not a mapping" in result.steps[0].reason
    result = Pipeline([Step("a", lambda c: {"when": object()})]).run(tmp_path / "two")
    assert result.status == "failed" and "not JSON-able" in result.steps[0].reason
    with pytest.raises(ConfigError, match="step 'a': its inputs are not plain data"):
        Pipeline([Step("a", lambda c: {}, inputs={"x": object()})]).run(tmp_path / "three")


def test_force_reruns_a_step_and_unknown_names_are_refused(tmp_path: Path) -> None:
    calls = Calls()
    Pipeline(chain(calls)).run(tmp_path)
    result = Pipeline(chain(calls)).run(tmp_path, force=["load"])
    assert [r.status for r in result.steps] == ["done", "skipped", "skipped"]
    with pytest.raises(ConfigError, match=r"force: no step is named \['nope'\]"):
        Pipeline(chain(calls)).run(tmp_path, force=["nope"])


def test_a_damaged_record_runs_its_step_again(tmp_path: Path) -> None:
    calls = Calls()
    Pipeline(chain(calls)).run(tmp_path)
    (tmp_path / "steps" / "scale.json").write_text("{not json")
    result = Pipeline(chain(calls)).run(tmp_path)
    assert [r.status for r in result.steps] == ["skipped", "done", "skipped"]


def test_progress_sees_each_step_start_and_end(tmp_path: Path) -> None:
    seen: list[tuple[int, int, str, str]] = []
    Pipeline(chain(Calls())).run(
        tmp_path, progress=lambda k, n, r: seen.append((k, n, r.name, r.status))
    )
    assert seen[:2] == [(1, 3, "load", "running"), (1, 3, "load", "done")]
    assert len(seen) == 6
    seen.clear()
    Pipeline(chain(Calls())).run(
        tmp_path, progress=lambda k, n, r: seen.append((k, n, r.name, r.status))
    )
    assert [s[3] for s in seen] == ["skipped"] * 3  # nothing to start


def test_after_orders_steps_without_defining_them(tmp_path: Path) -> None:
    calls = Calls()
    note = {"text": "a"}
    steps = [
        calls.step("check", lambda c: {"note": note["text"]}),
        calls.step("train", lambda c: {"ok": True}, after=("check",)),
    ]
    assert Pipeline(list(reversed(steps))).order == ["check", "train"]
    Pipeline(steps).run(tmp_path)
    note["text"] = "b"  # check's outputs change, train does not depend on them
    steps[0] = calls.step("check", lambda c: {"note": note["text"]}, inputs={"v": 2})
    result = Pipeline(steps).run(tmp_path)
    assert [r.status for r in result.steps] == ["done", "skipped"]
    with pytest.raises(ConfigError, match="needs"):
        Pipeline([Step("a", lambda c: {}, after=("zzz",))])
