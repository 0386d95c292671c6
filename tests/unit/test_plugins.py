"""Plugins through entry points: registries find what installed packages declare without
importing it, name the package of a plugin that fails to load, refuse a name two packages (or
a package and abyssal) claim while the rest keeps working, and the CLI lists them. Packages are
faked as ``*.dist-info`` folders on ``sys.path``, which is what an installed package is to
``importlib.metadata``."""

from __future__ import annotations

import re
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from abyssal.core.errors import RegistryError
from abyssal.core.registry import Registry
from tests.plugin_fakes import GROUP, fake_package, rediscover


def test_plugins_are_listed_without_being_imported_and_load_on_use(site: Path) -> None:
    (site / "acme_things.py").write_text("LOADED = True\nclass Claims:\n    pass\n")
    fake_package(site, "acme-things", "1.2.0", {"claims": "acme_things:Claims"},
                 summary="insurance claims")  # fmt: skip
    things: Registry[type] = Registry("thing", group=GROUP)
    things.add("builtin", dict)
    assert things.names() == ["builtin", "claims"]
    assert "acme_things" not in sys.modules  # listed, not imported
    assert things.summary("claims") == "insurance claims (plugin: acme-things)"
    plugin = things.origin("claims")
    assert (plugin.package, plugin.version, plugin.group) == ("acme-things", "1.2.0", GROUP)
    assert things.origin("builtin") is None
    assert things.get("claims").__name__ == "Claims"


def test_a_plugin_that_fails_to_import_names_its_package_and_breaks_nothing_else(
    site: Path,
) -> None:
    (site / "acme_broken.py").write_text("raise RuntimeError('no licence key')\n")
    fake_package(site, "acme-broken", "0.1", {"broken": "acme_broken:Thing"})
    things: Registry[type] = Registry("thing", group=GROUP)
    things.add("builtin", dict)
    assert things.names() == ["broken", "builtin"]
    with pytest.raises(RegistryError, match=r"'broken' from the plugin package acme-broken 0.1"
                       r".*RuntimeError: no licence key"):  # fmt: skip
        things.get("broken")
    assert things.get("builtin") is dict


def test_a_name_claimed_twice_is_an_error_naming_both(site: Path) -> None:
    (site / "acme_a.py").write_text("class A:\n    pass\n")
    fake_package(site, "acme-a", "1.0", {"same": "acme_a:A", "builtin": "acme_a:A",
                                         "only_a": "acme_a:A"})  # fmt: skip
    fake_package(site, "acme-b", "2.0", {"same": "acme_a:A"})
    things: Registry[type] = Registry("thing", group=GROUP)
    things.add("builtin", dict)
    with pytest.raises(RegistryError, match=r"'same' is claimed by acme-. .\.0 and acme-. .\.0"):
        things.get("same")
    with pytest.raises(RegistryError, match=r"'builtin' is claimed by abyssal and acme-a 1.0"):
        things.get("builtin")
    assert things.get("only_a").__name__ == "A"  # the rest keeps working
    assert set(things.conflicts()) == {"same", "builtin"}


def test_abyssal_registering_a_name_a_plugin_took_is_a_conflict_not_a_crash(site: Path) -> None:
    (site / "acme_late.py").write_text("class L:\n    pass\n")
    fake_package(site, "acme-late", "1.0", {"late": "acme_late:L"})
    things: Registry[type] = Registry("thing", group=GROUP)
    assert things.names() == ["late"]  # discovered first
    things.add("late", dict)  # then abyssal's own code registers the same name
    with pytest.raises(RegistryError, match=r"claimed by abyssal and acme-late 1\.0"):
        things.get("late")


def test_a_bad_entry_point_is_reported(site: Path) -> None:
    fake_package(site, "acme-typo", "1.0", {"typo": "acme_typo.Thing"})
    things: Registry[type] = Registry("thing", group=GROUP)
    with pytest.raises(RegistryError, match="not 'module:attribute'"):
        things.get("typo")


@pytest.fixture
def solutions(site: Path) -> Iterator[Path]:
    """The real solution registry, rediscovering plugins on ``site``; restored afterwards."""
    from abyssal.solutions import SOLUTIONS

    with rediscover(SOLUTIONS):
        yield site


