"""``abyssal deploy`` verbs that need no running service: simulate (a trace file and a made-up
replica), manifests, status and down with nothing up, and bad deployment files named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from abyssal.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
FILE = ROOT / "deployments" / "tabular.yaml"


def test_simulate_a_trace_file_prints_both_allocations_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "trace.csv"
    rates = [2, 2, 10, 30, 60, 60, 30, 10, 2, 2]
    trace.write_text("time_s,rps\n" + "".join(f"{120 * k},{r}\n" for k, r in enumerate(rates)))
    out = tmp_path / "sim.json"
    argv = ["deploy", "simulate", str(FILE), "--capacity", "20", "--trace", str(trace)]
    assert main([*argv, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "static-for-peak" in text and "autoscaled" in text and "per 1,000" in text
    import json

    runs = json.loads(out.read_text())
    assert [r["label"] for r in runs] == ["static-for-peak", "autoscaled"]
    assert all(r["sensitive_on_untrusted"] == 0 for r in runs)
    assert runs[1]["cost"] < runs[0]["cost"]  # the day is mostly quiet


def test_manifests_are_written_per_tier_and_for_the_router(tmp_path: Path) -> None:
    assert main(["deploy", "manifests", str(FILE), "--out", str(tmp_path / "k8s")]) == 0
    names = sorted(p.name for p in (tmp_path / "k8s").iterdir())
    assert names == ["router.yaml", "tier-edge.yaml", "tier-private.yaml", "tier-public.yaml"]
    kinds = {d["kind"] for d in yaml.safe_load_all((tmp_path / "k8s" / "tier-public.yaml").open())}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("tiers.0.kind=cloud", "is not one of"),
        ("policies.order=[edge,private]", "must list every tier once"),
        ("autoscale.scale_in_below=0.9", "scale_in_below < target_utilization"),
        ("nonsense=1", "unknown key 'nonsense'"),
    ],
)
def test_bad_deployment_files_are_named(
    override: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = yaml.safe_load(FILE.read_text())
    key, value = override.split("=", 1)
    parts = key.split(".")
    node = body
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[parts[-1]] = yaml.safe_load(value)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(body))
    assert main(["deploy", "manifests", str(bad), "--out", str(tmp_path / "k")]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "k").exists()


def test_a_public_tier_cannot_be_trusted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = yaml.safe_load(FILE.read_text())
    body["tiers"][2]["trusted"] = True
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(body))
    assert main(["deploy", "simulate", str(bad), "--capacity", "5"]) == 1
    assert "public tier cannot be trusted" in capsys.readouterr().err


def test_status_and_down_with_nothing_up_say_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deploy", "status"]) == 1
    assert "0 deployments are up" in capsys.readouterr().err
    assert main(["deploy", "down", "nope"]) == 1
    assert "'nope' is not up" in capsys.readouterr().err


def test_up_refuses_a_model_the_store_does_not_have(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deploy", "up", str(FILE)]) == 1
    assert "tier edge" in capsys.readouterr().err


def test_status_packs_a_tiers_models_by_their_measured_busy_shares(tmp_path: Path) -> None:
    """Two models share every private replica; their busy shares, summed over the replicas,
    are packed onto devices at the target utilization and shown by ``deploy status``."""
    from abyssal.cli.deploy import render_status
    from abyssal.core.config import config_from_dict
    from abyssal.deploy.local import LocalDeployment
    from abyssal.deploy.spec import DeploymentConfig

    cfg = config_from_dict(
        DeploymentConfig,
        {"name": "two", "tiers": [{"name": "private", "models": ["text", "defect", "fraud"]}],
         "autoscale": {"target_utilization": 0.65}},
    )  # fmt: skip
    local = LocalDeployment(cfg, home=tmp_path)
    for shares in ({"text": 0.2, "defect": 0.25, "fraud": 0.05}, {"text": 0.2, "defect": 0.2}):
        replica = local.pool.add("private", "http://127.0.0.1:1", state="ready")
        replica.model_shares = shares
    shares, devices = local.packing("private")
    assert shares == {"text": 0.4, "defect": 0.45, "fraud": 0.05}
    assert devices == [["defect", "fraud"], ["text"]]  # 0.45 + 0.4 would pass 0.65
    text = render_status(local.status())
    assert (
        "private: defect 0.45, fraud 0.05, text 0.40 -> 2 device(s): defect + fraud | text" in text
    )
