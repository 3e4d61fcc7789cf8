#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, to try (and test) workflow/profiles/slurm without a real cluster.
#
#   sudo workflow/profiles/slurm/local_cluster.sh start    # installs Debian's SLURM + munge if missing, starts them
#   sudo workflow/profiles/slurm/local_cluster.sh status   # daemons, sinfo
#   sudo workflow/profiles/slurm/local_cluster.sh stop     # stops only the daemons this script started
#
# Needs root and apt-get (Debian/Ubuntu). Everything it writes lives under $MEDIAR3D_SLURM_DIR
# (default /var/tmp/mediar3d-slurm): slurm.conf, state, spool, pid files and the daemons' logs. The
# clients (sbatch, squeue, ...) find the config through /etc/slurm/slurm.conf, which the script
# writes only when it is absent or its own (first line "# mediar3d local_cluster.sh"), so a real
# cluster's config is never touched: the script refuses to start there.
# No accounting daemon (slurmdbd): `sacct` answers "accounting storage is disabled", so the Snakemake
# SLURM executor must query job states with squeue (--slurm-status-command squeue; README).
# start and stop are idempotent: a running daemon is left running, a stopped one is not an error.
set -euo pipefail

DIR=${MEDIAR3D_SLURM_DIR:-/var/tmp/mediar3d-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# mediar3d local_cluster.sh"
PARTITION=${MEDIAR3D_SLURM_PARTITION:-debug}
PACKAGES=(slurmctld slurmd slurm-client munge)

die() { echo "local_cluster.sh: $*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts daemons)"; }

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

install_packages() {
    local missing=()
    for p in "${PACKAGES[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return
    command -v apt-get >/dev/null || die "apt-get not found: install ${missing[*]} yourself"
    echo "installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    # policy-rc.d 101: the packages' postinst must not start daemons with the distribution's config
    local policy=/usr/sbin/policy-rc.d own_policy=0
    if [ ! -e $policy ]; then printf '#!/bin/sh\nexit 101\n' > $policy; chmod +x $policy; own_policy=1; fi
    { apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$DIR/apt.log" 2>&1 || { apt-get update -qq >>"$DIR/apt.log" 2>&1 &&
      apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$DIR/apt.log" 2>&1; }; } || { [ $own_policy = 1 ] && rm -f $policy;
      die "apt-get install failed, see $DIR/apt.log"; }
    [ $own_policy = 1 ] && rm -f $policy
    return 0
}

write_config() {
    if [ -e "$CONF" ] && [[ "$(head -n1 "$CONF")" != "$MARK"* ]]; then
        die "$CONF exists and is not this script's: a SLURM cluster is configured here already"
    fi
    local host node
    host=$(hostname -s)
    # the node's real CPUs, sockets, cores, threads and memory (MB) as slurmd detects them
    node=$(slurmd -C | head -n1 | sed "s/^NodeName=[^ ]*/NodeName=$host/")
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log" "$(dirname "$CONF")"
    cat > "$DIR/slurm.conf" <<EOF
$MARK: a one-node cluster for trying workflow/profiles/slurm
ClusterName=mediar3d
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
MinJobAge=300
# a client whose controller is down gives up after ~2 s, not 9: the SLURM executor plugin runs
# 'scontrol show config' whenever Snakemake starts on a machine with SLURM installed
MessageTimeout=3
SchedulerParameters=sched_interval=2
MpiDefault=none
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    cp "$DIR/slurm.conf" "$CONF"
}

start_munge() {
    if alive "$DIR/munged.pid"; then return; fi
    if pgrep -x munged >/dev/null; then echo "munged already runs (not started by this script): using it"; return; fi
    [ -s /etc/munge/munge.key ] || { mungekey --create --keyfile /etc/munge/munge.key 2>/dev/null ||
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none; }
    chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
    mkdir -p /run/munge; chown munge:munge /run/munge; chmod 0755 /run/munge
    touch "$DIR/log/munged.log"; chown munge "$DIR/log/munged.log"
    runuser -u munge -- /usr/sbin/munged --log-file="$DIR/log/munged.log" --pid-file=/run/munge/munged.pid
    for _ in $(seq 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
    cp /run/munge/munged.pid "$DIR/munged.pid"
}

start_daemon() {  # name
    local name=$1
    if alive "$DIR/$name.pid"; then return; fi
    "/usr/sbin/$name" -f "$CONF"
    for _ in $(seq 100); do alive "$DIR/$name.pid" && return; sleep 0.1; done
    die "$name did not start, see $DIR/log/$name.log"
}

wait_idle() {
    local host; host=$(hostname -s)
    for _ in $(seq 150); do
        state=$(sinfo -h -n "$host" -o %t 2>/dev/null || true)
        case "$state" in idle*|mix*|alloc*) return ;; down*|drain*) scontrol update nodename="$host" state=resume 2>/dev/null || true ;; esac
        sleep 0.2
    done
    die "node $host is not idle (state '${state:-?}'), see $DIR/log/slurmd.log and $DIR/log/slurmctld.log"
}

cmd_start() {
    need_root
    mkdir -p "$DIR/log"
    install_packages
    write_config
    start_munge
    start_daemon slurmctld
    start_daemon slurmd
    wait_idle
    echo "SLURM $(sinfo -V | awk '{print $2}') one-node cluster up: partition '$PARTITION' on $(hostname -s)"
    echo "config $CONF, logs $DIR/log/ (slurmctld.log, slurmd.log, munged.log)"
}

stop_pid() {  # pid file
    alive "$1" || { rm -f "$1"; return 0; }
    local pid; pid=$(cat "$1")
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    rm -f "$1"
}

cmd_stop() {
    need_root
    # running jobs end with the daemons; pending ones are forgotten with the state
    command -v scancel >/dev/null && alive "$DIR/slurmctld.pid" && scancel --full --quiet --user=root 2>/dev/null || true
    stop_pid "$DIR/slurmd.pid"
    stop_pid "$DIR/slurmctld.pid"
    stop_pid "$DIR/munged.pid"
    echo "stopped; logs stay in $DIR/log/"
}

cmd_status() {
    local rc=0
    for d in munged slurmctld slurmd; do
        if alive "$DIR/$d.pid"; then echo "$d: running (pid $(cat "$DIR/$d.pid"))"; else echo "$d: not running"; rc=3; fi
    done
    [ $rc = 0 ] && sinfo
    echo "logs: $DIR/log/"
    return $rc
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    restart) cmd_stop; cmd_start ;;
    *) echo "usage: $0 start|stop|status|restart" >&2; exit 2 ;;
esac
