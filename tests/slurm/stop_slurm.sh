#!/usr/bin/env bash
# stop_slurm.sh STATE_DIR -- stop exactly the daemons recorded in STATE_DIR/pids by start_slurm.sh
# (slurmd, slurmctld, munged; reverse start order). Never kills by name. Idempotent.
set -uo pipefail
[[ $# -eq 1 && -d $1 ]] || { echo "usage: $0 STATE_DIR (existing)" >&2; exit 2; }
STATE=$(cd "$1" && pwd -P)
PIDS=$STATE/pids
[[ -s $PIDS ]] || { echo "stop_slurm.sh: nothing recorded in $PIDS"; exit 0; }
rc=0
while read -r name pid; do
  [[ -n ${pid:-} && $pid =~ ^[0-9]+$ ]] || continue
  if ! kill -0 "$pid" 2>/dev/null; then echo "stop_slurm.sh: $name ($pid) not running"; continue; fi
  # guard against PID reuse: the process must still be the recorded daemon
  comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
  if [[ $comm != "$name" ]]; then echo "stop_slurm.sh: pid $pid is '$comm', not $name; leaving it alone"; continue; fi
  kill -TERM "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "stop_slurm.sh: $name ($pid) ignored SIGTERM for 10 s -> SIGKILL"; kill -KILL "$pid" 2>/dev/null || rc=1
  fi
  echo "stop_slurm.sh: stopped $name ($pid)"
done < <(tac "$PIDS")
: > "$PIDS"
# remove the /etc/slurm/slurm.conf symlink start_slurm.sh made, if it still points at our conf
if [[ -s $STATE/etc_link ]]; then
  l=$(cat "$STATE/etc_link")
  if [[ -L $l && $(readlink "$l") == "$STATE/slurm.conf" ]]; then rm -f "$l" && echo "stop_slurm.sh: removed symlink $l"; fi
  rm -f "$STATE/etc_link"
fi
exit $rc
