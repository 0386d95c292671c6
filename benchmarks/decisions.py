"""From scores to decisions: a rules baseline against the model's triage, and three update
policies over a drifting stream.

Usage:
    python benchmarks/decisions.py [--part otc,stream] [--months 6] [--users 2000]
        [--epochs 40] [--continual-epochs 10] [--mature-only] [--device auto]
    python benchmarks/decisions.py --render-only benchmarks/results/decisions/decisions.json

Two parts, each a table and a plot in ``benchmarks/results/decisions/``:

- ``otc``: the fraud model (``configs/fraud/bitcoin_otc.yaml``, TGBase split 0) on Bitcoin-OTC's
  test accounts against the account rules of ``rules/otc-rules.yaml`` (received ratings:
  several negatives, a bad mean, a new account rated badly). The model's operating point is
  chosen on the validation accounts under the cost matrix below, then measured on the test
  accounts with the rules.
- ``stream``: the drifting SYNTHETIC stream (:mod:`abyssal.solutions.fraud.drift`: new ring
  tactics appear in months 2 and 4), evaluated prequentially
  (:func:`abyssal.decide.prequential.prequential`): month 0 trains the first model; every later
  month is scored by each policy's model, then its labels come back (positives 1 to 14 days
  after the event; a row counts as negative 14 days after it without a positive) and the
  policies update: ``frozen`` never, ``retrain`` from scratch on everything known,
  ``continual`` warm-started on what came back since plus a 25 % replay of older accounts.
  Per month: AUPRC, the review share that intercepts 80 % of the month's fraud, and the rules of
  ``rules/card-rules.yaml`` on the same rows; per policy, the training compute.

Cost matrix (one currency): a missed fraud costs 200, a review 5, a wrongly blocked customer 50.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from abyssal.core.home import using_home
from abyssal.decide.points import PointSpec, achieved, actions_cost, choose
from abyssal.decide.prequential import prequential
from abyssal.decide.rules import RuleSet, apply_rules, compare
from abyssal.solutions.fraud.bitcoin_otc import load_bitcoin_otc, resolve_root
from abyssal.solutions.fraud.drift import generate_drifting_stream
from abyssal.solutions.loading import load_model
from abyssal.train.api import train
from environment import environment, md_table, number_cell, provenance, write_result

ROOT = Path(__file__).parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "decisions"
COSTS = {"missed": 200.0, "review": 5.0, "false_block": 50.0}
DAY = 86_400


def account_table(otc: object) -> pd.DataFrame:
    """Per account, from the rating edges: ratings received, negative ones, their mean, ratings
    given (the columns the rules file reads)."""
    edges = otc.edges  # type: ignore[attr-defined]
    received = edges.groupby("target")["rating"]
    table = pd.DataFrame({
        "ratings_in": received.size(),
        "negative_in": received.apply(lambda r: int((r < 0).sum())),
        "mean_in": received.mean(),
    })  # fmt: skip
    table["raters_out"] = edges.groupby("source").size()
    table.index = table.index.astype(str)
    return table.fillna(0)


def part_otc(args: argparse.Namespace, home: Path) -> dict:
    root = resolve_root(args.bitcoin_otc)
    overrides = [f"data.path={root}", "data.split=0", "train.progress=false",
                 f"train.device={args.device}"]  # fmt: skip
    started = time.perf_counter()
    out = train("fraud", ROOT / "configs/fraud/bitcoin_otc.yaml", overrides, model_name="otc",
                home=home)  # fmt: skip
    seconds = time.perf_counter() - started
    with using_home(home):
        loaded = load_model(out.version.ref)
    data = loaded.solution.prepare(loaded.cfg)
    val = loaded.solution.decision_frame(loaded.cfg, loaded.model, data, split="val")
    test = loaded.solution.decision_frame(loaded.cfg, loaded.model, data, split="test")
    accounts = account_table(load_bitcoin_otc(root))
    rules = RuleSet.load(ROOT / "rules/otc-rules.yaml")
    rows = accounts.reindex(test["id"].astype(str)).fillna(0).reset_index(drop=True)
    acted = apply_rules(rows, rules)
    y, s = test["label"].to_numpy(), test["score"].to_numpy()
    point = choose(val["label"].to_numpy(), val["score"].to_numpy(), PointSpec("cost", costs=COSTS))
    model = achieved(y, s, point.review_at, point.block_at, COSTS)
    return {
        "version": out.version.ref,
        "train_seconds": round(seconds, 1),
        "test_accounts": len(test),
        "test_fraudulent": int(y.sum()),
        "compare": compare(y, s, acted["action"]),
        "rules_cost": actions_cost(y, acted["action"], COSTS),
        "rules_met": acted["rules"]
        .str.split(",")
        .explode()
        .loc[lambda r: r != ""]
        .value_counts()
        .to_dict(),
        "model_point": point.as_dict(),
        "model_test": model,
    }


def part_stream(args: argparse.Namespace, home: Path, work: Path) -> dict:
    stream = generate_drifting_stream(months=args.months, n_users=args.users,
                                      rings_per_month=args.rings, seed=args.seed)  # fmt: skip
    table = stream.transactions.copy()
    rng = np.random.default_rng(args.seed)
    delay = rng.integers(1, 15, size=len(table)) * DAY  # a chargeback comes back in 1-14 days
    table["labelled_at"] = np.where(table["label"] == 1, table["timestamp"] + delay, 0)
    overrides = [f"train.epochs={args.epochs}", "train.patience=10", "train.progress=false",
                 "baselines=false", f"train.device={args.device}", f"train.seed={args.seed}",
                 f"data.split_seed={args.seed}"]  # fmt: skip
    result = prequential(
        "fraud",
        table,
        period_s=30 * DAY,
        config=ROOT / "configs/fraud/quickstart.yaml",
        overrides=overrides,
        continual_overrides=[f"train.epochs={args.continual_epochs}", "train.lr=0.001"],
        window_s=14 * DAY,
        mature_only=args.mature_only,
        replay=0.25,
        replay_by="user_id",
        work=work,
        home=home,
        progress=lambda line: print(line, flush=True),
    )
    rules = apply_rules(table, RuleSet.load(ROOT / "rules/card-rules.yaml"))
    months = []
    for row in result.rows:
        index, scores = result.scores[(row["policy"], row["period"])]
        y = table["label"].to_numpy()[index]
        cmp = compare(y, scores, rules["action"].to_numpy()[index]) if y.sum() else {}
        months.append({**row, **{f"vs_rules_{k}": v for k, v in cmp.items()}})
    costs = _stream_costs(result, table, rules, home)
    per_month = pd.DataFrame(months)
    per_month["tactics"] = per_month["period"].map(
        lambda m: ", ".join(sorted(set(stream.tactic[stream.month_of() == m]) - {""}))
    )
    return {
        "seed": args.seed,
        "mature_only": args.mature_only,
        "months": args.months,
        "users": args.users,
        "rings_per_month": args.rings,
        "rows": len(table),
        "fraud_share": float(table["label"].mean()),
        "per_month": per_month.to_dict("records"),
        "summary": result.summary().to_dict("records"),
        "costs": costs,
        "settings": result.settings,
    }


def _stream_costs(
    result: object, table: pd.DataFrame, rules: pd.DataFrame, home: Path
) -> list[dict]:
    """Expected cost per transaction in each scored month. Each version's cost point is
    chosen as `abyssal decide points` chooses it: on its own validation transactions
    (``Solution.decision_frame``, the accounts held out of its training); the rules act on
    the same rows."""
    y_all = table["label"].to_numpy()
    refs = {(r["policy"], r["period"]): r["version"] for r in result.rows}  # type: ignore[attr-defined]
    points: dict[str, object] = {}
    out = []
    for (policy, period), (index, scores) in result.scores.items():  # type: ignore[attr-defined]
        ref = refs[(policy, period)]
        if ref not in points:
            with using_home(home):
                loaded = load_model(ref)
            data = loaded.solution.prepare(loaded.cfg)
            val = loaded.solution.decision_frame(loaded.cfg, loaded.model, data, split="val")
            points[ref] = choose(val["label"], val["score"], PointSpec("cost", costs=COSTS))
        point = points[ref]
        if y_all[index].sum() == 0:
            continue
        got = achieved(y_all[index], scores, point.review_at, point.block_at, COSTS)
        out.append({
            "policy": policy, "period": period, "version": ref, "chosen_on": "validation",
            "model_cost": got["expected_cost"], "model_review_share": got["review_share"],
            "model_block_share": got["block_share"], "model_recall": got["recall"],
            "rules_cost": actions_cost(y_all[index], rules["action"].to_numpy()[index], COSTS),
        })  # fmt: skip
    return out


def combine(paths: list[str]) -> dict:
    """One result from runs of several seeds (each ``--part stream``, one may hold ``otc``)."""
    import json

    runs = [json.loads(Path(p).read_text()) for p in paths]
    out = {k: runs[0][k] for k in ("environment", "costs")}
    out["commits"] = sorted({r["environment"]["git_commit"] for r in runs})
    out["command"] = " && ".join(r["command"] for r in runs)
    out["streams"] = [r["stream"] for r in runs if "stream" in r]
    otc = [r["otc"] for r in runs if "otc" in r]
    if otc:
        out["otc"] = otc[0]
    return out


def _mode(stream: dict) -> str:
    mature = stream.get("mature_only", stream["settings"].get("mature_only"))
    return "mature rows only" if mature else "known labels"


def _seed_table(streams: list[dict]) -> pd.DataFrame:
    """Per mode and policy over seeds: mean and range of each seed's mean AUPRC, review share
    at 80 % recall and interception at 2 %, and mean training seconds and rows."""
    rows = []
    for s in streams:
        for r in s["summary"]:
            rows.append({"labels": _mode(s), "seed": s.get("seed", 0), **r})
    return pd.DataFrame(rows)


def plots(result: dict) -> list[str]:
    try:
        import matplotlib
    except ImportError:  # a machine without the govern extra: render later (--render-only)
        print("matplotlib is not installed: no plots (python benchmarks/decisions.py "
              "--render-only RESULT.json)")  # fmt: skip
        return []

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    if "otc" in result:
        c = result["otc"]["compare"]
        fig, ax = plt.subplots(figsize=(6.4, 3.4))
        names = ["review share\n(rules' interception)", "interception\n(rules' review share)"]
        rules_v = [c["rules_review_share"], c["rules_interception"]]
        model_v = [c["model_review_share_at_rules_interception"],
                   c["model_interception_at_rules_review_share"]]  # fmt: skip
        x = np.arange(2)
        ax.bar(x - 0.18, rules_v, 0.36, label="rules", color="#999999")
        ax.bar(x + 0.18, model_v, 0.36, label="model", color="#1f77b4")
        ax.set_xticks(x, names)
        ax.set_ylim(0, 1)
        ax.set_title("Bitcoin-OTC test accounts: rules vs the model's review queue")
        ax.legend()
        fig.tight_layout()
        fig.savefig(RESULTS / "otc_rules_vs_model.png", dpi=120)
        written.append("otc_rules_vs_model.png")
    if "streams" in result:
        months = pd.DataFrame([
            {**m, "labels": _mode(s)} for s in result["streams"] for m in s["per_month"]
        ])  # fmt: skip
        modes = list(dict.fromkeys(months["labels"]))
        fig, axes = plt.subplots(1, len(modes) + 1, figsize=(5 * (len(modes) + 1), 3.6))
        colours = {"frozen": "#7f7f7f", "retrain": "#d62728", "continual": "#2ca02c"}
        for ax, mode in zip(axes, modes, strict=False):
            part = months[months["labels"] == mode]
            for policy, rows in part.groupby("policy", sort=False):
                g = rows.groupby("period")["auprc"]
                mean, low, high = g.mean(), g.min(), g.max()
                ax.plot(mean.index, mean, marker="o", label=policy, color=colours[policy])
                ax.fill_between(mean.index, low, high, alpha=0.15, color=colours[policy])
            ax.set_ylim(0, 0.8)
            ax.set_title(f"AUPRC per month ({mode}; band: seeds)", fontsize=9)
            ax.set_xlabel("month")
            ax.legend(fontsize=8)
        seeds = _seed_table(result["streams"])
        cost = seeds.groupby(["labels", "policy"], sort=False)["train_seconds"].mean()
        axes[-1].barh([f"{p} ({m})" for m, p in cost.index], cost.values,
                      color=[colours[p] for _, p in cost.index])  # fmt: skip
        axes[-1].set_title("training seconds over all months (mean of seeds)", fontsize=9)
        fig.suptitle("Drifting synthetic stream (new tactics in months 2 and 4), prequential")
        fig.tight_layout()
        fig.savefig(RESULTS / "stream_policies.png", dpi=120)
        written.append("stream_policies.png")
    if "streams" in result and "otc" in result:
        written.append(_cost_plot(result, plt))
    if "stream" in result:
        f = pd.DataFrame(result["stream"]["per_month"])
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        for policy, part in f.groupby("policy", sort=False):
            axes[0].plot(part["period"], part["auprc"], marker="o", label=policy)
            axes[1].plot(part["period"], part["review_at_recall"], marker="o", label=policy)
        rules = f.drop_duplicates("period")
        axes[1].plot(rules["period"], rules["vs_rules_rules_review_share"], "k--",
                     label="rules (their own interception)")  # fmt: skip
        axes[0].set_title("AUPRC per month")
        axes[1].set_title("review share to intercept 80 % of fraud")
        for ax in axes[:2]:
            ax.set_xlabel("month")
            ax.legend(fontsize=8)
        s = pd.DataFrame(result["stream"]["summary"])
        axes[2].bar(s["policy"], s["train_seconds"], color=["#999999", "#d62728", "#2ca02c"])
        axes[2].set_title("training seconds, all months")
        fig.suptitle("Drifting synthetic stream (new tactics in months 2 and 4), prequential")
        fig.tight_layout()
        fig.savefig(RESULTS / "stream_policies.png", dpi=120)
        written.append("stream_policies.png")
    return written


def _cost_plot(result: dict, plt: object) -> str:
    """Expected cost per item: Bitcoin-OTC's rules and model, and the stream's policies
    against its rules and against approving everything."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6),  # type: ignore[attr-defined]
                                      gridspec_kw={"width_ratios": [1, 2.4]})  # fmt: skip
    o = result["otc"]
    left.bar(["rules", "model"], [o["rules_cost"], o["model_test"]["expected_cost"]],
             color=["#999999", "#1f77b4"])  # fmt: skip
    left.set_title("Bitcoin-OTC: cost per account", fontsize=9)
    costs = pd.DataFrame([{**c, "labels": _mode(s)} for s in result["streams"]
                          for c in s["costs"] if c.get("chosen_on") == "validation"])  # fmt: skip
    mean = costs.groupby(["labels", "policy"], sort=False)["model_cost"].mean()
    colours = {"frozen": "#7f7f7f", "retrain": "#d62728", "continual": "#2ca02c"}
    right.barh([f"{p} ({m})" for m, p in mean.index], mean.values,
               color=[colours[p] for _, p in mean.index])  # fmt: skip
    months = pd.DataFrame([m for s in result["streams"] for m in s["per_month"]
                           if m["policy"] == "frozen"])  # fmt: skip
    nothing = (months["positives"] / months["rows"]).mean() * COSTS["missed"]
    right.axvline(costs["rules_cost"].mean(), color="k", linestyle="--", label="card rules")
    right.axvline(nothing, color="k", linestyle=":", label="approve everything")
    right.set_title("drifting stream: cost per transaction (mean of months and seeds)",
                    fontsize=9)  # fmt: skip
    right.legend(fontsize=8)
    fig.suptitle("Expected cost (missed fraud 200, review 5, wrong block 50)")
    fig.tight_layout()
    fig.savefig(RESULTS / "costs.png", dpi=120)  # type: ignore[attr-defined]
    return "costs.png"


