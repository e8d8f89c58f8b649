"""Teacher client throughput: N requests against the fake OpenAI server (own process, fixed latency) at a
given concurrency, fresh cache per run. The ideal wall time is N x latency / concurrency; the goal is an
efficiency (ideal / wall) of at least 90%. Writes the figures into docs/benchmarks.md (teacher section).

    .venv/bin/python benchmarks/teacher.py --requests 2000 --concurrency 64 --latency-ms 100
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from distill_jax.teacher.cache import ResponseCache
from distill_jax.teacher.client import ChatRequest, ClientConfig, TeacherClient

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
BEGIN, END = "<!-- teacher:begin -->", "<!-- teacher:end -->"


def run_once(url: str, requests: int, concurrency: int) -> tuple[float, TeacherClient]:
    reqs = [ChatRequest.make([{"role": "system", "content": "Solve the problem step by step."},
                              {"role": "user", "content": f"Problem {i}: what is {i} * 3 + 7?"}],
                             temperature=0.7, max_tokens=256) for i in range(requests)]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = ClientConfig(base_url=url, model="fake-model", concurrency=concurrency, timeout_s=30.0)
        client = TeacherClient(cfg, ResponseCache(Path(tmp) / "cache.sqlite"))
        start, cpu = time.perf_counter(), time.process_time()
        results = client.run_sync(reqs)
        wall = time.perf_counter() - start
        client.cpu_s = time.process_time() - cpu
        client.cache.close()
    failed = [r.error for r in results if not r.ok]
    if failed:
        raise SystemExit(f"{len(failed)} requests failed, e.g. {failed[0]}")
    return wall, client


def write_section(text: str) -> None:
    """Replace only our marked section; re-read the file right before writing (others own other sections)."""
    DOC.parent.mkdir(parents=True, exist_ok=True)
    current = DOC.read_text(encoding="utf-8") if DOC.exists() else "# Benchmarks\n"
    block = f"{BEGIN}\n{text.rstrip()}\n{END}"
    if BEGIN in current and END in current:
        head, rest = current.split(BEGIN, 1)
        updated = head + block + rest.split(END, 1)[1]
    else:
        updated = current.rstrip() + "\n\n" + block + "\n"
    tmp = DOC.with_name(DOC.name + ".teacher.tmp")
    tmp.write_text(updated, encoding="utf-8")
    tmp.replace(DOC)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--latency-ms", type=float, default=100.0)
    p.add_argument("--repeats", type=int, default=3, help="runs, each with a fresh cache; the median is reported")
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = p.parse_args()
    server = subprocess.Popen([sys.executable, "-m", "distill_jax.teacher.fake_server", "--port", "0",
                               "--latency-ms", str(args.latency_ms)], stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        url = f"http://127.0.0.1:{port}/v1"
        walls, cpus, loads = [], [], []
        for i in range(args.repeats):
            loads.append(os.getloadavg()[0])
            wall, client = run_once(url, args.requests, args.concurrency)
            walls.append(wall)
            cpus.append(client.cpu_s)
            print(f"run {i + 1}: wall {wall:.3f} s, client CPU {client.cpu_s:.3f} s, "
                  f"{client.usage.requests_sent} HTTP requests, load average before {loads[-1]:.2f}")
    finally:
        server.terminate()
        server.wait()
    wall = sorted(walls)[len(walls) // 2]
    ideal = args.requests * args.latency_ms / 1000 / args.concurrency
    eff = ideal / wall
    verdict = "meets" if eff >= 0.9 else "misses"
    command = (f".venv/bin/python benchmarks/teacher.py --requests {args.requests} --concurrency {args.concurrency} "
               f"--latency-ms {args.latency_ms:g} --repeats {args.repeats}")
    table = "\n".join([
        "## Teacher client throughput",
        "",
        f"`{command}` ({time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}). The fake OpenAI server runs in its own process "
        "(asyncio, keep-alive); fresh SQLite cache per run, every response committed as it arrives.",
        "",
        "| requests | concurrency | latency | wall (median) | all runs | ideal | efficiency |",
        "|---|---|---|---|---|---|---|",
        f"| {args.requests} | {args.concurrency} | {args.latency_ms:g} ms | {wall:.3f} s | "
        f"{', '.join(f'{w:.3f}' for w in walls)} s | {ideal:.3f} s | {eff:.1%} |",
        "",
        f"Goal: efficiency >= 90% (wall <= {ideal / 0.9:.3f} s): {verdict} it. Client CPU per request "
        f"{1000 * sorted(cpus)[len(cpus) // 2] / args.requests:.3f} ms (median run); 1-minute load average before "
        f"the runs {', '.join(f'{x:.2f}' for x in loads)} on {os.cpu_count()} cores (a shared machine: the wall "
        "time counts time spent waiting for a core).",
    ])
    print(table)
    if not args.no_write:
        write_section(table)
        print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
