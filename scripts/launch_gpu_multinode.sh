#!/usr/bin/env bash
# Train on several GPU hosts: run this once on every host (one process per host, all its GPUs), with the
# same coordinator address and host count and a distinct HOST_ID (0 = the coordinator, which also writes
# metrics and the resolved config).
#
#   scripts/launch_gpu_multinode.sh COORDINATOR_HOST:PORT NUM_HOSTS HOST_ID CONFIG.yaml [key=value ...]
#   e.g. on host 0: scripts/launch_gpu_multinode.sh 10.0.0.1:8476 2 0 configs/train_flan_t5_large_gsm8k_pot.yaml
#        on host 1: scripts/launch_gpu_multinode.sh 10.0.0.1:8476 2 1 configs/train_flan_t5_large_gsm8k_pot.yaml
#
# Under SLURM, skip the arguments: `srun --ntasks-per-node=1 scripts/launch_gpu_multinode.sh --slurm CONFIG.yaml`
# lets JAX read the cluster from SLURM's environment. run_dir must be on storage every host sees.
# DISTILL_JAX_VERB=fdd runs the FDD pipeline instead (configs/fdd_*.yaml): every host trains, host 0 alone
# does the teacher calls, evaluation and reports while the others wait.
# Each host first sets up (or reuses) .venv with the JAX build for its GPUs: jax[cuda13] or jax[cuda12] from the
# driver's CUDA version (DISTILL_JAX_ACCEL=cuda12|cuda13 to choose). A multi-process run needs an accelerator
# (require_accelerator): a host whose JAX would fall back to the CPU stops at once and says why.
# A SIGTERM to any host (a preemption) makes every host save the same step and exit 0; rerun to resume.
set -euo pipefail
usage() { sed -n '2,18p' "$0"; exit 2; }
VERB=${DISTILL_JAX_VERB:-train}
case $VERB in
  train) DISTRIBUTED=distributed=true ;;
  fdd) DISTRIBUTED=train.distributed=true ;;
  *) echo "DISTILL_JAX_VERB must be train or fdd, got $VERB" >&2; exit 2 ;;
esac
if [[ ${1:-} == --slurm ]]; then
  [[ $# -ge 2 ]] || usage
  CONFIG=$2; shift 2
  ARGS=("$DISTRIBUTED")
else
  [[ $# -ge 4 ]] || usage
  export DISTILL_JAX_COORDINATOR=$1 DISTILL_JAX_NUM_PROCESSES=$2 DISTILL_JAX_PROCESS_ID=$3
  CONFIG=$4; shift 4
  ARGS=()
fi
source "$(dirname "$0")/_venv.sh"
[[ "$ACCEL" == cuda* ]] || echo "[distill_jax] warning: this host gets the $ACCEL build of JAX ($ACCEL_WHY)" >&2
export HF_HUB_OFFLINE=1
exec distill-jax "$VERB" --config "$CONFIG" ${ARGS[@]+"${ARGS[@]}"} "$@"
