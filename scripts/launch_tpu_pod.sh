#!/usr/bin/env bash
# Train on a Cloud TPU pod slice: the same command runs on every worker (one process per host);
# jax.distributed.initialize() finds the pod's coordinator by itself (`distributed=true`).
#
#   scripts/launch_tpu_pod.sh TPU_NAME ZONE CONFIG.yaml [key=value ...]
#   e.g. scripts/launch_tpu_pod.sh my-v4-32 us-central2-b configs/train_flan_t5_large_gsm8k_pot.yaml mesh.fsdp=-1
#
# Every worker needs this checkout at the same path with its venv (scripts/_venv.sh), the HF model dir and
# the rationale files (or a shared bucket mount). Set REPO_DIR if the checkout is not at ~/distill_jax.
# Checkpoints: point run_dir at storage every worker sees (a gcsfuse mount or NFS); orbax writes each
# host's shards and process 0 the metadata.
set -euo pipefail
if [[ $# -lt 3 ]]; then
  sed -n '2,12p' "$0"; exit 2
fi
TPU_NAME=$1; ZONE=$2; CONFIG=$3; shift 3
REPO_DIR=${REPO_DIR:-'~/distill_jax'}
OVERRIDES=$(printf ' %q' "$@")
CMD="cd ${REPO_DIR} && HF_HUB_OFFLINE=1 .venv/bin/distill-jax train --config $(printf %q "$CONFIG") distributed=true${OVERRIDES}"
echo "on every worker of ${TPU_NAME}: ${CMD}"
exec gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "$CMD"
