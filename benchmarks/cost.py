"""Cost benchmark: a day of a hybrid deployment, with a static allocation of replicas and with the
autoscaler, simulated request by request from a replica measured here.

1. A small ``tabular`` model (``abyssal generate tabular`` + ``abyssal train tabular`` with
   ``configs/tabular/quickstart.yaml``), or the one in ``--home``.
2. ``abyssal serve tabular`` started as a process: its cold start (process start to ``/readyz``
   200, ``--cold-starts`` times) and its service profile (:func:`abyssal.deploy.profile.
   measure_service`: a closed loop of ``--concurrency`` clients, each request a batch of
   ``--rows`` rows), then stopped.
3. The deployment (``deployments/tabular.yaml``) with every tier's ``capacity_rps`` set to the
   measured capacity (what ``abyssal deploy measure`` writes) and its ``startup_s`` to the
   measured cold start; a 24 h business-day trace (:func:`abyssal.deploy.trace.diurnal`) whose
   peak needs ``--peak-replicas`` replicas at the target utilization.
4. Simulated (:func:`abyssal.deploy.simulate.simulate`, one seed, so every allocation sees the
   same requests): static for the peak (:func:`~abyssal.deploy.simulate.static_for_peak`),
   static at the deployment's initial replicas, autoscaled, and autoscaled with the deployment
   file's own ``startup_s``.

Writes ``<out>.json``, ``<out>.md`` and ``<out>.png`` (the trace, the replicas per tier and the
utilization over the day, static for the peak against autoscaled).

    python benchmarks/cost.py
    python benchmarks/cost.py --home ~/.abyssal --rows 128 --out /tmp/cost
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from abyssal.core.atomic import write_bytes_atomic, write_text_atomic  # noqa: E402
from abyssal.deploy.profile import ServiceProfile, measure_service  # noqa: E402
from abyssal.deploy.simulate import SimResult, simulate, static_for_peak  # noqa: E402
from abyssal.deploy.spec import DeploymentConfig, load_deployment  # noqa: E402
from abyssal.deploy.trace import Trace, diurnal  # noqa: E402
from environment import environment, md_table  # noqa: E402

ARTICLE = {"utilization_before": 0.45, "utilization_after": 0.78, "cost_per_query_change": -0.42}
"""The article's claims: GPU utilization from 45 % to 78 %, cost per query 42 % lower."""
PACKAGES = ("torch", "numpy", "fastapi", "uvicorn", "httpx", "scikit-learn")


# -- the model and its replica ---------------------------------------------------------------


def cli(home: Path, *argv: str, log: Path) -> None:
    """``abyssal ARGV`` with ``home`` as ABYSSAL_HOME; its output goes to ``log``."""
    env = {**os.environ, "ABYSSAL_HOME": str(home), "PYTHONPATH": str(ROOT / "src")}
    with open(log, "a") as f:
        f.write(f"$ abyssal {' '.join(argv)}\n")
        f.flush()
        done = subprocess.run([sys.executable, "-m", "abyssal", *argv], env=env, stdout=f,
                              stderr=f, cwd=ROOT)  # fmt: skip
    if done.returncode:
        raise SystemExit(f"abyssal {' '.join(argv)} failed (rc {done.returncode}); see {log}")


def prepare(args: argparse.Namespace, work: Path) -> tuple[Path, Path]:
    """The ABYSSAL_HOME holding the model and a CSV of rows to send."""
    data = work / "data"
    log = work / "prepare.log"
    cli(work, "generate", "tabular", "--out", str(data), log=log)
    if args.home:
        return Path(args.home), data / "new_rows.csv"
    home = work / "home"
    config = str(ROOT / "configs" / "tabular" / "quickstart.yaml")
    cli(home, "train", "tabular", "--config", config, f"data.path={data / 'train.csv'}",
        "train.progress=false", log=log)  # fmt: skip
    return home, data / "new_rows.csv"


