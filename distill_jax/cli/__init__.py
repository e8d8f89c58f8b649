"""`distill-jax <verb> ...`: one entry point; each verb is a module of this package, imported only when it runs.

A verb module exposes `add_arguments(parser)` and `run(args)`; it imports the library, and nothing in the
library imports this package. Importing only the verb that runs keeps `distill-jax verify` or `teach` free of
JAX start-up cost, so the teacher side runs on machines without an accelerator stack.
Every verb shares one persistent XLA compilation cache (train/runtime_env.py), set through the environment
before the verb's module imports JAX.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from distill_jax.config import ConfigError
from distill_jax.config_fields import describe
from distill_jax.train.runtime_env import use_compilation_cache

# verb -> one-line help; the module distill_jax.cli.<verb> owns its arguments and its behaviour.
VERBS: dict[str, str] = {
    "synth": "generate synthetic GSM8K-style problems",
    "verify": "verify rationales of one style against gold answers",
    "teach": "ask a teacher for verified rationales",
    "train": "train a student on rationale files",
    "generate": "decode with a student (HF dir or run checkpoint)",
    "export": "export a student to a Hugging Face directory",
    "eval": "evaluate checkpoints on benchmarks",
    "fdd": "run FDD multi-round distillation",
    "demo": "the embedded offline default, end to end",
    "distill": "run a method pipeline (kpdd, etd, pad, dss, decompose)",
    "show": "what a run directory holds: stages, configs, checkpoints, metrics, eval results",
    "env": "what JAX sees here (backend, devices, versions, flags, caches): paste it into bug reports",
}


def _usage() -> str:
    width = max(len(v) for v in VERBS)
    lines = ["usage: distill-jax <verb> [options]   (distill-jax <verb> --help for a verb's options)", "", "verbs:"]
    lines += [f"  {verb.ljust(width)}  {help_}" for verb, help_ in VERBS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"distill-jax: unknown verb {verb!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    use_compilation_cache()
    module = importlib.import_module(f"distill_jax.cli.{verb}")
    config_cls = getattr(module, "CONFIG", None)  # a verb with a config lists its dotted keys under --help
    parser = argparse.ArgumentParser(prog=f"distill-jax {verb}", description=VERBS[verb],
                                     epilog=describe(config_cls) if config_cls else None,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        code = module.run(args)
    except ConfigError as e:
        print(f"distill-jax {verb}: config error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C, or train/preemption.TrainingStopped after its checkpoint
        print(f"distill-jax {verb}: {e or 'interrupted'}", file=sys.stderr)
        return getattr(e, "exit_code", 130)
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
