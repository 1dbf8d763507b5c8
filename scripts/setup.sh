#!/usr/bin/env bash
# Installs everything OPMask needs into the current Python (>= 3.10), from the package registry.
# torch and torchvision are pinned as a matching pair: torchvision's compiled ops (RoIAlign, NMS)
# need the regular torch wheels; they run on CPU too.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "torch==2.14.1" "torchvision==0.29.1"
"$PY" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e ".[dev]"