def request_body(rows_csv: Path, rows: int) -> dict[str, Any]:
    """``{"instances": [...]}`` of ``rows`` rows (the sample's new rows, repeated)."""
    import pandas as pd

    frame = pd.read_csv(rows_csv)
    records = [
        {k: v for k, v in r.items() if not (isinstance(v, float) and math.isnan(v))}
        for r in frame.to_dict("records")
    ]
    return {"instances": [records[k % len(records)] for k in range(rows)]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Replica:
    """``abyssal serve MODEL`` in its own process; ``cold_start_s``: Popen to /readyz 200."""

    def __init__(self, home: Path, model: str, log: Path) -> None:
        import httpx

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "ABYSSAL_HOME": str(home), "PYTHONPATH": str(ROOT / "src")}
        cmd = [sys.executable, "-m", "abyssal", "serve", model, "--port", str(self.port)]
        self.log = log
        began = time.perf_counter()
        with open(log, "ab") as out:
            self.process = subprocess.Popen(cmd, env=env, stdout=out, stderr=out, cwd=ROOT)
        deadline = began + 300
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"abyssal serve stopped (rc {self.process.returncode}); see {log}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() > deadline:
                self.stop()
                raise SystemExit(f"abyssal serve was not ready in 300 s; see {log}")
            time.sleep(0.02)
        self.cold_start_s = time.perf_counter() - began

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def measure(args: argparse.Namespace, work: Path) -> tuple[ServiceProfile, list[float], str]:
    """The replica's profile, its cold starts (s) and the model served."""
    home, rows_csv = prepare(args, work)
    body = request_body(rows_csv, args.rows)
    starts = []
    replica = Replica(home, args.model, work / "serve.log")
    try:
        starts.append(replica.cold_start_s)
        profile = measure_service(replica.url, args.model, body, seconds=args.seconds,
                                  concurrency=args.concurrency)  # fmt: skip
    finally:
        replica.stop()
    for _ in range(args.cold_starts - 1):
        again = Replica(home, args.model, work / "serve.log")
        again.stop()
        starts.append(again.cold_start_s)
    profile.startup_s = statistics.median(starts)
    profile.measured_on["rows_per_request"] = args.rows
    return profile, starts, profile.model


# -- the simulations -------------------------------------------------------------------------


def deployment(args: argparse.Namespace, profile: ServiceProfile) -> tuple[DeploymentConfig, dict]:
    """The deployment with the measured capacity and cold start (what was changed is listed)."""
    cfg = load_deployment(args.deployment)
    startup = args.startup_s if args.startup_s is not None else profile.startup_s
    changed = {}
    for tier in cfg.tiers:
        before = {"capacity_rps": tier.capacity_rps, "startup_s": tier.startup_s}
        if tier.capacity_rps is None:
            tier.capacity_rps = profile.capacity_rps
        tier.startup_s = math.ceil(startup * 10) / 10
        changed[tier.name] = {"before": before,
                              "after": {"capacity_rps": tier.capacity_rps,
                                        "startup_s": tier.startup_s}}  # fmt: skip
    return cfg, changed


def day_trace(args: argparse.Namespace, cfg: DeploymentConfig, profile: ServiceProfile) -> Trace:
    """The business day, its peak sized to ``--peak-replicas`` replicas at the target."""
    capacity = max(t.capacity_rps or profile.capacity_rps for t in cfg.tiers)
    peak = args.peak_replicas * capacity * cfg.autoscale.target_utilization
    return diurnal(hours=args.hours, step_s=args.step_s, base_rps=peak * args.base_ratio,
                   peak_rps=peak, noise=args.noise, seed=args.seed,
                   sensitive_share=args.sensitive_share, name="business-day")  # fmt: skip


def run_all(
    args: argparse.Namespace, cfg: DeploymentConfig, trace: Trace, profile: ServiceProfile
) -> tuple[dict[str, SimResult], dict[str, float]]:
    """Each allocation's result, and the CPU seconds its simulation took."""
    peak = static_for_peak(cfg, trace, profile)
    file_cfg = load_deployment(args.deployment)  # the file's own startup_s
    for tier, ours in zip(file_cfg.tiers, cfg.tiers, strict=True):
        tier.capacity_rps = ours.capacity_rps
    runs = {
        "static-for-peak": (cfg, {"autoscale": False, "static_replicas": peak}),
        "static-initial": (cfg, {"autoscale": False}),
        "autoscaled": (cfg, {"autoscale": True}),
        "autoscaled-file-startup": (file_cfg, {"autoscale": True}),
    }
    out, cpu = {}, {}
    for label, (c, kwargs) in runs.items():
        began = time.process_time()
        result = simulate(c, trace, profile, seed=args.seed, label=label, **kwargs)
        took = time.process_time() - began
        print(f"{label:24} {took:5.1f} s CPU  util {result.utilization:.3f}  p99 "
              f"{result.p99_ms:7.1f} ms  over {result.violation_share:.4f}  cost "
              f"{result.cost:8.2f}  per 1k {result.cost_per_1k:.5f}", flush=True)  # fmt: skip
        out[label], cpu[label] = result, took
    return out, cpu


