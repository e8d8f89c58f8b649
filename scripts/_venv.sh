# Sourced by demo.sh and test.sh: create .venv if missing and (re)install the package when setup.py changed.
# The stamp makes a second run start in seconds instead of re-resolving ~1.2 GB of wheels.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
  echo "[distill_jax] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
EXTRAS="${DISTILL_JAX_EXTRAS:-test}"
STAMP=".venv/.distill_jax-install-$(cat setup.py | sha256sum | cut -c1-16)-${EXTRAS//,/_}"
if [[ ! -f "$STAMP" ]]; then
  echo "[distill_jax] installing distill_jax[$EXTRAS] into .venv (first run: a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$EXTRAS]"
  rm -f .venv/.distill_jax-install-*
  touch "$STAMP"
fi
export PATH="$ROOT/.venv/bin:$PATH"
# Benchmarks and tests find ../shared/data through this variable; users point it at their own copy.
if [[ -z "${DISTILL_JAX_DATA:-}" && -d "$ROOT/../shared/data" ]]; then
  export DISTILL_JAX_DATA="$(cd "$ROOT/../shared/data" && pwd)"
fi
# This checkout's code wins over the editable install, which may point at another checkout (a git worktree
# sharing one .venv); the tests' `distill-jax` subprocesses inherit it.
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
