#!/usr/bin/env bash
# Quick-start tests: set up, then run the whole test suite (CPU only; about 3 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${PYTHON:-python3}" -m pytest -q "$@"
