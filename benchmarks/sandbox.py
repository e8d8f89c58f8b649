"""PoT programs per second: the sandbox pool vs a fresh `python` subprocess per program, side by side.

Both paths run the same generated GSM8K-like programs with the same number of parallel workers and must
agree on every answer. With `--baseline DIR` (another checkout, e.g. main before a change) that checkout's pool
runs the same programs too, alternating with this one's `--repeats` times, each pool in a fresh interpreter
that times its own run (worker start-up included), with the load average before each run. The figures replace
the `sandbox` section of docs/benchmarks.md.

    .venv/bin/python benchmarks/sandbox.py --programs 1000 --workers 2
    .venv/bin/python benchmarks/sandbox.py --programs 1000 --workers 2 --baseline ../base --repeats 3
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import platform
import random
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from docs_section import DOC, write_section

from distill_jax.reasoning.answers import normalize_number
from distill_jax.reasoning.sandbox import SandboxPool, extract_code


NAMES = ["Janet", "Tom", "Aisha", "Carlos", "Mei", "Olga", "Ravi", "Sam", "Lena", "Kofi"]
ITEMS = ["apples", "eggs", "books", "marbles", "cookies", "stickers", "pencils", "cupcakes"]

# Each template draws its numbers from `r` and returns program text in one of the shapes students and
# teachers write: top-level `ans`, `solution()`, a markdown fence, a trailing print.
TEMPLATES = [
    lambda r, n, it: f"""{n.lower()}_{it} = {r.randint(5, 90)}
bought = {r.randint(2, 40)}
given_away = {r.randint(1, 5)}
ans = {n.lower()}_{it} + bought - given_away
""",
    lambda r, n, it: f"""def solution():
    price = {r.randint(10, 200)}
    discount_percent = {r.choice([10, 15, 20, 25, 30, 50])}
    quantity = {r.randint(1, 9)}
    discounted = price * (1 - discount_percent / 100)
    return discounted * quantity
""",
    lambda r, n, it: f"""```python
import math
{it} = {r.randint(20, 500)}
per_box = {r.randint(3, 12)}
boxes = math.ceil({it} / per_box)
ans = boxes
print(ans)
```
""",
    lambda r, n, it: f"""total = 0
for day in range({r.randint(2, 14)}):
    total += {r.randint(2, 20)}
    if day % 3 == 0:
        total -= 1
ans = total
""",
    lambda r, n, it: f"""from fractions import Fraction
whole = {r.randint(2, 30) * 12}
eaten = Fraction({r.randint(1, 5)}, 12)
left = whole - whole * eaten
ans = int(left)
""",
    lambda r, n, it: f"""hours = {r.randint(30, 60)}
rate = {r.randint(10, 40)}
if hours > 40:
    pay = 40 * rate + (hours - 40) * rate * 1.5
else:
    pay = hours * rate
ans = pay
print(f"{n} earns {{pay}} dollars")
""",
    lambda r, n, it: f"""def solution():
    scores = {[r.randint(50, 100) for _ in range(r.randint(3, 8))]}
    average = sum(scores) / len(scores)
    return round(average, 2)

print(solution())
""",
    lambda r, n, it: f"""minutes_per_{it[:-1]} = {r.randint(2, 15)}
count = {r.randint(3, 40)}
hours = minutes_per_{it[:-1]} * count / 60
ans = hours
""",
    lambda r, n, it: f"""from collections import Counter
bag = Counter({{"red": {r.randint(1, 20)}, "blue": {r.randint(1, 20)}, "green": {r.randint(1, 20)}}})
bag["red"] -= {r.randint(0, 1)}
ans = sum(bag.values()) * {r.randint(2, 5)}
""",
    lambda r, n, it: f"""def solution():
    {it} = {r.randint(100, 999)}
    groups = {r.randint(2, 9)}
    each = {it} // groups
    leftover = {it} % groups
    return each + leftover
