"""Pipeline steps and audit checks from plugins (entry-point groups ``abyssal.pipeline_steps``
and ``abyssal.audit_checks``): a step inserted before ``deploy`` records its outputs and lets the
version deploy, or refuses it and the alias stays; a step that raises fails the run; bad
``steps`` lists are refused when the pipeline loads; an added audit check puts its section in
the model card and its checks in the verdict; unknown names are refused at load, and a plugin
that fails to import is named with its package before anything runs. Packages are faked as
``*.dist-info`` folders on ``sys.path`` (:func:`tests.plugin_fakes.fake_package`), the
models are the tabular quickstart's, trained for 2 epochs."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from abyssal.core.errors import AbyssalError, ConfigError, RegistryError
from tests.conftest import TABULAR_CONFIG
from tests.plugin_fakes import fake_package, rediscover

STEP_GROUP, CHECK_GROUP = "abyssal.pipeline_steps", "abyssal.audit_checks"

STEPS_MODULE = '''
from abyssal.pipeline.dag import Step, StepStopped


def verdict_step(cfg, attempt, home):
    """A model-risk sign-off of the trained candidate: passes, or refuses it."""
    options = cfg.step_options.get("verdict", {})
    train = f"train-{attempt}"

    def run(ctx):
        ref = ctx.outputs[train]["ref"]
        (ctx.folder / "sign-off.txt").write_text(ref)
        if options.get("refuse"):
            raise StepStopped(f"model risk refused {ref}", {"reviewer": "risk-team"})
        auroc = ctx.outputs[train]["metrics"].get("test_auroc")
        return {"ref": ref, "signed_off_by": "risk-team", "auroc": auroc}

    return Step(f"verdict-{attempt}", run, needs=(train,), inputs={"options": options})


def precheck_step(cfg, attempt, home):
    """A check before training, once for every attempt: raises or stops as told."""
    options = cfg.step_options.get("precheck", {})

    def run(ctx):
        if options.get("crash"):
            raise ValueError("the golden-sample service is down")
        raise StopIteration  # not reached in these tests

    def stop(ctx):
        raise StepStopped("the golden samples do not match", {"mismatched": 3})

    return Step("precheck", stop if options.get("stop") else run, inputs={"options": options})


def misnamed_step(cfg, attempt, home):
    return Step("something-else", lambda ctx: {})
'''

CHECKS_MODULE = '''
from abyssal.govern.audit import Check


def backtest(ctx):
    """Rows of the held-out split, a table of windows, and a bound from the options."""
    frame = ctx.held_out()
    need = ctx.options.get("min_rows", 1)
    (ctx.folder / "windows.json").write_text("[]")
    section = {
        "rows": len(frame),
        "min_rows": need,
        "windows": [{"window": 1, "auroc": 0.91}, {"window": 2, "auroc": 0.88}],
        "ref": ctx.ref,
    }
    return section, [Check("enough held-out rows", len(frame) >= need, f"{len(frame)} rows")]


def crashing(ctx):
    raise RuntimeError("the backtest service is unreachable")
'''


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Four fake plugin packages on ``sys.path``, the real registries rediscovering them."""
    from abyssal.govern.audit import AUDIT_CHECKS
    from abyssal.pipeline.steps import STEPS

    root = tmp_path_factory.mktemp("site")
    (root / "acme_steps.py").write_text(textwrap.dedent(STEPS_MODULE))
    (root / "acme_checks.py").write_text(textwrap.dedent(CHECKS_MODULE))
    for module in ("acme_broken_steps", "acme_broken_checks"):
        (root / f"{module}.py").write_text("raise ImportError('needs acme-core >= 2')\n")
    fake_package(root, "acme-steps", "1.0", {"verdict": "acme_steps:verdict_step",
                 "precheck": "acme_steps:precheck_step", "misnamed": "acme_steps:misnamed_step"},
                 group=STEP_GROUP)  # fmt: skip
    fake_package(root, "acme-broken-steps", "0.2", {"shaky": "acme_broken_steps:step"},
                 group=STEP_GROUP)  # fmt: skip
    fake_package(root, "acme-checks", "1.0", {"backtest": "acme_checks:backtest",
                 "crashing": "acme_checks:crashing"}, group=CHECK_GROUP)  # fmt: skip
    fake_package(root, "acme-broken-checks", "0.3", {"fragile": "acme_broken_checks:check"},
                 group=CHECK_GROUP)  # fmt: skip
    mp = pytest.MonkeyPatch()
    mp.syspath_prepend(str(root))
    with rediscover(STEPS, AUDIT_CHECKS):
        yield root
    mp.undo()
    for name in [m for m in sys.modules if m.startswith("acme_")]:
        del sys.modules[name]


