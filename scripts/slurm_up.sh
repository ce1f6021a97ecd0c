#!/usr/bin/env bash
# Install and start a single-node SLURM cluster on this machine (Debian slurm-wlm + munge), for
# tests/test_slurm.py and for trying `hydra/launcher=slurm` without a real cluster.
#   sudo scripts/slurm_up.sh        # ~15-30 s the first time (apt), ~1 s when already up
# Idempotent: a cluster that answers `sinfo` with an idle node is left alone; daemons that already
# run are not started twice. Exit status 0 = a node is idle and jobs can be submitted; anything else
# prints why on stderr (CI goes on: tests/test_slurm.py then skips with that reason).
# Needs root (apt-get, /etc/munge, daemons as root). State, spool, pid and logs live in $SLURM_DIR.
set -uo pipefail

SLURM_DIR=${SLURM_DIR:-/var/tmp/runner-slurm}
PARTITION=${SLURM_PARTITION:-debug}
HOST=$(hostname -s)
CONF=/etc/slurm/slurm.conf

say() { echo "slurm_up: $*" >&2; }
die() { say "$*"; exit 1; }

node_idle() { sinfo -h -N -o '%t' 2>/dev/null | grep -Eq '^(idle|mix|alloc)'; }

if command -v sinfo >/dev/null && node_idle; then
  say "already up: $(sinfo -h -o '%P %t %D' | tr '\n' ' ')"
  exit 0
fi

[ "$(id -u)" = 0 ] || die "needs root (apt-get, munge key, daemons)"

# 1. packages (apt-get update once: a fresh machine has no package lists)
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  command -v apt-get >/dev/null || die "no apt-get here: install slurm-wlm and munge by hand"
  say "installing slurm-wlm and munge (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null || die "apt-get install slurm-wlm munge failed"
fi

# 2. munge: a key (1024 random bytes, mode 400, owner munge) and munged running as user munge
mkdir -p /etc/munge /run/munge /var/log/munge /var/lib/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge /etc/munge/munge.key /run/munge /var/log/munge /var/lib/munge
chmod 400 /etc/munge/munge.key
chmod 700 /etc/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  su -s /bin/sh munge -c munged || die "munged did not start (see /var/log/munge/munged.log)"
  sleep 0.5
  munge -n | unmunge >/dev/null 2>&1 || die "munge does not work (see /var/log/munge/munged.log)"
fi

# 3. slurm.conf: one node with this machine's CPUs and most of its memory, one default partition
CPUS=$(nproc)
MEM_MB=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
mkdir -p /etc/slurm "$SLURM_DIR"/{state,spool,log}
cat >"$CONF.new" <<EOF
# written by scripts/slurm_up.sh: a single-node test cluster
ClusterName=runner
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$SLURM_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
if ! cmp -s "$CONF.new" "$CONF"; then
  mv "$CONF.new" "$CONF"
  # a changed config must be read by fresh daemons
  for pid_file in "$SLURM_DIR"/slurmctld.pid "$SLURM_DIR"/slurmd.pid; do
    [ -s "$pid_file" ] && kill "$(cat "$pid_file")" 2>/dev/null && sleep 0.5
  done
else
  rm -f "$CONF.new"
fi

# 4. daemons (a pid file whose process is alive means it runs already)
running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
running "$SLURM_DIR/slurmctld.pid" || slurmctld || die "slurmctld did not start (see $SLURM_DIR/log/slurmctld.log)"
running "$SLURM_DIR/slurmd.pid" || slurmd || die "slurmd did not start (see $SLURM_DIR/log/slurmd.log)"

# 5. wait for the node to come up idle
for _ in $(seq 60); do
  if node_idle; then
    say "up: partition $PARTITION, node $HOST, $CPUS CPUs, ${MEM_MB} MB ($(sinfo -h -N -o '%t'))"
    exit 0
  fi
  # a node left DOWN/DRAIN by an earlier start is put back into service
  scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
  sleep 0.5
done
die "node $HOST did not become idle within 30 s: $(sinfo -h -N -o '%N %t %E' 2>&1 | tr '\n' ' ') (logs in $SLURM_DIR/log)"
