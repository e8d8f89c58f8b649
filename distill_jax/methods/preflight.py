"""The checks a pipeline runs while its config is resolved, before any work or any file in RUN.

Each error names the dotted key at fault (`teach.problems`, `eval.limit`, `train.batch_size`) so that
config.load can add where its value came from (the file's line, the command line, the default): the CLIs pass
these as `config.load(..., check=...)`, and the pipelines run them again first thing for library callers.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import jax

from distill_jax.config import ConfigError
from distill_jax.data.problems import Problem
from distill_jax.evaluate.config import EvalConfig
from distill_jax.evaluate.results import load_benchmarks
from distill_jax.teacher.generate import load_teach_problems
from distill_jax.teacher.teach_config import TeachConfig
from distill_jax.teacher.teachers import check_teacher_problems
from distill_jax.train.config import TrainConfig, check_devices
from distill_jax.train.runtime import prepare_runtime


@contextmanager
def section(prefix: str, default_key: str) -> Iterator[None]:
    """Errors of a section's own checks (which name keys relative to it) re-raised with the section's prefix."""
    try:
        yield
    except ConfigError as e:
        key = e.key or default_key
        message = str(e)
        raise ConfigError(f"{prefix}.{message}" if message.startswith(key) else message, key=f"{prefix}.{key}") from e


def teach_problems(teach: TeachConfig, prefix: str = "teach") -> list[Problem]:
    """The problems the teacher will see (after `limit`): they exist, parse, there is at least one, and the
    teacher can write for them (the symbolic teacher needs synthetic rows)."""
    with section(prefix, "problems"):
        problems = load_teach_problems(teach)
        check_teacher_problems(teach.teacher.kind, problems, teach.problems)
    return problems


def eval_sets(cfg: EvalConfig, prefix: str = "eval") -> None:
    """Every test set resolves, parses and holds at least one problem (after `limit`)."""
    with section(prefix, "benchmarks"):
        load_benchmarks(cfg)


def train_devices(cfg: TrainConfig, prefix: str = "train") -> None:
    """An accelerator when the run requires one, and the batch splits over this machine's (or cluster's) devices:
    checked before a tokenizer is trained."""
    with section(prefix, "batch_size"):
        prepare_runtime(cfg)  # before the first JAX call: jax.distributed, so the count is global
        check_devices(cfg, jax.device_count())


__all__ = ["section", "teach_problems", "eval_sets", "train_devices"]
