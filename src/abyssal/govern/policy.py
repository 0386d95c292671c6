"""The audit policy: what a model version must show to pass ``abyssal audit``.

A policy file is YAML mirroring :class:`AuditPolicy` (the one config system: unknown keys are
errors that list the valid ones; ``key=value`` overrides apply on top). Every section is
optional; an empty policy still writes the model card and passes.

Example (``policies/fraud.yaml``)::

    intended_use: flag accounts for review by a fraud analyst; never to block on its own
    metrics:
      - {metric: test_auprc, min: 0.3}
    fairness:
      attribute: segment
      table: demo/accounts.csv        # one row per account, keyed by the held-out ids
      key: user_id
      max_equalized_odds_difference: 0.1
      mitigate: equalized_odds
    privacy:
      pii: forbid                     # PII in the training data fails the audit
    explain:
      items: 5
    checks:                           # from installed packages (entry points abyssal.audit_checks)
      backtest: {window_days: 90}     # name: options ({} for none)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from abyssal.core.config import field, load_config
from abyssal.core.errors import ConfigError


@dataclass
class MetricBound:
    """A bound on one of the version's metrics (``test_auprc``, ``epsilon``, ...)."""

    metric: str = field("", help="the metric's name, as the version records it")
    min: float | None = field(None, help="the metric must be at least this")
    max: float | None = field(None, help="the metric must be at most this")

    def __post_init__(self) -> None:
        if not self.metric:
            raise ConfigError("metrics: each bound needs a 'metric'")
        if self.min is None and self.max is None:
            raise ConfigError(f"metrics: the bound on {self.metric} needs 'min' or 'max'")
        for name in ("min", "max"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ConfigError(f"metrics: {self.metric}.{name} must be finite, got {value}")


@dataclass
class FairnessPolicy:
    """Group fairness on the held-out split, for one sensitive attribute."""

    attribute: str | None = field(None, help="the sensitive attribute's column; null: no check")
    table: str | None = field(
        None,
        help="a CSV or Parquet file holding the attribute, one row per held-out item (null: "
        "the table the version was trained on, its rows numbered from 1)",
    )
    key: str | None = field(
        None, help="the table's column matching the held-out ids (null: the row number)"
    )
    positive_class: str | None = field(
        None,
        help="for a model of more than two classes: the class a decision is about (e.g. the "
        "defect class that stops a part); the fairness table is then about predicting it",
    )
    threshold: float | None = field(
        None,
        help="the decision threshold on the score (null: the version's own, when it records "
        "one as the metric 'threshold', else the one with the best F1)",
    )
    max_equalized_odds_difference: float | None = field(
        None, help="fail above this gap in recall or false-positive rate between groups"
    )
    max_demographic_parity_difference: float | None = field(
        None, help="fail above this gap in selection rate between groups"
    )
    max_recall_difference: float | None = field(
        None, help="fail above this gap in recall (true-positive rate) between groups"
    )
    max_false_positive_rate_difference: float | None = field(
        None,
        help="fail above this gap in false-positive rate between groups (steadier than recall "
        "when positives are few)",
    )
    mitigate: Literal["none", "equalized_odds", "demographic_parity"] = field(
        "none", help="also report per-group thresholds that close this gap, and their cost"
    )
    bootstrap: int = field(1000, help="bootstrap resamples of each interval")

    def __post_init__(self) -> None:
        for name in (
            "max_equalized_odds_difference",
            "max_demographic_parity_difference",
            "max_recall_difference",
            "max_false_positive_rate_difference",
        ):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise ConfigError(f"fairness.{name} must be in [0, 1], got {value}")
        if self.bootstrap < 0:
            raise ConfigError(f"fairness.bootstrap must be >= 0, got {self.bootstrap}")
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise ConfigError(f"fairness.threshold must be in [0, 1], got {self.threshold}")


@dataclass
class PrivacyPolicy:
    """What the audit asks of the data and of training."""

    pii: Literal["forbid", "report", "off"] = field(
        "report", help="PII found in the training data: fail (forbid), list it, or do not scan"
    )
    scan_rows: int = field(5000, help="rows of the training table scanned for PII")
    require_dp: bool = field(False, help="fail unless the version was trained with DP-SGD")
    max_epsilon: float | None = field(None, help="fail when the DP epsilon is above this")

    def __post_init__(self) -> None:
        if self.scan_rows < 1:
            raise ConfigError(f"privacy.scan_rows must be >= 1, got {self.scan_rows}")
        if self.max_epsilon is not None and self.max_epsilon <= 0:
            raise ConfigError(f"privacy.max_epsilon must be > 0, got {self.max_epsilon}")


@dataclass
class ExplainPolicy:
    """Explanations in the report."""

    items: int = field(5, help="held-out predictions explained one by one (0: none)")
    required: bool = field(
        False, help="fail when the solution cannot explain (otherwise it is noted)"
    )

    def __post_init__(self) -> None:
        if self.items < 0:
            raise ConfigError(f"explain.items must be >= 0, got {self.items}")


@dataclass
class AuditPolicy:
    """An audit policy (see the module's docstring)."""

    name: str = field("", help="the policy's name (default: the file's stem)")
    intended_use: str = field("", help="what the model is for, for the model card")
    out_of_scope: str = field("", help="what it must not be used for")
    metrics: list[MetricBound] = field(default_factory=list, help="bounds on the metrics")
    fairness: FairnessPolicy = field(default_factory=FairnessPolicy, help="group fairness")
    privacy: PrivacyPolicy = field(default_factory=PrivacyPolicy, help="PII and DP")
    explain: ExplainPolicy = field(default_factory=ExplainPolicy, help="explanations")
    checks: dict[str, dict[str, Any]] = field(
        default_factory=dict,
        help="audit checks installed packages add (entry-point group abyssal.audit_checks): "
        "check name -> its options ({} for none), run in this order after the built-in sections",
    )

    def __post_init__(self) -> None:
        from abyssal.govern.audit import AUDIT_CHECKS

        for name, options in list(self.checks.items()):
            if name not in AUDIT_CHECKS:
                claimed = AUDIT_CHECKS.conflicts().get(name)
                if claimed is not None:
                    raise ConfigError(
                        f"checks: audit check {name!r} is claimed by {claimed}: uninstall one, or "
                        "rename its entry point"
                    )
                choices = ", ".join(AUDIT_CHECKS.names()) or "none is installed"
                raise ConfigError(f"checks: unknown audit check {name!r}; choose from: {choices}")
            if options is None:
                self.checks[name] = {}
            elif not isinstance(options, dict):
                raise ConfigError(
                    f"checks.{name}: expected a mapping of options ({{}} for none), got {options!r}"
                )


def load_policy(path: str | Path | None, overrides: list[str] | None = None) -> AuditPolicy:
    """The policy in ``path`` (``None``: the default, empty policy) with ``overrides``.

    Raises:
        ConfigError: a missing file, bad YAML, an unknown key or a bad value (named).
    """
    policy = load_config(AuditPolicy, path, overrides)
    if not policy.name:
        policy.name = Path(path).stem if path is not None else "default"
    return policy
