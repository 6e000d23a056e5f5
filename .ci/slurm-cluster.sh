#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for tests/test_slurm.py and by hand.
#
#   .ci/slurm-cluster.sh install        apt-get install slurm-wlm and munge (root)
#   .ci/slurm-cluster.sh start [DIR]    munged + slurmctld + slurmd, wait for the node
#   .ci/slurm-cluster.sh stop [DIR]     stop what start started (by process id)
#
# DIR (default /tmp/partseg-slurm) holds the generated slurm.conf (this machine's host
# name, CPUs and memory), the state, spool and logs, and the daemons' pid files. Use
# the cluster with `export SLURM_CONF=DIR/slurm.conf`; /etc/slurm is left alone. Start
# waits (at most START_TIMEOUT s, default 90) until sinfo shows the node idle and
# stops everything again if it does not come up, printing the daemons' log tails.
set -euo pipefail

ACTION=${1:-}
DIR=${2:-/tmp/partseg-slurm}
TIMEOUT=${START_TIMEOUT:-90}
CONF=$DIR/slurm.conf

say() { echo "slurm-cluster: $*" >&2; }

install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v munged >/dev/null && command -v sbatch >/dev/null; then
        return 0
    fi
    [ "$(id -u)" = 0 ] || { say "installing slurm-wlm and munge needs root"; return 1; }
    command -v apt-get >/dev/null || { say "no apt-get: install slurm-wlm and munge yourself"; return 1; }
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

stop_pid() {  # stop_pid FILE: SIGTERM the process in FILE, then SIGKILL after 20 s
    local file=$1 pid
    [ -f "$file" ] || return 0
    pid=$(cat "$file" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

stop() {
    stop_pid "$DIR/slurmd.pid"
    stop_pid "$DIR/slurmctld.pid"
    stop_pid "$DIR/munged.pid"  # only present when start launched munged itself
    say "stopped ($DIR)"
}

start_munge() {
    mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
    fi
    chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
    chmod 400 /etc/munge/munge.key
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        return 0  # a munged already runs: use it, and leave it running at stop
    fi
    su -s /bin/sh munge -c "/usr/sbin/munged --pid-file=/run/munge/partseg-munged.pid"
    for _ in $(seq 1 20); do
        if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
            cp /run/munge/partseg-munged.pid "$DIR/munged.pid"
            return 0
        fi
        sleep 0.5
    done
    say "munged did not start"
    return 1
}

write_conf() {
    local host cpus mem
    host=$(hostname -s)
    cpus=$(nproc)
    mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
    mkdir -p "$DIR/state" "$DIR/spool"
    cat > "$CONF" <<EOF
# written by partseg's .ci/slurm-cluster.sh: a one-node cluster on $host
ClusterName=partseg
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
KillWait=30
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
    [ "$(id -u)" = 0 ] || { say "starting the daemons needs root"; return 1; }
    command -v slurmctld >/dev/null || { say "slurm-wlm is not installed (run: $0 install)"; return 1; }
    mkdir -p "$DIR"
    stop_pid "$DIR/slurmd.pid"; stop_pid "$DIR/slurmctld.pid"  # leftovers of a killed run
    rm -rf "$DIR/state" "$DIR/spool"
    start_munge
    write_conf
    export SLURM_CONF=$CONF
    /usr/sbin/slurmctld -f "$CONF"
    /usr/sbin/slurmd -f "$CONF"
    local host state=""
    host=$(hostname -s)
    for _ in $(seq 1 "$((TIMEOUT * 2))"); do
        state=$(timeout 10 sinfo -h -n "$host" -o %T 2>/dev/null | head -1 || true)
        case "$state" in
            idle) say "node $host idle; export SLURM_CONF=$CONF"; return 0 ;;
            down*|drain*|unknown*)
                timeout 10 scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true ;;
        esac
        sleep 0.5
    done
    say "node $host not idle after ${TIMEOUT}s (state: ${state:-none}); logs:"
    tail -n 15 "$DIR/slurmctld.log" "$DIR/slurmd.log" >&2 2>/dev/null || true
    stop
    return 1
}

case "$ACTION" in
    install) install ;;
    start) start || { stop >/dev/null 2>&1 || true; exit 1; } ;;
    stop) stop ;;
    *) echo "usage: $0 install | start [DIR] | stop [DIR]" >&2; exit 2 ;;
esac
