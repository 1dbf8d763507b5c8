#!/usr/bin/env bash
# Quick-start demo: set up, then generate the synthetic data, train + evaluate the baseline and
# OPMask on CPU, and print the comparison (also written to output/demo/summary.json).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${PYTHON:-python3}" -m opmask.cli.demo "$@"
