#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for `make test-slurm`.
#
#   .ci/slurm_cluster.sh start   install slurm-wlm + munge from Debian if missing, write a
#                                one-node /etc/slurm/slurm.conf, start munged, slurmctld and
#                                slurmd, wait until the node is idle
#   .ci/slurm_cluster.sh stop    stop exactly the daemons `start` started (by pid), remove
#                                the slurm.conf `start` wrote
#   .ci/slurm_cluster.sh status  what runs, and what this script started
#
# Both are idempotent. On a cluster this script configured, slurmctld starts without the
# state of earlier runs (jobs of a killed run would otherwise keep the node allocated). Without root, or when apt cannot reach the packages, `start` prints
# why, writes the reason to $STATE/unavailable (the SLURM tests then skip with it) and
# exits 0. Any other failure exits non-zero.
#
# Checked facts this relies on (shared/notes/slurm.md): slurm.conf must be at
# /etc/slurm/slurm.conf (the jobstep plugin strips SLURM_CONF from the nested srun);
# MinJobAge >= 120 s so that `squeue --states=all`, the profile's status command, still
# shows finished jobs (sacct cannot work without slurmdbd); munged only accepts key, log and
# socket paths owned by munge or root.
set -euo pipefail

STATE=${WFI_SLURM_STATE:-${TMPDIR:-/tmp}/wfi-slurm-ci-$(id -u)}   # pid files of what we started, marker
CONF=/etc/slurm/slurm.conf
CONF_TAG="# written by roman-wfi-workflow .ci/slurm_cluster.sh"
RUN_DIR=/run/slurm
SPOOL_CTLD=/var/spool/slurmctld
SPOOL_D=/var/spool/slurmd
LOG_DIR=/var/log/slurm
MUNGE_PIDFILE=/run/munge/munged.pid
WAIT_IDLE_SECONDS=${WFI_SLURM_WAIT_IDLE_SECONDS:-60}

say() { printf 'slurm_cluster: %s\n' "$*"; }
die() { printf 'slurm_cluster: ERROR: %s\n' "$*" >&2; exit 1; }

unavailable() {
    # Not an error: this machine cannot host the cluster. Leave the reason for the tests.
    mkdir -p "$STATE" 2>/dev/null || true
    printf '%s\n' "$*" > "$STATE/unavailable" 2>/dev/null || true
    say "SKIPPED: $* (marker: $STATE/unavailable); the SLURM tests will be skipped."
    exit 0
}

alive() {  # alive PID NAME: PID runs and is the program NAME (guards against pid reuse)
    local pid=$1 name=$2
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/comm ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]]
}

pid_from() { [[ -r $1 ]] && tr -dc '0-9' < "$1" || true; }

ours() {  # ours NAME: the pid we recorded for NAME, if that process still runs
    local pid
    pid=$(pid_from "$STATE/$1.pid")
    if [[ -n $pid ]] && alive "$pid" "$1"; then echo "$pid"; fi
}

node_idle() {
    local states
    states=$(timeout 5 sinfo --noheader --Node --format=%T 2>/dev/null) || return 1
    [[ -n $states ]] && ! grep -qv '^idle$' <<<"$states"
}

node_up() {  # some node can run jobs (a shared cluster's nodes may all be busy)
    timeout 5 sinfo --noheader --Node --format=%T 2>/dev/null | grep -Eq '^(idle|mixed|allocated|completing)'
}

