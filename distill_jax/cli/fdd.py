"""`distill-jax fdd --config configs/fdd_*.yaml [key=value ...]`: FDD multi-round distillation, resumable."""
from __future__ import annotations

import argparse

import jax

from distill_jax.cli.pipeline_args import add_pipeline_arguments, run_pipeline
from distill_jax.evaluate.report import write_report
from distill_jax.methods.fdd import FddConfig, check_fdd, run_fdd

CONFIG = FddConfig  # `--help` lists its keys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_pipeline_arguments(parser, "FddConfig (see configs/fdd_*.yaml)", "rounds=2",
                           "e.g. r1_teach; `distill-jax show RUN` lists them")


def run(args: argparse.Namespace) -> int:
    cfg, rounds = run_pipeline(args, FddConfig, check_fdd, run_fdd)
    if jax.process_index() != 0:
        return 0
    print(f"report: {write_report(cfg.run_dir)}")
    for r in rounds:
        print(f"round {r['round']}: " + ", ".join(f"{k} {100 * v['accuracy']:.1f}%" for k, v in r["accuracy"].items()))
    return 0