# -- the report ------------------------------------------------------------------------------


def _pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}%}"


def _relative(path: str) -> str:
    """``path`` relative to the repository when it is inside it."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return path


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def _hours_mean(tl: dict[str, Any], key: str, start: float, end: float) -> float:
    """The mean of a timeline's ``key`` over the steps from hour ``start`` to ``end``."""
    values = [
        v
        for t, v in zip(tl["time_s"], tl[key], strict=True)
        if v is not None and start <= t / 3600 < end
    ]
    return sum(values) / len(values) if values else math.nan


def summarize(results: dict[str, SimResult]) -> dict[str, Any]:
    base, auto = results["static-for-peak"], results["autoscaled"]
    return {
        "utilization_before": base.utilization,
        "utilization_after": auto.utilization,
        "cost_per_query_change": auto.cost_per_1k / base.cost_per_1k - 1,
        "cost_change": auto.cost / base.cost - 1,
        "violation_before": base.violation_share,
        "violation_after": auto.violation_share,
    }


def _replica_lines(result: dict[str, Any]) -> tuple[str, str]:
    """How the replica was measured: here, by this run; or elsewhere, by the saved profile
    (``--profile``), as its ``measured_on`` says."""
    s, prof = result["settings"], result["profile"]
    lat = prof["latency_ms"]
    shape = (
        f"latency at one client p50 {lat['c1_p50']:.1f} ms, p99 {lat['c1_p99']:.1f} ms; at "
        f"saturation p50 {lat['sat_p50']:.1f} ms. Service time per request in the simulator: "
        f"mean {prof['mean_service_ms']:.1f} ms (the one-client latency shape scaled to "
        "1/capacity)."
    )
    if s.get("profile"):
        on = prof.get("measured_on", {})
        machine, versions = on.get("machine", {}), on.get("versions", {})
        where = (
            f"{machine.get('platform', '?')}, {machine.get('cpu', '?')} "
            f"({machine.get('cores', '?')} cores), torch {versions.get('torch', '?')}"
        )
        replica = (
            f"- **Replica (measured elsewhere, `{s['profile']}`).** `{prof['model']}` measured "
            f"on {where} on {on.get('date', '?')}: capacity {prof['capacity_rps']:.1f} "
            f"requests/s at {on.get('concurrency', '?')} clients in a closed loop "
            f"({on.get('seconds', '?')} s); {shape}"
        )
        cold = (
            f"- **Cold start.** Every tier's `startup_s` set to {result['startup_s']:.1f} s "
            f"(`--startup-s`; the file says {result['file_startup_s']}; the last row uses the "
            "file's)."
        )
        return replica, cold
    replica = (
        f"- **Replica (measured).** `abyssal serve {result['model']}` as a process on this "
        f'machine, each request a batch of {s["rows"]} rows (`{{"instances": [...]}}`). '
        f"Capacity {prof['capacity_rps']:.1f} requests/s at {s['concurrency']} clients in a "
        f"closed loop ({s['seconds']:g} s; load generator on the same cores); {shape}"
    )
    cold = (
        f"- **Cold start (measured).** Process start to `/readyz` 200: "
        f"{', '.join(f'{x:.2f}' for x in result['cold_starts_s'])} s (median "
        f"{statistics.median(result['cold_starts_s']):.2f} s); every tier's `startup_s` set "
        f"to {result['startup_s']:.1f} s (the file says {result['file_startup_s']}; the "
        "last row uses the file's)."
    )
    return replica, cold


