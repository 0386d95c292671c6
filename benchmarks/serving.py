"""Serving benchmark: `abyssal serve` and a load generator as separate processes on loopback.

Measured side by side in one run, each for a fixed time at several concurrency levels (closed
loop: each client sends its next request when the last is answered):

- dynamic batching off (``--max-batch-size 1``) against on, for the text and defect models;
- the feature cache off against on, with a mix where half the requests repeat a small set of
  hot queries (the other half are new);
- fraud ingestion with persistence on (``--state-dir``: journal fsynced before each answer).

Models are trained here for a few steps on the generators' data (`abyssal generate`): what is
measured is the service, not the models' accuracy. Every run writes JSON (with the machine and
versions) and a Markdown table; `--device cuda` serves on a GPU.

    python benchmarks/serving.py --out benchmarks/results/serving_cpu
    python benchmarks/serving.py --device cuda --text-base .devdata/minilm --out /tmp/serving_cuda

The load generator is this file too (``python benchmarks/serving.py load ...``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from abyssal.core.store import ModelStore  # noqa: E402
from environment import environment  # noqa: E402
from environment import number_cell as _f  # noqa: E402

HOT = 16
"""Distinct hot queries in a repeated-query mix."""


# -- the load generator (its own process) -----------------------------------------------------


class Payloads:
    """What clients send: ``items`` in order (each sent once, then again with a new suffix for
    text), and with probability ``repeat`` one of the first :data:`HOT` instead."""

    def __init__(self, items: list[Any], kind: str, repeat: float, seed: int) -> None:
        self.items, self.kind, self.repeat = items, kind, repeat
        self.tag = os.urandom(3).hex()  # this process's transaction ids are its own
        self.rng, self.seed = random.Random(seed), seed  # one seed per load process
        self.hot = items[:HOT] if repeat else []
        self.fresh = items[HOT:] if repeat else items
        self.sent = 0

    def next(self) -> tuple[Any, bool]:
        """``(payload, is_repeat)``."""
        if self.hot and self.rng.random() < self.repeat:
            return self.hot[self.rng.randrange(len(self.hot))], True
        k = self.sent
        self.sent += 1
        item = self.fresh[k % len(self.fresh)]
        lap = k // len(self.fresh)
        if (lap or self.seed) and self.kind == "text":  # new content, never a cache hit
            item = {**item, "text": f"{item['text']} ({self.seed}.{lap})"}
        if self.kind == "fraud":
            item = {**item, "transaction_id": f"{item['transaction_id']}-{self.tag}-{k}"}
        return item, False


async def _client(
    http: Any, url: str, payloads: Payloads, deadline: float, files: bool, out: list
) -> None:
    while time.perf_counter() < deadline:
        payload, repeat = payloads.next()
        start = time.perf_counter()
        try:
            if files:
                with open(payload["path"], "rb") as f:
                    data = f.read()
                answer = await http.post(url, files={"path": (Path(payload["path"]).name, data)})
            else:
                answer = await http.post(url, json=payload)
            status = answer.status_code
        except Exception as e:  # a transport error is counted, never hidden
            status = type(e).__name__
        out.append((start, time.perf_counter() - start, status, repeat))


async def _load(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    items = [json.loads(line) for line in Path(args.requests).read_text().splitlines() if line]
    payloads = Payloads(items, args.kind, args.repeat, args.seed)
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=None)
    timeout = httpx.Timeout(args.client_timeout_s)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:
        files = args.kind == "defect"
        warm: list = []  # a second first, not counted: every batch size and code path seen
        until = time.perf_counter() + 1.0
        await asyncio.gather(
            *(
                _client(http, args.url, payloads, until, files, warm)
                for _ in range(args.concurrency)
            )
        )
        out: list = []
        began = time.perf_counter()
        deadline = began + args.seconds
        await asyncio.gather(
            *(
                _client(http, args.url, payloads, deadline, files, out)
                for _ in range(args.concurrency)
            )
        )
        elapsed = time.perf_counter() - began
    if args.raw:  # for the parent, which pools several load processes
        return {"elapsed": elapsed, "out": [[lat, status, rep] for _, lat, status, rep in out]}
    return summarize(out, elapsed, args.concurrency)


def summarize(out: Sequence[tuple], elapsed: float, concurrency: int) -> dict[str, Any]:
    """Throughput and latency of one window: answered (200) requests per second, and latency
    percentiles over all requests (errors included: a fast refusal is still an answer)."""
    ok = [lat for _, lat, status, _ in out if status == 200]
    statuses: dict[str, int] = {}
    for _, _, status, _ in out:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    lat = sorted(lat for _, lat, _, _ in out)
    repeats = [lat for _, lat, status, rep in out if rep and status == 200]
    fresh = [lat for _, lat, status, rep in out if not rep and status == 200]
    return {
        "concurrency": concurrency,
        "requests": len(out),
        "statuses": statuses,
        "seconds": elapsed,
        "throughput": len(ok) / elapsed,
        "mean_ms": 1000 * statistics.fmean(lat) if lat else None,
        "p50_ms": 1000 * _pct(lat, 50),
        "p99_ms": 1000 * _pct(lat, 99),
        "repeat_mean_ms": 1000 * statistics.fmean(repeats) if repeats else None,
        "fresh_mean_ms": 1000 * statistics.fmean(fresh) if fresh else None,
    }


def _pct_cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _pct(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


# -- models, payloads and servers ------------------------------------------------------------


def cli(home: Path, *argv: str, log: Path) -> None:
    """Run ``abyssal ARGV`` with ``home`` as ABYSSAL_HOME; its output goes to ``log``."""
    env = {**os.environ, "ABYSSAL_HOME": str(home), "PYTHONPATH": str(ROOT / "src")}
    with open(log, "a") as f:
        f.write(f"$ abyssal {' '.join(argv)}\n")
        f.flush()
        done = subprocess.run(
            [sys.executable, "-m", "abyssal", *argv], env=env, stdout=f, stderr=f, cwd=ROOT
        )
    if done.returncode:
        raise SystemExit(f"abyssal {' '.join(argv)} failed (rc {done.returncode}); see {log}")


def prepare(args: argparse.Namespace, work: Path, parts: set[str]) -> dict[str, Any]:
    """Train and register the models (a few steps each) and write each one's requests."""
    home, log = work / "home", work / "prepare.log"
    device = [f"train.device={args.device}"] if args.device != "auto" else []
    quick = ["train.epochs=1", f"train.max_steps={args.train_steps}", "train.progress=false"]
    setup: dict[str, Any] = {}
    if parts & {"batching", "cache"}:
        cli(home, "generate", "text", "--out", str(work / "text"), log=log)
        base = [f"model.base={args.text_base}"] if args.text_base else []
        config = str(ROOT / "configs/text/quickstart.yaml")
        data = f"data.path={work / 'text' / 'texts.csv'}"
        cli(home, "finetune", "text", "--config", config, data, *base, *quick, *device, log=log)
        texts = _column(work / "text" / "texts.csv", "text")
        _write_jsonl(work / "text.jsonl", [{"text": t} for t in texts])
        setup["text"] = {"texts": len(texts)}
    if "batching" in parts:
        cli(home, "generate", "defect", "--out", str(work / "defect"), log=log)
        config = str(ROOT / "configs/defect/quickstart.yaml")
        over = [
            f"data.path={work / 'defect' / 'images'}",
            f"model.backbone={args.defect_backbone}",
            f"data.image_size={args.image_size}",
        ]
        cli(home, "train", "defect", "--config", config, *over, *quick, *device, log=log)
        images = sorted(str(p) for p in (work / "defect" / "images").rglob("*.png"))
        _write_jsonl(work / "defect.jsonl", [{"path": p} for p in images])
        setup["defect"] = {"images": len(images), "backbone": args.defect_backbone,
                           "image_size": args.image_size}  # fmt: skip
    if "fraud" in parts:
        sample = work / "fraud"
        cli(home, "generate", "fraud", "--out", str(sample), "users=300", "rings=4", "days=20",
            log=log)  # fmt: skip
        train = ["data.source=transactions", f"data.path={sample / 'transactions.csv'}"]
        small = ["model.hidden=32", "model.heads=2", "baselines=false"]
        cli(home, "train", "fraud", *train, *small, *quick, *device, log=log)
        rows = _rows(sample / "new_transactions.csv")
        _write_jsonl(work / "fraud.jsonl", rows)
        setup["fraud"] = {"transactions": len(rows)}
    store = ModelStore(home)
    for version in store.list_versions():  # the newest version of each solution's model
        if version.solution in setup:
            setup[version.solution]["ref"] = version.ref
            setup[version.solution]["name"] = version.name
    return setup


