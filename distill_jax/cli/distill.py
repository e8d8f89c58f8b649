"""`distill-jax distill --config configs/<method>_*.yaml [key=value ...]`: one method pipeline, resumable."""
from __future__ import annotations

import argparse
from pathlib import Path

from distill_jax import config as config_lib
from distill_jax.methods.method_config import MethodConfig
from distill_jax.methods.pipeline import check_method, run_method

CONFIG = MethodConfig  # `--help` lists its keys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML with a MethodConfig (see configs/<method>_*.yaml)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.steps=200")
    parser.add_argument("--restart-from", metavar="STAGE", help="rerun this stage and every later one, also when "
                        "that redoes teacher calls (seed_problems, teach, records, train, eval, report)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    cfg = config_lib.load(MethodConfig, args.config, args.overrides, check=check_method)
    results = run_method(cfg, restart_from=args.restart_from, progress=not args.no_progress)
    if "dry_run" in results:
        return 0
    print(f"report: {Path(cfg.run_dir) / 'report.md'}")
    for key, m in results["eval"].items():
        print(f"{key}: {100 * m['accuracy']:.1f}% ({m['correct']}/{m['n']})")
    return 0
