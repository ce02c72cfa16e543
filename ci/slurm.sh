#!/usr/bin/env bash
# ci/slurm.sh -- the one-node SLURM cluster acme_xr's SLURM tests run against.
#
# Usage (as root, Debian 12): ci/slurm.sh start | stop | status
#   start   install slurmctld/slurmd/slurm-client/munge if missing, write /etc/slurm/slurm.conf,
#           start munged, slurmctld and slurmd, wait until the node is idle. Idempotent: when
#           our daemons already run with this configuration it only says so (exit 0).
#   stop    cancel every job, wait for the queue to drain, stop the daemons this script
#           started (by pid file, never by name).
#   status  exit 0 if the cluster answers and the node takes jobs, else exit 1.
#
# What the tests rely on: node "localhost" with 8 CPUs (more than the machine has, so that
# several one-core worker jobs run at once), partitions "debug" (default) and "small",
# DefMemPerCPU so that a job without --mem does not take the whole node, jobs starting
# ~0.5 s after sbatch, finished jobs listed in $ACME_XR_SLURM_DIR/jobcomp.txt and visible to
# `scontrol show job` for MinJobAge seconds.
#
# Environment: ACME_XR_SLURM_DIR (state, logs, pid files; default /tmp/acme_xr-slurm),
# ACME_XR_SLURM_TIMEOUT (seconds to wait for the node; default 60).
set -euo pipefail

MODE=${1:-}
DIR=${ACME_XR_SLURM_DIR:-/tmp/acme_xr-slurm}
TIMEOUT=${ACME_XR_SLURM_TIMEOUT:-60}
CONF=/etc/slurm/slurm.conf
MARK="# written by acme_xr ci/slurm.sh"
NODE=localhost
CPUS=8

log() { echo "ci/slurm.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# A process counts as running unless it is gone or a zombie: PID 1 in a container may reap
# late, and kill -0 succeeds on a zombie.
running() {
    local st
    st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# pid_of PIDFILE COMM: print the pid if the file names a running process called COMM*
# (a recycled pid belongs to someone else).
pid_of() {
    local pid
    [ -s "$1" ] || return 1
    pid=$(tr -dc '0-9' < "$1")
    [ -n "$pid" ] && running "$pid" || return 1
    case "$(cat "/proc/$pid/comm" 2>/dev/null)" in "$2"*) echo "$pid";; *) return 1;; esac
}

