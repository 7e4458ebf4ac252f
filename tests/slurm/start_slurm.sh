#!/usr/bin/env bash
# start_slurm.sh STATE_DIR -- a single-node Slurm for the integration tests (tests/workflow/test_slurm.py).
# Debian's slurm-wlm (22.05 on Debian 12) and munge, installed with apt-get when missing, started by
# root without systemd or cgroups, no accounting database (so Snakemake's profile must use
# `slurm-status-command: squeue`). Two partitions on the one node: `cpu` (the default) and `gpu`;
# the node has SLURMRIG_GPUS fake GPUs (character devices with NVIDIA's major number, which Slurm
# schedules and hands out through CUDA_VISIBLE_DEVICES; CUDA sees none).
# Everything (munge key/socket, conf, spool, logs, pid files, device nodes) lives under STATE_DIR;
# the only thing outside is a symlink /etc/slurm/slurm.conf -> STATE_DIR/slurm.conf (needed by the
# jobstep's nested srun, see below; SLURMRIG_ETC_LINK=0 disables it), removed by stop_slurm.sh.
# The daemons' PIDs are recorded in STATE_DIR/pids; stop_slurm.sh stops exactly those.
# Idempotent: if the recorded daemons are alive and the node is idle, it just says so.
# Clients:  export SLURM_CONF=STATE_DIR/slurm.conf   (or: source STATE_DIR/env.sh)
# Optional env: SLURMRIG_CPUS (default 2), SLURMRIG_GPUS (default 2), SLURMRIG_CTLD_PORT (6817),
#               SLURMRIG_SLURMD_PORT (6818), SLURMRIG_WAIT (seconds to wait for idle, default 60)
# Exit status: 0 up; 2 this machine cannot (not root, no apt-get, packages not installable);
#              1 the daemons failed to start (logs in STATE_DIR/log).
set -euo pipefail

