"""Fairness audit of the fraud model on SYNTHETIC data with a planted bias, against a control.

Usage:
    python benchmarks/fairness_fraud.py [--users 6000] [--rings 36] [--bias 3.0] [--fraud-proxy 1.5]

Three data sets from one generator seed that differ only in planted *rapid bursts* (5 to 10
pricey purchases within 15 to 45 minutes; see :mod:`abyssal.solutions.fraud.segments`). Every
account gets a synthetic segment A/B (30% B, at random, independent of fraud); the model never
sees it.

- **control**: fraudulent accounts make rapid bursts (``--fraud-proxy`` per account on average,
  labelled fraudulent): a fraud signal no honest account shares;
- **planted**: the same, and honest B accounts make them too (``--bias`` per account): B's honest
  accounts share the fraud signal, the bias under test;
- **B-only proxy**: honest B accounts make rapid bursts, fraudulent accounts do not: a behaviour
  of B that says nothing about fraud.

For each set: train the fraud model (``configs/fraud/quickstart.yaml``, smaller), load the
version, take the held-out predictions of the test accounts (``Solution.held_out``) and of the
validation accounts, join the segments, and

- audit the test accounts at the version's own decision threshold (fitted on validation, the one
  its macro-F1 is reported at): per-segment recall and false-positive rate, the demographic-parity
  and equalized-odds differences, each with a 95% bootstrap interval (stratified by segment);
- mitigate with per-segment thresholds fitted on the validation accounts (equalized odds, then
  demographic parity; the rule: :mod:`abyssal.govern.fairness`) and audit the test accounts again;
  the cost is F1, precision and recall of the decisions and AUPRC of the segment-shifted scores.

Writes ``benchmarks/results/fairness_fraud.md``. Uses a temporary ABYSSAL_HOME.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from abyssal.core.display import fmt
from abyssal.core.store import ModelStore
from abyssal.govern.fairness import FairnessReport, Mitigation, group_report, mitigate
from abyssal.solutions.fraud.sample import FraudSampleConfig, write_sample
from abyssal.solutions.loading import load_model
from abyssal.train.api import train
from environment import environment

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "fraud" / "quickstart.yaml"
OUT = ROOT / "benchmarks" / "results" / "fairness_fraud.md"
PACKAGES = ("torch", "torch_geometric", "scikit-learn", "fairlearn", "numpy", "pandas")


def run_case(
    name: str, bias: float, fraud_proxy: float, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    """Generate, train, audit and mitigate one data set."""
    started = time.perf_counter()
    folder = work / name
    options = FraudSampleConfig(
        users=args.users,
        rings=args.rings,
        days=args.days,
        seed=args.seed,
        segments=True,
        segment_b_frac=args.b_frac,
        segment_bias=bias,
        fraud_proxy=fraud_proxy,
    )
    lines = write_sample(options, folder)
    overrides = [
        f"data.path={folder / 'transactions.csv'}",
        f"train.epochs={args.epochs}",
        f"model.hidden={args.hidden}",
        f"data.val_frac={args.split}",
        f"data.test_frac={args.split}",
        "baselines=false",
        "train.progress=false",
    ]
    outcome = train("fraud", CONFIG, overrides, home=work / "home")
    loaded = load_model(outcome.version.ref, ModelStore(work / "home"))
    sol, cfg, model = loaded.solution, loaded.cfg, loaded.model
    data = sol.prepare(cfg)
    segments = pd.read_csv(folder / "accounts.csv", dtype=str)
    test = _with_segments(sol.held_out(cfg, model, data), segments)
    val_data = replace(data, masks={**data.masks, "test": data.masks["val"]})
    val = _with_segments(sol.held_out(cfg, model, val_data), segments)
    t = float(outcome.metrics["threshold"])
    report = group_report(test, "segment", threshold=t, n_boot=args.n_boot, seed=args.seed)
    mitigations = {
        c: mitigate(
            test,
            "segment",
            constraint=c,
            threshold=t,
            val_frame=val,
            n_boot=args.n_boot,
            seed=args.seed,
        )
        for c in ("equalized_odds", "demographic_parity")
    }
    seconds = time.perf_counter() - started
    print(
        f"{name}: {outcome.version.ref}, test AUPRC {outcome.metrics['test_auprc']:.3f}, "
        f"{seconds:.0f} s",
        flush=True,
    )
    print(report.summary(), flush=True)
    for m in mitigations.values():
        print(m.summary(), flush=True)
    return {
        "name": name,
        "bias": bias,
        "fraud_proxy": fraud_proxy,
        "generated": lines,
        "metrics": outcome.metrics,
        "report": report,
        "mitigations": mitigations,
        "val_rows": len(val),
        "seconds": seconds,
    }


def _with_segments(frame: pd.DataFrame, segments: pd.DataFrame) -> pd.DataFrame:
    joined = frame.merge(segments, left_on="id", right_on="user_id", how="left", validate="1:1")
    if joined["segment"].isna().any():
        raise SystemExit(f"accounts without a segment: {joined.loc[joined.segment.isna(), 'id']}")
    return joined.drop(columns="user_id")


# --- the report ----------------------------------------------------------------------------------


def markdown(cases: list[dict[str, Any]], args: argparse.Namespace, env: dict) -> str:
    m, v = env["machine"], env["versions"]
    versions = ", ".join(f"{k} {v[k]}" for k in ("abyssal", *PACKAGES))
    command = " ".join(["python benchmarks/fairness_fraud.py", *sys.argv[1:]])
    total = sum(c["seconds"] for c in cases)
    out = [
        "# Fairness audit: fraud model on SYNTHETIC data with a planted bias",
        "",
        f"Measured {env['date']} on {m['cpu']} ({m['cores']} cores, {m['platform']}, "
        f"GPU: {m['gpu'] or 'none'}), Python {m['python']}, {versions}, abyssal commit "
        f"{env['git_commit']} (with uncommitted changes). Command: `{command}` "
        f"({total / 60:.1f} min in all).",
        "",
        _setup(args, cases),
        "",
        "## Model quality",
        "",
        "| data | version's test AUPRC [95% CI] | test accounts | fraudulent | threshold |",
        "|---|---|---|---|---|",
    ]
    for c in cases:
        mt, r = c["metrics"], c["report"]
        low, high = mt.get("test_auprc_low", float("nan")), mt.get("test_auprc_high", float("nan"))
        ci = f"{mt['test_auprc']:.3f} [{low:.3f}, {high:.3f}]"
        out.append(f"| {c['name']} | {ci} | {r.rows} | {r.positives} | {r.threshold:.4f} |")
    out += ["", "## Per segment, at the version's threshold (test accounts)", ""]
    out += _group_table(cases)
    out += ["", "## Gaps between the segments (test accounts)", ""]
    out += _gap_table(cases)
    out += ["", "## After per-segment thresholds (fitted on the validation accounts)", ""]
    out += _mitigation_tables(cases)
    out += ["", "## Reading", "", _reading(cases)]
    return "\n".join(out) + "\n"


def _setup(args: argparse.Namespace, cases: list[dict[str, Any]]) -> str:
    generated = "; ".join(f"**{c['name']}**: {c['generated'][-1]}" for c in cases)
    return (
        f"Data: `abyssal.solutions.fraud.sample.write_sample` with {args.users} users, "
        f"{args.rings} rings, {args.days} days, seed {args.seed}, `segments=True`, "
        f"`segment_b_frac={args.b_frac}`. A *rapid burst* is 5 to 10 purchases at popular "
        "merchants within 15 to 45 minutes priced about 1.8 times the account's usual purchase "
        "(the generator's honest sprees are 3 to 8 purchases over 1 to 4 hours). **control**: "
        f"`fraud_proxy={args.fraud_proxy}` (rapid bursts per fraudulent account, labelled "
        "fraudulent: a fraud signal), `segment_bias=0`; **planted**: the same and "
        f"`segment_bias={args.bias}` (rapid bursts per honest B account: B's honest accounts "
        "share the fraud signal); **B-only proxy**: `fraud_proxy=0`, "
        f"`segment_bias={args.bias}` (the bursts are a B behaviour unrelated to fraud). Segment "
        "A's honest accounts never burst; the model never sees the segment. The bursts shift "
        "the order in which accounts first appear, so the random split of accounts (same seed) "
        f"picks different test accounts in each set. As generated: {generated}. Model: "
        f"`configs/fraud/quickstart.yaml` with `train.epochs={args.epochs}`, "
        f"`model.hidden={args.hidden}`, `data.val_frac={args.split}`, "
        f"`data.test_frac={args.split}` (more frauds to audit than the default 0.2), "
        "`baselines=false`, one training per set on the CPU. "
        "Audit: `Solution.held_out` (test accounts, node risk as `evaluate` scores it), joined "
        "with `accounts.csv`; `abyssal.govern.fairness.group_report` at the version's threshold "
        "(fitted on validation for macro-F1); intervals: 95% percentile bootstrap, "
        f"{args.n_boot} resamples stratified by segment. A gap is `max - min` over the "
        "segments, so its bootstrap is biased upward near zero: an interval that does not "
        "reach 0 is no evidence of a gap by itself. Mitigation: "
        "`abyssal.govern.fairness.mitigate` with `val_frame` = the validation accounts' "
        "held-out predictions and the default budget (the per-segment thresholds may cost at "
        "most 0.05 of F1 on the validation accounts)."
    )


def _group_table(cases: list[dict[str, Any]]) -> list[str]:
    rows = [
        "| data | segment | accounts | fraudulent | flagged | recall (TPR) [95% CI] "
        "| FPR [95% CI] | precision | AUPRC |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        for g in c["report"].groups:
            rows.append(
                f"| {c['name']} | {g.group} | {g.count} | {g.positives} | "
                f"{_pct(g.selection_rate.value)} | {_ci(g.recall)} | {_ci(g.fpr, 4)} | "
                f"{fmt(g.precision)} | {fmt(g.auprc)} |"
            )
    return rows


def _gap_table(cases: list[dict[str, Any]]) -> list[str]:
    rows = [
        "| data | EO difference [95% CI] | recall gap | FPR gap | DP difference [95% CI] "
        "| DP ratio [95% CI] |",
        "|---|---|---|---|---|---|",
    ]
    for c in cases:
        r: FairnessReport = c["report"]
        rows.append(
            f"| {c['name']} | {_ci(r.equalized_odds_difference)} | {_ci(r.tpr_difference)} | "
            f"{_ci(r.fpr_difference, 4)} | {_ci(r.demographic_parity_difference, 4)} | "
            f"{_ci(r.demographic_parity_ratio)} |"
        )
    return rows


def _mitigation_tables(cases: list[dict[str, Any]]) -> list[str]:
    rows = [
        "| data | constraint | thresholds A / B (single) | gap on validation before → after "
        "| EO difference after [95% CI] | FPR gap after | DP difference after [95% CI] "
        "| recall A / B after | FPR A / B after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        for name, m in c["mitigations"].items():
            a, b = m.after.group("A"), m.after.group("B")
            rows.append(
                f"| {c['name']} | {name} | {m.thresholds['A']:.4f} / {m.thresholds['B']:.4f} "
                f"({m.threshold:.4f}) | {m.fit_gap['before']:.4f} → {m.fit_gap['after']:.4f} | "
                f"{_ci(m.after.equalized_odds_difference)} | "
                f"{_ci(m.after.fpr_difference, 4)} | "
                f"{_ci(m.after.demographic_parity_difference, 4)} | "
                f"{fmt(a.recall.value)} / {fmt(b.recall.value)} | "
                f"{a.fpr.value:.4f} / {b.fpr.value:.4f} |"
            )
    rows += [
        "",
        "Cost on the test accounts (decisions at the thresholds; AUPRC of the scores shifted per "
        "segment, `score - t_g + t`):",
        "",
        "| data | constraint | F1 before → after | precision before → after "
        "| recall before → after | AUPRC before → after |",
        "|---|---|---|---|---|---|",
    ]
    for c in cases:
        for name, m in c["mitigations"].items():
            cells = " | ".join(_change(m, k) for k in ("f1", "precision", "recall", "auprc"))
            rows.append(f"| {c['name']} | {name} | {cells} |")
    return rows


def _reading(cases: list[dict[str, Any]]) -> str:
    """Plain statements of what the numbers say (no verdict beyond them)."""
    parts = []
    for c in cases:
        r = c["report"]
        a, b = r.group("A"), r.group("B")
        eo = r.equalized_odds_difference
        parts.append(
            f"**{c['name']}**: FPR A {a.fpr.value:.4f} vs B {b.fpr.value:.4f} (B/A "
            f"{_ratio(b.fpr.value, a.fpr.value)}), recall A {a.recall.value:.3f} vs B "
            f"{b.recall.value:.3f}; EO difference {eo.value:.3f} [{eo.low:.3f}, {eo.high:.3f}]; "
            f"the FPR intervals {_overlap(a.fpr, b.fpr)}."
        )
        m: Mitigation = c["mitigations"]["equalized_odds"]
        parts.append(
            f"Equalized-odds thresholds (A {m.thresholds['A']:.4f}, B {m.thresholds['B']:.4f}) "
            f"move the test EO difference {m.before.equalized_odds_difference.value:.3f} → "
            f"{m.after.equalized_odds_difference.value:.3f} and the FPR gap "
            f"{m.before.fpr_difference.value:.4f} → {m.after.fpr_difference.value:.4f}, at F1 "
            f"{m.cost['f1']['before']:.3f} → {m.cost['f1']['after']:.3f} and AUPRC "
            f"{m.cost['auprc']['before']:.3f} → {m.cost['auprc']['after']:.3f}."
        )
    parts.append(_comparison(cases))
    groups = [g for c in cases for g in c["report"].groups]
    positives = min(g.positives for g in groups)
    negatives = min(g.count - g.positives for g in groups)
    parts.append(
        f"The smallest segment holds {positives} fraudulent test accounts, so its recall moves by "
        f"about {1 / max(positives, 1):.2f} per account: recall gaps (and with them the EO "
        "difference, the larger of the two gaps) carry that noise, and thresholds fitted on as "
        f"few validation frauds carry it too; each FPR rests on at least {negatives} honest "
        "accounts and is the steadier measure here."
    )
    return "\n\n".join(parts)


def _comparison(cases: list[dict[str, Any]]) -> str:
    """Which gap tells the sets apart: the FPR gap against the EO difference."""
    fpr = "; ".join(f"{c['name']} {_ci(c['report'].fpr_difference, 4)}" for c in cases)
    eo = "; ".join(f"{c['name']} {_ci(c['report'].equalized_odds_difference)}" for c in cases)
    by_recall = all(
        c["report"].equalized_odds_difference.value == c["report"].tpr_difference.value
        for c in cases
    )
    why = (
        "In every set the EO difference is the recall gap (the larger of the two), so it moves "
        "with the few frauds per segment rather than with the planted bias."
        if by_recall
        else "The EO difference is the larger of the recall and FPR gaps."
    )
    return f"FPR gap by set: {fpr}. EO difference by set: {eo}. {why}"


def _ci(e: Any, digits: int = 3) -> str:
    return f"{e.value:.{digits}f} [{e.low:.{digits}f}, {e.high:.{digits}f}]"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}×" if b > 0 else "n/a (A's FPR is 0)"


def _overlap(a: Any, b: Any) -> str:
    return "overlap" if a.low <= b.high and b.low <= a.high else "do not overlap"


def _change(m: Mitigation, key: str) -> str:
    before, after = m.cost[key]["before"], m.cost[key]["after"]
    return f"{before:.3f} → {after:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=6000)
    parser.add_argument("--rings", type=int, default=36)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--b-frac", type=float, default=0.3)
    parser.add_argument("--bias", type=float, default=3.0)
    parser.add_argument("--fraud-proxy", type=float, default=1.5)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--split", type=float, default=0.3, help="validation and test shares")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="abyssal-fairness-") as tmp:
        os.environ["ABYSSAL_HOME"] = str(Path(tmp) / "home")
        cases = [
            run_case("control", 0.0, args.fraud_proxy, args, Path(tmp)),
            run_case("planted", args.bias, args.fraud_proxy, args, Path(tmp)),
            run_case("B-only proxy", args.bias, 0.0, args, Path(tmp)),
        ]
    text = markdown(cases, args, environment(PACKAGES))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
