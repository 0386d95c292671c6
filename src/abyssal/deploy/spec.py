"""The deployment file: tiers (edge, private, public), what each runs and what it costs, the
routing policies (data sensitivity, latency objective, overflow, retries, health checks) and the
autoscaler's settings.

A deployment file is YAML mirroring :class:`DeploymentConfig` (the one config system: unknown keys
are errors that list the valid ones; ``key=value`` overrides apply on top).

Example (``deployments/fraud.yaml``)::

    name: fraud-hybrid
    tiers:
      - {name: edge, kind: edge, models: [fraud:production], replicas: {min: 1, max: 1},
         price_per_hour: 0.08}
      - {name: private, kind: private, models: [fraud:production], replicas: {min: 1, max: 3},
         price_per_hour: 0.90}
      - {name: public, kind: public, models: [fraud:production], replicas: {min: 0, max: 4},
         price_per_hour: 2.10}
    policies:
      sensitivity: {fields: [user_id], pii: true}
      objective_p99_ms: 250
    autoscale: {target_utilization: 0.7}
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from abyssal.core.config import field, load_config
from abyssal.core.errors import ConfigError

TIER_KINDS = ("edge", "private", "public")
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


@dataclass
class ReplicaRange:
    """How many copies of a tier's service run: the autoscaler stays within ``[min, max]``."""

    min: int = field(1, help="fewest replicas (0: the tier starts empty and wakes on overflow)")
    max: int = field(1, help="most replicas")
    start: int | None = field(None, help="replicas at start (default: min)")

    def __post_init__(self) -> None:
        if self.min < 0 or self.max < 1 or self.min > self.max:
            raise ConfigError(
                f"replicas: need 0 <= min <= max and max >= 1, got min={self.min}, max={self.max}"
            )
        if self.start is not None and not self.min <= self.start <= self.max:
            raise ConfigError(f"replicas.start={self.start} is outside [{self.min}, {self.max}]")

    @property
    def initial(self) -> int:
        return self.min if self.start is None else self.start


@dataclass
class TierConfig:
    """One tier: a group of identical replicas of the serving layer (``abyssal serve``)."""

    name: str = field("", help="the tier's name (lower case, e.g. edge, private, public)")
    kind: Literal["edge", "private", "public"] = field(
        "private",
        help="edge: real-time work near the data; private: sensitive data and core models; "
        "public: elastic capacity for peaks (never receives sensitive requests)",
    )
    models: list[str] = field(
        default_factory=list,
        help="model versions served by each replica (fraud:production, text:3); several "
        "models share one replica and its device",
    )
    device: str = field("cpu", help="where a replica runs its models (cpu, cuda)")
    replicas: ReplicaRange = field(default_factory=ReplicaRange)
    price_per_hour: float = field(0.0, help="what one replica costs an hour")
    trusted: bool | None = field(
        None,
        help="may receive sensitive requests (default: edge and private yes, public no; a "
        "public tier is never trusted)",
    )
    capacity_rps: float | None = field(
        None,
        help="requests a second one replica answers at full load (measured by `abyssal deploy "
        "measure`); the autoscaler sizes a tier from it, the simulator serves at it",
    )
    max_inflight: int = field(
        32,
        help="requests in flight to one replica beyond which the router counts it saturated "
        "(and overflows to the next tier)",
    )
    serve_args: list[str] = field(
        default_factory=list,
        help="more `abyssal serve` options for its replicas (e.g. [--max-batch-size, '64'])",
    )
    startup_s: float = field(
        10.0, help="seconds a new replica takes to be ready (the simulator's cold start)"
    )
    urls: list[str] = field(
        default_factory=list,
        help="replicas that run elsewhere (a Kubernetes Service, a cloud endpoint: "
        "http://host:port); the router sends to them and local mode starts no process for "
        "the tier; empty: local mode starts the replicas",
    )

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(
                f"tier name {self.name!r}: lower-case letters, digits and '-', starting with a "
                "letter, at most 31 characters"
            )
        if not self.models:
            raise ConfigError(
                f"tier {self.name}: models is empty (e.g. models: [fraud:production])"
            )
        for ref in self.models:
            if not isinstance(ref, str) or not ref or " " in ref or "@" in ref:
                raise ConfigError(f"tier {self.name}: {ref!r} is not a model reference (NAME:REF)")
        if self.kind == "public" and self.trusted:
            raise ConfigError(
                f"tier {self.name}: a public tier cannot be trusted with sensitive data"
            )
        if self.price_per_hour < 0 or not math.isfinite(self.price_per_hour):
            raise ConfigError(f"tier {self.name}: price_per_hour must be >= 0")
        if self.capacity_rps is not None and not self.capacity_rps > 0:
            raise ConfigError(f"tier {self.name}: capacity_rps must be > 0")
        if self.max_inflight < 1:
            raise ConfigError(f"tier {self.name}: max_inflight must be >= 1")
        if self.startup_s < 0:
            raise ConfigError(f"tier {self.name}: startup_s must be >= 0")
        for url in self.urls:
            if not re.match(r"^https?://[^/\s]+/?$", url):
                raise ConfigError(f"tier {self.name}: {url!r} is not http(s)://host:port")
        if self.trusted is None:
            self.trusted = self.kind != "public"

    @property
    def model_names(self) -> list[str]:
        """The names (before the colon) of the models it serves."""
        return [ref.split(":", 1)[0] for ref in self.models]


