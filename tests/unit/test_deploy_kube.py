"""Kubernetes manifests of a deployment: valid against the API schemas (strict), the public tier
kept apart, autoscaler bounds, DNS names, the router pointed at each tier's Service."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

import abyssal
from abyssal.core.config import config_from_dict
from abyssal.core.errors import ConfigError
from abyssal.deploy.kube import manifests, write_manifests
from abyssal.deploy.spec import DeploymentConfig, load_deployment

ROOT = Path(__file__).resolve().parents[2]
TABULAR = ROOT / "deployments" / "tabular.yaml"
K8S_VERSION = "1.30.0"
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _variant(tmp_path: Path, **changes: Any) -> DeploymentConfig:
    """tabular.yaml with its private tier on a GPU, more serve options, an external tier."""
    data = yaml.safe_load(TABULAR.read_text())
    data["tiers"][1]["device"] = "cuda"
    data["tiers"][1]["serve_args"] = ["--max-batch-size", "64", "--state-dir", "/var/lib/state"]
    data["tiers"].append(
        {"name": "cloud", "kind": "public", "models": ["tabular"], "urls": ["http://x.io:80"]}
    )
    data.update(changes)
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_deployment(path)


def _by(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _validate(docs: list[dict]) -> None:
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{doc['kind']}/{doc['metadata']['name']}: {exc}") from None


def test_tabular_manifests_validate_strictly() -> None:
    docs = manifests(load_deployment(TABULAR))
    _validate(docs)
    kinds = [(d["kind"], d["metadata"]["name"]) for d in docs]
    for tier in ("edge", "private", "public"):
        for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
            assert (kind, f"tabular-hybrid-{tier}") in kinds
    for kind in ("ConfigMap", "Deployment", "Service"):
        assert (kind, "tabular-hybrid-router") in kinds
    assert {d["metadata"]["namespace"] for d in docs} == {"abyssal"}


def test_a_cuda_variant_validates_and_asks_for_a_gpu(tmp_path: Path) -> None:
    cfg = _variant(tmp_path)
    docs = manifests(cfg, {"tabular": "tabular:2"})
    _validate(docs)
    deployments = _by(docs, "Deployment")
    assert "tabular-hybrid-cloud" not in deployments  # runs elsewhere: no objects
    gpu = deployments["tabular-hybrid-private"]["spec"]["template"]["spec"]
    box = gpu["containers"][0]
    assert box["image"] == f"abyssal:{abyssal.__version__}-cuda"
    assert box["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert box["args"] == [
        "serve", "tabular:2", "--host", "0.0.0.0", "--port", "8000", "--device", "cuda",
        "--max-batch-size", "64", "--state-dir", "/var/lib/state",
    ]  # fmt: skip
    assert {"name": "state", "mountPath": "/var/lib/state"} in box["volumeMounts"]
    assert gpu["tolerations"][0]["key"] == "nvidia.com/gpu"
    cpu = deployments["tabular-hybrid-edge"]["spec"]["template"]["spec"]["containers"][0]
    assert cpu["image"] == f"abyssal:{abyssal.__version__}-cpu"
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"]


def test_replicas_are_locked_down() -> None:
    docs = manifests(load_deployment(TABULAR))
    for name, deployment in _by(docs, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        assert pod["automountServiceAccountToken"] is False
        for box in pod["containers"]:
            assert box["securityContext"]["allowPrivilegeEscalation"] is False
            assert box["securityContext"]["readOnlyRootFilesystem"] is True
            assert box["securityContext"]["capabilities"]["drop"] == ["ALL"]
            assert box["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert box["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert box["startupProbe"]["httpGet"]["path"] == "/healthz"
            assert box["resources"]["requests"] and box["resources"]["limits"], name


def test_the_public_tier_is_labelled_and_kept_on_its_own_nodes() -> None:
    docs = manifests(load_deployment(TABULAR))
    public = [d for d in docs if d["metadata"]["name"] == "tabular-hybrid-public"]
    assert len(public) == 4
    for doc in public:
        labels = doc["metadata"]["labels"]
        assert labels["abyssal.io/tier"] == "public", doc["kind"]
        assert labels["abyssal.io/trusted"] == "false", doc["kind"]
    for name, deployment in _by(docs, "Deployment").items():
        template = deployment["spec"]["template"]
        if name == "tabular-hybrid-router":
            # the router sees sensitive requests: never on a public node
            terms = template["spec"]["affinity"]["nodeAffinity"][
                "requiredDuringSchedulingIgnoredDuringExecution"
            ]["nodeSelectorTerms"]
            assert terms == [
                {
                    "matchExpressions": [
                        {"key": "abyssal.io/tier", "operator": "NotIn", "values": ["public"]}
                    ]
                }
            ]
            continue
        kind = name.removeprefix("tabular-hybrid-")
        assert template["spec"]["nodeSelector"] == {"abyssal.io/tier": kind}
        assert template["metadata"]["labels"]["abyssal.io/tier"] == kind
        assert template["metadata"]["labels"]["abyssal.io/trusted"] == (
            "false" if kind == "public" else "true"
        )
    services = _by(docs, "Service")
    public_pods = _by(docs, "Deployment")["tabular-hybrid-public"]["spec"]["template"]
    for name, service in services.items():
        selected = all(
            public_pods["metadata"]["labels"].get(k) == v
            for k, v in service["spec"]["selector"].items()
        )
        assert selected == (name == "tabular-hybrid-public"), name


def test_hpa_bounds_follow_the_replica_ranges_and_the_autoscaler() -> None:
    cfg = load_deployment(TABULAR)
    docs = manifests(cfg)
    hpas = _by(docs, "HorizontalPodAutoscaler")
    bounds = {n: (h["spec"]["minReplicas"], h["spec"]["maxReplicas"]) for n, h in hpas.items()}
    assert bounds == {
        "tabular-hybrid-edge": (1, 1),
        "tabular-hybrid-private": (1, 3),
        "tabular-hybrid-public": (1, 4),  # min 0 in the file: an HPA needs >= 1
    }
    assert (
        "minReplicas >= 1"
        in hpas["tabular-hybrid-public"]["metadata"]["annotations"]["abyssal.io/note"]
    )
    assert "annotations" not in hpas["tabular-hybrid-private"]["metadata"]
    replicas = {n: d["spec"]["replicas"] for n, d in _by(docs, "Deployment").items()}
    assert replicas["tabular-hybrid-public"] == 1  # an HPA never scales up from 0
    assert replicas["tabular-hybrid-private"] == 1
    metrics = hpas["tabular-hybrid-private"]["spec"]["metrics"]
    assert metrics[0]["resource"]["target"]["averageUtilization"] == 65
    assert metrics[1]["pods"]["metric"]["name"] == "abyssal_queue_depth"
    assert metrics[1]["pods"]["target"] == {"type": "AverageValue", "averageValue": "4"}
    target = hpas["tabular-hybrid-edge"]["spec"]["scaleTargetRef"]
    assert target == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "tabular-hybrid-edge"}
    cfg.autoscale.enabled = False  # every tier keeps its initial replicas, 0 included
    fixed = manifests(cfg)
    assert _by(fixed, "HorizontalPodAutoscaler") == {}
    assert _by(fixed, "Deployment")["tabular-hybrid-public"]["spec"]["replicas"] == 0
    assert "annotations" not in _by(fixed, "Deployment")["tabular-hybrid-public"]["metadata"]
    pdbs = _by(docs, "PodDisruptionBudget")
    assert {p["spec"]["maxUnavailable"] for p in pdbs.values()} == {1}


def test_names_are_dns_labels_and_the_router_uses_the_services(tmp_path: Path) -> None:
    cfg = _variant(tmp_path)
    docs = manifests(cfg, {"tabular": "tabular:2"})
    for doc in docs:
        name = doc["metadata"]["name"]
        assert DNS_LABEL.match(name) and len(name) <= 63, name
    config_map = _by(docs, "ConfigMap")["tabular-hybrid-router"]
    routed = config_from_dict(
        DeploymentConfig, yaml.safe_load(config_map["data"]["deployment.yaml"])
    )
    urls = {t.name: t.urls for t in routed.tiers}
    assert urls == {
        "edge": ["http://tabular-hybrid-edge.abyssal.svc.cluster.local:8000"],
        "private": ["http://tabular-hybrid-private.abyssal.svc.cluster.local:8000"],
        "public": ["http://tabular-hybrid-public.abyssal.svc.cluster.local:8000"],
        "cloud": ["http://x.io:80"],
    }
    assert routed.tier("edge").models == ["tabular:2"]
    assert routed.tier("cloud").models == ["tabular"]  # served elsewhere, as written
    assert routed.tier("public").trusted is False
    assert (routed.local.host, routed.local.port) == ("0.0.0.0", 8000)
    router = _by(docs, "Deployment")["tabular-hybrid-router"]["spec"]["template"]["spec"]
    box = router["containers"][0]
    assert box["command"] + box["args"] == [
        "abyssal", "deploy", "route", "/etc/abyssal/deployment.yaml", "--host", "0.0.0.0",
        "--port", "8000",
    ]  # fmt: skip
    assert router["volumes"][0] == {
        "name": "config",
        "configMap": {"name": "tabular-hybrid-router"},
    }
    services = _by(docs, "Service")
    assert services["tabular-hybrid-router"]["spec"]["ports"][0]["port"] == 8000
    assert {s["spec"]["type"] for s in services.values()} == {"ClusterIP"}


def test_write_manifests_writes_one_multi_document_file_per_tier(tmp_path: Path) -> None:
    cfg = load_deployment(TABULAR)
    paths = write_manifests(cfg, tmp_path / "k8s", {"tabular": "tabular:7"})
    assert [p.name for p in paths] == [
        "tier-edge.yaml", "tier-private.yaml", "tier-public.yaml", "router.yaml"
    ]  # fmt: skip
    loaded = [doc for p in paths for doc in yaml.safe_load_all(p.read_text())]
    assert loaded == manifests(cfg, {"tabular": "tabular:7"})
    assert all("&id" not in p.read_text() for p in paths)  # no YAML anchors


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tiers": [{"name": "router", "models": ["m"]}]}, "a tier named 'router'"),
        ({"tiers": [{"name": "edge-", "models": ["m"]}]}, "'x-edge-'.* is not a DNS label"),
        (
            {"tiers": [{"name": "edge", "models": ["m"], "serve_args": ["--port", "9"]}]},
            r"serve_args sets \['--port'\]",
        ),
        ({"image": "registry.io:5000/abyssal:1.0"}, "give the repository only"),
    ],
)
def test_what_kubernetes_cannot_take_is_refused(change: dict, message: str) -> None:
    data = {"name": "x", "tiers": [{"name": "edge", "models": ["m"]}], **change}
    cfg = config_from_dict(DeploymentConfig, data)
    with pytest.raises(ConfigError, match=message):
        manifests(cfg)


def test_an_image_in_a_registry_with_a_port_keeps_its_repository() -> None:
    cfg = config_from_dict(
        DeploymentConfig,
        {
            "name": "x",
            "image": "registry.io:5000/team/abyssal",
            "tiers": [{"name": "a", "models": ["m"]}],
        },
    )
    pods = [d["spec"]["template"]["spec"] for d in manifests(cfg) if d["kind"] == "Deployment"]
    images = {pod["containers"][0]["image"] for pod in pods}
    assert images == {f"registry.io:5000/team/abyssal:{abyssal.__version__}-cpu"}
