#!/usr/bin/env bash
# Quick-start tests: set up (pip, and Debian's SLURM/munge/MariaDB for the launcher tests, which
# start a real throw-away cluster), then run the whole test suite (CPU only; about 30 minutes on
# 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
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
exec "${PYTHON:-python3}" -m pytest -q "$@"
