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
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
VERB=${DISTILL_JAX_VERB:-train}
case $VERB in
  train) DISTRIBUTED=distributed=true ;;
  fdd) DISTRIBUTED=train.distributed=true ;;
  *) echo "DISTILL_JAX_VERB must be train or fdd, got $VERB" >&2; exit 2 ;;
esac
if [[ ${1:-} == --slurm ]]; then
  [[ $# -ge 2 ]] || { sed -n '2,13p' "$0"; exit 2; }
  CONFIG=$2; shift 2
  exec .venv/bin/distill-jax "$VERB" --config "$CONFIG" "$DISTRIBUTED" "$@"
fi
if [[ $# -lt 4 ]]; then
  sed -n '2,13p' "$0"; exit 2
fi
export DISTILL_JAX_COORDINATOR=$1 DISTILL_JAX_NUM_PROCESSES=$2 DISTILL_JAX_PROCESS_ID=$3
CONFIG=$4; shift 4
exec .venv/bin/distill-jax "$VERB" --config "$CONFIG" "$@"
