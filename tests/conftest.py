"""Shared fixtures. The benchmark data directory comes from DISTILL_JAX_DATA (scripts/test.sh sets it).

Most of the suite's time is XLA compiling the same tiny models again: every `train()` call builds fresh jitted
closures, and the multi-process tests compile in subprocesses. One persistent compilation cache for the whole
session (and, through the environment, its subprocesses) compiles each distinct program once. It is set here,
before any test module imports jax; a JAX_COMPILATION_CACHE_DIR already set (e.g. a directory kept between
runs) is used as it is.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

_OWN_CACHE = None if os.environ.get("JAX_COMPILATION_CACHE_DIR") else tempfile.mkdtemp(prefix="distill_jax_xla_")
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE
# tiny-model programs compile in well under the default 1 s threshold; -1: no size floor, no overrides
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
if "jax" in sys.modules:  # imported by a plugin before this file: environment variables are read too late
    import jax

    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: heavy end-to-end tests (CI still runs them)")


def pytest_unconfigure(config: pytest.Config) -> None:
    if _OWN_CACHE:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """../shared/data. Missing data is a failure, never a skip: CI must not pass by testing nothing."""
    value = os.environ.get("DISTILL_JAX_DATA")
    if not value:
        pytest.fail("DISTILL_JAX_DATA is not set: run the tests through scripts/test.sh or point it at the data")
    path = Path(value)
    if not (path / "gsm8k" / "train.jsonl").is_file():
        pytest.fail(f"DISTILL_JAX_DATA={path} does not hold gsm8k/train.jsonl")
    return path


@pytest.fixture(scope="session")
def fdd_reference(tmp_path_factory) -> dict:
    """One FDD run (2 rounds, tiny student, symbolic teacher) in this process on all its devices, shared by
    tests/test_fdd.py (stages, split, resume) and tests/test_fdd_multiprocess.py (the same config as 2 processes
    must train like it). Returns the config mapping (run_dir is this run's), the run dir and the rounds."""
    from helpers_train import TINY_OVERRIDES

    from distill_jax.config import from_dict
    from distill_jax.data.records import write_jsonl
    from distill_jax.data.synthetic import generate
    from distill_jax.methods.fdd import FddConfig, run_fdd

    root = tmp_path_factory.mktemp("fdd")
    write_jsonl(root / "train.jsonl", (p.to_row() for p in generate(24, 0, 1, 2)))
    write_jsonl(root / "test.jsonl", (p.to_row() for p in generate(8, 1, 1, 2)))
    run = root / "run"
    cfg = {
        "run_dir": str(run), "rounds": 1, "solve_style": "pot", "round_steps": [3, 2],
        "teach": {"problems": str(root / "train.jsonl"), "styles": ["pot"],
                  "teacher": {"kind": "symbolic", "error_rate": 0.0}},
        "train": {"run_dir": "-", "steps": 3, "batch_size": 8, "log_every": 1, "eval_every": 0,
                  "checkpoint_every": 100, "progress": False, "async_checkpoint": False,
                  "require_accelerator": False,  # the 2-process run of tests/test_fdd_multiprocess.py is on CPU
                  "model": {"init": "scratch", "preset": "tiny", "overrides": dict(TINY_OVERRIDES),
                            "tokenizer_vocab_size": 200},
                  # the shapes and optimizer of tests/test_train_loop.py's runs: the same compiled step programs
                  # (one process and two), so whichever test runs second finds them in the compilation cache
                  "data": {"buckets": [[48, 32]], "eval_fraction": 0.0},
                  "optim": {"name": "adamw", "learning_rate": 3e-3, "warmup_steps": 1, "schedule": "constant"}},
        # batch 4: decoded on 4 devices both here and on a 4-device process of the multi-process test
        "eval": {"problems": [str(root / "test.jsonl")], "styles": ["pot"], "max_new_tokens": 8, "batch_size": 4},
    }
    rounds = run_fdd(from_dict(FddConfig, cfg), log=lambda _: None)
    return {"root": root, "config": cfg, "run": run, "rounds": rounds}
