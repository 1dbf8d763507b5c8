#!/usr/bin/env bash
# The tests (README's test command; CI runs exactly this):
#   bash scripts/test.sh            set up, lint (ruff), then the whole suite in parallel, the real
#                                   SLURM cluster included (one cluster, shared by every test)
#   bash scripts/test.sh --quick    the inner loop: every unit test, without the `slurm` and
#                                   `slow` end-to-end scenarios; no set-up, no lint
#   bash scripts/test.sh [--quick] ARGS...   ARGS go to pytest (a file, -k NAME, -m MARKER, -n 0)
# Times on a 2-core machine are in README ("Quick start").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# Parallel workers: the SLURM scenarios mostly wait for their jobs, so more workers than cores
# keep both cores busy; each worker runs torch on one thread (tests/conftest.py).
WORKERS=${OPMASK_TEST_WORKERS:-4}
# Byte-compile the project once: where the environment sets PYTHONDONTWRITEBYTECODE (CI
# sandboxes do), every process a test starts would otherwise compile it again.
"$PY" -m compileall -q -j 0 opmask launch scripts tests >/dev/null
if [ "${1:-}" = "--quick" ]; then
  shift
  exec "$PY" -m pytest -q -n "${OPMASK_TEST_WORKERS:-2}" --dist worksteal \
    -m "not slurm and not slow" "$@"
fi
bash scripts/setup.sh
need=()
for bin in slurmctld slurmd sinfo slurmdbd munged mariadbd; do
  command -v "$bin" >/dev/null || need+=("$bin")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing SLURM, munge and MariaDB (missing: ${need[*]})"
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client slurmdbd munge mariadb-server >/dev/null
fi
"$PY" -m ruff check .
exec "$PY" -m pytest -q -n "$WORKERS" --dist worksteal "$@"
