"""`distill-jax eval --run RUN | --model HF_DIR [--step ...] [--benchmarks ...] [--styles ...] [key=value ...]`."""
from __future__ import annotations

import argparse

from distill_jax import config as config_lib
from distill_jax.evaluate.config import EvalConfig
from distill_jax.evaluate.evaluate import EvalFailed, evaluate
from distill_jax.evaluate.results import load_benchmarks

CONFIG = EvalConfig  # `--help` lists its keys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", dest="run_dir", help="training run directory (checkpoints in RUN/ckpt)")
    src.add_argument("--model", help="a Hugging Face T5 directory")
    parser.add_argument("--step", default="latest", help="N, N,M, 'latest' (default) or 'all'")
    parser.add_argument("--benchmarks", help="comma-separated: gsm8k_test,svamp,asdiv,multiarith,addsub,singleeq")
    parser.add_argument("--problems", action="append", default=[], help="a JSONL problem file (repeatable)")
    parser.add_argument("--styles", help="comma-separated styles, e.g. pot,eot,cot (also the vote tie-break order)")
    parser.add_argument("--limit", type=int, help="first N problems of each test set (the key `limit`)")
    parser.add_argument("--config", help="a YAML file with EvalConfig keys")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. decoding.max_new_tokens=128")


def run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    overrides += [f"run_dir={args.run_dir}"] if args.run_dir else [f"model={args.model}"]
    overrides.append(f"steps={args.step}")
    if args.benchmarks:
        overrides.append(f"benchmarks=[{args.benchmarks}]")
    elif args.problems:
        overrides.append("benchmarks=[]")
    if args.problems:
        overrides.append("problems=[" + ",".join(args.problems) + "]")
    if args.styles:
        overrides.append(f"styles=[{args.styles}]")
    if args.limit is not None:
        overrides.append(f"limit={args.limit}")
    if args.no_progress:
        overrides.append("progress=false")
    # the test sets are read now, so an empty or missing one fails before any checkpoint loads
    cfg = config_lib.load(EvalConfig, args.config, overrides, check=load_benchmarks)
    try:
        results = evaluate(cfg)
    except EvalFailed:
        return 1  # already printed, after the results of the steps that could be evaluated
    return 0 if results else 1