# -- pipeline steps ----------------------------------------------------------------------------


def pipeline_file(folder: Path, data: Path, name: str, **extra: Any) -> Path:
    spec = {
        "name": name,
        "solution": "tabular",
        "config": str(TABULAR_CONFIG),
        "overrides": [f"data.path={data / 'train.csv'}", "data.ignore=[id]", "train.epochs=2",
                      "train.progress=false", "model.hidden=16", "baselines=false"],
        "validate": {"label": "diagnosis", "keys": ["id"], "pii": "off"},
        "gate": {"rules": [{"metric": "test_auroc", "min": 0.0}]},
        "perf": {"batch": 8, "reps": 2},
        **extra,
    }  # fmt: skip
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


WITH_VERDICT = ["validate", "train", "perf", "gate", "verdict", "deploy"]


@pytest.fixture(scope="module")
def deployed(site: Path, tabular_model: tuple[Path, Path], tmp_path_factory) -> dict[str, Any]:
    """A pipeline whose plugin step, between the gate and deploy, signs the version off."""
    from abyssal.pipeline.run import run_pipeline
    from abyssal.pipeline.spec import load_pipeline

    folder = tmp_path_factory.mktemp("pipeline")
    path = pipeline_file(folder, tabular_model[1], "signed", steps=WITH_VERDICT)
    out = run_pipeline(load_pipeline(path), home=folder / "home")
    return {"out": out, "home": folder / "home", "folder": folder, "data": tabular_model[1]}


def test_a_plugin_step_before_deploy_records_its_outputs_and_the_version_deploys(
    deployed: dict[str, Any],
) -> None:
    from abyssal.core.home import using_home
    from abyssal.core.store import ModelStore

    out = deployed["out"]
    assert out.status == "deployed", out.summary()
    steps = out.attempts[0].steps
    assert [s.name for s in steps] == ["validate", "train-0", "perf-0", "gate-0", "verdict-0",
                                       "deploy"]  # fmt: skip
    verdict = next(s for s in steps if s.name == "verdict-0")
    assert verdict.status == "done" and verdict.outputs["signed_off_by"] == "risk-team"
    assert verdict.outputs["ref"] == out.deployed
    with using_home(deployed["home"]):
        assert ModelStore().resolve("tabular:production").ref == out.deployed
    state = out.state
    assert (state / "steps" / "verdict-0" / "sign-off.txt").read_text() == out.deployed
    record = json.loads((state / "steps" / "verdict-0.json").read_text())
    assert record["outputs"]["signed_off_by"] == "risk-team"
    summary = json.loads((state / "summary.json").read_text())
    recorded = {s["name"]: s for s in summary["attempts"][0]["steps"]}
    assert recorded["verdict-0"]["outputs"]["signed_off_by"] == "risk-team"
    html = out.report.read_text()
    assert "<h2>Added steps</h2>" in html and "verdict-0" in html and "risk-team" in html


