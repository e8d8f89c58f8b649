# Sourced by install.sh, demo.sh, test.sh and the launchers: create .venv if missing and (re)install the package
# when setup.py or the accelerator changed. The stamp makes a second run start in seconds instead of
# re-resolving ~1.2 GB of wheels (several GB with the CUDA wheels).
#
# The JAX build follows the hardware: DISTILL_JAX_ACCEL=cpu|cuda12|cuda13|tpu, or, unset, what this machine has
# (nvidia-smi and the CUDA version its driver supports; TPU chips on the PCI bus), asked from
# distill_jax/train/runtime_env.py with the bare interpreter (it needs nothing installed). The extra's JAX plugin
# or libtpu is pinned to the same jax as setup.py's jaxlib.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
DETECTED="$(PYTHONPATH="$ROOT" "$PY" -S -m distill_jax.train.runtime_env detect)"
read -r ACCEL ACCEL_WHY <<<"$DETECTED"
EXTRAS="${DISTILL_JAX_EXTRAS:-test}"
if [[ "$ACCEL" != cpu ]]; then
  EXTRAS="$EXTRAS,$ACCEL"
fi
if [[ ! -x .venv/bin/python ]]; then
  echo "[distill_jax] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
STAMP=".venv/.distill_jax-install-$(cat setup.py | sha256sum | cut -c1-16)-${EXTRAS//,/_}"
if [[ ! -f "$STAMP" ]]; then
  # hosts sharing one checkout (NFS) must not install into the same .venv at once (flock: Linux, where pods are)
  exec 9>".venv/.distill_jax-install.lock"
  if command -v flock >/dev/null; then flock 9; fi
  if [[ ! -f "$STAMP" ]]; then
    echo "[distill_jax] installing distill_jax[$EXTRAS] into .venv for $ACCEL ($ACCEL_WHY; first run: a few minutes)"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".[$EXTRAS]"
    rm -f .venv/.distill_jax-install-*
    touch "$STAMP"
  fi
  exec 9>&-
fi
export PATH="$ROOT/.venv/bin:$PATH"
# Benchmarks and tests find ../shared/data through this variable; users point it at their own copy.
if [[ -z "${DISTILL_JAX_DATA:-}" && -d "$ROOT/../shared/data" ]]; then
  export DISTILL_JAX_DATA="$(cd "$ROOT/../shared/data" && pwd)"
fi
# This checkout's code wins over the editable install, which may point at another checkout (a git worktree
# sharing one .venv); the tests' `distill-jax` subprocesses inherit it.
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