def markdown(result: dict[str, Any]) -> str:
    env, s = result["environment"], result["settings"]
    m, v = env["machine"], env["versions"]
    runs, cmp_ = result["runs"], result["comparison"]
    trace = result["trace"]
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"
    versions = ", ".join(f"{k} {val}" for k, val in v.items() if val)
    replica, cold = _replica_lines(result)
    lines = [
        "# Cost: autoscaled against static allocation over a simulated day",
        "",
        f"Measured {env['date']} on {m['platform']}, {m['cpu']} ({m['cores']} cores){gpu}; "
        f"Python {m['python']}, {versions}; abyssal commit {env['git_commit']}. "
        f"Command: `{result['command']}`",
        "",
        "## What was measured, what was simulated",
        "",
        replica,
        cold,
        f"- **Deployment.** `{s['deployment']}`: "
        + "; ".join(
            f"{t['name']} ({t['kind']}{', trusted' if t['trusted'] else ''}) "
            f"{t['min']}-{t['max']} replicas at {t['price_per_hour']}/h, max_inflight "
            f"{t['max_inflight']}"
            for t in result["tiers"]
        )
        + f"; objective p99 {result['objective_ms']:g} ms; autoscale "
        + ", ".join(f"{k} {val}" for k, val in result["autoscale"].items())
        + ". Every tier's `capacity_rps` is the measured capacity.",
        f"- **Trace (simulated).** {s['hours']:g} h business day in {s['step_s']:g} s steps: "
        f"night trough {trace['base_rps']:.1f} rps, morning peak, lunch dip, main peak "
        f"{trace['peak_rps']:.1f} rps at 14:00 (= {s['peak_replicas']:g} replicas at the "
        f"target utilization), mean {trace['mean_rps']:.1f} rps, noise {s['noise']:g}; "
        f"{s['sensitive_share']:.0%} of requests sensitive (never on the public tier); "
        f"{trace['requests']:,} requests. Poisson arrivals; each replica a FIFO server; "
        "the router's rules (routing order, max_inflight, latency overflow, the router queue "
        f"with wait {result['wait_s']:g} s). Seed {s['seed']}: every allocation sees the "
        "same requests.",
        "",
        "## Results",
        "",
    ]
    headers = ["allocation", "replicas (avg per tier)", "utilization (ready)",
               "utilization (billed)", "p99 ms", "requests over objective",
               "1-min windows over objective", "refused", "cost", "cost / 1,000 queries",
               "cost / query vs static-for-peak"]  # fmt: skip
    rows = []
    base = runs["static-for-peak"]["cost_per_1k"]
    for label, r in runs.items():
        avg = "/".join(f"{h / (r['duration_s'] / 3600):.2f}" for h in r["replica_hours"].values())
        rows.append([
            label, avg, _pct(r["utilization"]), _pct(r["utilization_billed"]),
            f"{r['p99_ms']:.0f}", _pct(r["violation_share"], 2),
            _pct(r["window_violation_share"]), f"{r['refused']:,}", f"{r['cost']:.2f}",
            f"{r['cost_per_1k']:.4f}", _pct(r["cost_per_1k"] / base - 1),
        ])  # fmt: skip
    lines += md_table(headers, rows)
    lines += [
        "",
        f"Replicas per tier are in order {'/'.join(runs['autoscaled']['replica_hours'])}. "
        "Utilization is busy replica-seconds over billed replica-seconds while ready (billed: "
        "starting and draining included). Cost = billed replica-hours x the tier's "
        "`price_per_hour` from the deployment file, not a cloud bill. Requests over objective "
        "counts refused ones.",
        "",
    ]
    tiers = list(runs["autoscaled"]["requests_per_tier"])
    lines += md_table(
        ["allocation"] + [f"{t}: answered, p99 ms, over objective" for t in tiers],
        [
            [label]
            + [
                f"{r['requests_per_tier'][t]:,}, {_ms(r['p99_ms_by_tier'][t])}, "
                f"{_pct(r['over_objective_by_tier'][t], 2)}"
                for t in tiers
            ]
            for label, r in runs.items()
        ],
    )
    lines += ["", "## Against the article", ""]
    lines += md_table(
        ["", "utilization before", "utilization after", "cost per query"],
        [
            ["article (claimed, not measured here)", _pct(ARTICLE["utilization_before"], 0),
             _pct(ARTICLE["utilization_after"], 0), _pct(ARTICLE["cost_per_query_change"], 0)],
            ["this run: static-for-peak -> autoscaled", _pct(cmp_["utilization_before"]),
             _pct(cmp_["utilization_after"]), _pct(cmp_["cost_per_query_change"])],
        ],
    )  # fmt: skip
    lines += ["", "## Reading", ""] + [f"- {x}" for x in reading(result)]
    lines += [
        "",
        "Chart: `cost.png` (the trace; replicas per tier, static-for-peak dashed and "
        "autoscaled solid; utilization per 15 minutes).",
    ]
    return "\n".join(lines) + "\n"