def test_pipeline_show_lists_the_plugin_steps_outputs(
    deployed: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from abyssal.cli.main import main

    assert main(["pipeline", "show", str(deployed["out"].state)]) == 0
    out = capsys.readouterr().out
    assert "verdict-0: done" in out and "signed_off_by=risk-team" in out


def test_a_refusing_plugin_step_leaves_the_alias_unmoved(deployed: dict[str, Any]) -> None:
    from abyssal.core.home import using_home
    from abyssal.core.store import ModelStore
    from abyssal.pipeline.run import run_pipeline
    from abyssal.pipeline.spec import load_pipeline

    path = pipeline_file(deployed["folder"], deployed["data"], "refusing", steps=WITH_VERDICT,
                         step_options={"verdict": {"refuse": True}})  # fmt: skip
    out = run_pipeline(load_pipeline(path), home=deployed["home"])
    assert out.status == "refused", out.summary()
    assert out.deployed is None
    assert "by verdict-0: model risk refused tabular:2" in out.reason
    statuses = {s.name: s.status for s in out.attempts[0].steps}
    assert statuses["gate-0"] == "done" and statuses["verdict-0"] == "stopped"
    assert statuses["deploy"] == "not_run"
    with using_home(deployed["home"]):
        store = ModelStore()
        assert store.resolve("tabular:production").ref == deployed["out"].deployed
        assert len(store.list_versions("tabular")) == 2  # trained, not deployed
    html = out.report.read_text()
    assert "model risk refused" in html and "risk-team" in html  # its report is shown


def test_a_plugin_step_that_raises_fails_the_run_and_one_that_stops_before_training_stops_it(
    site: Path, tabular_model: tuple[Path, Path], tmp_path: Path
) -> None:
    from abyssal.core.home import using_home
    from abyssal.core.store import ModelStore
    from abyssal.pipeline.run import run_pipeline
    from abyssal.pipeline.spec import load_pipeline

    steps = ["precheck", "validate", "train", "perf", "gate", "deploy"]
    crash = pipeline_file(tmp_path, tabular_model[1], "crash", steps=steps,
                          step_options={"precheck": {"crash": True}})  # fmt: skip
    out = run_pipeline(load_pipeline(crash), home=tmp_path / "home")
    assert out.status == "failed"
    assert out.reason == "precheck failed: ValueError: the golden-sample service is down"
    assert "the golden-sample service is down" in out.report.read_text()

    stop = pipeline_file(tmp_path, tabular_model[1], "stop", steps=steps,
                         step_options={"precheck": {"stop": True}})  # fmt: skip
    out = run_pipeline(load_pipeline(stop), home=tmp_path / "home")
    assert out.status == "stopped" and len(out.attempts) == 1
    assert out.reason == "precheck stopped the run: the golden samples do not match"
    with using_home(tmp_path / "home"):
        assert ModelStore().list_versions() == []  # nothing trained


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (["validate", "train", "backtest", "deploy"],
         "unknown pipeline step 'backtest'; choose from: deploy, gate, misnamed, perf, precheck, "
         "shaky, train, validate, verdict"),
        (["validate", "perf", "gate", "deploy"], "'train' is required"),
        (["validate", "train", "perf", "gate"], "'deploy' is required"),
        (["train", "deploy", "verdict"], "'deploy' comes last"),
        (["train", "train", "deploy"], "'train' is listed twice"),
        (["train", "gate", "perf", "deploy"], "'perf' comes before 'gate'"),
        (["train", "validate", "deploy"], "'validate' comes before 'train'"),
    ],
)  # fmt: skip
def test_bad_steps_are_refused_when_the_pipeline_loads(
    site: Path, tmp_path: Path, steps: list[str], message: str
) -> None:
    from abyssal.pipeline.spec import load_pipeline

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"solution": "tabular", "steps": steps}))
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_pipeline(path)


def test_defaults_and_step_options(site: Path, tmp_path: Path) -> None:
    from abyssal.pipeline.spec import load_pipeline

    path = tmp_path / "p.yaml"
    path.write_text("solution: tabular\n")
    assert load_pipeline(path).steps == ["validate", "train", "perf", "gate", "deploy"]
    path.write_text("solution: tabular\nstep_options: {verdict: {refuse: true}}\n")
    with pytest.raises(ConfigError, match="step_options: 'verdict' is not one of the steps"):
        load_pipeline(path)
    path.write_text(
        "solution: tabular\nsteps: [train, verdict, deploy]\nstep_options: {verdict:}\n"
    )
    assert load_pipeline(path).step_options == {"verdict": {}}


def test_a_plugin_step_that_fails_to_import_is_named_before_anything_runs(
    site: Path, tabular_model: tuple[Path, Path], tmp_path: Path
) -> None:
    from abyssal.core.runs import list_runs
    from abyssal.pipeline.run import run_pipeline
    from abyssal.pipeline.spec import load_pipeline

    path = pipeline_file(tmp_path, tabular_model[1], "shaky",
                         steps=["validate", "train", "shaky", "deploy"])  # fmt: skip
    cfg = load_pipeline(path)  # names only: nothing imported yet
    with pytest.raises(RegistryError, match=r"pipeline step 'shaky' from the plugin package "
                       r"acme-broken-steps 0\.2 .*needs acme-core >= 2"):  # fmt: skip
        run_pipeline(cfg, home=tmp_path / "home")
    assert not (tmp_path / "home" / "pipelines" / "shaky").exists()
    assert list_runs(tmp_path / "home") == []


def test_a_plugin_step_with_the_wrong_name_is_refused_naming_its_package(
    site: Path, tabular_model: tuple[Path, Path], tmp_path: Path
) -> None:
    from abyssal.pipeline.spec import load_pipeline
    from abyssal.pipeline.steps import build_steps

    path = pipeline_file(tmp_path, tabular_model[1], "misnamed",
                         steps=["train", "misnamed", "deploy"])  # fmt: skip
    with pytest.raises(ConfigError, match=r"'misnamed' \(plugin package acme-steps 1\.0\) built "
                       r"a step named 'something-else'; name it 'misnamed'"):  # fmt: skip
        build_steps(load_pipeline(path), 0, tmp_path / "home")


