"""`distill-jax <verb> ...`: one entry point; each verb's module is imported only when that verb runs.

Lazy imports keep `distill-jax verify` or `teach` free of JAX start-up cost, and let the teacher side run
on machines without an accelerator stack. A verb module exposes `add_arguments(parser)` and `run(args)`.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# verb -> (module, one-line help). The module owns its arguments and its behaviour.
VERBS: dict[str, tuple[str, str]] = {
    "synth": ("distill_jax.data.synthetic_cli", "generate synthetic GSM8K-style problems"),
    "verify": ("distill_jax.reasoning.verify", "verify rationales of one style against gold answers"),
    "teach": ("distill_jax.teacher.generate", "ask a teacher for verified rationales"),
    "train": ("distill_jax.train.loop", "train a student on rationale files"),
    "generate": ("distill_jax.model.generate_cli", "decode with a student (HF dir or run checkpoint)"),
    "export": ("distill_jax.model.export_cli", "export a student to a Hugging Face directory"),
    "eval": ("distill_jax.evaluate.evaluate", "evaluate checkpoints on benchmarks"),
    "fdd": ("distill_jax.methods.fdd", "run FDD multi-round distillation"),
    "demo": ("distill_jax.methods.demo", "the embedded offline default, end to end"),
    "distill": ("distill_jax.methods.pipeline", "run a method pipeline (kpdd, etd, pad, dss, decompose)"),
}


def _usage() -> str:
    width = max(len(v) for v in VERBS)
    lines = ["usage: distill-jax <verb> [options]   (distill-jax <verb> --help for a verb's options)", "", "verbs:"]
    lines += [f"  {verb.ljust(width)}  {help_}" for verb, (_, help_) in VERBS.items()]
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
    module_name, help_ = VERBS[verb]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            print(f"distill-jax {verb}: not built yet in this version ({module_name} missing)", file=sys.stderr)
            return 2
        raise
    parser = argparse.ArgumentParser(prog=f"distill-jax {verb}", description=help_)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    from distill_jax.config import ConfigError

    try:
        code = module.run(args)
    except ConfigError as e:
        print(f"distill-jax {verb}: config error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"distill-jax {verb}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
