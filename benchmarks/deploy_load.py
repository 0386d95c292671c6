"""Load through a running deployment's router (``abyssal deploy up``): phases of open-loop
traffic (every other request marked sensitive), the deployment's status after each, then every
private replica killed under a steady load. Writes ``drive.json``; ``--summarize DIR`` turns a
``drive.json`` (and ``gpu_util.csv``, ``cold_start.txt``, ``events.jsonl`` beside it, as
``benchmarks/deploy_gpu.sh`` leaves them) into ``deploy.md``.

    python benchmarks/deploy_load.py http://127.0.0.1:8100 body.json --out /tmp/run
    python benchmarks/deploy_load.py --summarize /tmp/run --out benchmarks/results/deploy_h200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

PHASES = ((20, 15), (120, 25), (300, 25), (20, 25))  # (requests a second, seconds)
KILL = (60, 20, 8.0)  # rate, seconds, when every private replica is killed


def status(url: str) -> dict[str, Any]:
    import httpx

    return httpx.get(f"{url}/v1/deploy/status", timeout=5).json()


async def phase(
    http: Any, url: str, model: str, body: Any, rate: float, seconds: float,
    kill_at: float | None = None,
) -> tuple[list[dict], dict]:  # fmt: skip
    import httpx

    results: list[dict] = []
    tasks, start, killed = [], time.monotonic(), {}

    async def one(k: int) -> None:
        headers = {"x-data-sensitivity": "sensitive"} if k % 2 == 0 else {}
        sent = time.monotonic()
        try:
            r = await http.post(f"{url}/v1/models/{model}/predict", json=body, headers=headers)
            got = (
                r.status_code,
                r.headers.get("x-abyssal-tier"),
                r.headers.get("x-abyssal-replica"),
            )
        except httpx.HTTPError as e:
            got = (type(e).__name__, None, None)
        results.append({"k": k, "status": got[0], "tier": got[1], "replica": got[2],
                        "sensitive": k % 2 == 0, "sent": sent - start,
                        "ms": 1000 * (time.monotonic() - sent)})  # fmt: skip

    for k in range(int(rate * seconds)):
        at = start + k / rate
        if kill_at is not None and not killed and at - start >= kill_at:
            tiers = status(url)["tiers"]
            for r in [r for t in tiers if t["name"] == "private" for r in t["replicas"]]:
                killed[r["name"]] = r["pid"]
                os.kill(r["pid"], signal.SIGKILL)
            killed["_at"] = time.monotonic() - start
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        tasks.append(asyncio.create_task(one(k)))
    await asyncio.gather(*tasks)
    return results, killed


def summary(name: str, results: list[dict]) -> dict[str, Any]:
    ok = [r for r in results if r["status"] == 200]
    ms = sorted(r["ms"] for r in ok)
    tiers: dict[str, int] = {}
    for r in results:
        key = f"{r['tier']}/{'sensitive' if r['sensitive'] else 'plain'}/{r['status']}"
        tiers[key] = tiers.get(key, 0) + 1

    def pct(q: float) -> float | None:
        return ms[min(len(ms) - 1, int(q * len(ms)))] if ms else None

    leaked = sum(1 for r in ok if r["sensitive"] and r["tier"] == "public")
    return {"phase": name, "requests": len(results), "ok": len(ok), "p50_ms": pct(0.5),
            "p99_ms": pct(0.99), "by_tier": tiers, "sensitive_on_public": leaked}  # fmt: skip


async def drive(url: str, model: str, body: Any, out: Path) -> None:
    import httpx

    limits = httpx.Limits(max_connections=600, max_keepalive_connections=600)
    report = []
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        for rate, seconds in PHASES:
            res, _ = await phase(http, url, model, body, rate, seconds)
            report.append(
                {**summary(f"{rate} rps for {seconds} s", res), "status_after": status(url)}
            )
            print(
                json.dumps({k: v for k, v in report[-1].items() if k != "status_after"}), flush=True
            )
        rate, seconds, at = KILL
        res, killed = await phase(http, url, model, body, rate, seconds, kill_at=at)
        s = summary(f"{rate} rps, every private replica killed at {at:g} s", res)
        when = killed.pop("_at")
        after = [r for r in res if r["sent"] > when]
        s.update(killed=killed, killed_at_s=when,
                 after_kill_on_killed=sum(1 for r in after if r["replica"] in killed),
                 max_ms_around_kill=max(r["ms"] for r in res if when - 1 < r["sent"] < when + 2),
                 not_200=[r for r in res if r["status"] != 200][:10])  # fmt: skip
        report.append({**s, "status_after": status(url)})
        print(json.dumps({k: v for k, v in s.items() if k != "status_after"}), flush=True)
    (out / "drive.json").write_text(json.dumps(report, indent=1))


def markdown(folder: Path) -> str:
    report = json.loads((folder / "drive.json").read_text())
    lines = ["# A deployment's tiers under load, on CUDA replicas", ""]
    env = folder / "env.txt"
    if env.is_file():
        lines += [f"Machine and versions: `{env.read_text().strip()}`.", ""]
    cold = folder / "cold_start.txt"
    if cold.is_file():
        lines += [f"One replica's cold start (process start to `/readyz` 200): "
                  f"{cold.read_text().split()[-1]} s.", ""]  # fmt: skip
    lines += ["| phase | requests | answered | p50 ms | p99 ms | by tier (tier/kind/status) | "
              "sensitive on public | replicas after (edge/private/public) | cost so far |",
              "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for ph in report:
        tiers = ph["status_after"]["tiers"]
        reps = "/".join(str(len(t["replicas"])) for t in tiers)
        spread = ", ".join(f"{k} {v}" for k, v in sorted(ph["by_tier"].items()))
        p50 = f"{ph['p50_ms']:.1f}" if ph["p50_ms"] is not None else "-"
        p99 = f"{ph['p99_ms']:.1f}" if ph["p99_ms"] is not None else "-"
        cost = ph["status_after"].get("cost")
        lines.append(f"| {ph['phase']} | {ph['requests']} | {ph['ok']} | {p50} | {p99} | "
                     f"{spread} | {ph['sensitive_on_public']} | {reps} | {cost} |")  # fmt: skip
    last = report[-1]
    lines += ["", f"Failover: killed {sorted(last['killed'])} at {last['killed_at_s']:.1f} s; "
              f"{last['ok']} of {last['requests']} requests answered; requests sent after the "
              f"kill answered by a killed replica: {last['after_kill_on_killed']}; the slowest "
              f"answer sent within 1 s before to 2 s after the kill: "
              f"{last['max_ms_around_kill']:.1f} ms."]  # fmt: skip
    util = folder / "gpu_util.csv"
    if util.is_file():
        values = [int(line.split("%")[0]) for line in util.read_text().splitlines() if "%" in line]
        if values:
            lines += ["", f"The GPU's own utilization (`nvidia-smi`, every 0.5 s, {len(values)} "
                      f"samples during the load): mean {sum(values) / len(values):.1f} %, "
                      f"max {max(values)} %."]  # fmt: skip
    events = folder / "events.jsonl"
    if events.is_file():
        scaled = [json.loads(x) for x in events.read_text().splitlines() if '"scaled"' in x]
        lines += ["", "Autoscaler decisions:", ""]
        if not scaled:
            lines.append("- none (no tier was saturated, slow or idle long enough)")
        lines += [f"- {e['time'][11:19]} {e['tier']} {e['replicas'][0]} -> {e['replicas'][1]}: "
                  f"{e['why']}" for e in scaled]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url", nargs="?", help="the router, http://host:port")
    p.add_argument("body", nargs="?", help="a JSON file: the request sent")
    p.add_argument("--model", default="defect")
    p.add_argument("--out", required=True, help="a folder (drive) or a path stem (summarize)")
    p.add_argument("--summarize", metavar="DIR", help="write the markdown of DIR's drive.json")
    args = p.parse_args()
    if args.summarize:
        path = Path(args.out)
        path = path / "deploy.md" if path.is_dir() else path.with_suffix(".md")
        path.write_text(markdown(Path(args.summarize)))
        print(f"wrote {path}")
        return 0
    if not (args.url and args.body):
        p.error("give the router's URL and a body file, or --summarize DIR")
    body = json.loads(Path(args.body).read_text())
    asyncio.run(drive(args.url, args.model, body, Path(args.out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
