#!/usr/bin/env bash
# Train on a Cloud TPU pod slice: the same command runs on every worker (one process per host);
# jax.distributed.initialize() finds the pod's coordinator by itself (`distributed=true`).
#
#   scripts/launch_tpu_pod.sh TPU_NAME ZONE CONFIG.yaml [key=value ...]
#   e.g. scripts/launch_tpu_pod.sh my-v4-32 us-central2-b configs/train_flan_t5_large_gsm8k_pot.yaml mesh.fsdp=-1
#
# Every worker needs this checkout at the same path, the HF model dir and the rationale files (or a shared bucket
# mount). Set REPO_DIR if the checkout is not at ~/distill_jax. Each worker sets up (or reuses) its .venv with
# jax[tpu] (libtpu pinned to the same jax) before training: the first run installs, later ones start in seconds.
# A SIGTERM to any worker (a preemption) makes every worker save the same step and exit 0; rerun to resume.
# Checkpoints: point run_dir at storage every worker sees (a gcsfuse mount or NFS); orbax writes each
# host's shards and process 0 the metadata.
# DISTILL_JAX_VERB=fdd runs the FDD pipeline instead (configs/fdd_*.yaml): every worker trains, worker 0 alone
# does the teacher calls, evaluation and reports while the others wait.
set -euo pipefail
if [[ $# -lt 3 ]]; then
  sed -n '2,15p' "$0"; exit 2
fi
VERB=${DISTILL_JAX_VERB:-train}
case $VERB in
  train) DISTRIBUTED=distributed=true ;;
  fdd) DISTRIBUTED=train.distributed=true ;;
  *) echo "DISTILL_JAX_VERB must be train or fdd, got $VERB" >&2; exit 2 ;;
esac
TPU_NAME=$1; ZONE=$2; CONFIG=$3; shift 3
REPO_DIR=${REPO_DIR:-'~/distill_jax'}
OVERRIDES=$(printf ' %q' "$@")
CMD="cd ${REPO_DIR} && export DISTILL_JAX_ACCEL=tpu HF_HUB_OFFLINE=1 && source scripts/_venv.sh && distill-jax ${VERB} --config $(printf %q "$CONFIG") ${DISTRIBUTED}${OVERRIDES}"
echo "on every worker of ${TPU_NAME}: ${CMD}"
exec gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "$CMD"
