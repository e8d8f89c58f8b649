"""The arguments every resumable pipeline verb takes (`distill`, `fdd`): a config, overrides, a restart point."""
from __future__ import annotations

import argparse
from typing import Any, Callable

from distill_jax import config as config_lib


def add_pipeline_arguments(parser: argparse.ArgumentParser, config: str, override_example: str,
                           stages: str) -> None:
    """`config` names the YAML's config class and presets, `stages` the stage names `--restart-from` takes."""
    parser.add_argument("--config", required=True, help=f"YAML with a {config}")
    parser.add_argument("overrides", nargs="*", help=f"dotted key=value overrides, e.g. {override_example}")
    parser.add_argument("--restart-from", metavar="STAGE", help=f"rerun this stage and every later one, also when "
                        f"that redoes teacher calls ({stages})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_pipeline(args: argparse.Namespace, config_cls: type, check: Callable[[Any], None],
                 runner: Callable[..., Any]) -> tuple[Any, Any]:
    """Load the config (checked before any work) and run the pipeline from `--restart-from`, if given."""
    cfg = config_lib.load(config_cls, args.config, args.overrides, check=check)
    return cfg, runner(cfg, restart_from=args.restart_from, progress=not args.no_progress)
