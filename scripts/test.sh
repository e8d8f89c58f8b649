#!/usr/bin/env bash
# Set up from nothing and run the test suite. Extra arguments go to pytest (e.g. -k sandbox, -m "not slow").
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
# 8 virtual CPU devices so mesh tests (data/fsdp/tensor) run without accelerators; must be set before jax loads.
export XLA_FLAGS="${XLA_FLAGS:---xla_force_host_platform_device_count=8}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export PYTHONHASHSEED=0
python -m pytest -q -p no:cacheprovider tests "$@"
