"""Kubernetes manifests for a deployment: each tier as a Deployment of ``abyssal serve`` replicas
with its Service, HorizontalPodAutoscaler and PodDisruptionBudget, and the router as a Deployment
reading the deployment file from a ConfigMap, each tier pointed at its Service.

Objects are named ``<deployment>-<tier>`` (``tabular-hybrid-edge``) and ``<deployment>-router``,
labelled with the ``app.kubernetes.io/*`` keys and ``abyssal.io/tier: <kind>``, which is also
the node label a tier's pods are scheduled by: a public tier's pods (never trusted with sensitive
data) run only on nodes labelled ``abyssal.io/tier=public``, and the router, which sees every
request, never does. Replicas run as a non-root user with a read-only root file system.

A tier with ``urls`` runs elsewhere: it gets no objects, and the router keeps its URLs.

Example:
    >>> cfg = load_deployment("deployments/tabular.yaml")
    >>> [f"{d['kind']}/{d['metadata']['name']}" for d in manifests(cfg)][:4]
    ['Deployment/tabular-hybrid-edge', 'Service/tabular-hybrid-edge',
     'HorizontalPodAutoscaler/tabular-hybrid-edge', 'PodDisruptionBudget/tabular-hybrid-edge']
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

import abyssal
from abyssal.core.atomic import write_text_atomic
from abyssal.core.config import config_to_dict
from abyssal.core.errors import ConfigError
from abyssal.deploy.spec import DeploymentConfig, TierConfig

__all__ = [
    "CONFIG_PATH",
    "PORT",
    "RUN_AS_UID",
    "STORE_PATH",
    "image_ref",
    "is_cuda",
    "manifests",
    "object_name",
    "router_config",
    "service_url",
    "write_manifests",
]

PORT = 8000
"""The port every replica and the router listen on in a pod."""

RUN_AS_UID = 10001
"""The image's non-root user and group id (``USER`` in the Dockerfiles, ``runAsUser`` here)."""

STORE_PATH = "/srv/abyssal"
"""``$ABYSSAL_HOME`` in the image: the exported model store, owned by root."""

CONFIG_PATH = "/etc/abyssal/deployment.yaml"
"""Where the router's pod mounts the deployment file from its ConfigMap."""

TIER_LABEL = "abyssal.io/tier"
"""Label of a tier's objects and node selector of its pods: the tier's kind."""

TRUSTED_LABEL = "abyssal.io/trusted"
"""``"true"`` on objects that may see sensitive requests, ``"false"`` on the others."""

NOTE = "abyssal.io/note"
"""Annotation explaining a value that differs from the deployment file."""

