"""`distill-jax env [--json] [--distributed]`: what JAX sees on this machine, the first thing for a bug report.

Backend, devices (kind, count, memory), processes, versions of the JAX stack and its plugins, the XLA/JAX
environment variables, the compilation cache directory, which accelerator extra this hardware wants, and how
the program sandbox is isolated here.
"""
from __future__ import annotations

import argparse
import json

from distill_jax.reasoning import sandbox
from distill_jax.train.runtime import environment_report, initialize_distributed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    parser.add_argument("--distributed", action="store_true",
                        help="start jax.distributed first (on every host of a pod / cluster) to see all processes")


def _lines(doc: dict, indent: str = "") -> list[str]:
    out = []
    for key, value in doc.items():
        if isinstance(value, dict) and value:
            out.append(f"{indent}{key}:")
            out += _lines(value, indent + "  ")
        else:
            shown = ", ".join(map(str, value)) if isinstance(value, list) else value
            out.append(f"{indent}{key}: {shown if shown not in ('', None, {}) else '-'}")
    return out


def run(args: argparse.Namespace) -> int:
    initialize_distributed(True if args.distributed else None)
    doc = {**environment_report(), "sandbox": sandbox.isolation_report()}
    print(json.dumps(doc, indent=2) if args.json else "\n".join(_lines(doc)))
    return 0
