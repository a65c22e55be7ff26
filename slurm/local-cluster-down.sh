#!/usr/bin/env bash
# Stop the cluster local-cluster-up.sh started: cancel every job, then stop
# slurmd, slurmctld and munged by their PID files.
#   sudo bash slurm/local-cluster-down.sh           stop
#   sudo bash slurm/local-cluster-down.sh --purge   also remove the generated config, SLURM's
#                                                   state and logs (packages stay)
set -uo pipefail
[ "$(id -u)" = 0 ] || { echo "local-cluster-down.sh: run it as root" >&2; exit 1; }
say() { echo "[local-cluster-down] $*"; }
running() { local pid; pid=$(cat "$1" 2>/dev/null) || return 1; [ -n "$pid" ] && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = "$2" ]; }
stop() {
  running "$1" "$2" || return 0
  local pid i; pid=$(cat "$1"); say "stopping $2 ($pid)"; kill -TERM "$pid"
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  rm -f "$1"
}
# jobs first: their slurmstepd processes outlive a stopped slurmd
if running /run/slurmctld.pid slurmctld; then
  jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
  if [ -n "${jobs// /}" ]; then
    say "cancelling $jobs"; scancel $jobs 2>/dev/null || true
    for i in $(seq 60); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.5; done
  fi
fi
stop /run/slurmd.pid slurmd
stop /run/slurmctld.pid slurmctld
stop /run/munge/munged.pid munged
if [ "${1:-}" = "--purge" ]; then
  grep -qs '^# written by local-cluster-up.sh' /etc/slurm/slurm.conf && rm -f /etc/slurm/slurm.conf
  grep -qs '^# written by local-cluster-up.sh' /etc/slurm/gres.conf && rm -f /etc/slurm/gres.conf
  rm -rf /run/slurm-fake-gpus /var/lib/slurm/slurmctld/* /var/lib/slurm/slurmd/* /var/log/slurm/*
  say "purged"
fi
