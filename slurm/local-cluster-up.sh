#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine (Debian 12 / SLURM 22.05), as
# root, without systemd: munged, slurmctld and slurmd started by hand, node
# addresses pinned to 127.0.0.1. CI uses it to run a grid through real SLURM;
# a developer can use it the same way to try `executor: {backend: slurm}`.
# Idempotent: on a running cluster it changes nothing, unless the generated
# slurm.conf changed, in which case the two SLURM daemons restart.
#
#   sudo bash slurm/local-cluster-up.sh
#   FAKE_GPUS=2 sudo -E bash slurm/local-cluster-up.sh    # advertise 2 GPUs (device files only)
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "local-cluster-up.sh: run it as root (it installs packages and starts daemons)" >&2; exit 1; }
CONF=/etc/slurm/slurm.conf
JOBCOMP=/var/log/slurm/jobcomp.log
FAKE_GPUS=${FAKE_GPUS:-0}
export DEBIAN_FRONTEND=noninteractive

say() { echo "[local-cluster-up] $*"; }
running() { local pid; pid=$(cat "$1" 2>/dev/null) || return 1; [ -n "$pid" ] && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = "$2" ]; }
stop() { # stop PIDFILE NAME
  running "$1" "$2" || return 0
  local pid i; pid=$(cat "$1"); kill -TERM "$pid"
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null || true
}

# 1. The four packages the cluster needs; the slurm-wlm metapackage would pull
#    43 (hdf5, rrd, ipmi plugins ...), these pull 8 (about 3.5 MB).
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
   || ! command -v munged >/dev/null; then
  say "installing slurmctld slurmd slurm-client munge"
  apt-get update -q
  apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge
fi

# 2. munge. Its package does not start it (no systemd) and leaves /run/munge
#    uncreated; munged refuses to run as root with a key owned by munge.
[ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
running /run/munge/munged.pid munged || { say "starting munged"; runuser -u munge -- /usr/sbin/munged; }
for i in $(seq 50); do munge -n </dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.2; done
munge -n </dev/null | unmunge >/dev/null || { echo "munge does not authenticate; see /var/log/munge/munged.log" >&2; exit 1; }

# 3. slurm.conf for this one node
HOST=$(hostname -s)
CPUS=$(nproc)
MEMORY_MB=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')  # more than slurmd detects drains the node
install -d -m 0755 /etc/slurm
install -d -o slurm -g slurm -m 0755 /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
touch "$JOBCOMP" && chown slurm:slurm "$JOBCOMP"
NODE_GRES=""; GRES_TYPES=""
if [ "$FAKE_GPUS" -gt 0 ]; then
  # slurmd only stat()s these: character devices like /dev/null named nvidiaN
  install -d -m 0755 /run/slurm-fake-gpus
  for i in $(seq 0 $((FAKE_GPUS - 1))); do
    [ -c /run/slurm-fake-gpus/nvidia$i ] || mknod -m 0666 /run/slurm-fake-gpus/nvidia$i c 1 3
  done
  NODE_GRES=" Gres=gpu:$FAKE_GPUS"; GRES_TYPES="GresTypes=gpu"
  printf '# written by local-cluster-up.sh\nAutoDetect=off\nNodeName=%s Name=gpu File=/run/slurm-fake-gpus/nvidia[0-%d]\n' \
    "$HOST" $((FAKE_GPUS - 1)) > /etc/slurm/gres.conf
elif grep -qs '^# written by local-cluster-up.sh' /etc/slurm/gres.conf; then
  rm -f /etc/slurm/gres.conf
fi
WANTED=$(mktemp)
cat > "$WANTED" <<CONF
# written by local-cluster-up.sh
ClusterName=local
SlurmctldHost=${HOST}(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
SlurmUser=slurm
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
MpiDefault=none
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# no slurmdbd: finished jobs are recorded in a text file
JobCompType=jobcomp/filetxt
JobCompLoc=${JOBCOMP}
ReturnToService=2
MailProg=/bin/true
SchedulerType=sched/backfill
# start a job about 1 s after submission (the default waits about 3 s)
SchedulerParameters=batch_sched_delay=0
# a job whose afterok dependency failed is cancelled, not left pending forever
DependencyParameters=kill_invalid_depend
# submitit's job wrapper ignores SIGTERM: SIGKILL 5 s later, not 30
KillWait=5
SelectType=select/cons_tres
# cores only: with memory consumable, a job without --mem takes the whole node
SelectTypeParameters=CR_Core
${GRES_TYPES}
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEMORY_MB}${NODE_GRES} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
if ! cmp -s "$WANTED" "$CONF"; then
  install -m 0644 "$WANTED" "$CONF"
  say "wrote $CONF"
  stop /run/slurmd.pid slurmd
  stop /run/slurmctld.pid slurmctld
fi
rm -f "$WANTED"

# 4. the daemons (slurmctld drops to SlurmUser itself)
running /run/slurmctld.pid slurmctld || { say "starting slurmctld"; /usr/sbin/slurmctld; }
running /run/slurmd.pid slurmd || { say "starting slurmd"; /usr/sbin/slurmd; }

# 5. wait for the node; one drained by an earlier run stays drained until resumed
for i in $(seq 60); do
  case "$(sinfo -h -n "$HOST" -o %T 2>/dev/null || true)" in
    idle|mixed|allocated|completing) break ;;
    down*|drain*|fail*) scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true ;;
  esac
  sleep 0.5
done
case "$(sinfo -h -n "$HOST" -o %T)" in
  idle|mixed|allocated|completing) say "up: node $HOST, $CPUS CPUs, $MEMORY_MB MB, $FAKE_GPUS fake GPUs" ;;
  *) echo "node $HOST is not ready: $(scontrol show node "$HOST" | grep -o 'Reason=.*')" >&2
     tail -n 30 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2; exit 1 ;;
esac