def test_the_cli_lists_plugins_and_their_errors(
    solutions: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from abyssal.cli.main import main

    (solutions / "acme_claims.py").write_text(textwrap.dedent("""
        raise ImportError("acme_claims needs acme-core >= 2")
    """))  # fmt: skip
    fake_package(solutions, "acme-claims", "0.3.1", {"claims": "acme_claims:ClaimsSolution"},
                 group="abyssal.solutions", summary="insurance claims triage")  # fmt: skip
    fake_package(solutions, "acme-fraud", "1.0", {"fraud": "acme_claims:X"},
                 group="abyssal.solutions")  # fmt: skip
    assert main(["solutions"]) == 0
    out = capsys.readouterr().out
    assert "claims" in out and "acme-claims 0.3.1" in out and "insurance claims triage" in out
    assert "solution 'fraud' is claimed by abyssal and acme-fraud 1.0" in out
    assert main(["solutions", "--check"]) == 0
    out = capsys.readouterr().out
    assert "error: solution 'claims' from the plugin package acme-claims 0.3.1" in out
    assert "tabular" in out  # the rest of the CLI keeps working
    assert main(["version"]) == 0
    out = capsys.readouterr().out
    assert "abyssal.solutions" in out and "acme-claims" in out and "0.3.1" in out
    assert main(["train", "claims"]) == 1
    assert "acme-claims 0.3.1" in capsys.readouterr().err


def test_a_plugin_solution_trains_evaluates_and_predicts_and_its_package_is_in_the_lineage(
    solutions: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from abyssal.cli.main import main
    from abyssal.core.store import ModelStore

    (solutions / "acme_tab.py").write_text(textwrap.dedent("""
        from abyssal.solutions.tabular.solution import TabularSolution

        class AcmeTabular(TabularSolution):
            name = "acme_tab"
    """))  # fmt: skip
    fake_package(solutions, "acme-tab", "1.4.0", {"acme_tab": "acme_tab:AcmeTabular"},
                 group="abyssal.solutions")  # fmt: skip
    monkeypatch.setenv("ABYSSAL_HOME", str(tmp_path / "home"))
    assert main(["generate", "acme_tab", "--out", str(tmp_path / "demo")]) == 0
    fast = ["train.epochs=2", "train.progress=false", "baselines=false", "model.hidden=16"]
    table = tmp_path / "demo" / "train.csv"
    assert main(["train", "acme_tab", "data.source=file", f"data.path={table}",
                 "data.target=diagnosis", "data.ignore=[id]", *fast]) == 0  # fmt: skip
    version = ModelStore().resolve("acme_tab:latest")
    assert version.solution == "acme_tab"
    assert version.lineage["plugin"] == {"package": "acme-tab", "version": "1.4.0"}
    assert main(["evaluate", "acme_tab:latest"]) == 0
    out = tmp_path / "scores.csv"
    assert main(["predict", "acme_tab", "--model", "acme_tab:latest", "--input",
                 str(tmp_path / "demo" / "new_rows.csv"), "--out", str(out)]) == 0  # fmt: skip
    assert out.is_file()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Claims", "lowercase letters"),
        ("9lives", "starting with a letter"),
        ("fraud", "solution 'fraud' exists already (abyssal)"),
    ],
)
def test_new_solution_refuses_a_bad_or_taken_name_and_writes_nothing(
    tmp_path: Path, name: str, message: str
) -> None:
    from abyssal.core.errors import ConfigError
    from abyssal.scaffold import new_solution

    with pytest.raises(ConfigError, match=re.escape(message)):
        new_solution(name, tmp_path / "pkg")
    assert list(tmp_path.iterdir()) == []


def test_new_solution_refuses_a_folder_with_files_and_fills_an_empty_one(tmp_path: Path) -> None:
    from abyssal.core.errors import ConfigError
    from abyssal.scaffold import new_solution

    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="is not an empty folder"):
        new_solution("claims", tmp_path / "busy")
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["notes.txt"]
    (tmp_path / "empty").mkdir()
    files = new_solution("steel_coils", tmp_path / "empty")
    assert all(f.is_file() for f in files)
    text = (tmp_path / "empty" / "src" / "abyssal_steel_coils" / "solution.py").read_text()
    assert "class SteelCoilsSolution(Solution):" in text and '"steel_coils"' in text
    assert "__NAME__" not in text and "__CLASS__" not in text
    project = (tmp_path / "empty" / "pyproject.toml").read_text()
    assert 'steel_coils = "abyssal_steel_coils.solution:SteelCoilsSolution"' in project
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "empty"]  # no staging left


def test_a_plugin_entry_that_is_no_solution_or_has_another_name_is_refused(
    solutions: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from abyssal.cli.main import main
    from abyssal.solutions import get_solution

    (solutions / "acme_mixed.py").write_text(textwrap.dedent("""
        from abyssal.solutions.tabular.solution import TabularSolution

        class Renamed(TabularSolution):
            name = "renamed"

        NOT_A_CLASS = 42
    """))  # fmt: skip
    fake_package(solutions, "acme-mixed", "0.2", {"claims": "acme_mixed:Renamed",
                 "numbers": "acme_mixed:NOT_A_CLASS"}, group="abyssal.solutions")  # fmt: skip
    with pytest.raises(RegistryError, match=r"'claims' from the plugin package acme-mixed 0\.2 "
                       r"is Renamed, whose name is 'renamed'"):  # fmt: skip
        get_solution("claims")
    with pytest.raises(RegistryError, match="is 42, not a subclass of"):
        get_solution("numbers")
    assert main(["solutions", "--check"]) == 0
    out = capsys.readouterr().out
    assert "whose name is 'renamed'" in out and "not a subclass" in out
