#!/usr/bin/env bash
# The GPU check (issue "GPU path"): one prepared run of about five minutes on any CUDA machine, no
# dataset download; writes one Markdown report (default gpu_check.md). CI runs the CPU form:
#   bash scripts/gpu_check.sh                        # on a GPU machine
#   bash scripts/gpu_check.sh --device cpu --quick   # CI-sized, on CPU
set -euo pipefail
cd "$(dirname "$0")/.."
export CUBLAS_WORKSPACE_CONFIG=${CUBLAS_WORKSPACE_CONFIG:-:4096:8}
exec "${PYTHON:-python3}" scripts/gpu_check.py "$@"