""",
]

# The naive path: the same program contract, run by a fresh interpreter with no sandbox at all.
NAIVE_RUNNER = (
    "import sys\n"
    "ns = {'__name__': '__main__'}\n"
    "exec(sys.stdin.read(), ns)\n"
    "value = ns['ans'] if 'ans' in ns else ns['solution']()\n"
    "sys.stdout.write('\\n' + repr(value))\n"
)


def make_programs(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [TEMPLATES[i % len(TEMPLATES)](rng, rng.choice(NAMES), rng.choice(ITEMS)) for i in range(count)]


def run_naive(codes: list[str], workers: int, timeout_s: float) -> list[str | None]:
    def one(code: str) -> str | None:
        done = subprocess.run([sys.executable, "-c", NAIVE_RUNNER], input=extract_code(code), text=True,
                              capture_output=True, timeout=timeout_s, check=True)
        return normalize_number(done.stdout.rsplit("\n", 1)[-1])

    with ThreadPoolExecutor(workers) as executor:
        return list(executor.map(one, codes))


# Times one pool run of the programs on stdin with the SandboxPool of the checkout first on PYTHONPATH.
POOL_RUNNER = (
    "import json, sys, time\n"
    "from distill_jax.reasoning.sandbox import SandboxPool\n"
    "codes, workers, timeout_s = json.load(sys.stdin)\n"
    "start = time.perf_counter()\n"
    "with SandboxPool(workers=workers) as pool:\n"
    "    results = pool.run(codes, timeout_s=timeout_s)\n"
    "seconds = time.perf_counter() - start\n"
    "json.dump([seconds, [[r.answer, r.error] for r in results]], sys.stdout)\n"
)


def run_pool_in(checkout: Path, codes: list[str], workers: int, timeout_s: float) -> tuple[float, list]:
    env = {**os.environ, "PYTHONPATH": str(checkout.resolve())}
    done = subprocess.run([sys.executable, "-c", POOL_RUNNER], input=json.dumps([codes, workers, timeout_s]),
                          text=True, capture_output=True, env=env, check=True, cwd=checkout)
    seconds, results = json.loads(done.stdout)
    return seconds, results


def load() -> str:
    return ", ".join(f"{v:.1f}" for v in os.getloadavg())


def checkout_label(path: Path) -> str:
    found = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return found.stdout.strip() if found.returncode == 0 else path.name


def compare_with_baseline(codes: list[str], args: argparse.Namespace) -> list[str]:
    """Rows of the before/after table: this checkout's pool and the baseline's, alternating."""
    here = Path(__file__).resolve().parent.parent
    runs: dict[str, list[tuple[float, str]]] = {"this checkout": [], f"baseline {args.baseline_label}": []}
    for _ in range(args.repeats):
        for (name, seconds_loads), checkout in zip(runs.items(), (here, args.baseline)):
            before = load()
            seconds, results = run_pool_in(checkout, codes, args.workers, args.timeout_s)
            assert all(err is None for _, err in results), (name, [r for r in results if r[1]][:3])
            seconds_loads.append((seconds, before))
    n = len(codes)
    rows = ["| pool | programs | seconds (median) | programs/s (median) | runs (s, load average before) |",
            "|---|---|---|---|---|"]
    for name, seconds_loads in runs.items():
        median = statistics.median(s for s, _ in seconds_loads)
        each = "; ".join(f"{s:.2f} ({lo})" for s, lo in seconds_loads)
        rows.append(f"| {name} | {n} | {median:.2f} | {n / median:.0f} | {each} |")
    return rows


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    return f"nproc {os.cpu_count()}, {cpu}, Python {platform.python_version()}; load average at start {load()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--programs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout-s", type=float, default=10.0)
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--baseline", type=Path, help="another checkout whose pool is timed beside this one's")
    parser.add_argument("--baseline-label", help="how the table names the baseline (default: its git commit)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per pool with --baseline")
    args = parser.parse_args()
    if args.baseline is not None and args.baseline_label is None:
        args.baseline_label = checkout_label(args.baseline)

    codes = make_programs(args.programs)
    machine_line = machine()  # before the runs, so the load average is that of the other jobs
    start = time.perf_counter()
    with SandboxPool(workers=args.workers) as pool:  # start-up of the workers is part of the measured time
        pool_results = pool.run(codes, timeout_s=args.timeout_s)
    pool_s = time.perf_counter() - start

    start = time.perf_counter()
    naive_answers = run_naive(codes, args.workers, args.timeout_s)
    naive_s = time.perf_counter() - start

    for index, (result, naive) in enumerate(zip(pool_results, naive_answers)):
        assert result.error is None and result.answer is not None, (index, codes[index], result)
        assert result.answer == naive, (index, codes[index], result.answer, naive)

    n = len(codes)
    python = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) else sys.executable
    command = shlex.join([python, *sys.argv])
    rows = [("sandbox pool (persistent workers)", pool_s), ("fresh `python` subprocess per program", naive_s)]
    table = ["| method | programs | seconds | programs/s | speedup |", "|---|---|---|---|---|"]
    table += [f"| {name} | {n} | {secs:.2f} | {n / secs:.0f} | {naive_s / secs:.1f}x |" for name, secs in rows]
    body = "\n".join([
        f"{n} generated GSM8K-like PoT programs ({len(TEMPLATES)} templates: `ans`, `solution()`, fences, prints,"
        f" math/fractions/collections), {args.workers} parallel workers on both paths; the pool time includes"
        " starting its workers. Both paths agreed on every answer (asserted).",
        "",
        *table,
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine_line} (shared with other jobs)  ",
        f"Date: {time.strftime('%Y-%m-%d', time.gmtime())}",
    ])
    if args.baseline is not None:
        before_after = compare_with_baseline(codes, args)
        body += "\n\n" + "\n".join([
            f"Before/after: each pool in a fresh interpreter, {args.repeats} alternating runs each on the same"
            f" {n} programs and {args.workers} workers (start-up included); the baseline is"
            f" `{args.baseline_label}`.", "", *before_after])
        table += ["", *before_after]
    write_section("sandbox", "## PoT sandbox\n\n" + body.strip(), args.doc)
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
