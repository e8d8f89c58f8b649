#!/usr/bin/env bash
# Set up .venv with the JAX build for this machine's hardware and show what JAX sees there.
#   bash scripts/install.sh                          # detect: NVIDIA driver (CUDA 12 / 13), TPU VM, else CPU
#   DISTILL_JAX_ACCEL=cuda13 bash scripts/install.sh  # or choose: cpu | cuda12 | cuda13 | tpu
# (DISTILL_JAX_EXTRAS=test by default; the accelerator extra is added to it.)
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
distill-jax env
