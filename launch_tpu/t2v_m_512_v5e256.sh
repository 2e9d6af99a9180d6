#!/usr/bin/env bash
# STIV-M T2V 512px (experiments/t2v_m_512.py) on one v5e-256 slice: a queued resource with
# 64 workers x 4 chips. Project, zone, bucket and run name come from flags or STIV_* variables:
#   STIV_PROJECT=my-proj STIV_ZONE=us-west4-a STIV_BUCKET=gs://my-bucket STIV_RUN_NAME=t2v-m-512 \
#     launch_tpu/t2v_m_512_v5e256.sh up --spot [--dry-run] [-- --config.KEY=VALUE ...]
# then `... logs`, `... resume --spot` after a preemption, `... delete` when done.
set -euo pipefail
command="${1:?usage: $0 up|resume|train|logs|stop|status|delete [launch.py flags]}"
shift
exec "${PYTHON:-python3}" "$(dirname "$0")/launch.py" "$command" --queued \
  --accelerator-type=v5litepod-256 --config=experiments/t2v_m_512.py "$@"