# -- audit checks ------------------------------------------------------------------------------


def write_policy(path: Path, **sections: Any) -> Path:
    path.write_text(yaml.safe_dump({"explain": {"items": 0}, "privacy": {"pii": "off"},
                                    **sections}))  # fmt: skip
    return path


def test_a_plugin_audit_check_adds_its_section_and_its_checks(
    site: Path, tabular_model: tuple[Path, Path], tmp_path: Path
) -> None:
    pytest.importorskip("matplotlib")
    from abyssal.govern.audit import audit_version
    from abyssal.govern.policy import load_policy

    policy = load_policy(write_policy(tmp_path / "p.yaml", checks={"backtest": {"min_rows": 1}}))
    result = audit_version("tabular:1", policy, home=tabular_model[0], out=tmp_path / "audit")
    assert result.passed, result.summary()
    section = result.card["checks"]["backtest"]
    assert section["rows"] > 0 and section["ref"] == "tabular:1" and len(section["windows"]) == 2
    assert result.card["audit"]["plugins"] == {
        "backtest": {"package": "acme-checks", "version": "1.0"}
    }
    check = result.checks[-1]
    assert check.name == "backtest: enough held-out rows" and check.passed
    assert (tmp_path / "audit" / "checks" / "backtest" / "windows.json").is_file()
    record = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert record["card"]["checks"]["backtest"]["min_rows"] == 1
    html = (tmp_path / "audit" / "audit.html").read_text()
    assert "Check: backtest (from acme-checks 1.0)" in html and "<th>auroc</th>" in html
    assert "backtest: enough held-out rows" in html
    assert (tmp_path / "audit" / "audit.pdf").stat().st_size > 0


def test_a_failing_plugin_check_fails_the_audit(
    site: Path, tabular_model: tuple[Path, Path], tmp_path: Path
) -> None:
    from abyssal.govern.audit import audit_version
    from abyssal.govern.policy import load_policy

    policy = load_policy(
        write_policy(tmp_path / "p.yaml", checks={"backtest": {"min_rows": 10**9}})
    )
    result = audit_version("tabular:1", policy, home=tabular_model[0], out=tmp_path / "audit",
                           render=False)  # fmt: skip
    assert not result.passed
    assert "FAIL  backtest: enough held-out rows" in result.summary()


def test_a_plugin_check_that_raises_is_an_error_naming_it_and_its_package(
    site: Path, tabular_model: tuple[Path, Path], tmp_path: Path
) -> None:
    from abyssal.govern.audit import audit_version
    from abyssal.govern.policy import load_policy

    policy = load_policy(write_policy(tmp_path / "p.yaml", checks={"crashing": {}}))
    named = (r"audit check 'crashing' \(plugin package acme-checks 1\.0\) raised RuntimeError: "
             "the backtest service is unreachable")  # fmt: skip
    with pytest.raises(AbyssalError, match=named):
        audit_version("tabular:1", policy, home=tabular_model[0], out=tmp_path / "audit",
                      render=False)  # fmt: skip
    assert not (tmp_path / "audit" / "audit.json").exists()


def test_an_unknown_audit_check_is_refused_when_the_policy_loads(
    site: Path, tmp_path: Path
) -> None:
    from abyssal.govern.policy import load_policy

    with pytest.raises(ConfigError, match="unknown audit check 'golden'; choose from: backtest, "
                       "crashing, fragile"):  # fmt: skip
        load_policy(write_policy(tmp_path / "p.yaml", checks={"golden": {}}))
    with pytest.raises(ConfigError, match=r"checks\.backtest: expected a mapping of options"):
        load_policy(write_policy(tmp_path / "q.yaml", checks={"backtest": 3}))
    assert load_policy(write_policy(tmp_path / "r.yaml", checks={"backtest": None})).checks == {
        "backtest": {}
    }


def test_an_audit_check_that_fails_to_import_is_named_before_the_model_loads(
    site: Path, tmp_path: Path
) -> None:
    from abyssal.govern.audit import audit_version
    from abyssal.govern.policy import load_policy

    policy = load_policy(write_policy(tmp_path / "p.yaml", checks={"fragile": {}}))
    with pytest.raises(RegistryError, match=r"audit check 'fragile' from the plugin package "
                       r"acme-broken-checks 0\.3 .*needs acme-core >= 2"):  # fmt: skip
        audit_version("no-such-model:1", policy, out=tmp_path / "audit")  # checked before loading
