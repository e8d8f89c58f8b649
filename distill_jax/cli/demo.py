"""`distill-jax demo [--quick] [--steps N] [--out DIR]`: the embedded offline default, end to end, resumable.

A rerun with another size or seed in the same --out reruns only the stages the change reaches (methods/stages.py)."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path

from rich.console import Console

from distill_jax.methods.demo import FULL, QUICK, run_demo
from distill_jax.methods.demo_report import findings, write_demo_report
from distill_jax.train.loop import quiet_checkpoint_logs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="run directory (default runs/demo; reruns resume)")
    parser.add_argument("--quick", action="store_true", help="a few minutes: checks the pipeline, not findings")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps per student (FDD round 1 and its control get a third); the default "
                             "fits 15 min on 2 CPU cores, which is too few for the students to learn much")
    parser.add_argument("--restart-from", metavar="STAGE", help="rerun this stage and every later one")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    quiet_checkpoint_logs()
    console = Console()
    size = QUICK if args.quick else FULL
    if args.steps:
        size = dataclasses.replace(size, steps=args.steps, fdd_steps=max(args.steps // 3, 1))
    run_dir = Path(args.out)
    start = time.perf_counter()
    command = (f"distill-jax demo{' --quick' if args.quick else ''}{f' --steps {args.steps}' if args.steps else ''}"
               f" --out {args.out}")
    console.rule(f"distill_jax demo ({'quick' if args.quick else 'full'}) -> {run_dir}")
    results = run_demo(run_dir, size, args.seed, console.print, restart_from=args.restart_from,
                       progress=not args.no_progress)
    minutes = (time.perf_counter() - start) / 60
    report = write_demo_report(run_dir, results, size, command, minutes)
    console.print(findings(results))
    console.print(f"report: {report}  ({minutes:.1f} min)")
    return 0
