"""``abyssal audit``: a model card for one version and a pass or fail against a policy.

:func:`audit_version` loads the version through its solution and gathers, into one record:

- **the model**: its solution, registration time, the data it was trained on (path and
  fingerprint), its lineage back to the data (base versions, the run), the intended use;
- **metrics**: every test metric, with its bootstrap interval when training recorded one;
- **fairness** (:mod:`abyssal.govern.fairness`), when the policy names a sensitive attribute:
  group metrics on the held-out split (``Solution.held_out``) with intervals, and optionally
  per-group thresholds that close the gap, with their cost;
- **explanations** (``Solution.explain``): per-prediction attributions and a global importance,
  with the solution's own explanations;
- **privacy**: PII found in the training table (:mod:`abyssal.data.pii`; kinds, columns and
  row numbers, never the values), the text solution's masking setting, and the DP-SGD
  guarantee (epsilon, delta) when the version was trained with it;
- **added checks** (:data:`AUDIT_CHECKS`), the policy's ``checks``: each installed package's
  check (entry-point group ``abyssal.audit_checks``) gets an :class:`AuditContext` and returns
  its section of the card (``card["checks"][name]``) and its checks.

Each policy rule becomes a check; the audit passes when every check passes. The record
(``audit.json``), its HTML report and PDF, and one PNG per PDF page
(:mod:`abyssal.govern.render`) are written into ``$ABYSSAL_HOME/audits/<model>/<version>/<UTC
time>/``, beside the version, and ``latest.json`` there names the newest; a pipeline's gate can
require a pass (``gate.audit``).

Example:
    >>> policy = load_policy("policies/fraud.yaml")  # doctest: +SKIP
    >>> result = audit_version("fraud:production", policy)  # doctest: +SKIP
    >>> result.passed, [c.name for c in result.checks if not c.passed]  # doctest: +SKIP
    (False, ['fairness: equalized odds difference'])
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from abyssal.core.atomic import write_text_atomic
from abyssal.core.errors import AbyssalError, DataError
from abyssal.core.home import abyssal_home, using_home
from abyssal.core.registry import Registry
from abyssal.govern.policy import AuditPolicy

GAPS = (
    "equalized_odds_difference",
    "demographic_parity_difference",
    "tpr_difference",
    "fpr_difference",
)
"""The gaps between groups a policy can bound."""
MISSING_GROUP = "(missing)"
"""The group of items whose sensitive attribute is missing: reported as a group of its own."""


@dataclass
class Check:
    """One rule of the policy, judged."""

    name: str
    passed: bool
    detail: str


@dataclass
class AuditContext:
    """What an added audit check (:data:`AUDIT_CHECKS`) sees.

    Attributes:
        name: the check's name (its key in the policy's ``checks``).
        options: its options from the policy (``{}`` when none).
        ref: the version audited (``name:N``).
        version: its store record (``metrics``, ``config``, ``lineage``, ``artifacts``).
        solution: its solution (``held_out``, ``explain``, ``model_inputs``, ``predictor``).
        cfg: the solution's config the version was trained with.
        model: the loaded network, on ``device``, in eval mode.
        loaded: the whole loaded version (:class:`abyssal.solutions.loading.LoadedModel`).
        data: ``solution.prepare(cfg)``: the prepared data, splits included.
        policy: the whole policy.
        folder: a folder of its own for files it writes (``checks/NAME`` in the audit's
            folder); a PNG it names in its section's ``images`` list is shown in the report.
        home: the abyssal home of the audit (``None``: ``$ABYSSAL_HOME``).
        device: where the model runs.
    """

    name: str
    options: dict[str, Any]
    ref: str
    version: Any
    solution: Any
    cfg: Any
    model: Any
    loaded: Any
    data: Any
    policy: AuditPolicy
    folder: Path
    home: str | Path | None = None
    device: str | None = "cpu"
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def held_out(self) -> Any:
        """The held-out predictions (``Solution.held_out``: ``id, label, score`` or ``label,
        prediction, probability``), computed once for every check of the audit."""
        if "held_out" not in self._cache:
            self._cache["held_out"] = self.solution.held_out(self.cfg, self.model, self.data)
        return self._cache["held_out"]


AuditCheck = Callable[[AuditContext], "tuple[dict[str, Any], list[Check]]"]
"""``(context) -> (section, checks)``: the model card's section (plain JSON data) and the
checks (:class:`Check`), each of which must pass for the audit to pass."""

AUDIT_CHECKS: Registry[AuditCheck] = Registry("audit check", group="abyssal.audit_checks")
"""Audit checks a policy's ``checks`` may name: none built in, those installed packages declare
in the entry-point group ``abyssal.audit_checks``."""


@dataclass
class AuditResult:
    """An audit's outcome and where its report is.

    Attributes:
        ref: the version audited.
        policy: the policy's name.
        passed: whether every check passed.
        checks: each rule, judged.
        card: the gathered record (the model card's sections, as plain data).
        folder: where its files are.
        files: ``audit.json``, ``audit.html``, ``audit.pdf`` and the page PNGs written.
    """

    ref: str
    policy: str
    passed: bool
    checks: list[Check] = field(default_factory=list)
    card: dict[str, Any] = field(default_factory=dict)
    folder: Path | None = None
    files: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        """One line per check and the verdict."""
        lines = [f"audit of {self.ref} against policy {self.policy!r}:"]
        for check in self.checks:
            lines.append(f"  {'pass' if check.passed else 'FAIL'}  {check.name}: {check.detail}")
        lines.append("PASSED" if self.passed else "FAILED")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "policy": self.policy,
            "passed": self.passed,
            "checks": [asdict(c) for c in self.checks],
            "card": self.card,
        }


def audit_version(
    ref: str,
    policy: AuditPolicy,
    *,
    home: str | Path | None = None,
    out: str | Path | None = None,
    device: str | None = "cpu",
    render: bool = True,
) -> AuditResult:
    """Audit the version ``ref`` against ``policy`` (see the module's docstring).

    Args:
        ref: a version, alias or name.
        policy: the rules (:func:`abyssal.govern.policy.load_policy`).
        home: the abyssal home (default ``$ABYSSAL_HOME``).
        out: write the report here instead of the audits folder of the version.
        device: where the model runs for its held-out predictions and explanations.
        render: write the HTML, PDF and PNG pages (``False``: ``audit.json`` only).

    Raises:
        StoreError: an unknown version.
        AbyssalError: the policy asks for something the solution cannot give (named), or an
            added check raised or returned something else than ``(section, checks)`` (naming
            the check and its plugin package); no audit is written then.
        RegistryError: an added check that fails to import (naming its package), before
            anything runs.
    """
    from abyssal.solutions.loading import load_model

    # the added checks' plugins are imported first: one that fails to load stops the audit here
    added = [(n, AUDIT_CHECKS.get(n), dict(o or {})) for n, o in policy.checks.items()]
    started = time.perf_counter()
    with using_home(home):
        loaded = load_model(ref, device=device)
        chain = _lineage(loaded.version)
    version, solution, cfg = loaded.version, loaded.solution, loaded.cfg
    folder = Path(out) if out is not None else _new_folder(version.ref, home)
    folder.mkdir(parents=True, exist_ok=True)
    data = solution.prepare(cfg)
    card: dict[str, Any] = {
        "model": _model_section(version, solution.name, chain),
        "intended_use": policy.intended_use,
        "out_of_scope": policy.out_of_scope,
        "metrics": _metrics_section(version.metrics),
    }
    checks = [_metric_check(bound, version.metrics) for bound in policy.metrics]
    fairness, fair_checks = _fairness(policy, solution, cfg, loaded.model, data, version)
    card["fairness"] = fairness
    checks += fair_checks
    card["explanations"], explain_checks = _explanations(
        policy, solution, cfg, loaded, data, folder
    )
    checks += explain_checks
    card["privacy"], privacy_checks = _privacy(policy, version, cfg)
    checks += privacy_checks
    cache: dict[str, Any] = {}
    for name, check, options in added:
        context = AuditContext(name, options, version.ref, version, solution, cfg, loaded.model,
                               loaded, data, policy, folder / "checks" / name, home, device,
                               cache)  # fmt: skip
        section, found = _added_check(name, check, context)
        card.setdefault("checks", {})[name] = section
        checks += found
    result = AuditResult(
        version.ref, policy.name, all(c.passed for c in checks), checks, card, folder
    )
    card["audit"] = {
        "policy": policy.name,
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 2),
        "passed": result.passed,
    }
    plugins = {n: AUDIT_CHECKS.origin(n) for n, _, _ in added}
    if any(plugins.values()):
        card["audit"]["plugins"] = {
            n: {"package": p.package, "version": p.version} for n, p in plugins.items() if p
        }
    record = folder / "audit.json"
    write_text_atomic(record, json.dumps(result.to_dict(), indent=1, default=str) + "\n")
    result.files.append(record)
    if render:
        from abyssal.govern.render import write_html, write_pdf

        result.files.append(write_html(result, folder / "audit.html"))
        result.files += write_pdf(result, folder / "audit.pdf", pages=folder / "pages")
    if out is None:
        latest = folder.parent / "latest.json"
        write_text_atomic(
            latest,
            json.dumps({"folder": folder.name, "passed": result.passed, "policy": policy.name})
            + "\n",
        )
    return result


def audits_folder(ref: str, home: str | Path | None = None) -> Path:
    """Where the audits of the version ``name:N`` are kept."""
    name, _, number = ref.partition(":")
    return abyssal_home(home) / "audits" / name / number


def latest_audit(ref: str, home: str | Path | None = None) -> dict[str, Any] | None:
    """The newest audit record of the version ``name:N`` (``audit.json``), or ``None``."""
    folder = audits_folder(ref, home)
    try:
        latest = json.loads((folder / "latest.json").read_text())
        return json.loads((folder / latest["folder"] / "audit.json").read_text())
    except (OSError, ValueError, KeyError):
        return None


def _new_folder(ref: str, home: str | Path | None) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return audits_folder(ref, home) / stamp


# -- sections ---------------------------------------------------------------------------------


def _added_check(
    name: str, check: AuditCheck, context: AuditContext
) -> tuple[dict[str, Any], list[Check]]:
    """Run an added check: its section as plain JSON data and its checks, each named
    ``NAME: ...``; anything it raises or returns wrong is an error naming it and its package."""
    plugin = AUDIT_CHECKS.origin(name)
    who = f"audit check {name!r}" + (
        f" (plugin package {plugin.package} {plugin.version})" if plugin else ""
    )
    context.folder.mkdir(parents=True, exist_ok=True)
    try:
        got = check(context)
    except Exception as e:
        raise AbyssalError(
            f"{who} raised {type(e).__name__}: {e}; the audit of {context.ref} did not finish"
        ) from e
    if not isinstance(got, tuple | list) or len(got) != 2:
        raise AbyssalError(f"{who} returned {type(got).__name__}, not (section, checks)")
    section, found = got
    section = {} if section is None else section
    if not isinstance(section, Mapping):
        raise AbyssalError(f"{who}: its section is {type(section).__name__}, not a mapping")
    try:
        plain = json.loads(json.dumps(dict(section), default=_plain_value))
    except (TypeError, ValueError) as e:
        raise AbyssalError(f"{who}: its section is not plain JSON data ({e})") from e
    if not isinstance(found, list | tuple) or not all(isinstance(c, Check) for c in found):
        raise AbyssalError(f"{who}: its checks must be a list of abyssal.govern.audit.Check")
    named = [
        Check(c.name if c.name.startswith(f"{name}:") else f"{name}: {c.name}",
              bool(c.passed), str(c.detail))
        for c in found
    ]  # fmt: skip
    return plain, named


def _plain_value(value: Any) -> Any:
    """Paths and numpy values as JSON; anything else is refused."""
    if isinstance(value, Path):
        return str(value)
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON data")


def _lineage(version: Any) -> list[str]:
    """The version and what it builds on, down to the root or an external base."""
    from abyssal.core.store import ModelStore

    out = []
    for link in ModelStore().chain(version.ref):
        out.append(link.ref if hasattr(link, "ref") else str(link))
    return out


def _model_section(version: Any, solution: str, chain: list[str]) -> dict[str, Any]:
    config = version.config.get("solution_config", version.config)
    data = config.get("data", {}) if isinstance(config, dict) else {}
    train = config.get("train", {}) if isinstance(config, dict) else {}
    return {
        "ref": version.ref,
        "solution": solution,
        "created": version.created_at,
        "run": version.run_id,
        "aliases": list(version.aliases),
        "data": data.get("path") if isinstance(data, dict) else None,
        "data_fingerprint": version.lineage.get("data_fingerprint"),
        "lineage": chain,
        "code": {k: v for k, v in version.lineage.items() if k in ("code_version", "git_commit")},
        "training": {
            k: train.get(k)
            for k in ("epochs", "lr", "batch_size", "seed", "privacy")
            if isinstance(train, dict) and k in train
        },
    }


def _metrics_section(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The test metrics, each with its interval when recorded (``name_low``, ``name_high``)."""
    rows = []
    for name, value in sorted(metrics.items()):
        if not name.startswith("test_") or name.endswith(("_low", "_high")):
            continue
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        rows.append(
            {
                "metric": name,
                "value": value,
                "low": metrics.get(f"{name}_low"),
                "high": metrics.get(f"{name}_high"),
            }
        )
    return rows


def _metric_check(bound: Any, metrics: Mapping[str, Any]) -> Check:
    value = metrics.get(bound.metric)
    name = f"metric {bound.metric}"
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return Check(name, False, f"the version has no finite {bound.metric}")
    if bound.min is not None and value < bound.min:
        return Check(name, False, f"{value:.4g} < {bound.min:g}")
    if bound.max is not None and value > bound.max:
        return Check(name, False, f"{value:.4g} > {bound.max:g}")
    limits = " and ".join(
        s
        for s in (
            f">= {bound.min:g}" if bound.min is not None else "",
            f"<= {bound.max:g}" if bound.max is not None else "",
        )
        if s
    )
    return Check(name, True, f"{value:.4g} {limits}")


def _fairness(
    policy: AuditPolicy, solution: Any, cfg: Any, model: Any, data: Any, version: Any
) -> tuple[dict[str, Any] | None, list[Check]]:
    """The group report (and mitigation) on the held-out split, and its checks."""
    f = policy.fairness
    if not f.attribute:
        return None, []
    from abyssal.govern import fairness

    frame = one_vs_rest(solution.held_out(cfg, model, data), f.positive_class)
    frame = _with_attribute(frame, f, version)
    threshold = f.threshold if f.threshold is not None else _own_threshold(version.metrics)
    report = fairness.group_report(frame, f.attribute, threshold=threshold, n_boot=f.bootstrap)
    section: dict[str, Any] = {"attribute": f.attribute, "report": report.to_dict()}
    gaps = fairness_gaps(report)
    checks = []
    for label, key, limit in (
        ("equalized odds difference", "equalized_odds_difference",
         f.max_equalized_odds_difference),
        ("demographic parity difference", "demographic_parity_difference",
         f.max_demographic_parity_difference),
        ("recall difference", "tpr_difference", f.max_recall_difference),
        ("false-positive rate difference", "fpr_difference",
         f.max_false_positive_rate_difference),
    ):  # fmt: skip
        if limit is None:
            continue
        value = gaps[key]
        ok = math.isfinite(value) and value <= limit
        checks.append(Check(f"fairness: {label}", ok,
                            f"{value:.3f} {'<=' if ok else '>'} {limit:g} across "
                            f"{f.attribute}"))  # fmt: skip
    if f.mitigate != "none":
        mitigation = fairness.mitigate(
            frame, f.attribute, constraint=f.mitigate, threshold=threshold
        )
        section["mitigation"] = mitigation.to_dict()
    return section, checks


def one_vs_rest(frame: Any, positive: str | None) -> Any:
    """Held-out predictions of a model of more than two classes (``label``, ``prediction``,
    ``probability``) as a decision about ``positive``: ``label`` 1 when it is the true class,
    ``score`` 1 when it was predicted, else 0 (a decision, not a probability: AUPRC is then
    coarse). Binary frames pass through.

    Raises:
        AbyssalError: more than two classes and no ``fairness.positive_class``, or a class the
            frame never holds (the classes are listed).
    """
    if "prediction" not in frame.columns:
        return frame
    classes = sorted(set(frame["label"].astype(str)) | set(frame["prediction"].astype(str)))
    if positive is None or positive not in classes:
        got = "no fairness.positive_class" if positive is None else f"{positive!r}"
        raise AbyssalError(
            f"fairness on a model of {len(classes)} classes needs the class a decision is about: "
            f"{got}; the classes are {', '.join(classes)}"
        )
    out = frame[["id"]].copy()
    out["label"] = (frame["label"].astype(str) == positive).astype(int).to_numpy()
    out["score"] = (frame["prediction"].astype(str) == positive).astype(float).to_numpy()
    return out


def _own_threshold(metrics: Mapping[str, Any]) -> float | None:
    """The decision threshold the version recorded (the fraud solution fits one on its
    validation split), or ``None`` (the fairness report then takes the best-F1 one)."""
    value = metrics.get("threshold")
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def fairness_gaps(report: Any) -> dict[str, float]:
    """The gaps of a fairness report: equalized odds, demographic parity, recall (``tpr``)
    and false-positive rate (``fpr``) differences (NaN where the report has none)."""
    values = report.to_dict()
    out = {}
    for key in GAPS:
        value = values.get(key)
        if isinstance(value, Mapping):
            value = value.get("value", value.get("estimate"))
        out[key] = float(value) if isinstance(value, int | float) else math.nan
    return out


def _with_attribute(frame: Any, f: Any, version: Any) -> Any:
    """The held-out predictions with the sensitive attribute joined in by id (a missing value
    is the group :data:`MISSING_GROUP`)."""
    import pandas as pd

    from abyssal.data.tables import read_table, trained_table

    if f.table:
        path = Path(f.table)
    else:
        found = trained_table(version.config)
        if found is None:
            raise AbyssalError(
                f"fairness: {version.ref} names no training table on disk; give "
                "fairness.table (a file holding the attribute)"
            )
        path = found
    table = read_table(path)
    if f.attribute not in table.columns:
        raise DataError(f"no column {f.attribute!r} (the sensitive attribute)", path=path)
    if f.key is not None:
        if f.key not in table.columns:
            raise DataError(f"no column {f.key!r} (fairness.key)", path=path)
        keys = table[f.key].astype(str)
    else:
        keys = pd.Series(range(1, len(table) + 1)).astype(str)
    values = table[f.attribute].astype(object).where(table[f.attribute].notna(), MISSING_GROUP)
    attribute = dict(zip(keys, values.astype(str), strict=True))
    ids = frame["id"].astype(str)
    missing = ids[~ids.isin(attribute.keys())]
    if len(missing):
        raise DataError(
            f"{len(missing)} of {len(ids)} held-out items have no {f.attribute!r} in {path.name} "
            f"(e.g. {', '.join(missing.head(3))}); fairness.key names the matching column"
        )
    out = frame.copy()
    out[f.attribute] = ids.map(attribute).to_numpy()
    return out


def _explanations(
    policy: AuditPolicy, solution: Any, cfg: Any, loaded: Any, data: Any, folder: Path
) -> tuple[dict[str, Any] | None, list[Check]]:
    if policy.explain.items == 0:
        return None, []
    try:
        found = solution.explain(
            cfg, loaded.model, data, policy.explain.items, out=folder / "explanations"
        )
    except AbyssalError as e:
        note = {"available": False, "why": str(e)}
        if policy.explain.required:
            return note, [Check("explanations", False, str(e))]
        return note, []
    section = {"available": True, **found.to_dict()}
    checks = []
    if policy.explain.required:
        checks.append(
            Check(
                "explanations",
                bool(found.items),
                f"{len(found.items)} predictions explained by {found.method}",
            )
        )
    return section, checks


def _privacy(policy: AuditPolicy, version: Any, cfg: Any) -> tuple[dict[str, Any], list[Check]]:
    p = policy.privacy
    metrics = version.metrics
    section: dict[str, Any] = {
        "dp": {
            k: metrics.get(k)
            for k in ("epsilon", "delta", "noise_multiplier", "max_grad_norm")
            if metrics.get(k) is not None
        },
        "masking": getattr(getattr(cfg, "data", None), "pii", None),
    }
    checks = []
    epsilon = metrics.get("epsilon")
    if p.require_dp:
        checks.append(
            Check(
                "privacy: DP-SGD",
                epsilon is not None,
                f"epsilon {epsilon:.3g}"
                if epsilon is not None
                else "the version was not trained with train.privacy",
            )
        )
    if p.max_epsilon is not None and epsilon is not None:
        ok = float(epsilon) <= p.max_epsilon
        checks.append(Check("privacy: epsilon", ok, f"{float(epsilon):.3g} vs {p.max_epsilon:g}"))
    if p.pii != "off":
        scan, found = _scan_training_table(version, p.scan_rows)
        section["pii"] = scan
        if p.pii == "forbid" and scan is not None:
            checks.append(
                Check(
                    "privacy: PII in the training data",
                    not found,
                    "none found" if not found else f"found: {found}",
                )
            )
    return section, checks


def _scan_training_table(version: Any, rows: int) -> tuple[dict[str, Any] | None, str]:
    """The PII report of the version's training table (``None`` without one), and a line
    naming what was found ("" when nothing)."""
    from abyssal.data.pii import column_kinds, scan_table
    from abyssal.data.tables import read_table, trained_table

    path = trained_table(version.config)
    if path is None:
        return None, ""
    report = scan_table(read_table(path), max_rows=rows)
    found = report.to_dict()
    named = [f"{c['column']} ({', '.join(column_kinds(c))})" for c in found.get("columns", [])]
    return {"table": str(path), **found}, "; ".join(named)