def reading(result: dict[str, Any]) -> list[str]:
    """Plain sentences from the numbers (which way each comparison went)."""
    runs, c = result["runs"], result["comparison"]
    peak, init, auto = runs["static-for-peak"], runs["static-initial"], runs["autoscaled"]
    out = []
    util_gap = c["utilization_after"] - ARTICLE["utilization_after"]
    trace = result["trace"]
    ta, tp = auto["timeline"], peak["timeline"]
    out.append(
        f"Utilization went from {_pct(c['utilization_before'])} (static for the peak) to "
        f"{_pct(c['utilization_after'])} (autoscaled); the article reports 45 % -> 78 %. Ours is "
        + ("lower at both ends" if util_gap < -0.02 and c["utilization_before"] < 0.45 else
           "different")
        + f" (autoscaled {abs(util_gap) * 100:.1f} points "
        + ("under" if util_gap < 0 else "over")
        + " 78 %). Static for the peak is sized for the peak step at the target utilization "
        f"({result['autoscale']['target_utilization']}) in whole replicas, and this day's peak "
        f"is {trace['peak_rps'] / trace['mean_rps']:.1f}x its mean. Autoscaled, the night "
        f"(0-6 h) runs at {_pct(_hours_mean(ta, 'utilization', 0, 6))}: the edge replica and "
        "the private tier's minimum of one stay up for a trough of "
        f"{trace['base_rps']:.1f} rps. The busy hours (9-16 h) run at "
        f"{_pct(_hours_mean(ta, 'utilization', 9, 16))} (static: "
        f"{_pct(_hours_mean(tp, 'utilization', 9, 16))}): the public tier keeps the replicas it "
        "took during overflow bursts while edge and private are full (the autoscaler's "
        f"rule 5), {auto['replica_hours']['public']:.1f} public replica-hours against "
        f"{peak['replica_hours']['public']:.1f} static."
    )  # fmt: skip
    change = c["cost_per_query_change"]
    out.append(
        f"Cost per query changed by {_pct(change)} against static-for-peak (the article: -42 %); "
        + ("a larger cut than the article's." if change < -0.42 else
           "a smaller cut than the article's.")
        + f" The day cost {peak['cost']:.2f} static-for-peak and {auto['cost']:.2f} autoscaled."
    )  # fmt: skip
    worse = auto["violation_share"] > peak["violation_share"]
    out.append(
        f"Latency: {_pct(auto['violation_share'], 2)} of requests over the "
        f"{result['objective_ms']:g} ms objective autoscaled against "
        f"{_pct(peak['violation_share'], 2)} static-for-peak"
        + ("; autoscaling costs some latency here." if worse else
           "; autoscaling did not cost latency here.")
        + f" Most of it is the same in every allocation: the edge tier (one replica, max_inflight"
        f" {result['tiers'][0]['max_inflight']}) is filled first by the router, up to its "
        "in-flight limit or until its p99 is over the objective, then passed over until its "
        "10 s window empties, so it answers with a p99 of "
        f"{_ms(auto['p99_ms_by_tier'][result['tiers'][0]['name']])} ms; the private tier, next "
        "in line, runs near saturation in the busy hours for the same reason. That is why "
        f"{_pct(peak['window_violation_share'])} (static-for-peak) and "
        f"{_pct(auto['window_violation_share'])} (autoscaled) of 1-minute windows have a p99 "
        "over the objective: a property of the routing rules, max_inflight and this model's "
        f"service time ({result['profile']['mean_service_ms']:.0f} ms mean, heavy-tailed), not "
        "of the allocation."
    )  # fmt: skip
    out.append(
        f"Static at the initial replicas costs {init['cost']:.2f} but refuses "
        f"{init['refused']:,} requests ({init['refused'] / max(1, init['requests']):.1%}) and "
        f"has {_pct(init['violation_share'], 1)} of requests over the objective: it is not a "
        "usable allocation for this trace, shown as the floor."
    )
    file_run = runs["autoscaled-file-startup"]
    out.append(
        f"With the deployment file's startup_s ({result['file_startup_s']}) instead of the "
        f"measured cold start, autoscaled costs {file_run['cost']:.2f}, utilization "
        f"{_pct(file_run['utilization'])}, {_pct(file_run['violation_share'], 2)} over the "
        "objective."
    )
    leaks = ", ".join(f"{k} {r['sensitive_on_untrusted']}" for k, r in runs.items())
    out.append(f"Sensitive requests on an untrusted tier: {leaks}.")
    out.append(
        f"The autoscaler made {len(auto['decisions'])} decisions over the day "
        f"({sum(auto['replicas_started'].values())} replicas started). Each simulated day took "
        + ", ".join(f"{r['cpu_s']:.0f}" for r in runs.values())
        + " s of CPU."
    )
    out.append(
        "This is a simulation from one replica measured on this machine, not a measured "
        "deployment: the replica is a FIFO server at the measured capacity, replicas never "
        "fail, and the network between tiers costs nothing. The article's numbers are about "
        "GPUs; these are CPU replicas of a small tabular model."
    )
    return out


