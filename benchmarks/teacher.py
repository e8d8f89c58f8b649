"""Teacher client throughput: N requests against the fake OpenAI server (own process, fixed latency) at a
given concurrency. The ideal wall time is N x latency / concurrency; the goal is an efficiency (ideal / wall)
of at least 90%. Writes the figures into docs/benchmarks.md (teacher section).

Side by side, interleaved, each in a fresh process of its own (so its CPU time is its own):
- `TeacherClient`: ours, fresh SQLite cache, every reply committed as it arrives;
- `TeacherClient @REV` (with --baseline-rev): the client of another revision, e.g. the hand-written HTTP/1.1
  transport that the SDK replaced (ca3c882), extracted with `git archive`;
- `SDK typed`: `chat.completions.with_raw_response.create` + `.parse()` (the SDK's TypedDict transform of
  every message and a pydantic model of every reply): what the typed path costs;
- `SDK post`: `AsyncOpenAI.post(..., cast_to=httpx2.Response)`, the path the client uses, with no cache, keys,
  retries or accounting: the SDK floor;
- `httpx2`: the same POSTs through a bare `httpx2.AsyncClient`: the transport floor;
- with the SDK's `aiohttp` extra installed, `TeacherClient` and `SDK post` again on the aiohttp transport
  (`teacher.http_backend=aiohttp`).

    .venv/bin/python benchmarks/teacher.py --requests 2000 --concurrency 64 --latency-ms 100 --baseline-rev ca3c882
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from docs_section import DOC, write_section

ROOT = Path(__file__).resolve().parent.parent
MODEL = "fake-model"
KINDS = ("client", "baseline", "sdk_typed", "sdk_post", "httpx2", "client_aiohttp", "sdk_post_aiohttp")
LABELS = {"client": "TeacherClient", "sdk_typed": "SDK typed (create + parse)", "sdk_post": "SDK post (floor)",
          "httpx2": "httpx2 (transport floor)", "client_aiohttp": "TeacherClient, aiohttp transport",
          "sdk_post_aiohttp": "SDK post, aiohttp transport"}


def _messages(i: int) -> list[dict]:
    return [{"role": "system", "content": "Solve the problem step by step."},
            {"role": "user", "content": f"Problem {i}: what is {i} * 3 + 7?"}]


def child(kind: str, url: str, requests: int, concurrency: int) -> dict:
    """One measured run in this process; imports happen here so that a baseline tree's package is the one
    loaded (the parent process never imports distill_jax)."""
    import asyncio

    aiohttp = kind.endswith("_aiohttp")
    kind = kind.removesuffix("_aiohttp")
    if kind in ("client", "baseline"):
        import distill_jax.teacher.client as client_mod
        from distill_jax.teacher.cache import ResponseCache

        try:  # the layout after the SDK switch
            from distill_jax.teacher.client_config import ClientConfig
            from distill_jax.teacher.request import ChatRequest
        except ImportError:  # a revision from before it: everything in teacher/client.py
            ClientConfig, ChatRequest = client_mod.ClientConfig, client_mod.ChatRequest
        reqs = [ChatRequest.make(_messages(i), temperature=0.7, max_tokens=256) for i in range(requests)]
        with tempfile.TemporaryDirectory() as tmp:
            cfg = ClientConfig(base_url=url, model=MODEL, concurrency=concurrency, timeout_s=30.0,
                               **({"http_backend": "aiohttp"} if aiohttp else {}))
            client = client_mod.TeacherClient(cfg, ResponseCache(Path(tmp) / "cache.sqlite"))
            start, cpu = time.perf_counter(), time.process_time()
            results = client.run_sync(reqs)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            client.cache.close()
        failed = [r.error for r in results if not r.ok]
        if failed or client.usage.requests_sent != requests:
            raise SystemExit(f"{len(failed)} requests failed ({failed[:1]}), {client.usage.requests_sent} sent")
        return {"wall": wall, "cpu": cpu, "module": client_mod.__file__}

    import httpx2
    import openai

    bodies = [{"model": MODEL, "messages": _messages(i), "temperature": 0.7, "max_tokens": 256}
              for i in range(requests)]
    limits = httpx2.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)

    async def main() -> tuple[float, float]:
        if kind == "httpx2":
            http = httpx2.AsyncClient(limits=limits, timeout=30)

            async def one(body: dict) -> None:
                response = await http.post(f"{url}/chat/completions", json=body)
                json.loads(response.content)["choices"][0]["message"]["content"]
        else:
            http_client = (openai.DefaultAioHttpClient(limits=limits) if aiohttp
                           else openai.DefaultAsyncHttpx2Client(limits=limits))
            sdk = openai.AsyncOpenAI(base_url=url, api_key="local", max_retries=0, timeout=30, http_client=http_client)

            async def one(body: dict) -> None:
                if kind == "sdk_typed":
                    raw = await sdk.chat.completions.with_raw_response.create(**body)
                    raw.parse().choices[0].message.content
                else:
                    response = await sdk.post("/chat/completions", cast_to=httpx2.Response, body=body)
                    json.loads(response.content)["choices"][0]["message"]["content"]

        todo = iter(bodies)

        async def worker() -> None:  # a fixed pool of `concurrency` workers, as the client runs them
            for body in todo:
                await one(body)

        start, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        await (http.aclose() if kind == "httpx2" else sdk.close())
        return wall, cpu

    wall, cpu = asyncio.run(main())
    return {"wall": wall, "cpu": cpu}


def _run_child(kind: str, url: str, args: argparse.Namespace, pythonpath: str) -> dict:
    # the tree under test first; the rest of the caller's path after it (an aiohttp installed elsewhere)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([pythonpath, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env.pop(name, None)  # loopback only
    done = subprocess.run([sys.executable, __file__, "--child", kind, "--url", url, "--requests",
                           str(args.requests), "--concurrency", str(args.concurrency)],
                          env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"{kind} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _baseline_tree(rev: str, into: Path) -> str:
    """`rev`'s distill_jax package extracted into `into` (nothing else of the checkout)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "distill_jax"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return str(into)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--latency-ms", type=float, default=100.0)
    p.add_argument("--repeats", type=int, default=3, help="runs of each, interleaved; medians are reported")
    p.add_argument("--baseline-rev", default=None, help="also time the TeacherClient of this git revision")
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    p.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.url, args.requests, args.concurrency)))
        return 0
    aiohttp_spec = importlib.util.find_spec("aiohttp")
    with_aiohttp = aiohttp_spec is not None
    kinds = [k for k in KINDS if (k != "baseline" or args.baseline_rev) and (with_aiohttp or "aiohttp" not in k)]
    labels = {**LABELS, "baseline": f"TeacherClient @{args.baseline_rev}"}
    server = subprocess.Popen([sys.executable, "-m", "distill_jax.testing.fake_server", "--port", "0",
                               "--latency-ms", str(args.latency_ms)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    runs: dict[str, list[dict]] = {k: [] for k in kinds}
    loads = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = {k: str(ROOT) for k in kinds}
        if args.baseline_rev:
            paths["baseline"] = _baseline_tree(args.baseline_rev, Path(tmp))
        try:
            url = f"http://127.0.0.1:{int(server.stdout.readline())}/v1"
            for i in range(args.repeats):
                for kind in kinds:
                    loads.append(os.getloadavg()[0])
                    runs[kind].append({**_run_child(kind, url, args, paths[kind]), "load": loads[-1]})
                    r = runs[kind][-1]
                    print(f"run {i + 1} {labels[kind]}: {r['wall']:.3f} s, CPU {r['cpu']:.3f} s, "
                          f"load average {r['load']:.2f} {r.get('module', '')}", flush=True)
        finally:
            server.terminate()
            server.wait()
    ideal = args.requests * args.latency_ms / 1000 / args.concurrency
    wall = {k: statistics.median(r["wall"] for r in runs[k]) for k in kinds}
    cpu_ms = {k: 1000 * statistics.median(r["cpu"] for r in runs[k]) / args.requests for k in kinds}
    command = (f".venv/bin/python benchmarks/teacher.py --requests {args.requests} --concurrency {args.concurrency} "
               f"--latency-ms {args.latency_ms:g} --repeats {args.repeats}"
               + (f" --baseline-rev {args.baseline_rev}" if args.baseline_rev else ""))
    def listed(kind: str, field: str, digits: int) -> str:
        return ", ".join(f"{r[field]:.{digits}f}" for r in runs[kind])

    rows = [f"| {labels[k]} | {wall[k]:.3f} s | {listed(k, 'wall', 3)} | {ideal / wall[k]:.1%} | "
            f"{cpu_ms[k]:.3f} ms | {listed(k, 'load', 1)} |" for k in kinds]
    table = "\n".join([
        "## Teacher client throughput",
        "",
        f"Command: `{command}`  ",
        f"Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()}; the 1-minute load average before each run is in the table (a shared "
        f"machine: wall time includes waiting for a core)  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        f"{args.requests} requests, {args.concurrency} concurrent, {args.latency_ms:g} ms server latency: ideal "
        f"{ideal:.3f} s. The fake OpenAI server runs in its own process (asyncio, keep-alive); each row runs in a",
        "fresh process of its own, interleaved with the others. CPU is the client process's (all threads).",
        "",
        *([f"The aiohttp rows use aiohttp from {Path(aiohttp_spec.origin).parent.parent} (the SDK's `aiohttp` "
           f"extra, pinned in setup.py).", ""] if with_aiohttp else []),
        "| what | wall (median) | runs (s) | efficiency | client CPU per request | load average |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"Goal: TeacherClient efficiency >= 90% (wall <= {ideal / 0.9:.3f} s): "
        f"{'met' if ideal / wall['client'] >= 0.9 else 'not met'}. TeacherClient over the SDK floor: "
        f"{wall['client'] / wall['sdk_post'] - 1:+.1%} wall, {cpu_ms['client'] - cpu_ms['sdk_post']:+.3f} ms CPU per "
        f"request; the SDK's typed path costs {cpu_ms['sdk_typed'] - cpu_ms['sdk_post']:+.3f} ms CPU per request "
        f"over its post path, the SDK's post path {cpu_ms['sdk_post'] - cpu_ms['httpx2']:+.3f} ms over bare httpx2."
        + (f" On the aiohttp transport: TeacherClient {ideal / wall['client_aiohttp']:.1%} efficiency, "
           f"{cpu_ms['client_aiohttp']:.3f} ms CPU per request." if with_aiohttp else
           " (The SDK's aiohttp extra is not installed: its rows are not run.)"),
    ])
    print(table)
    if not args.no_write:
        write_section("teacher", table)
        print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