install_packages() {
    local missing=()
    command -v munged >/dev/null || missing+=(munge)
    for binary in slurmctld slurmd sbatch; do
        command -v "$binary" >/dev/null || { missing+=(slurm-wlm); break; }
    done
    ((${#missing[@]})) || return 0
    say "installing ${missing[*]} from Debian"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        || unavailable "apt-get update failed: Debian's packages are not reachable"
    apt-cache show slurm-wlm munge >/dev/null 2>&1 \
        || unavailable "apt cannot find slurm-wlm and munge"
    # Packages must not start daemons behind our back: only what we start is ours to stop.
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && added_policy=1
    fi
    local status=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurm-wlm munge >"$STATE/apt.log" 2>&1 || status=$?
    ((added_policy)) && rm -f "$policy"
    if ((status)); then
        tail -n 20 "$STATE/apt.log" >&2
        unavailable "apt-get install slurm-wlm munge failed (exit $status, see $STATE/apt.log)"
    fi
}

setup_munge() {
    install -d -o munge -g munge -m 0700 /etc/munge /var/log/munge
    install -d -o munge -g munge -m 0711 /var/lib/munge
    install -d -o munge -g munge -m 0755 /run/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        say "creating /etc/munge/munge.key"
        (umask 077; dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none)
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        [[ -n $(ours munged) ]] && say "munged already running (ours, pid $(ours munged))" \
            || say "munged already running (not started by this script: left alone)"
        return 0
    fi
    setup_munge
    rm -f "$MUNGE_PIDFILE"
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do
        [[ -s $MUNGE_PIDFILE ]] && break
        sleep 0.1
    done
    local pid
    pid=$(pid_from "$MUNGE_PIDFILE")
    alive "$pid" munged || die "munged did not start (see /var/log/munge/munged.log)"
    echo "$pid" > "$STATE/munged.pid"
    munge -n | unmunge >/dev/null || die "munged runs (pid $pid) but a credential does not round-trip"
    say "munged started (pid $pid)"
}

write_conf() {
    if [[ -e $CONF ]] && ! grep -qF "$CONF_TAG" "$CONF"; then
        say "$CONF exists and was not written by this script: using it as it is"
        return 0
    fi
    local node host
    node=$(slurmd -C | head -n 1)                       # NodeName=<host> CPUs=... RealMemory=...
    [[ $node == NodeName=* ]] || die "unexpected 'slurmd -C' output: $node"
    host=${node%% *}; host=${host#NodeName=}
    node="$node NodeAddr=127.0.0.1 State=UNKNOWN"
    install -d -m 0755 /etc/slurm
    local new
    new=$(cat <<EOF
$CONF_TAG
# One node, no accounting. Must live at /etc/slurm/slurm.conf (see the script's header).
ClusterName=wfici
SlurmctldHost=$host(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
# Finished jobs stay visible to 'squeue --states=all' (the profile's status command) for
# 2 h: the SLURM tests check every job of runs that take several minutes.
MinJobAge=7200
KillWait=5
InactiveLimit=0
Waittime=0
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
StateSaveLocation=$SPOOL_CTLD
SlurmdSpoolDir=$SPOOL_D
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
$node
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
)
    if [[ ! -e $CONF ]] || [[ $(cat "$CONF") != "$new" ]]; then
        printf '%s\n' "$new" > "$CONF"
        chmod 0644 "$CONF"
        say "wrote $CONF ($node)"
    fi
}

conf_value() {  # conf_value KEY: a key's value from slurm.conf
    sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*\([^[:space:]#]*\).*/\1/Ip" "$CONF" | tail -n 1
}

start_daemon() {  # start_daemon NAME PIDFILE ARGS...
    local name=$1 pidfile=$2
    shift 2
    local pid
    pid=$(pid_from "$pidfile")
    if [[ -n $pid ]] && alive "$pid" "$name"; then
        [[ $(ours "$name") == "$pid" ]] && say "$name already running (ours, pid $pid)" \
            || say "$name already running (pid $pid, not started by this script: left alone)"
        return 0
    fi
    rm -f "$pidfile"
    "/usr/sbin/$name" "$@"                              # daemonizes, writes its pid file
    for _ in $(seq 100); do
        [[ -s $pidfile ]] && break
        sleep 0.1
    done
    pid=$(pid_from "$pidfile")
    alive "$pid" "$name" || die "$name did not start (see $LOG_DIR/$name.log)"
    echo "$pid" > "$STATE/$name.pid"
    say "$name started (pid $pid)"
}

start() {
    mkdir -p "$STATE" 2>/dev/null || true
    rm -f "$STATE/unavailable" 2>/dev/null || true
    if ((EUID != 0)); then
        if command -v sinfo >/dev/null && node_up; then
            say "not root, but a SLURM cluster answers: the tests will use it as it is"
            exit 0
        fi
        unavailable "not root: cannot install or start SLURM on this machine"
    fi
    mkdir -p "$STATE"
    install_packages
    start_munge
    write_conf
    install -d -o slurm -g slurm -m 0755 "$RUN_DIR" "$SPOOL_CTLD" "$LOG_DIR"
    install -d -o root -g root -m 0755 "$SPOOL_D"
    local ctld_pidfile d_pidfile
    ctld_pidfile=$(conf_value SlurmctldPidFile); ctld_pidfile=${ctld_pidfile:-/run/slurmctld.pid}
    d_pidfile=$(conf_value SlurmdPidFile); d_pidfile=${d_pidfile:-/run/slurmd.pid}
    # A run killed with its daemons (a machine restarted mid-test) leaves its jobs in the saved
    # state; recovered, they hold the node allocated forever. The cluster we configured is
    # ours alone: start it without the previous state.
    local fresh_state=()
    grep -qF "$CONF_TAG" "$CONF" && fresh_state=(-c)
    start_daemon slurmctld "$ctld_pidfile" "${fresh_state[@]}"
    start_daemon slurmd "$d_pidfile"
    local waited=0
    until node_idle; do
        ((waited < WAIT_IDLE_SECONDS * 10)) || {
            sinfo -N -l >&2 || true
            tail -n 20 "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" >&2 || true
            die "the node is not idle after ${WAIT_IDLE_SECONDS}s"
        }
        sleep 0.1
        waited=$((waited + 1))
    done
    say "cluster up: $(sinfo --noheader --Node --format='%N %T cpus=%c mem=%m' | head -n 1)"
}

stop_one() {  # stop_one NAME: TERM the process we recorded, KILL it after 20 s
    local name=$1 pid
    pid=$(pid_from "$STATE/$name.pid")
    [[ -n $pid ]] || return 0
    if alive "$pid" "$name"; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 200); do
            alive "$pid" "$name" || break
            sleep 0.1
        done
        if alive "$pid" "$name"; then
            say "$name (pid $pid) ignored SIGTERM for 20 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        say "$name stopped (pid $pid)"
    else
        say "$name (pid $pid) was no longer running"
    fi
    rm -f "$STATE/$name.pid"
}

stop() {
    [[ -d $STATE ]] || { say "nothing to stop"; return 0; }
    # Jobs still in the queue would only be orphaned: cancel them first (best effort).
    if [[ -n $(ours slurmctld) ]]; then
        timeout 10 scancel --user="$(id -un)" 2>/dev/null || true
    fi
    compgen -G "$STATE/*.pid" >/dev/null || say "nothing started by this script is running"
    stop_one slurmd
    stop_one slurmctld
    stop_one munged
    rm -f "$STATE/unavailable"
    # Left behind, our slurm.conf names a controller that no longer runs: every scontrol call
    # (Snakemake's SLURM plugin makes one at each start, even for local runs) would wait 9 s.
    if [[ -e $CONF ]] && [[ $(head -n 1 "$CONF") == "$CONF_TAG" ]]; then
        rm -f "$CONF"
        say "removed $CONF"
    fi
}

status() {
    for name in munged slurmctld slurmd; do
        local pid
        pid=$(ours "$name")
        if [[ -n $pid ]]; then echo "$name: running, started by this script (pid $pid)"
        else echo "$name: not started by this script"; fi
    done
    [[ -e $STATE/unavailable ]] && echo "unavailable: $(cat "$STATE/unavailable")"
    command -v sinfo >/dev/null && timeout 5 sinfo -N 2>&1 || true
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