cannot() { echo "start_slurm.sh: CANNOT: $*" >&2; exit 2; }
die() {
  echo "start_slurm.sh: ERROR: $*" >&2
  local f; for f in "${STATE:-/nonexistent}"/log/*.log; do  # surface the last fatal line of any daemon log
    [[ -f $f ]] && grep -hE "fatal|Error:" "$f" | tail -n 1 | sed "s|^|start_slurm.sh:   $(basename "$f"): |" >&2 || true
  done; exit 1
}
log() { echo "start_slurm.sh: $*"; }

[[ $# -eq 1 && -n $1 ]] || die "usage: $0 STATE_DIR"
[[ $(id -u) -eq 0 ]] || cannot "must run as root (apt-get, mknod, slurmd)"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$1"
STATE=$(cd "$1" && pwd -P)
CONF=$STATE/slurm.conf
PIDS=$STATE/pids
HOST=$(hostname -s)
NCPU=${SLURMRIG_CPUS:-2}
NGPU=${SLURMRIG_GPUS:-2}
CTLD_PORT=${SLURMRIG_CTLD_PORT:-6817}
SLURMD_PORT=${SLURMRIG_SLURMD_PORT:-6818}
WAIT=${SLURMRIG_WAIT:-60}
MUNGE_SOCK=$STATE/munge/munge.socket.2
export SLURM_CONF=$CONF
T0=$(date +%s.%N)

node_state() { timeout 10 sinfo -h -n "$HOST" -o %T 2>/dev/null | head -1 || true; }

# ---------- idempotency ----------
if [[ -s $PIDS ]]; then
  alive=0; total=0
  while read -r name pid; do
    [[ -n ${pid:-} ]] || continue
    total=$((total + 1)); kill -0 "$pid" 2>/dev/null && alive=$((alive + 1))
  done < "$PIDS"
  if [[ $total -eq 3 && $alive -eq 3 && $(node_state) == idle* ]]; then
    log "already running (pids: $(awk '{printf "%s=%s ", $1, $2}' "$PIDS")); node $HOST idle"
    log "export SLURM_CONF=$CONF"
    exit 0
  fi
  log "stale/partial previous start ($alive/$total recorded daemons alive) -> stopping it first"
  "$HERE/stop_slurm.sh" "$STATE" || true
fi
: > "$PIDS"

# On any failure from here: stop what we started (logs are kept), print where to look.
started=0
on_exit() {
  rc=$?
  if [[ $rc -ne 0 && $started -eq 1 ]]; then
    echo "start_slurm.sh: FAILED (rc=$rc); logs in $STATE/log; stopping daemons started so far" >&2
    for f in "$STATE"/log/*.log; do [[ -f $f ]] && { echo "--- tail $f" >&2; tail -n 15 "$f" >&2; }; done
    "$HERE/stop_slurm.sh" "$STATE" >&2 || true
  fi
}
trap on_exit EXIT

# ---------- packages ----------
need_pkgs() { for b in /usr/sbin/slurmctld /usr/sbin/slurmd /usr/sbin/munged /usr/bin/sinfo /usr/bin/munge; do [[ -x $b ]] || return 0; done; return 1; }
if need_pkgs; then
  command -v apt-get >/dev/null || cannot "slurm-wlm/munge missing and no apt-get to install them"
  export DEBIAN_FRONTEND=noninteractive
  log "installing slurm-wlm munge ..."
  if ! apt-get install -y -qq --no-install-recommends slurm-wlm munge >"$STATE/apt.log" 2>&1; then
    log "apt-get install failed, running apt-get update once and retrying"
    apt-get update -qq >>"$STATE/apt.log" 2>&1 || cannot "apt-get update failed (see $STATE/apt.log)"
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >>"$STATE/apt.log" 2>&1 \
      || cannot "apt-get install slurm-wlm munge failed (see $STATE/apt.log)"
  fi
  need_pkgs && die "slurm-wlm/munge installed but binaries missing"
fi

# ---------- directories ----------
mkdir -p "$STATE/munge" "$STATE/log" "$STATE/ctld" "$STATE/slurmd" "$STATE/run" "$STATE/dev"
chmod 755 "$STATE/munge"

# ---------- fake GPUs: character devices mimicking /dev/nvidia0.. (major 195) ----------
for ((i = 0; i < NGPU; i++)); do
  d=$STATE/dev/nvidia$i
  if [[ ! -c $d ]]; then
    rm -f "$d"
    mknod -m 666 "$d" c 195 "$i" || cannot "mknod $d failed (no CAP_MKNOD, or a nodev filesystem: choose another STATE_DIR)"
  fi
done

# ---------- munge (own key/socket/pid/log; runs as root so STATE_DIR may be anywhere) ----------
if [[ ! -s $STATE/munge/munge.key ]]; then
  if command -v mungekey >/dev/null; then mungekey --create --keyfile="$STATE/munge/munge.key" --force
  else dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none; fi
fi
chown root:root "$STATE/munge/munge.key"; chmod 400 "$STATE/munge/munge.key"
rm -f "$MUNGE_SOCK" "$MUNGE_SOCK.lock" "$STATE/run/munged.pid"
started=1
/usr/sbin/munged --force --socket="$MUNGE_SOCK" --key-file="$STATE/munge/munge.key" \
  --pid-file="$STATE/run/munged.pid" --log-file="$STATE/log/munged.log" \
  --seed-file="$STATE/munge/munged.seed" || die "munged failed to start (see $STATE/log/munged.log)"
for _ in $(seq 50); do [[ -s $STATE/run/munged.pid && -S $MUNGE_SOCK ]] && break; sleep 0.1; done
[[ -s $STATE/run/munged.pid ]] || die "munged wrote no pid file"
echo "munged $(cat "$STATE/run/munged.pid")" >> "$PIDS"
munge -S "$MUNGE_SOCK" -n | unmunge -S "$MUNGE_SOCK" >/dev/null || die "munge self-test failed"

# ---------- slurm.conf / gres.conf ----------
MEM=$(/usr/sbin/slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -1)
[[ -n $MEM ]] || MEM=$(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo)
cat > "$CONF" <<CONF
# generated by start_slurm.sh for $STATE
ClusterName=slurmrig
SlurmctldHost=${HOST}(127.0.0.1)
SlurmctldPort=${CTLD_PORT}
SlurmdPort=${SLURMD_PORT}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=${MUNGE_SOCK}
SlurmUser=root
SlurmdUser=root
StateSaveLocation=${STATE}/ctld
SlurmdSpoolDir=${STATE}/slurmd
SlurmctldPidFile=${STATE}/run/slurmctld.pid
SlurmdPidFile=${STATE}/run/slurmd.pid
SlurmctldLogFile=${STATE}/log/slurmctld.log
SlurmdLogFile=${STATE}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
DefMemPerCPU=500
ReturnToService=2
MinJobAge=300
GresTypes=gpu
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${NCPU} RealMemory=${MEM} Gres=gpu:${NGPU} State=UNKNOWN
PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=ALL Default=NO MaxTime=INFINITE State=UP
CONF
echo "NodeName=${HOST} Name=gpu File=${STATE}/dev/nvidia[0-$((NGPU - 1))]" > "$STATE/gres.conf"
cat > "$STATE/env.sh" <<ENV
export SLURM_CONF=${CONF}
ENV

# ---------- slurmctld, slurmd (daemonize; PIDs from their pid files) ----------
start_daemon() {  # name binary args...
  local name=$1; shift
  local pidf=$STATE/run/$name.pid
  rm -f "$pidf"
  "$@" || die "$name failed to start (see $STATE/log/$name.log)"
  for _ in $(seq 100); do [[ -s $pidf ]] && break; sleep 0.1; done
  [[ -s $pidf ]] || die "$name wrote no pid file $pidf (see $STATE/log/$name.log)"
  local pid; pid=$(cat "$pidf")
  echo "$name $pid" >> "$PIDS"
  sleep 0.5
  kill -0 "$pid" 2>/dev/null || die "$name (pid $pid) died right after start (see $STATE/log/$name.log)"
}
start_daemon slurmctld /usr/sbin/slurmctld -f "$CONF" -i
deadline=$(( $(date +%s) + WAIT ))
until timeout 5 scontrol ping 2>/dev/null | grep -q 'is UP'; do
  kill -0 "$(awk '$1=="slurmctld"{print $2}' "$PIDS")" 2>/dev/null || die "slurmctld died during startup (see $STATE/log/slurmctld.log)"
  [[ $(date +%s) -lt $deadline ]] || die "slurmctld not answering 'scontrol ping' after ${WAIT}s (port ${CTLD_PORT} taken by another slurmctld? see $STATE/log/slurmctld.log)"
  sleep 0.25
done
SLURMD_T0=$(date +%Y-%m-%dT%H:%M:%S)
start_daemon slurmd /usr/sbin/slurmd -f "$CONF"

# ---------- wait for idle ----------
deadline=$(( $(date +%s) + WAIT )); st=
while :; do
  st=$(node_state)
  # idle AND registered by *this* slurmd (slurmctld -i may restore a stale IDLE from its state file)
  reg=$(timeout 10 scontrol show node "$HOST" 2>/dev/null | sed -n 's/.*SlurmdStartTime=\([^ ]*\).*/\1/p')
  [[ $st == idle* && $reg != None && ! $reg < $SLURMD_T0 ]] && break
  while read -r name pid; do kill -0 "$pid" 2>/dev/null || die "$name (pid $pid) died (see $STATE/log/$name.log)"; done < "$PIDS"
  case $st in drain*|inval*|down*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;; esac
  [[ $(date +%s) -lt $deadline ]] || die "node $HOST not idle after ${WAIT}s (state '${st}'; reason: $(scontrol show node "$HOST" 2>/dev/null | grep -o 'Reason=.*' || echo none))"
  sleep 0.5
done
# ---------- /etc/slurm/slurm.conf -> STATE symlink ----------
# snakemake-executor-plugin-slurm-jobstep 0.6.1 runs every SMP job as a nested `srun` with ALL
# SLURM_* variables except job ids removed from its environment -- SLURM_CONF included. That srun
# then only finds the default /etc/slurm/slurm.conf (else: "fetch_config: DNS SRV lookup failed",
# job FAILED). So link the default path to our conf unless a real (foreign) file is there.
# Done only after a successful start, so a failed second rig never steals it. One rig per host.
ETC=/etc/slurm/slurm.conf
if [[ ${SLURMRIG_ETC_LINK:-1} == 1 ]]; then
  mkdir -p /etc/slurm
  if [[ -L $ETC || ! -e $ETC ]]; then
    ln -sfn "$CONF" "$ETC" && echo "$ETC" > "$STATE/etc_link"
  else
    log "WARNING: $ETC is a real file (another Slurm?); left alone. Nested srun in Snakemake jobs will use it, not $CONF"
  fi
fi

started=0
log "Slurm up in $(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s: node $HOST $st, CPUs=$NCPU RealMemory=${MEM} Gres=gpu:${NGPU}"
log "pids: $(awk '{printf "%s=%s ", $1, $2}' "$PIDS")"
log "export SLURM_CONF=$CONF"
sinfo -o '%P %a %D %T %c %m %G %N'
