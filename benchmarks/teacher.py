"""Teacher client throughput: N requests against the fake OpenAI server (own process, fixed latency) at a
given concurrency, fresh cache per run. The ideal wall time is N x latency / concurrency; the goal is an
efficiency (ideal / wall) of at least 90%. Writes the figures into docs/benchmarks.md (teacher section).

Alongside the client it times the transport floor: the same POSTs through the bare keep-alive HTTP pool
(no cache, keys, retries or accounting), interleaved with the client runs. On a shared machine the gap
between the two is the client's own overhead; the gap between the floor and the ideal is the machine's.

    .venv/bin/python benchmarks/teacher.py --requests 2000 --concurrency 64 --latency-ms 100
"""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from docs_section import DOC, write_section

from distill_jax.teacher.cache import ResponseCache
from distill_jax.teacher.client import ChatRequest, ClientConfig, TeacherClient, canonical_json, chat_body
from distill_jax.teacher.http import Endpoint, HttpPool

MODEL = "fake-model"


def make_requests(count: int) -> list[ChatRequest]:
    return [ChatRequest.make([{"role": "system", "content": "Solve the problem step by step."},
                              {"role": "user", "content": f"Problem {i}: what is {i} * 3 + 7?"}],
                             temperature=0.7, max_tokens=256) for i in range(count)]


def run_client(url: str, requests: int, concurrency: int) -> tuple[float, float]:
    """(wall s, client CPU s) of one TeacherClient run with a fresh cache."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = ClientConfig(base_url=url, model=MODEL, concurrency=concurrency, timeout_s=30.0)
        client = TeacherClient(cfg, ResponseCache(Path(tmp) / "cache.sqlite"))
        reqs = make_requests(requests)  # the caller's work, not the client's
        start, cpu = time.perf_counter(), time.process_time()
        results = client.run_sync(reqs)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        client.cache.close()
    failed = [r.error for r in results if not r.ok]
    if failed or client.usage.requests_sent != requests:
        raise SystemExit(f"{len(failed)} requests failed ({failed[:1]}), {client.usage.requests_sent} sent")
    return wall, cpu


def run_floor(url: str, requests: int, concurrency: int) -> float:
    """Wall s of the same POSTs through the bare HTTP pool."""
    bodies = [canonical_json(chat_body(MODEL, r)).encode() for r in make_requests(requests)]

    async def main() -> float:
        pool, sem = HttpPool(Endpoint.parse(url)), asyncio.Semaphore(concurrency)

        async def one(body: bytes) -> None:
            async with sem:
                resp = await pool.request("POST", "/chat/completions", {"Content-Type": "application/json"}, body, 30)
                assert resp.status == 200, resp.status

        start = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        wall = time.perf_counter() - start
        await pool.close()
        return wall

    return asyncio.run(main())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--latency-ms", type=float, default=100.0)
    p.add_argument("--repeats", type=int, default=3, help="runs of each, interleaved; medians are reported")
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = p.parse_args()
    server = subprocess.Popen([sys.executable, "-m", "distill_jax.testing.fake_server", "--port", "0",
                               "--latency-ms", str(args.latency_ms)], stdout=subprocess.PIPE, text=True)
    walls, cpus, floors, loads = [], [], [], []
    try:
        url = f"http://127.0.0.1:{int(server.stdout.readline())}/v1"
        for i in range(args.repeats):
            loads.append(os.getloadavg()[0])
            floors.append(run_floor(url, args.requests, args.concurrency))
            wall, cpu = run_client(url, args.requests, args.concurrency)
            walls.append(wall)
            cpus.append(cpu)
            print(f"run {i + 1}: client {wall:.3f} s (CPU {cpu:.3f} s), transport floor {floors[-1]:.3f} s, "
                  f"load average {loads[-1]:.2f}")
    finally:
        server.terminate()
        server.wait()
    ideal = args.requests * args.latency_ms / 1000 / args.concurrency
    wall, floor = statistics.median(walls), statistics.median(floors)
    command = (f".venv/bin/python benchmarks/teacher.py --requests {args.requests} --concurrency {args.concurrency} "
               f"--latency-ms {args.latency_ms:g} --repeats {args.repeats}")

    def row(name: str, median: float, runs: list[float]) -> str:
        return (f"| {name} | {args.requests} | {args.concurrency} | {args.latency_ms:g} ms | {median:.3f} s | "
                f"{', '.join(f'{x:.3f}' for x in runs)} | {ideal:.3f} s | {ideal / median:.1%} |")

    table = "\n".join([
        "## Teacher client throughput",
        "",
        f"Command: `{command}`  ",
        f"Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()}; 1-minute load average before the runs: "
        f"{', '.join(f'{x:.2f}' for x in loads)} (a shared machine: wall time includes waiting for a core)  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        "The fake OpenAI server runs in its own process (asyncio, keep-alive). The client run uses a fresh SQLite",
        "cache and commits every response as it arrives; the transport floor sends the same POSTs through the",
        "bare HTTP pool (no cache, keys, retries or accounting), interleaved with the client runs.",
        "",
        "| what | requests | concurrency | latency | wall (median) | runs (s) | ideal | efficiency |",
        "|---|---|---|---|---|---|---|---|",
        row("TeacherClient", wall, walls),
        row("transport floor", floor, floors),
        "",
        f"Goal: client efficiency >= 90% (wall <= {ideal / 0.9:.3f} s): "
        f"{'met' if ideal / wall >= 0.9 else 'not met'}. Client overhead over the floor: "
        f"{wall / floor - 1:+.1%}; client CPU {1000 * statistics.median(cpus) / args.requests:.3f} ms per request.",
    ])
    print(table)
    if not args.no_write:
        write_section("teacher", table)
        print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
