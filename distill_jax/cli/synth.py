"""`distill-jax synth`: write synthetic GSM8K-style problems to a JSONL file (same seed, same bytes)."""
from __future__ import annotations

import argparse
from collections import Counter

from distill_jax.config import ConfigError
from distill_jax.data.records import write_jsonl
from distill_jax.data.synthetic import generate
from distill_jax.progress import progress_bar


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, required=True, help="number of problems")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-steps", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=3)
    parser.add_argument("--distractors", type=float, default=0.0, metavar="P",
                        help="probability that a problem carries one unused fact")
    parser.add_argument("--split", default="all", help="tag written into every row's `split` field")
    parser.add_argument("--out", required=True, help="output JSONL path")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    if not 1 <= args.min_steps <= args.max_steps:
        raise ConfigError(f"--min-steps/--max-steps: need 1 <= min <= max, got {args.min_steps}..{args.max_steps}")
    if not 0.0 <= args.distractors <= 1.0:
        raise ConfigError(f"--distractors must be in [0, 1], got {args.distractors}")
    # A progress bar only where it helps: small runs finish before it would draw.
    with progress_bar("generating", transient=True, enabled=args.n >= 5000 and not args.no_progress) as bar:
        task = bar.add_task("generating", total=args.n)
        problems = generate(args.n, args.seed, args.min_steps, args.max_steps, args.distractors, split=args.split,
                            progress=lambda i: bar.update(task, completed=i) if i % 500 == 0 else None)
    write_jsonl(args.out, (p.to_row() for p in problems))
    steps = Counter(p.extra["steps"] for p in problems)
    print(f"wrote {len(problems)} problems to {args.out} (steps: "
          + ", ".join(f"{k}: {steps[k]}" for k in sorted(steps)) + ")")
    return 0
