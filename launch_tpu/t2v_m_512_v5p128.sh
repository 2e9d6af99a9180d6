#!/usr/bin/env bash
# STIV-M T2V 512px (experiments/t2v_m_512.py) on one v5p-128 slice: a TPU VM with 16 workers
# x 4 chips (64 chips). Project, zone, bucket and run name come from flags or STIV_* variables:
#   STIV_PROJECT=my-proj STIV_ZONE=us-east5-a STIV_BUCKET=gs://my-bucket STIV_RUN_NAME=t2v-m-512 \
#     launch_tpu/t2v_m_512_v5p128.sh up [--reserved] [--dry-run] [-- --config.KEY=VALUE ...]
# then `... logs`, `... resume` after a preemption or maintenance event, `... delete` when done.
set -euo pipefail
command="${1:?usage: $0 up|resume|train|logs|stop|status|delete [launch.py flags]}"
shift
exec "${PYTHON:-python3}" "$(dirname "$0")/launch.py" "$command" \
  --accelerator-type=v5p-128 --config=experiments/t2v_m_512.py "$@"