@dataclass
class SensitivityPolicy:
    """Which requests are sensitive: those never leave trusted (edge, private) tiers."""

    header: str = field(
        "x-data-sensitivity",
        help="a request with this header set to sensitive (or private, restricted, "
        "confidential) is sensitive",
    )
    pii: bool = field(
        True,
        help="a JSON request whose text values contain personal data (abyssal.data.pii: "
        "e-mail, phone, card, IBAN, national id, IP, name) is sensitive",
    )
    fields: list[str] = field(
        default_factory=list,
        help="a request carrying any of these fields (non-empty) is sensitive",
    )
    models: list[str] = field(
        default_factory=list, help="every request to these models is sensitive"
    )
    uploads: bool = field(
        False, help="multipart uploads (images, scans: not scanned) count as sensitive"
    )


@dataclass
class HealthPolicy:
    """How the router checks replicas (``GET /readyz``)."""

    every_s: float = field(1.0, help="seconds between checks of each replica")
    timeout_s: float = field(0.5, help="a check slower than this failed")
    fail_after: int = field(2, help="failed checks in a row that take a replica out")
    ok_after: int = field(1, help="passed checks in a row that bring it back")

    def __post_init__(self) -> None:
        if self.every_s <= 0 or self.timeout_s <= 0:
            raise ConfigError("policies.health: every_s and timeout_s must be > 0")
        if self.fail_after < 1 or self.ok_after < 1:
            raise ConfigError("policies.health: fail_after and ok_after must be >= 1")

    @property
    def failover_bound_s(self) -> float:
        """Longest a dead replica that no request touches stays in the pool."""
        return self.fail_after * self.every_s + self.timeout_s


@dataclass
class Policies:
    """How the router sends each request."""

    order: list[str] = field(
        default_factory=list,
        help="tiers tried in this order (default: edge, then private, then public tiers, as "
        "listed); a request goes to the first healthy, unsaturated tier allowed to take it",
    )
    sensitivity: SensitivityPolicy = field(default_factory=SensitivityPolicy)
    objective_p99_ms: float = field(
        250.0,
        help="latency objective: a tier whose recent p99 is over it counts as saturated (with "
        "overflow.on_latency), the autoscaler scales it out, the simulator counts violations",
    )
    overflow: bool = field(
        True, help="send a request on to the next tier when the first choices are saturated"
    )
    overflow_on_latency: bool = field(
        True, help="a tier over the latency objective counts as saturated for overflow"
    )
    wait_s: float = field(
        2.0,
        help="how long a request may wait in the router for a slot when every tier it may use "
        "is saturated (all its attempts together), before a 503",
    )
    retries: int = field(
        2,
        help="more attempts on another replica after a failure: always when the request never "
        "reached the replica, else only for idempotent calls (stateless models)",
    )
    timeout_s: float = field(30.0, help="one attempt's time limit")
    health: HealthPolicy = field(default_factory=HealthPolicy)
    window: int = field(500, help="recent answers per tier behind its p99")

    def __post_init__(self) -> None:
        if self.objective_p99_ms <= 0:
            raise ConfigError("policies.objective_p99_ms must be > 0")
        if self.retries < 0 or self.wait_s < 0 or self.timeout_s <= 0 or self.window < 10:
            raise ConfigError("policies: retries >= 0, wait_s >= 0, timeout_s > 0 and window >= 10")


