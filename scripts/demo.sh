#!/usr/bin/env bash
# Set up from nothing and run the embedded offline default end to end (`distill-jax demo`).
# Extra arguments go to the demo (e.g. --quick, --out DIR).
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
# Two virtual CPU devices keep both cores busy through data parallelism (FACTS.md: ~30% faster than one).
if [[ -z "${XLA_FLAGS:-}" ]]; then
  export XLA_FLAGS="--xla_force_host_platform_device_count=$(python -c 'import os; print(min(os.cpu_count() or 1, 8))')"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
exec distill-jax demo "$@"
