"""`distill-jax distill --config configs/<method>_*.yaml [key=value ...]`: one method pipeline, resumable."""
from __future__ import annotations

import argparse
from pathlib import Path

from distill_jax.cli.pipeline_args import add_pipeline_arguments, run_pipeline
from distill_jax.methods.method_config import MethodConfig
from distill_jax.methods.pipeline import check_method, run_method

CONFIG = MethodConfig  # `--help` lists its keys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_pipeline_arguments(parser, "MethodConfig (see configs/<method>_*.yaml)", "train.steps=200",
                           "seed_problems, teach, records, train, eval, report")


def run(args: argparse.Namespace) -> int:
    cfg, results = run_pipeline(args, MethodConfig, check_method, run_method)
    if "dry_run" in results:
        return 0
    print(f"report: {Path(cfg.run_dir) / 'report.md'}")
    for key, m in results["eval"].items():
        print(f"{key}: {100 * m['accuracy']:.1f}% ({m['correct']}/{m['n']})")
    return 0