RESOURCES = {
    "cpu": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
    "cuda": {
        "requests": {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "1"},
        "limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
    },
    "router": {
        "requests": {"cpu": "500m", "memory": "512Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    },
}
"""Each replica's requests and limits by device (CPU requests also anchor the HPA's CPU target).
The deployment file has no such keys: patch them (kustomize) for large models."""

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_OWN_FLAGS = ("--host", "--port", "--device")


def object_name(cfg: DeploymentConfig, part: str) -> str:
    """``<deployment>-<part>``: a valid DNS-1035 label (it names Services too).

    Raises:
        ConfigError: the name is longer than 63 characters or ends with '-'.
    """
    name = f"{cfg.name}-{part}"
    if len(name) > 63 or not _DNS_LABEL.match(name):
        raise ConfigError(
            f"Kubernetes name {name!r} (deployment name + '-' + {part!r}) is not a DNS label: "
            "at most 63 lower-case letters, digits and '-', starting with a letter and not "
            "ending with '-'"
        )
    return name


def service_url(cfg: DeploymentConfig, tier: TierConfig) -> str:
    """The in-cluster URL of a tier's Service, which the router sends the tier's requests to."""
    return f"http://{object_name(cfg, tier.name)}.{cfg.namespace}.svc.cluster.local:{PORT}"


def is_cuda(tier: TierConfig) -> bool:
    """Whether the tier's replicas run on a GPU (``cuda``, ``cuda:1``)."""
    return tier.device == "cuda" or tier.device.startswith("cuda:")


def image_ref(cfg: DeploymentConfig, flavour: str) -> str:
    """``<cfg.image>:<abyssal version>-<flavour>`` (flavour ``cpu`` or ``cuda``).

    Raises:
        ConfigError: ``cfg.image`` already has a tag or digest.
    """
    last = cfg.image.rsplit("/", 1)[-1]
    if not cfg.image or ":" in last or "@" in last:
        raise ConfigError(
            f"image {cfg.image!r}: give the repository only (e.g. registry.example.com/abyssal); "
            f"the tag is the abyssal version and flavour, e.g. :{abyssal.__version__}-cpu"
        )
    return f"{cfg.image}:{abyssal.__version__}-{flavour}"


def manifests(cfg: DeploymentConfig, refs: Mapping[str, str] | None = None) -> list[dict]:
    """Every object of the deployment: per served tier a Deployment, Service, HPA and PDB; then
    the router's ConfigMap, Deployment, Service and PDB.

    Args:
        cfg: the deployment.
        refs: model ref -> the ref to serve instead (what
            :func:`~abyssal.core.store_export.export_versions` returned for the image's store);
            refs not in it are served as written.

    Returns:
        The objects, as plain dicts (YAML- and JSON-ready).

    Raises:
        ConfigError: a name that is no valid DNS label, a tier called ``router``, an image with
            a tag, or ``serve_args`` that set ``--host``, ``--port`` or ``--device``.
    """
    return [doc for _, docs in _groups(cfg, refs or {}) for doc in docs]


def write_manifests(
    cfg: DeploymentConfig, out_dir: str | Path, refs: Mapping[str, str] | None = None
) -> list[Path]:
    """Write :func:`manifests` as multi-document YAML files, atomically: ``tier-<name>.yaml``
    for each served tier and ``router.yaml`` (``kubectl apply -f out_dir``).

    Returns:
        The files written, tiers first.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for stem, docs in _groups(cfg, refs or {}):
        head = (
            f"# {cfg.name}: {stem}, written by abyssal {abyssal.__version__} "
            f"(abyssal deploy manifests); namespace {cfg.namespace}\n"
        )
        body = yaml.safe_dump_all(docs, sort_keys=False, explicit_start=True, width=100)
        paths.append(write_text_atomic(out_dir / f"{stem}.yaml", head + body))
    return paths


def _groups(cfg: DeploymentConfig, refs: Mapping[str, str]) -> list[tuple[str, list[dict]]]:
    """(file stem, objects) per served tier, then the router's."""
    if any(t.name == "router" for t in cfg.tiers):
        raise ConfigError(
            "a tier named 'router' would share its Kubernetes names with the router; rename it"
        )
    groups = [(f"tier-{t.name}", _tier_objects(cfg, t, refs)) for t in cfg.tiers if not t.urls]
    groups.append(("router", _router_objects(cfg, refs)))
    # plain, unshared data: no YAML anchors, and a caller's edit of one object stays there
    return [(stem, json.loads(json.dumps(docs))) for stem, docs in groups]


def _labels(cfg: DeploymentConfig, component: str) -> dict[str, str]:
    """The labels that select one component's pods."""
    return {
        "app.kubernetes.io/name": "abyssal",
        "app.kubernetes.io/instance": cfg.name,
        "app.kubernetes.io/component": component,
    }


def _all_labels(
    cfg: DeploymentConfig, component: str, kind: str | None, trusted: bool
) -> dict[str, str]:
    """Every label of a component's objects: ``kind`` is the tier's (``None``: the router)."""
    labels = {
        **_labels(cfg, component),
        "app.kubernetes.io/part-of": cfg.name,
        "app.kubernetes.io/version": abyssal.__version__,
        "app.kubernetes.io/managed-by": "abyssal",
    }
    if kind is not None:
        labels[TIER_LABEL] = kind
    labels[TRUSTED_LABEL] = "true" if trusted else "false"
    return labels


def _meta(
    cfg: DeploymentConfig, name: str, labels: dict[str, str], notes: dict[str, str] | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": cfg.namespace, "labels": dict(labels)}
    if notes:
        meta["annotations"] = dict(notes)
    return meta


def _serve_args(cfg: DeploymentConfig, tier: TierConfig, refs: Mapping[str, str]) -> list[str]:
    """``serve MODEL... --host 0.0.0.0 --port 8000 --device D`` and the tier's ``serve_args``."""
    own = [a for a in tier.serve_args if a.split("=", 1)[0] in _OWN_FLAGS]
    if own:
        raise ConfigError(
            f"tier {tier.name}: serve_args sets {own}; in Kubernetes every replica listens on "
            f"0.0.0.0:{PORT} and runs on the tier's device (tiers.{tier.name}.device)"
        )
    models = [refs.get(ref, ref) for ref in tier.models]
    address = ["--host", "0.0.0.0", "--port", str(PORT), "--device", tier.device]
    return ["serve", *models, *address, *(str(a) for a in tier.serve_args)]


def _state_dir(tier: TierConfig) -> str | None:
    """The ``--state-dir`` of the tier's ``serve_args``, if any (it needs a writable volume)."""
    args = [str(a) for a in tier.serve_args]
    for i, arg in enumerate(args):
        if arg == "--state-dir" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--state-dir="):
            return arg.split("=", 1)[1]
    return None


def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_UID,
        "runAsGroup": RUN_AS_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _probe(path: str, period_s: int, timeout_s: int, failures: int, successes: int = 1) -> dict:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period_s,
        "timeoutSeconds": timeout_s,
        "failureThreshold": failures,
        "successThreshold": successes,
    }


def _tier_objects(
    cfg: DeploymentConfig, tier: TierConfig, refs: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The Deployment, Service, HPA and PDB of one tier."""
    name = object_name(cfg, tier.name)
    labels = _all_labels(cfg, tier.name, tier.kind, bool(tier.trusted))
    selector = _labels(cfg, tier.name)
    cuda = is_cuda(tier)
    health = cfg.policies.health
    scaled = cfg.autoscale.enabled
    floor = max(1, tier.replicas.min) if scaled else tier.replicas.min  # HPA: minReplicas >= 1
    notes = {}
    if scaled and tier.replicas.min == 0:
        notes[NOTE] = (
            f"replicas.min is 0 in the deployment file, but a HorizontalPodAutoscaler needs "
            f"minReplicas >= 1 (scaling to zero is an alpha feature) and stops scaling a "
            f"Deployment at 0 replicas: the tier keeps {floor} warm replica"
        )
    mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
    state_dir = _state_dir(tier)
    if state_dir is not None:
        mounts.append({"name": "state", "mountPath": state_dir})
        volumes.append({"name": "state", "emptyDir": {}})
        notes["abyssal.io/state-dir"] = (
            f"{state_dir} is an emptyDir: the journal survives container restarts, not the "
            "pod's rescheduling; mount a PersistentVolumeClaim there (a StatefulSet) to keep it"
        )
    startup_failures = max(6, math.ceil((3 * tier.startup_s + 30) / 5))
    container = {
        "name": "serve",
        "image": image_ref(cfg, "cuda" if cuda else "cpu"),
        "imagePullPolicy": "IfNotPresent",
        "command": ["abyssal"],
        "args": _serve_args(cfg, tier, refs),
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "env": [
            {"name": "ABYSSAL_HOME", "value": STORE_PATH},
            {"name": "HOME", "value": "/tmp"},
        ],
        "resources": copy.deepcopy(RESOURCES["cuda" if cuda else "cpu"]),
        "startupProbe": _probe("/healthz", 5, 2, startup_failures),
        "readinessProbe": _probe(
            "/readyz",
            max(1, round(health.every_s)),
            max(1, math.ceil(health.timeout_s)),
            health.fail_after,
            health.ok_after,
        ),
        "livenessProbe": _probe("/healthz", 10, 5, 3),
        "securityContext": _container_security(),
        "volumeMounts": mounts,
    }
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "nodeSelector": {TIER_LABEL: tier.kind},
        "securityContext": _pod_security(),
        "terminationGracePeriodSeconds": 30,
        "containers": [container],
        "volumes": volumes,
    }
    if cuda:
        pod["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(cfg, name, labels, notes),
        "spec": {
            "replicas": max(tier.replicas.initial, floor),
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": pod,
            },
        },
    }
    objects = [deployment, _service(cfg, name, labels, selector)]
    if scaled:
        objects.append(_hpa(cfg, name, labels, floor, tier.replicas.max, notes))
    objects.append(_pdb(cfg, name, labels, selector))
    return objects


def _service(
    cfg: DeploymentConfig, name: str, labels: dict[str, str], selector: dict[str, str]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(cfg, name, labels),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def _hpa(
    cfg: DeploymentConfig,
    name: str,
    labels: dict[str, str],
    low: int,
    high: int,
    notes: dict[str, str],
) -> dict[str, Any]:
    """CPU utilization at the autoscaler's target and ``abyssal_queue_depth`` per pod (a custom
    metric: Prometheus and prometheus-adapter serve it), with the autoscaler's pace."""
    scale = cfg.autoscale
    period = max(1, min(1800, round(scale.every_s)))
    settle = min(3600, math.ceil(max(scale.cooldown_s, scale.in_after * scale.every_s)))
    step = {"type": "Pods", "value": scale.max_step, "periodSeconds": period}
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(cfg, name, labels, {k: v for k, v in notes.items() if k == NOTE}),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": low,
            "maxReplicas": high,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": round(100 * scale.target_utilization),
                        },
                    },
                },
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": "abyssal_queue_depth"},
                        "target": {
                            "type": "AverageValue",
                            "averageValue": _quantity(scale.queue_per_replica),
                        },
                    },
                },
            ],
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 0, "policies": [step]},
                "scaleDown": {"stabilizationWindowSeconds": settle, "policies": [step]},
            },
        },
    }


