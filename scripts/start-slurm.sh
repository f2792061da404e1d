#!/usr/bin/env bash
# Starts a single-node Slurm cluster on this machine for the Slurm suites if none answers,
# idempotently: munge for authentication, slurmctld and slurmd on 127.0.0.1, one partition
# "debug" with this machine's cores. A test cluster, not a deployment: see docs/operations.md.
set -euo pipefail
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  echo "Slurm is not installed (apt-get install slurm-wlm munge)" >&2
  exit 1
fi
if sinfo -h >/dev/null 2>&1 && [ -n "$(sinfo -h -o '%t' | grep -E 'idle|mix|alloc' || true)" ]; then exit 0; fi

# Never over a real cluster's configuration: only a file this script wrote is rewritten.
if [ -s /etc/slurm/slurm.conf ] && ! grep -q "^# Written by boxgrid's scripts/start-slurm.sh" /etc/slurm/slurm.conf; then
  echo "/etc/slurm/slurm.conf exists and was not written by this script: not touching a real cluster's Slurm" >&2
  exit 1
fi
HOST="$(hostname -s)"
CPUS="$(nproc)"
MEM_MB="$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))"
CONF=/etc/slurm/slurm.conf

# munge: a key, then the daemon (its socket is what sbatch and the daemons authenticate through).
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
fi
mkdir -p /run/munge && chown munge:munge /run/munge
if ! munge -n >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged --force
  for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.1; done
fi

mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
chown slurm:slurm /var/spool/slurmctld /var/log/slurm 2>/dev/null || true
cat >"$CONF" <<EOF
# Written by boxgrid's scripts/start-slurm.sh: a single-node test cluster.
ClusterName=boxgrid-test
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
# Short cycles: the tests submit and finish jobs in seconds.
SchedulerParameters=sched_interval=2
MinJobAge=30
KillWait=5
InactiveLimit=0
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM_MB} State=UNKNOWN
PartitionName=debug Nodes=${HOST} Default=YES MaxTime=60 State=UP
EOF

pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
pgrep -x slurmd >/dev/null || /usr/sbin/slurmd
for _ in $(seq 120); do
  if sinfo -h -o '%t' 2>/dev/null | grep -qE 'idle|mix|alloc'; then exit 0; fi
  scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
  sleep 0.5
done
echo "Slurm did not come up within 60 s; sinfo says:" >&2
sinfo >&2 || true
tail -20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
