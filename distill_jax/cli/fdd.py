"""`distill-jax fdd --config configs/fdd_*.yaml [key=value ...]`: FDD multi-round distillation, resumable."""
from __future__ import annotations

import argparse

import jax

from distill_jax import config as config_lib
from distill_jax.evaluate.report import write_report
from distill_jax.methods.fdd import FddConfig, check_fdd, run_fdd

CONFIG = FddConfig  # `--help` lists its keys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML with an FddConfig (see configs/fdd_*.yaml)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. rounds=2")
    parser.add_argument("--restart-from", metavar="STAGE", help="rerun this stage (e.g. r1_teach) and every later "
                        "one, also when that redoes teacher calls")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    cfg = config_lib.load(FddConfig, args.config, args.overrides, check=check_fdd)
    rounds = run_fdd(cfg, restart_from=args.restart_from, progress=not args.no_progress)
    if jax.process_index() != 0:
        return 0
    print(f"report: {write_report(cfg.run_dir)}")
    for r in rounds:
        print(f"round {r['round']}: " + ", ".join(f"{k} {100 * v['accuracy']:.1f}%" for k, v in r["accuracy"].items()))
    return 0
