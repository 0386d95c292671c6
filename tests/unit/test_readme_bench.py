"""The README's benchmark leaderboards are the ones `abyssal bench` wrote: each table in the
README is rendered again from `benchmarks/results/bench/<suite>/leaderboard.json` (the run's
full record), and each kept `leaderboard.md` is what that JSON renders to."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from abyssal.bench.report import md_table, render_markdown, task_tables

ROOT = Path(__file__).resolve().parents[2]
BOARDS = sorted((ROOT / "benchmarks" / "results" / "bench").glob("*/leaderboard.json"))


def test_every_shipped_suite_has_a_kept_leaderboard() -> None:
    from abyssal.bench.suite import shipped_suites

    assert {p.parent.name for p in BOARDS} == set(shipped_suites())


@pytest.mark.parametrize("path", BOARDS, ids=lambda p: p.parent.name)
def test_the_readme_shows_each_leaderboard_as_the_run_wrote_it(path: Path) -> None:
    board = json.loads(path.read_text())
    readme = (ROOT / "README.md").read_text()
    assert (path.parent / "leaderboard.md").read_text() == render_markdown(board)
    for task in board["tasks"]:
        table = "\n".join(md_table(*task_tables(task)["leaderboard"]))
        assert table in readme, f"README lacks the {board['suite']} / {task['name']} table"
