"""`distill-jax teach --config configs/teach_*.yaml [key=value ...]`: verified teacher rationales for a run."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from distill_jax import config as config_lib
from distill_jax.teacher.generate import TeachSummary, failure_kind, teach
from distill_jax.teacher.teach_config import TeachConfig

CONFIG = TeachConfig  # `--help` lists its keys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML preset (configs/teach_*.yaml)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. limit=50 styles=[cot,pot]")
    parser.add_argument("--dry-run", action="store_true", help="print the request/cost estimate; send nothing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _print_summary(summary: TeachSummary) -> None:
    console = Console()
    if summary.estimate is not None:
        table = Table(title=f"dry run: {summary.model} (batch API: {summary.estimate['batch_api']})",
                      caption="completion tokens guessed from the prompt exemplars; nothing was sent")
        for col in ("style", "results", "cached", "to send", "HTTP", "prompt tok", "compl tok", "USD"):
            table.add_column(col, justify="left" if col == "style" else "right")
        for name, r in [*summary.estimate["styles"].items(), ("total", summary.estimate["total"])]:
            table.add_row(name, *(str(r.get(k, 0)) for k in ("requests", "cached", "to_send", "http_requests",
                                                            "prompt_tokens", "completion_tokens")),
                          f"{r.get('cost_usd', 0.0):.4f}")
        console.print(table)
        return
    table = Table(title=f"teach: {summary.teacher} {summary.model} -> {summary.run_dir} (round {summary.round})")
    for col in ("style", "jobs", "kept", "rejected", "duplicates", "failed"):
        table.add_column(col, justify="left" if col == "style" else "right")
    for name, s in summary.styles.items():
        rej = ", ".join(f"{k} {v}" for k, v in sorted(s.rejected.items())) or "0"
        fail = ", ".join(f"{k} {v}" for k, v in sorted(s.failures.items())) or "0"
        table.add_row(name, str(s.jobs), str(s.kept), rej, str(s.duplicates), fail)
    console.print(table)
    if summary.usage:
        u = summary.usage
        console.print(f"requests sent {u['requests_sent']} ({u['requests_reached']} reached the server), cache hits "
                      f"{u['cached_hits']}, tokens {u['prompt_tokens']} + {u['completion_tokens']}, "
                      f"cost ${u['cost_usd']:.4f}")


def run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides) + (["teacher.dry_run=true"] if args.dry_run else [])
    cfg = config_lib.load(TeachConfig, args.config, overrides)
    if not cfg.teacher.dry_run:
        config_lib.save_resolved(cfg, Path(cfg.run_dir) / "config.yaml")  # the run is this teach run alone
    summary = teach(cfg, progress=not args.no_progress)
    _print_summary(summary)
    if summary.errors:
        for fkind, message in summary.errors.items():
            print(f"distill-jax teach: {fkind} failures: {message}", file=sys.stderr)
        if summary.stopped:
            print(f"distill-jax teach: stopped early ({failure_kind(summary.stopped)}); every response received is "
                  f"cached and kept: rerun to resume", file=sys.stderr)
        return 1
    return 0
