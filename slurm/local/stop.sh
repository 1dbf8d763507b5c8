#!/usr/bin/env bash
# Stop the cluster started by start.sh DIR: TERM each daemon, KILL after 10 s. Keeps DIR's logs.
set -u
DIR=$1
alive() { [ -r "/proc/$1/stat" ] && ! grep -q ') Z ' "/proc/$1/stat"; }  # zombies count as gone
pids=()
for f in "$DIR"/slurmd.*.pid "$DIR"/slurmctld.pid "$DIR"/slurmdbd.pid "$DIR"/mariadbd.pid "$DIR"/munged.pid; do
  [ -f "$f" ] && pids+=("$(cat "$f")")
done
for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
for _ in $(seq 100); do
  left=0; for p in "${pids[@]}"; do alive "$p" && left=1; done
  [ $left = 0 ] && break
  sleep 0.1
done
for p in "${pids[@]}"; do alive "$p" && kill -KILL "$p" 2>/dev/null; done
[ -f "$DIR/munge-run-path" ] && rm -rf "$(cat "$DIR/munge-run-path")"
exit 0