def markdown(result: dict) -> str:
    lines = ["# Decisions: rules against the model's triage, and update policies over time", ""]
    if "otc" in result:
        o, c = result["otc"], result["otc"]["compare"]
        t = o["model_test"]
        lines += [f"## Bitcoin-OTC ({o['test_accounts']} test accounts, {o['test_fraudulent']} "
                  f"fraudulent; model {o['version']})", ""]  # fmt: skip
        lines += md_table(
            ["", "rules (rules/otc-rules.yaml)", "model"],
            [
                ["interception (flagged fraud / all fraud)", number_cell(c["rules_interception"]),
                 number_cell(c["model_interception_at_rules_review_share"])
                 + " at the rules' review share"],
                ["share of accounts flagged", number_cell(c["rules_review_share"]),
                 number_cell(c["model_review_share_at_rules_interception"])
                 + " for the rules' interception"],
                ["expected cost per account (cost point chosen on validation)",
                 number_cell(o["rules_cost"]), number_cell(t["expected_cost"])],
                ["model at its cost point: review / block share, recall", "",
                 f"{number_cell(t['review_share'])} / {number_cell(t['block_share'])}, "
                 f"{number_cell(t['recall'])}"],
            ],
        )  # fmt: skip
        lines += ["", "![rules vs model](otc_rules_vs_model.png)", ""]
    if "stream" in result:
        s = result["stream"]
        lines += [f"## Drifting synthetic stream ({s['months']} months, {s['users']} users, "
                  f"{s['rings_per_month']} new rings a month, {s['rows']:,} transactions, "
                  f"{s['fraud_share']:.2%} fraudulent)", ""]  # fmt: skip
        f = pd.DataFrame(s["per_month"])
        rows = [
            [str(r.period), r.tactics, r.policy, number_cell(r.auprc),
             number_cell(r.review_at_recall), number_cell(r.vs_rules_rules_interception),
             number_cell(r.vs_rules_rules_review_share),
             number_cell(r.vs_rules_model_review_share_at_rules_interception),
             number_cell(r.train_seconds, 1), f"{r.train_rows:,}"]
            for r in f.itertuples()
        ]  # fmt: skip
        lines += md_table(
            ["month", "ring tactics", "policy", "AUPRC", "review share @ 80 % recall",
             "rules interception", "rules review share", "model review share @ rules'",
             "train s", "train rows"], rows)  # fmt: skip
        lines += ["", "Per policy over all scored months:", ""]
        lines += md_table(
            ["policy", "mean AUPRC", "mean review share @ 80 % recall",
             "mean interception @ 2 % review", "training s", "rows trained", "versions"],
            [[r["policy"], number_cell(r["auprc"]), number_cell(r["review_at_recall"]),
              number_cell(r["intercepted_at_share"]), number_cell(r["train_seconds"], 1),
              f"{r['train_rows']:,}", str(r["updates"])] for r in s["summary"]],
        )  # fmt: skip
        if s["costs"]:
            c = pd.DataFrame(s["costs"]).groupby("policy", sort=False).mean(numeric_only=True)
            lines += [
                "",
                "Expected cost per transaction (model: each version's cost point chosen on "
                "its validation transactions; rules on the same rows), mean over months:",
                "",
            ]
            lines += md_table(
                ["policy", "model", "rules", "model review share", "model block share",
                 "model recall"],
                [[p, number_cell(r.model_cost), number_cell(r.rules_cost),
                  number_cell(r.model_review_share), number_cell(r.model_block_share),
                  number_cell(r.model_recall)] for p, r in c.iterrows()],
            )  # fmt: skip
        lines += ["", "![update policies](stream_policies.png)", ""]
    if "streams" in result:
        first = result["streams"][0]
        lines += [f"## Drifting synthetic stream ({first['months']} months, {first['users']} "
                  f"users, {first['rings_per_month']} new rings a month; seeds "
                  f"{sorted({s.get('seed', 0) for s in result['streams']})})", ""]  # fmt: skip
        lines += [
            "Each seed draws another stream and trains with another seed. Two ways to read the",
            "label delay: *known labels* trains on every row whose label is known at the cutoff",
            "(positives that came back, negatives whose 14-day window passed); *mature rows",
            "only* waits for every row's window, so early chargebacks do not over-represent fraud",
            "among the newest rows. Per policy, the mean over seeds of each seed's mean over",
            "months 1-5 (range over seeds in brackets):",
            "",
        ]
        t = _seed_table(result["streams"])

        def cell(v: pd.Series, digits: int = 3) -> str:
            return f"{v.mean():.{digits}f} [{v.min():.{digits}f}, {v.max():.{digits}f}]"

        rows = []
        for (mode, policy), g in t.groupby(["labels", "policy"], sort=False):
            rows.append([mode, policy, cell(g["auprc"]), cell(g["review_at_recall"]),
                         cell(g["intercepted_at_share"]), f"{g['train_seconds'].mean():.0f}",
                         f"{g['train_rows'].mean():,.0f}"])  # fmt: skip
        heads = ["labels", "policy", "AUPRC", "review share @ 80 % recall",
                 "interception @ 2 % review", "training s", "rows trained"]  # fmt: skip
        lines += md_table(heads, rows)
        months = pd.DataFrame([
            {**m, "labels": _mode(s)} for s in result["streams"] for m in s["per_month"]
        ])  # fmt: skip
        pivot = months.groupby(["labels", "policy", "period"], sort=False)["auprc"].mean()
        periods = sorted(months["period"].unique())
        lines += [
            "",
            "Mean AUPRC per month over seeds (month 1: the first model, every policy):",
            "",
        ]
        pairs = dict.fromkeys((a, b) for a, b, _ in pivot.index)
        lines += md_table(["labels", "policy", *[f"month {p}" for p in periods]],
                          [[m, p, *[number_cell(pivot[(m, p, k)], 3) for k in periods]]
                           for m, p in pairs])  # fmt: skip
        costs = pd.DataFrame([
            {**c, "labels": _mode(s)}
            for s in result["streams"] for c in s["costs"] if c.get("chosen_on") == "validation"
        ])  # fmt: skip
        if not costs.empty:
            c = costs.groupby(["labels", "policy"], sort=False).mean(numeric_only=True)
            lines += ["", "Expected cost per transaction (missed fraud 200, review 5, wrong "
                      "block 50), mean over months and seeds; each version's cost point is "
                      "chosen on its own validation transactions, the rules act on the same "
                      "rows:", ""]  # fmt: skip
            lines += md_table(
                ["labels", "policy", "model", "rules", "model review share", "model recall"],
                [[m, p, number_cell(r.model_cost, 3), number_cell(r.rules_cost, 3),
                  number_cell(r.model_review_share, 3), number_cell(r.model_recall, 3)]
                 for (m, p), r in c.iterrows()],
            )  # fmt: skip
            share = months[months["policy"] == "frozen"]
            nothing = (share["positives"] / share["rows"]).mean() * COSTS["missed"]
            lines += ["", f"Approving everything would cost {nothing:.3f} per transaction.",
                      "", "![expected costs](costs.png)"]  # fmt: skip
        r = months[months["policy"] == "frozen"]
        lines += ["", "The rules of `rules/card-rules.yaml` on the same rows, mean over "
                  "months and seeds: interception "
                  f"{r['vs_rules_rules_interception'].mean():.3f} at a review share of "
                  f"{r['vs_rules_rules_review_share'].mean():.3f}; the models reach the rules' "
                  "interception with a review share of "
                  f"{months['vs_rules_model_review_share_at_rules_interception'].mean():.4f} "
                  "(all policies).", ""]  # fmt: skip
        lines += ["![update policies](stream_policies.png)", ""]
    gpu = result["environment"]["machine"].get("gpu")
    lines += [provenance(result) + (f" GPU: {gpu}." if gpu else "")]
    if len(result.get("commits", [])) > 1:
        lines += ["", "The runs were made at abyssal commits " + ", ".join(result["commits"])
                  + " (the benchmark script only differs between them)."]  # fmt: skip
    lines += [""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", default="otc,stream")
    parser.add_argument("--months", type=int, default=6)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--rings", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--continual-epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--bitcoin-otc", help="the Bitcoin-OTC folder (default: as the config)")
    parser.add_argument("--mature-only", action="store_true",
                        help="train only on rows whose label window has passed")  # fmt: skip
    parser.add_argument("--out", default=str(RESULTS / "decisions"))
    parser.add_argument("--render-only", metavar="JSON", help="plots and report from a result")
    parser.add_argument("--combine", nargs="+", metavar="JSON",
                        help="one report from results of several seeds")  # fmt: skip
    args = parser.parse_args()
    if args.combine:
        RESULTS.mkdir(parents=True, exist_ok=True)
        result = combine(args.combine)
        result["plots"] = plots(result)
        write_result(result, args.out, markdown)
        return
    if args.render_only:
        import json

        result = json.loads(Path(args.render_only).read_text())
        RESULTS.mkdir(parents=True, exist_ok=True)
        result["plots"] = plots(result)
        write_result(result, Path(args.render_only).with_suffix(""), markdown)
        return
    parts = args.part.split(",")
    RESULTS.mkdir(parents=True, exist_ok=True)
    result: dict = {
        "command": "python benchmarks/decisions.py " + " ".join(sys.argv[1:]),
        "environment": environment(),
        "costs": COSTS,
    }
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        if "otc" in parts:
            result["otc"] = part_otc(args, home)
        if "stream" in parts:
            result["stream"] = part_stream(args, home, Path(tmp) / "stream")
    result["plots"] = plots(result)
    write_result(result, args.out, markdown)


if __name__ == "__main__":
    main()