def _pdb(
    cfg: DeploymentConfig, name: str, labels: dict[str, str], selector: dict[str, str]
) -> dict[str, Any]:
    """At most one replica down at a time for a voluntary disruption (a node drain)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(cfg, name, labels),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}},
    }


def _quantity(value: float) -> str:
    """A Kubernetes quantity: ``4`` or ``2500m``."""
    if float(value).is_integer():
        return str(int(value))
    return f"{round(value * 1000)}m"


def router_config(cfg: DeploymentConfig, refs: Mapping[str, str] | None = None) -> str:
    """The deployment file the router reads in the cluster: each served tier's ``urls`` is its
    Service, its models the refs in ``refs``, and the router listens on ``0.0.0.0:8000``."""
    refs = refs or {}
    data = config_to_dict(cfg)
    for tier, raw in zip(cfg.tiers, data["tiers"], strict=True):
        if not tier.urls:
            raw["urls"] = [service_url(cfg, tier)]
            raw["models"] = [refs.get(ref, ref) for ref in tier.models]
    data["local"]["host"] = "0.0.0.0"
    data["local"]["port"] = PORT
    return yaml.safe_dump(data, sort_keys=False, width=100)


def _router_objects(cfg: DeploymentConfig, refs: Mapping[str, str]) -> list[dict[str, Any]]:
    """The router: its deployment file (ConfigMap), Deployment, Service and PDB."""
    name = object_name(cfg, "router")
    labels = _all_labels(cfg, "router", None, True)
    selector = _labels(cfg, "router")
    text = router_config(cfg, refs)
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(cfg, name, labels),
        "data": {"deployment.yaml": text},
    }
    health = cfg.policies.health
    container = {
        "name": "router",
        "image": image_ref(cfg, "cpu"),
        "imagePullPolicy": "IfNotPresent",
        "command": ["abyssal"],
        "args": ["deploy", "route", CONFIG_PATH, "--host", "0.0.0.0", "--port", str(PORT)],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "env": [
            {"name": "ABYSSAL_HOME", "value": STORE_PATH},
            {"name": "HOME", "value": "/tmp"},
        ],
        "resources": copy.deepcopy(RESOURCES["router"]),
        "startupProbe": _probe("/healthz", 2, 2, 30),
        "readinessProbe": _probe(
            "/readyz", max(1, round(health.every_s)), max(1, math.ceil(health.timeout_s)), 2
        ),
        "livenessProbe": _probe("/healthz", 10, 5, 3),
        "securityContext": _container_security(),
        "volumeMounts": [
            {"name": "config", "mountPath": str(Path(CONFIG_PATH).parent), "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    # the router sees every request, sensitive ones included: never on a public node
    away_from_public = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": TIER_LABEL, "operator": "NotIn", "values": ["public"]}
                        ]
                    }
                ]
            }
        }
    }
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(cfg, name, labels),
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {
                    "labels": labels,
                    # a changed deployment file rolls the router
                    "annotations": {"abyssal.io/config-sha256": digest},
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "affinity": away_from_public,
                    "securityContext": _pod_security(),
                    "terminationGracePeriodSeconds": 30,
                    "containers": [container],
                    "volumes": [
                        {"name": "config", "configMap": {"name": name}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
                    ],
                },
            },
        },
    }
    return [
        config_map,
        deployment,
        _service(cfg, name, labels, selector),
        _pdb(cfg, name, labels, selector),
    ]
