"""`distill-jax train --config FILE.yaml [key=value ...]`: train (or resume) one student run."""
from __future__ import annotations

import argparse
import logging

import jax

from distill_jax.config import load
from distill_jax.train.config import TrainConfig
from distill_jax.train.loop import TrainingDiverged, quiet_checkpoint_logs, train

CONFIG = TrainConfig  # `--help` lists its keys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML file with a TrainConfig (see configs/train_*.yaml)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. optim.learning_rate=3e-4")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (the key `progress`)")


def run(args: argparse.Namespace) -> int:
    # force: an import (transformers, orbax) has already given the root logger a WARNING handler
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
    quiet_checkpoint_logs()
    cfg = load(TrainConfig, args.config, list(args.overrides) + (["progress=false"] if args.no_progress else []))
    try:
        result = train(cfg)
    except TrainingDiverged as e:
        print(f"distill-jax train: {e}")
        return 1
    if jax.process_index() == 0:
        s = result.data_stats
        print(f"done at step {result.step}; checkpoint {result.last_checkpoint}; eval loss {result.eval_loss}; "
              f"first step after {result.startup_seconds:.1f} s; {result.tokens_per_second:,.0f} target tokens/s; "
              f"{s['truncated']} records truncated, {s['dropped']} dropped; run dir {result.run_dir}")
    return 0
