#!/usr/bin/env bash
# Start a single-node Slurm cluster on this machine (Debian's slurm-wlm + munge), as root.
# Used by .ci/run so the Slurm executor is tested against a real cluster; also handy for users
# who want to try `proveseg run STUDY --executor slurm` on a workstation.
# Idempotent: installs what is missing, (re)writes the config, starts what is not running.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
  echo "slurm-local.sh: needs root (it installs packages and starts daemons)" >&2
  exit 1
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

# munge: the authentication slurm daemons and clients share
mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged

host=$(hostname -s)
cpus=$(nproc)
mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
# cred_expire: a requeued job (preempted, or past its time limit) may start again after 10 s, not the default 120 s
cat > /etc/slurm/slurm.conf.new <<CONF
ClusterName=proveseg-local
SlurmctldHost=${host}
AuthType=auth/munge
AuthInfo=cred_expire=10
JobRequeue=1
SlurmUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=${host} CPUs=${cpus} RealMemory=${mem} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
CONF
changed=0
cmp -s /etc/slurm/slurm.conf.new /etc/slurm/slurm.conf || changed=1
mv /etc/slurm/slurm.conf.new /etc/slurm/slurm.conf

if pgrep -x slurmctld >/dev/null && [ "$changed" = 1 ]; then
  # the controller reads cred_expire only when it starts: restart it (its state, queued and running jobs are kept)
  scontrol shutdown slurmctld
  for _ in $(seq 1 30); do pgrep -x slurmctld >/dev/null || break; sleep 1; done
  slurmctld
  for _ in $(seq 1 30); do scontrol ping >/dev/null 2>&1 && break; sleep 1; done
  scontrol reconfigure >/dev/null 2>&1 || true  # slurmd reads the new config too
fi
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 1 60); do
  if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
    sinfo
    exit 0
  fi
  scontrol update nodename="${host}" state=resume >/dev/null 2>&1 || true
  sleep 1
done
echo "slurm-local.sh: the node did not become idle; see /var/log/slurm/" >&2
sinfo || true
exit 1
