"""The runtime around training: no silent CPU (require_accelerator), `distill-jax env`, the accelerator extra a
machine gets, the one compilation cache every command shares, and batches built ahead on a thread."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml
from helpers_train import train_config_dict, write_rationales

from distill_jax.train import batches as B
from distill_jax.train import runtime_env
from distill_jax.train.prefetch import Prefetcher
from distill_jax.train.runtime import accelerator_plugins

REPO = Path(__file__).resolve().parents[1]
QUIET_START_UP_S = 2.5  # `distill-jax train --help` on 2 cores (measured 1.9 s at load 7.7; the failure: 1.85 s)


def _cli(args: list[str], env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distill_jax.cli", *args], env={**env, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runtime")
    cfg = train_config_dict(root / "run", write_rationales(root / "rationales.jsonl", 24), root / "unused",
                            steps=2, eval_every=0)
    cfg["model"].pop("tokenizer")
    cfg["model"]["tokenizer_vocab_size"] = 200
    path = root / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_distributed_train_on_a_cpu_only_machine_fails_at_once_in_one_line(tiny_config):
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}  # scripts/test.sh sets it to cpu
    if accelerator_plugins():  # a GPU/TPU build: make it CPU-only the way a user would
        env["JAX_PLATFORMS"] = "cpu"
    started = time.perf_counter()
    out = _cli(["train", "--config", str(tiny_config), "distributed=true"], env, timeout=60)
    elapsed = time.perf_counter() - started
    # 10 s on a quiet machine, where starting the command (`train --help`: its imports) takes QUIET_START_UP_S;
    # a loaded machine slows both alike
    started = time.perf_counter()
    assert _cli(["train", "--help"], env, timeout=60).returncode == 0
    budget = 10 * max(1.0, (time.perf_counter() - started) / QUIET_START_UP_S)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "require_accelerator: JAX" in lines[0] and "would run on the CPU" in lines[0]
    assert "scripts/install.sh" in lines[0] and "require_accelerator=false" in lines[0]
    assert elapsed < budget, f"took {elapsed:.1f} s (budget {budget:.1f} s)"
    assert not (tiny_config.parent / "run").exists()  # no work started: not even the run directory
    # asked for explicitly on CPU, a multi-process run outside any cluster says so instead of a traceback
    out = _cli(["train", "--config", str(tiny_config), "distributed=true", "require_accelerator=false"], env)
    assert out.returncode == 2 and "distributed: JAX found no cluster to join" in out.stderr, out.stderr


def test_env_reports_what_jax_sees():
    out = _cli(["env", "--json"], dict(os.environ), timeout=120)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["backend"] == jax.default_backend()
    assert doc["devices"]["global"] == len(jax.devices()) and doc["processes"] == {"count": 1, "index": 0}
    assert doc["versions"]["jax"] == jax.__version__
    assert doc["compilation_cache"] == os.environ["JAX_COMPILATION_CACHE_DIR"]  # the environment's wins
    assert doc["environment"]["XLA_FLAGS"] == os.environ["XLA_FLAGS"]
    assert doc["hardware"]["extra"] in runtime_env.ACCELERATORS and "sandbox" in doc


def _fake_nvidia_smi(bin_dir: Path, cuda: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / "nvidia-smi"
    tool.write_text(f"#!/bin/sh\necho '| NVIDIA-SMI 580.65.06   Driver Version: 580.65.06   CUDA Version: {cuda} |'\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)


@pytest.mark.parametrize("cuda,extra", [("13.0", "cuda13"), ("12.8", "cuda12"), ("11.4", "cpu")])
def test_the_cuda_driver_picks_the_extra(tmp_path, monkeypatch, cuda, extra):
    """nvidia-smi's header names the newest CUDA its driver runs (a stand-in prints it here: no GPU)."""
    _fake_nvidia_smi(tmp_path / "bin", cuda)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv(runtime_env.ENV_ACCEL, raising=False)
    got, why = runtime_env.resolve_accelerator()
    assert got == extra and f"CUDA {cuda}" in why
    monkeypatch.setenv(runtime_env.ENV_ACCEL, "tpu")
    assert runtime_env.resolve_accelerator() == ("tpu", "DISTILL_JAX_ACCEL=tpu")
    monkeypatch.setenv(runtime_env.ENV_ACCEL, "cuda11")
    with pytest.raises(ValueError, match="expected one of cpu, cuda12, cuda13, tpu"):
        runtime_env.resolve_accelerator()


def test_venv_script_asks_the_same_detection(tmp_path):
    """scripts/_venv.sh runs the detection with a bare Python (no .venv yet): it must need nothing installed."""
    _fake_nvidia_smi(tmp_path / "bin", "13.0")
    out = subprocess.run([sys.executable, "-S", "-m", "distill_jax.train.runtime_env", "detect"], cwd=REPO,
                         env={"PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "cuda13"


@pytest.mark.slow
def test_every_command_shares_one_compilation_cache(tiny_config, tmp_path):
    """No JAX_COMPILATION_CACHE_DIR: the CLI puts the cache under the user's cache dir, and a second `train` of the
    same shapes (another run dir) compiles nothing: it writes no new cache entry."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    cache = tmp_path / "cache" / "distill_jax" / "xla"
    no_eval = "data.eval_fraction=0"  # fewer programs to compile cold; the train step is the one that matters
    first = _cli(["train", "--config", str(tiny_config), f"run_dir={tmp_path / 'a'}", no_eval], env)
    assert first.returncode == 0, first.stderr
    entries = {p.name for p in cache.iterdir()}
    assert entries, "nothing was cached"
    second = _cli(["train", "--config", str(tiny_config), f"run_dir={tmp_path / 'b'}", no_eval], env)
    assert second.returncode == 0, second.stderr
    assert {p.name for p in cache.iterdir()} == entries
    assert f"compilation cache: {cache}" in second.stderr


def test_prefetcher_keeps_the_order_and_the_positions():
    """Built ahead on a thread, the batches and the position each leaves the iterator at are exactly those of
    plain iteration (what a checkpoint records must be what the loop consumed)."""
    examples = [B.Example([5 + i, 1], [7, 1], 1.0, 0, "pot") for i in range(10)]
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    plain = B.BatchIterator(examples, [(4, 4)], 4, seed=3, sharding=sharding, pad_id=0)
    want = []
    for _ in range(7):  # over two epochs (3 batches each)
        want.append((np.asarray(next(plain)["input_ids"]), dict(plain.position)))
    with Prefetcher(B.BatchIterator(examples, [(4, 4)], 4, seed=3, sharding=sharding, pad_id=0), depth=2) as ahead:
        for batch_ids, position in want:
            batch, got = next(ahead)
            np.testing.assert_array_equal(np.asarray(batch["input_ids"]), batch_ids)
            assert got == position


def test_prefetcher_raises_the_iterators_error_and_stops():
    class Broken:
        position = {"epoch": 0, "index": 0}

        def __init__(self):
            self.calls = 0

        def __next__(self):
            self.calls += 1
            if self.calls == 2:
                raise ValueError("row 7 is bad")
            return self.calls

    ahead = Prefetcher(Broken(), depth=1)
    assert next(ahead)[0] == 1
    for _ in range(2):  # the error, and the same error again: the thread has ended
        with pytest.raises(ValueError, match="row 7 is bad"):
            next(ahead)
    ahead.close()
    assert not [t for t in threading.enumerate() if t.name == "distill_jax-batches"]