def _column(path: Path, name: str) -> list[str]:
    import pandas as pd

    return [str(v) for v in pd.read_csv(path)[name].dropna()]


def _rows(path: Path) -> list[dict[str, str]]:
    import pandas as pd

    frame = pd.read_csv(path, dtype=str)
    return [{k: v for k, v in r.items() if isinstance(v, str)} for r in frame.to_dict("records")]


def _write_jsonl(path: Path, rows: Sequence[Any]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``abyssal serve`` in its own process, until the ``with`` ends (SIGTERM, drained)."""

    def __init__(self, work: Path, ref: str, options: Sequence[str], device: str) -> None:
        self.port = _free_port()
        self.log = work / "serve.log"
        env = {**os.environ, "ABYSSAL_HOME": str(work / "home"), "PYTHONPATH": str(ROOT / "src")}
        cmd = [sys.executable, "-m", "abyssal", "serve", ref, "--port", str(self.port), *options]
        if device != "auto":
            cmd += ["--device", device]
        with open(self.log, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n")
        self.process = subprocess.Popen(cmd, env=env, stdout=open(self.log, "a"),  # noqa: SIM115
                                        stderr=subprocess.STDOUT, cwd=ROOT)  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        import urllib.request

        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(
                    f"the server stopped (rc {self.process.returncode}); see {self.log}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise SystemExit(f"the server was not ready in 300 s; see {self.log}")

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def cache_counts(self) -> dict[str, float]:
        import urllib.request

        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as r:
            text = r.read().decode()
        counts = {}
        for line in text.splitlines():
            if line.startswith('abyssal_feature_cache{what="'):
                what = line.split('"')[1]
                counts[what] = float(line.rsplit(" ", 1)[1])
        return counts


def generate_load(
    url: str,
    requests: Path,
    kind: str,
    concurrency: int,
    seconds: float,
    repeat: float = 0.0,
    procs: int = 1,
) -> dict[str, Any]:
    """Run the load generator as ``procs`` processes (at most one per client), the clients
    shared among them, so that one client process's own cost does not cap the rate measured;
    the summary of all their requests."""
    procs = max(1, min(procs, concurrency))
    shares = [concurrency // procs + (k < concurrency % procs) for k in range(procs)]
    running = []
    for k, share in enumerate(shares):
        cmd = [sys.executable, __file__, "load", "--url", url, "--requests", str(requests),
               "--kind", kind, "--concurrency", str(share), "--seconds", str(seconds),
               "--repeat", str(repeat), "--seed", str(k), "--raw"]  # fmt: skip
        running.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True))  # fmt: skip
    out: list[tuple] = []
    elapsed = 0.0
    for process in running:
        stdout, stderr = process.communicate(timeout=seconds + 120)
        if process.returncode:
            raise SystemExit(f"the load generator failed: {stderr[-2000:]}")
        part = json.loads(stdout.strip().splitlines()[-1])
        elapsed = max(elapsed, part["elapsed"])
        out += [(0.0, lat, status, rep) for lat, status, rep in part["out"]]
    return {**summarize(out, elapsed, concurrency), "load_processes": procs}


BATCH_OFF = ["--max-batch-size", "1", "--max-wait-ms", "0"]


def scenarios(args: argparse.Namespace, parts: set[str]) -> list[dict[str, Any]]:
    """Each server configuration and the load it gets."""
    on = ["--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms)]
    levels = [int(c) for c in args.concurrency.split(",")]
    out = []
    waits = [("on", on)] + [
        (f"on_wait{w:g}", ["--max-batch-size", str(args.max_batch_size), "--max-wait-ms", f"{w:g}"])
        for w in args.also_wait_ms
    ]
    if "batching" in parts:
        for model in ("text", "defect"):
            for name, options in (("off", BATCH_OFF), *waits):
                options = [*options, "--cache-entries", "0"]
                out.append(_scenario("batching", model, name, levels, options, 0.0))
    if "cache" in parts:
        cache_levels = [int(c) for c in args.cache_concurrency.split(",")]
        for name, entries in (("off", "0"), ("on", "10000")):
            options = [*on, "--cache-entries", entries]
            out.append(_scenario("cache", "text", name, cache_levels, options, args.repeat))
    if "fraud" in parts:
        fraud_levels = [int(c) for c in args.fraud_concurrency.split(",")]
        options = [*on, "--state-dir", "STATE"]
        out.append(_scenario("fraud", "fraud", "journal", fraud_levels, options, 0.0))
    return out


def _scenario(
    part: str, model: str, setting: str, levels: list[int], options: list[str], repeat: float
) -> dict[str, Any]:
    return {"part": part, "model": model, "setting": setting, "levels": levels,
            "options": options, "repeat": repeat}  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    parts = set(args.parts.split(","))
    work = Path(tempfile.mkdtemp(prefix="abyssal-serving-"))
    started = time.time()
    try:
        setup = prepare(args, work, parts)
        if args.merge:  # the merged windows' models, as they were
            setup = {**json.loads(Path(args.merge).read_text())["models"], **setup}
        print(f"models ready in {time.time() - started:.0f} s", flush=True)
        windows = merged_windows(args.merge, parts)
        for sc in scenarios(args, parts):
            options = [o if o != "STATE" else str(work / "state") for o in sc["options"]]
            shutil.rmtree(work / "state", ignore_errors=True)
            model = setup[sc["model"]]
            with Server(work, model["ref"], options, args.device) as server:
                url = f"{server.url}/v1/models/{model['name']}/predict"
                for level in sc["levels"]:
                    kind = sc["model"]
                    requests = work / f"{kind}.jsonl"
                    result = generate_load(url, requests, kind, level, args.seconds, sc["repeat"],
                                           args.load_procs)  # fmt: skip
                    row = {k: v for k, v in sc.items() if k not in ("levels", "options")}
                    row.update(result, options=" ".join(sc["options"]))
                    if sc["part"] == "cache":
                        row["cache"] = server.cache_counts()
                    windows.append(row)
                    print(_line(row), flush=True)
                    save(args, setup, windows)  # after every window: a cut-short run keeps some
        return save(args, setup, windows)
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def merged_windows(path: str | None, parts: set[str]) -> list[dict[str, Any]]:
    """The windows of an earlier result (``--merge``) of the parts not measured now, marked
    with the commit and date they were measured at."""
    if not path:
        return []
    earlier = json.loads(Path(path).read_text())
    env = earlier["environment"]
    kept = [w for w in earlier["windows"] if w["part"] not in parts]
    for w in kept:
        w.setdefault("measured", f"{env['date']} at {env['git_commit']}")
    return kept


def _line(row: dict[str, Any]) -> str:
    head = f"{row['part']:8} {row['model']:6} {row['setting']:7} c={row['concurrency']:<3}"
    speed = f"{row['throughput']:8.1f} req/s  p50 {row['p50_ms']:8.1f} ms"
    return f"{head} {speed}  p99 {row['p99_ms']:8.1f} ms  {row['statuses']}"


def save(args: argparse.Namespace, setup: dict[str, Any], windows: list[dict]) -> dict[str, Any]:
    env = environment(("torch", "transformers", "fastapi", "uvicorn", "httpx"))
    env["git_commit"] = args.commit or env["git_commit"]
    result = {
        "environment": env,
        "command": "python benchmarks/serving.py " + " ".join(sys.argv[1:]),
        "settings": {
            k: v for k, v in vars(args).items() if k not in ("out", "keep", "commit", "merge")
        },
        "models": setup,
        "merged_from": args.merge,
        "windows": windows,
        "comparisons": compare(windows),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    return result


def compare(windows: list[dict]) -> list[dict[str, Any]]:
    """Batching: on/off throughput and p99 at each concurrency. Cache: on/off mean latency."""
    out = []
    by = {(w["part"], w["model"], w["setting"], w["concurrency"]): w for w in windows}
    for (part, model, setting, level), on in by.items():
        if not setting.startswith("on"):
            continue
        off = by.get((part, model, "off", level))
        if off is None:
            continue
        row = {"part": part, "model": model, "setting": setting, "concurrency": level}
        if part == "batching":
            row["speedup"] = on["throughput"] / off["throughput"] if off["throughput"] else None
            row["p99_on_ms"], row["p99_off_ms"] = on["p99_ms"], off["p99_ms"]
            row["p99_not_worse"] = on["p99_ms"] <= off["p99_ms"]
        else:
            row["mean_on_ms"], row["mean_off_ms"] = on["mean_ms"], off["mean_ms"]
            row["mean_reduction"] = 1 - on["mean_ms"] / off["mean_ms"]
            row["hit_rate"] = on.get("cache", {}).get("hit_rate")
            # the repeated (hot) queries alone: what the cache is for
            hot_on, hot_off = on.get("repeat_mean_ms"), off.get("repeat_mean_ms")
            row["repeat_on_ms"], row["repeat_off_ms"] = hot_on, hot_off
            row["repeat_reduction"] = 1 - hot_on / hot_off if hot_on and hot_off else None
        out.append(row)
    return out


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    m, v = env["machine"], env["versions"]
    where = f"{m['cpu']} ({m['cores']} cores)" + (f", {m['gpu']}" if m["gpu"] else ", no GPU")
    s = result["settings"]
    lines = [
        "# Serving: dynamic batching, the feature cache, fraud ingestion",
        "",
        f"Measured {env['date']} on {m['platform']}, {where}; Python {m['python']}, "
        + ", ".join(f"{k} {val}" for k, val in v.items() if val)
        + f"; commit {env['git_commit']}. Command: `{result['command']}`",
        "",
        f"Service and load generator are separate processes on one machine (loopback), so they "
        f"share its CPU cores. Closed loop: each of `c` clients sends its next request when the "
        f"last is answered, for {s['seconds']} s after 1 s of warm-up; serving on device "
        f"`{s['device']}`. Throughput counts answered (200) requests; latencies are client-side, "
        f"over all requests. Models: {json.dumps(result['models'])}; each trained "
        f"{s['train_steps']} steps on generated data (the service is measured, not accuracy).",
        "",
        "Published anchors, not measured here: Triton reports 3.7x throughput from its dynamic "
        "batcher; the article claims a 60 % lower response time from its feature cache.",
        "",
    ]
    comps = result["comparisons"]
    batching = [c for c in comps if c["part"] == "batching"]
    if batching:
        lines += [
            f"## Batching off (`{' '.join(BATCH_OFF)}`) against on (max batch "
            f"{s['max_batch_size']}, wait {s['max_wait_ms']} ms; `on_waitW`: wait W ms); target "
            ">= 3x at equal or lower p99",
            "",
            "| model | on | clients | speed-up | p99 off ms | p99 on ms | p99 not worse |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {c['model']} | {c.get('setting', 'on')} | {c['concurrency']} | "
            f"{c['speedup']:.2f}x | {c['p99_off_ms']:.1f} | {c['p99_on_ms']:.1f} | "
            f"{'yes' if c['p99_not_worse'] else 'no'} |"
            for c in sorted(batching, key=lambda c: (c["model"] != "text", c.get("setting", "on")))
        ]
        lines.append("")
    cache = [c for c in comps if c["part"] == "cache"]
    if cache:
        lines += [
            f"## Feature cache off against on, text, {s['repeat']:.0%} of requests repeat "
            f"{HOT} hot queries; target >= 60 % lower mean latency",
            "",
            "| clients | mean off ms | mean on ms | reduction | repeated queries: off ms | on ms "
            "| reduction | cache hit rate |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {c['concurrency']} | {c['mean_off_ms']:.1f} | {c['mean_on_ms']:.1f} | "
            f"{c['mean_reduction']:.1%} | {_f(c.get('repeat_off_ms'), 1)} | "
            f"{_f(c.get('repeat_on_ms'), 1)} | {_pct_cell(c.get('repeat_reduction'))} | "
            f"{_f(c['hit_rate'], 3)} |"
            for c in cache
        ]
        lines.append("")
    lines += [
        "## Every window",
        "",
        "| part | model | setting | clients | requests | answered/s | mean ms | p50 ms | p99 ms "
        "| statuses |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    earlier = sorted({w["measured"] for w in result["windows"] if "measured" in w})
    if earlier:
        lines.insert(
            -3,
            "Windows marked * were measured earlier, in the same way, and merged "
            f"from `{result.get('merged_from')}` ({'; '.join(earlier)}).\n",
        )
    for w in result["windows"]:
        lines.append(
            f"| {w['part']}{'*' if 'measured' in w else ''} | {w['model']} | {w['setting']} | "
            f"{w['concurrency']} | "
            f"{w['requests']} | {w['throughput']:.1f} | {w['mean_ms']:.1f} | {w['p50_ms']:.1f} | "
            f"{w['p99_ms']:.1f} | {', '.join(f'{k}: {n}' for k, n in w['statuses'].items())} |"
        )
    fraud = [w for w in result["windows"] if w["part"] == "fraud"]
    if fraud:
        lines += [
            "",
            "Fraud: each request is one new transaction appended to the live graph and scored, "
            "journalled and fsynced before its answer (`--state-dir`); answered/s is the "
            "ingestion rate.",
        ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["load"]:
        p = argparse.ArgumentParser(description="the load generator (one process)")
        p.add_argument("mode")
        p.add_argument("--url", required=True)
        p.add_argument("--requests", required=True, help="JSON lines, one request each")
        p.add_argument("--kind", choices=("text", "defect", "fraud"), required=True)
        p.add_argument("--concurrency", type=int, default=8)
        p.add_argument("--seconds", type=float, default=10.0)
        p.add_argument("--repeat", type=float, default=0.0, help="share of hot repeated queries")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--client-timeout-s", type=float, default=60.0)
        p.add_argument("--raw", action="store_true", help="every request's latency and status")
        return p.parse_args(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="benchmarks/results/serving_cpu", help="result path stem")
    p.add_argument("--parts", default="batching,cache,fraud", help="comma list")
    p.add_argument("--device", default="auto", help="where the service runs (auto, cpu, cuda)")
    p.add_argument("--seconds", type=float, default=10.0, help="measured time per window")
    p.add_argument("--concurrency", default="1,8,32", help="client counts for batching")
    p.add_argument("--cache-concurrency", default="1,8", help="client counts for the cache")
    p.add_argument("--fraud-concurrency", default="1,8", help="client counts for fraud")
    p.add_argument("--repeat", type=float, default=0.5, help="repeated share in the cache mix")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument(
        "--also-wait-ms",
        type=lambda v: [float(w) for w in v.split(",") if w],
        default=[],
        help="batching: more 'on' settings with these waits (comma list, e.g. 0)",
    )
    p.add_argument("--train-steps", type=int, default=3, help="training steps of each model")
    p.add_argument("--text-base", default=None, help="model.base of the text model (a folder)")
    p.add_argument("--defect-backbone", default="resnet50")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--keep", action="store_true", help="keep the work folder (models, logs)")
    p.add_argument(
        "--load-procs",
        type=int,
        default=1,
        help="load generator processes sharing each window's clients (more on many cores)",
    )
    p.add_argument("--commit", help="the commit measured (where the tree has no .git)")
    p.add_argument("--merge", help="an earlier result's JSON: keep its windows of other parts")
    args = p.parse_args(argv)
    args.mode = "run"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.mode == "load":
        print(json.dumps(asyncio.run(_load(args))))
        return 0
    run(args)
    print(f"wrote {args.out}.json and {args.out}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