# stop_pids PIDFILE:COMM ...: TERM all, wait up to 15 s, then KILL what is left. The pids are
# read first: slurm daemons remove their own pid file while exiting.
stop_pids() {
    local spec pid pids=() i alive
    for spec in "$@"; do
        if pid=$(pid_of "${spec%%:*}" "${spec##*:}"); then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
        rm -f "${spec%%:*}"
    done
    [ ${#pids[@]} -gt 0 ] || return 0
    for i in $(seq 150); do
        alive=0
        for pid in "${pids[@]}"; do running "$pid" && alive=1; done
        [ $alive = 0 ] && return 0
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        running "$pid" && { log "pid $pid ignored TERM, killing it"; kill -KILL "$pid" 2>/dev/null || true; }
    done
}

install_packages() {
    local missing=()
    for cmd in slurmctld slurmd sbatch; do command -v "$cmd" >/dev/null || missing=(slurmctld slurmd slurm-client); done
    command -v munged >/dev/null || missing+=(munge)
    [ ${#missing[@]} -gt 0 ] || return 0
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

node_state() { sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1; }

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

healthy() {
    pid_of "$DIR/slurmctld.pid" slurmctld >/dev/null || return 1
    pid_of "$DIR/slurmd.pid" slurmd >/dev/null || return 1
    munge_ok || return 1
    case "$(node_state)" in idle*|mixed*|allocated*|completing*) return 0;; esac
    return 1
}

write_conf() {  # write_conf FILE
    local mem_total mem
    mem_total=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    mem=$(( mem_total > 3072 ? mem_total - 2048 : 1024 ))
    cat > "$1" <<EOF
$MARK -- rewritten on every start; change the script, not this file
ClusterName=acme_xr
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
# no cgroups in a container: track processes through /proc, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# advertise CPUs=$CPUS on fewer real cores; without config_overrides the node drains
SlurmdParameters=config_overrides
ReturnToService=2
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmdSpoolDir=$DIR/slurmd
StateSaveLocation=$DIR/ctld
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
SchedulerType=sched/backfill
# start a batch job ~0.5 s after sbatch instead of ~2.5 s
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# a job that gives no --mem would otherwise reserve all of the node's memory
DefMemPerCPU=256
EnforcePartLimits=ALL
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
# sacct needs slurmdbd; one line per finished job is enough for the tests
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.txt
InactiveLimit=0
# finished jobs stay visible to scontrol show job for 5 minutes
MinJobAge=300
KillWait=5
Waittime=0
SlurmdTimeout=300
NodeName=$NODE CPUs=$CPUS RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=small Nodes=$NODE Default=NO MaxTime=01:00:00 State=UP
EOF
    chmod 644 "$1"
}

start_munge() {
    munge_ok && return 0  # a munged that answers is used as it is (and left alone by stop)
    [ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    chmod 755 /run/munge
    rm -f /run/munge/munged.pid /run/munge/munge.socket.2*
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
    local pid="" i
    for i in $(seq 50); do pid=$(pid_of /run/munge/munged.pid munged) && break; sleep 0.1; done
    [ -n "$pid" ] || die "munged did not start (see /var/log/munge/munged.log)"
    echo "$pid" > "$DIR/munged.pid"
    munge_ok || die "munge round trip failed"
}

cancel_jobs() {
    local jobs i
    jobs=$(squeue -h -o %i 2>/dev/null || true)
    [ -n "$jobs" ] || return 0
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null || true
    for i in $(seq 150); do
        [ -z "$(squeue -h -o %i 2>/dev/null)" ] && return 0
        sleep 0.1
    done
    log "jobs still listed after 15 s: $(squeue -h -o %i | paste -sd ' ')"
}

do_stop() {
    if pid_of "$DIR/slurmctld.pid" slurmctld >/dev/null; then cancel_jobs; fi
    stop_pids "$DIR/slurmd.pid:slurmd" "$DIR/slurmctld.pid:slurmctld"
    stop_pids "$DIR/munged.pid:munged"
}

do_start() {
    [ "$(id -u)" = 0 ] || die "start needs root (it installs packages and runs the daemons)"
    install_packages
    mkdir -p "$DIR" /etc/slurm
    local want="$DIR/slurm.conf.new"
    write_conf "$want"
    if healthy && cmp -s "$want" "$CONF"; then
        rm -f "$want"
        echo "OK SLURM already running: node $NODE $(node_state), partitions $(sinfo -h -o %P | paste -sd ,)"
        return 0
    fi
    # someone else's slurmctld on port 6817 would make ours fail in confusing ways
    local ours other
    ours=$(pid_of "$DIR/slurmctld.pid" slurmctld || true)
    for other in $(pgrep -x slurmctld || true); do
        if [ "$other" != "$ours" ] && running "$other"; then
            die "another slurmctld (pid $other) runs on this machine, not started by $0; stop it first"
        fi
    done
    do_stop
    rm -rf "$DIR/ctld" "$DIR/slurmd" "$DIR"/*.log "$DIR/jobcomp.txt"
    mkdir -p "$DIR/ctld" "$DIR/slurmd"
    if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
        cp -a "$CONF" "$CONF.bak-$(date +%s)"
        log "kept the previous $CONF as $CONF.bak-*"
    fi
    mv "$want" "$CONF"
    start_munge
    (cd "$DIR" && slurmctld -c -i) || die "slurmctld did not start, see $DIR/slurmctld.log"
    (cd "$DIR" && slurmd -N "$NODE") || die "slurmd did not start, see $DIR/slurmd.log"
    local t0=$SECONDS st resumed=0
    while :; do
        st=$(node_state)
        case "$st" in
            idle*) break;;
            *drain*|*down*|inval*)
                if [ $resumed = 0 ] && [ $((SECONDS - t0)) -gt 3 ]; then
                    scontrol update nodename="$NODE" state=resume 2>/dev/null || true
                    resumed=1
                fi;;
        esac
        if [ $((SECONDS - t0)) -ge "$TIMEOUT" ]; then
            tail -n 20 "$DIR/slurmctld.log" "$DIR/slurmd.log" >&2 || true
            die "node $NODE not idle after ${TIMEOUT} s (state '$st')"
        fi
        sleep 0.2
    done
    echo "OK SLURM started: node $NODE idle, CPUs=$CPUS, partitions $(sinfo -h -o %P | paste -sd ,), state in $DIR"
}

case "$MODE" in
    start) do_start;;
    stop) do_stop; echo "OK SLURM stopped";;
    status)
        if command -v sinfo >/dev/null && healthy; then
            echo "OK SLURM running: node $NODE $(node_state), partitions $(sinfo -h -o %P | paste -sd ,)"
        else
            echo "SLURM not running (start it with: $0 start)"
            exit 1
        fi;;
    *) echo "usage: $0 start | stop | status" >&2; exit 2;;
esac
