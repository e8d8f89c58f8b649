"""`distill-jax fdd --config configs/fdd_*.yaml [key=value ...]`: FDD multi-round distillation, resumable."""
from __future__ import annotations

import argparse

import jax

from distill_jax import config as config_lib
from distill_jax.config import ConfigError
from distill_jax.evaluate.report import write_report
from distill_jax.methods.fdd import FddConfig, run_fdd


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML with an FddConfig (see configs/fdd_*.yaml)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. rounds=2")


def run(args: argparse.Namespace) -> int:
    cfg = config_lib.load(FddConfig, args.config, args.overrides)
    if not cfg.eval.problems and not cfg.eval.benchmarks:
        raise ConfigError("eval.problems or eval.benchmarks must name at least one test set")
    rounds = run_fdd(cfg)
    if jax.process_index() != 0:
        return 0
    print(f"report: {write_report(cfg.run_dir)}")
    for r in rounds:
        print(f"round {r['round']}: " + ", ".join(f"{k} {100 * v['accuracy']:.1f}%" for k, v in r["accuracy"].items()))
    return 0