@dataclass
class AutoscaleConfig:
    """The autoscaler: replicas from measured utilization, queue depth, latency and cost."""

    enabled: bool = field(True, help="off: every tier keeps its initial replicas")
    every_s: float = field(5.0, help="seconds between decisions")
    target_utilization: float = field(
        0.65, help="the busy share a tier is sized for (replicas = load / capacity / target)"
    )
    scale_out_above: float = field(0.8, help="utilization above which a tier may grow")
    scale_in_below: float = field(0.4, help="utilization below which a tier may shrink")
    queue_per_replica: float = field(
        4.0, help="requests waiting per replica above which a tier may grow"
    )
    out_after: int = field(1, help="decisions in a row that must call for growth")
    in_after: int = field(6, help="decisions in a row that must call for shrinking")
    cooldown_s: float = field(
        30.0, help="no shrinking sooner than this after any change to the tier"
    )
    max_step: int = field(4, help="most replicas added or removed at once")

    def __post_init__(self) -> None:
        if self.every_s <= 0 or self.cooldown_s < 0:
            raise ConfigError("autoscale: every_s > 0 and cooldown_s >= 0")
        if not 0 < self.scale_in_below < self.target_utilization < self.scale_out_above:
            raise ConfigError(
                "autoscale: need 0 < scale_in_below < target_utilization < scale_out_above "
                f"(got {self.scale_in_below}, {self.target_utilization}, {self.scale_out_above})"
            )
        if self.out_after < 1 or self.in_after < 1 or self.max_step < 1:
            raise ConfigError("autoscale: out_after, in_after and max_step must be >= 1")
        if self.queue_per_replica <= 0:
            raise ConfigError("autoscale.queue_per_replica must be > 0")


@dataclass
class LocalConfig:
    """``abyssal deploy up``: the tiers as processes on this machine."""

    host: str = field("127.0.0.1", help="where the router and the replicas listen")
    port: int = field(8100, help="the router's port (replicas take free ports)")
    restart_s: float = field(
        5.0, help="a replica process that died is started again after this many seconds"
    )


@dataclass
class DeploymentConfig:
    """A hybrid deployment: tiers, routing policies, the autoscaler."""

    name: str = field("", help="the deployment's name (default: the file's stem)")
    tiers: list[TierConfig] = field(default_factory=list, help="the tiers, at least one")
    policies: Policies = field(default_factory=Policies)
    autoscale: AutoscaleConfig = field(default_factory=AutoscaleConfig)
    local: LocalConfig = field(default_factory=LocalConfig)
    image: str = field(
        "abyssal", help="the container image's name in generated Kubernetes manifests"
    )
    namespace: str = field("abyssal", help="the Kubernetes namespace of generated manifests")

    def __post_init__(self) -> None:
        if not self.tiers:
            raise ConfigError("a deployment has at least one tier (tiers: [...])")
        names = [t.name for t in self.tiers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"tier names must be unique: {dupes} repeat")
        if self.policies.order:
            unknown = [n for n in self.policies.order if n not in names]
            missing = [n for n in names if n not in self.policies.order]
            if unknown or missing:
                raise ConfigError(
                    f"policies.order must list every tier once: unknown {unknown}, "
                    f"missing {missing} (tiers: {names})"
                )
        else:
            rank = {kind: i for i, kind in enumerate(TIER_KINDS)}
            self.policies.order = [t.name for t in sorted(self.tiers, key=lambda t: rank[t.kind])]

    def tier(self, name: str) -> TierConfig:
        for tier in self.tiers:
            if tier.name == name:
                return tier
        raise ConfigError(f"no tier {name!r}; tiers: {[t.name for t in self.tiers]}")

    @property
    def ordered(self) -> list[TierConfig]:
        """The tiers in routing order."""
        return [self.tier(n) for n in self.policies.order]

    def tiers_for(self, model: str, *, sensitive: bool) -> list[TierConfig]:
        """The tiers, in routing order, that serve ``model`` (a name) and may take a request
        of this sensitivity."""
        return [t for t in self.ordered if model in t.model_names and (t.trusted or not sensitive)]

    @property
    def model_names(self) -> list[str]:
        return sorted({n for t in self.tiers for n in t.model_names})


def load_deployment(path: str | Path, overrides: list[str] | None = None) -> DeploymentConfig:
    """The deployment in ``path`` with ``overrides``.

    Raises:
        ConfigError: a missing file, bad YAML, an unknown key or a bad value (named).
    """
    cfg = load_config(DeploymentConfig, path, overrides)
    cfg.name = cfg.name or Path(path).stem
    if not _NAME.match(cfg.name.lower()) or cfg.name != cfg.name.lower():
        raise ConfigError(
            f"deployment name {cfg.name!r}: lower-case letters, digits and '-' (it names "
            "Kubernetes objects)"
        )
    return cfg
