#!/usr/bin/env bash
# Set up from nothing and run the test suite. Extra arguments go to pytest (e.g. -k sandbox, -m "not slow").
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
# 8 virtual CPU devices so mesh tests (data/fsdp/tensor) run without accelerators; must be set before jax loads.
# The suite runs there even where a GPU/TPU build is installed (DISTILL_JAX_ACCEL=cuda13 ...): its meshes and
# tolerances are the CPU's; benchmarks/gpu_check.py is the check on the accelerator itself.
export XLA_FLAGS="${XLA_FLAGS:---xla_force_host_platform_device_count=8}" JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export PYTHONHASHSEED=0
# One XLA compilation cache for the run, shared by the pytest workers and the tests' subprocesses: most of the
# suite's time is compiling the same tiny models again (tests/conftest.py makes one when run without this script).
cache="$(mktemp -d)"
trap 'rm -rf "$cache"' EXIT
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$cache}"
# Two workers: XLA compiles on one thread, so two test files at a time keep both cores busy; --dist loadfile
# keeps each file (and its module fixtures) on one worker.
# No path given: pytest.ini's testpaths (tests/); given paths (tests/test_x.py) run alone.
python -m pytest -q -p no:cacheprovider -n "${DISTILL_JAX_TEST_WORKERS:-2}" --dist loadfile "$@"