def chart(result: dict[str, Any], path: Path) -> None:
    """The trace, replicas per tier and utilization over the day, static-for-peak vs
    autoscaled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    runs = result["runs"]
    static, auto = runs["static-for-peak"]["timeline"], runs["autoscaled"]["timeline"]
    hours = np.asarray(auto["time_s"], dtype=float) / 3600
    fig, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    ax = axes[0]
    ax.plot(hours, auto["rate_rps"], color="black", lw=1, label="trace (requests/s)")
    ax.plot(hours, auto["arrivals_rps"], color="grey", lw=0.5, alpha=0.7, label="arrivals")
    ax.set_ylabel("requests / s")
    ax.legend(loc="upper left")
    ax.set_title(f"{result['trace']['requests']:,} requests over {result['settings']['hours']:g} h")
    ax = axes[1]
    colours = {"edge": "tab:green", "private": "tab:blue", "public": "tab:red"}
    for k, tier in enumerate(auto["replicas"]):
        colour = colours.get(tier, f"C{k}")
        ax.plot(hours, static["replicas"][tier], color=colour, ls="--", lw=1.2,
                label=f"{tier} static-for-peak")  # fmt: skip
        ax.plot(hours, auto["replicas"][tier], color=colour, lw=1.2, label=f"{tier} autoscaled")
    top = max(max(tl["replicas"][t]) for tl in (static, auto) for t in auto["replicas"])
    ax.set_ylim(-0.2, top + 1.6)
    ax.set_ylabel("replicas (billed, mean per step)")
    ax.legend(loc="upper left", ncol=3, fontsize=8)
    ax = axes[2]
    window = 15
    for label, tl, style in (("static-for-peak", static, "--"), ("autoscaled", auto, "-")):
        u = np.asarray([np.nan if x is None else x for x in tl["utilization"]], dtype=float)
        smooth = np.convolve(np.nan_to_num(u), np.ones(window) / window, mode="same")
        ax.plot(hours, smooth * 100, ls=style, color="black", label=label)
    ax.axhline(78, color="tab:orange", lw=0.8, label="article: 78 %")
    ax.axhline(45, color="tab:purple", lw=0.8, label="article: 45 %")
    ax.set_ylabel("utilization % (15 min)")
    ax.set_xlabel("hour of day")
    ax.set_ylim(0, 100)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())


# -- main ------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="abyssal-cost-"))
    try:
        if args.profile:
            profile = ServiceProfile.load(args.profile)
            starts, model = [profile.startup_s or 0.0], profile.model
        else:
            profile, starts, model = measure(args, work)
        print(f"profile: {profile.capacity_rps:.1f} req/s, service {profile.mean_service_ms:.1f}"
              f" ms, cold start {starts}", flush=True)  # fmt: skip
        cfg, changed = deployment(args, profile)
        trace = day_trace(args, cfg, profile)
        print(f"trace: peak {trace.peak_rps:.1f} rps, mean {trace.mean_rps:.1f} rps, about "
              f"{trace.expected_requests:,.0f} requests", flush=True)  # fmt: skip
        if trace.expected_requests > args.max_requests:
            print(f"warning: more than {args.max_requests:,.0f} requests; a simulation takes "
                  "about 4 s of CPU per million", flush=True)  # fmt: skip
        results, cpu = run_all(args, cfg, trace, profile)
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    file_cfg = load_deployment(args.deployment)
    env = environment(PACKAGES)
    prof = json.loads(profile.to_json())
    prof["mean_service_ms"] = profile.mean_service_ms
    result = {
        "environment": env,
        "command": " ".join(["python benchmarks/cost.py", *sys.argv[1:]]),
        "settings": {
            **{k: v for k, v in vars(args).items() if k != "keep"},
            "deployment": _relative(args.deployment),
        },
        "model": model,
        "profile": prof,
        "cold_starts_s": starts,
        "startup_s": cfg.tiers[0].startup_s,
        "file_startup_s": ", ".join(f"{t.name} {t.startup_s:g} s" for t in file_cfg.ordered),
        "tiers": [
            {
                "name": t.name,
                "kind": t.kind,
                "trusted": t.trusted,
                "min": t.replicas.min,
                "max": t.replicas.max,
                "price_per_hour": t.price_per_hour,
                "max_inflight": t.max_inflight,
                "capacity_rps": t.capacity_rps,
                "startup_s": t.startup_s,
            }
            for t in cfg.ordered
        ],
        "changed": changed,
        "objective_ms": cfg.policies.objective_p99_ms,
        "wait_s": cfg.policies.wait_s,
        "autoscale": {
            k: getattr(cfg.autoscale, k)
            for k in (
                "every_s",
                "target_utilization",
                "scale_out_above",
                "scale_in_below",
                "queue_per_replica",
                "out_after",
                "in_after",
                "cooldown_s",
                "max_step",
            )
        },
        "trace": {
            "peak_rps": trace.peak_rps,
            "mean_rps": trace.mean_rps,
            "base_rps": float(trace.rates.min()),
            "steps": trace.steps,
            "step_s": trace.step_s,
            "requests": results["autoscaled"].requests,
        },
        "static_for_peak": results["static-for-peak"].static_replicas,
        "runs": {k: {**r.to_dict(), "cpu_s": cpu[k]} for k, r in results.items()},
        "comparison": summarize(results),
        "article": ARTICLE,
    }
    out = Path(args.out)
    write_text_atomic(out.with_suffix(".json"), json.dumps(result, indent=1) + "\n")
    write_text_atomic(out.with_suffix(".md"), markdown(result))
    chart(result, out.with_suffix(".png"))
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="benchmarks/results/cost", help="result path stem")
    p.add_argument("--home", help="an ABYSSAL_HOME with the model (default: train one)")
    p.add_argument("--model", default="tabular", help="the model to serve and measure")
    p.add_argument("--deployment", default=str(ROOT / "deployments" / "tabular.yaml"))
    p.add_argument("--profile", help="a saved ServiceProfile JSON instead of measuring")
    p.add_argument("--rows", type=int, default=128, help="rows per request (instances)")
    p.add_argument("--seconds", type=float, default=10.0, help="saturated measuring window")
    p.add_argument(
        "--concurrency",
        type=int,
        default=6,
        help="clients at saturation (rows x clients stay under the replica's --max-queue, 1024)",
    )
    p.add_argument("--cold-starts", type=int, default=3, help="cold starts measured")
    p.add_argument("--startup-s", type=float, help="replica startup instead of the measured")
    p.add_argument("--hours", type=float, default=24.0)
    p.add_argument("--step-s", type=float, default=60.0)
    p.add_argument("--peak-replicas", type=float, default=6.0,
                   help="the peak's rate in replicas at the target utilization")  # fmt: skip
    p.add_argument("--base-ratio", type=float, default=0.05, help="night trough / peak")
    p.add_argument("--noise", type=float, default=0.05)
    p.add_argument("--sensitive-share", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-requests", type=float, default=4e6, help="warn above this many")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    args = p.parse_args(argv)
    if args.rows < 1 or args.cold_starts < 1:
        p.error("--rows and --cold-starts must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run(args)
    print(f"wrote {args.out}.json, {args.out}.md and {args.out}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
