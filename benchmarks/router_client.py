"""CPU per forwarded request of the router's HTTP clients: httpx.AsyncClient against aiohttp,
posting one tabular row to a minimal asyncio HTTP server in the same process (so the figure is
client plus that server), 32 at a time. Why the router forwards with aiohttp.

    python benchmarks/router_client.py            # writes benchmarks/results/router_client.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from environment import environment

ANSWER = b'{"model": "m:1", "predictions": [{"label": "B", "probability": 0.9}]}'
ROW = json.dumps({f"feature_{k}": 0.1 * k for k in range(30)}).encode()


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if length:
                await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER))  # fmt: skip
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


def _serve(port: int) -> None:
    async def main() -> None:
        server = await asyncio.start_server(_handle, "127.0.0.1", port)
        await server.serve_forever()

    asyncio.run(main())


async def _httpx(url: str, n: int, concurrency: int) -> float:
    import httpx

    async with httpx.AsyncClient() as client:
        gate = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with gate:
                r = await client.post(
                    url, content=ROW, headers={"content-type": "application/json"}
                )
                r.read()

        start = time.process_time()
        await asyncio.gather(*(one() for _ in range(n)))
        return (time.process_time() - start) / n


async def _aiohttp(url: str, n: int, concurrency: int) -> float:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        gate = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with (
                gate,
                session.post(url, data=ROW, headers={"content-type": "application/json"}) as r,
            ):
                await r.read()

        start = time.process_time()
        await asyncio.gather(*(one() for _ in range(n)))
        return (time.process_time() - start) / n


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=4000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--port", type=int, default=18101)
    p.add_argument("--out", default="benchmarks/results/router_client.md")
    args = p.parse_args()
    threading.Thread(target=_serve, args=(args.port,), daemon=True).start()
    time.sleep(0.5)
    url = f"http://127.0.0.1:{args.port}/v1/models/m/predict"
    runs: dict[str, list[float]] = {"httpx": [], "aiohttp": []}
    for _ in range(args.rounds):
        runs["httpx"].append(asyncio.run(_httpx(url, args.requests, args.concurrency)))
        runs["aiohttp"].append(asyncio.run(_aiohttp(url, args.requests, args.concurrency)))
    env = environment(("httpx", "aiohttp"))
    m, v = env["machine"], env["versions"]
    lines = [
        "# The router's HTTP client: CPU per forwarded request",
        "",
        f"Measured {env['date']} on {m['platform']}, {m['cpu']} ({m['cores']} cores); "
        f"Python {m['python']}, "
        + ", ".join(f"{k} {x}" for k, x in v.items() if x)
        + f". Command: `python benchmarks/router_client.py` ({args.requests} requests, "
        f"{args.concurrency} at a time, {args.rounds} rounds; client and a minimal asyncio "
        "server in one process, so each figure is both).",
        "",
        "| client | CPU per request, each round (ms) | median (ms) |",
        "|---|---|---|",
    ]
    for name, values in runs.items():
        cells = ", ".join(f"{1000 * x:.2f}" for x in values)
        lines.append(f"| {name} | {cells} | {1000 * sorted(values)[len(values) // 2]:.2f} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-2:]))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
