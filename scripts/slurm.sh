#!/usr/bin/env bash
# scripts/slurm.sh — a real single-node Slurm 22.05 (with slurmdbd accounting) for
# development and CI, on a Debian 12 machine WITHOUT systemd, as root.
#
# Usage:  scripts/slurm.sh install|start|stop|status|env
#
#   install  apt-get install slurmctld slurmd slurm-client munge mariadb-server slurmdbd
#            (skipped when already installed; `apt-get update` only when needed).
#   start    idempotent: starts whatever is not running (munged, mariadbd, slurmdbd,
#            slurmctld, slurmd), registers the cluster/account in accounting and waits
#            until the node is idle. A second `start` on a healthy cluster is a no-op.
#            Runs `install` first if the binaries are missing.
#   stop     idempotent: TERM (then KILL) the daemons it started, via their pid files.
#            Running job steps (slurmstepd) are left alone, as on a real cluster.
#   status   state of each daemon + `sinfo`; exit 0 only if everything is up.
#   env      print the `export SLURM_CONF=...` line (same as $BASE/env).
#
# Everything lives under BASE=${LAYERBOT_SLURM_DIR:-/var/tmp/layerbot-slurm}:
#   $BASE/env                    `export SLURM_CONF=$BASE/etc/slurm.conf` (source it)
#   $BASE/etc/slurm.conf         generated; /etc/slurm/slurm.conf is a symlink to it
#   $BASE/etc/slurmdbd.conf      generated, mode 0600 (contains the DB password)
#   $BASE/etc/db.password        0600, generated once
#   $BASE/state/                 StateSaveLocation (job state, next job id)
#   $BASE/spool/                 SlurmdSpoolDir
#   $BASE/mysql/                 MariaDB datadir (accounting database slurm_acct_db)
#   $BASE/log/                   slurmctld.log slurmd.log slurmdbd.log mariadb.log jobcomp.log
#   $BASE/run/                   pid files and the MariaDB socket:
#       $BASE/run/munged.pid     (copy of /run/munge/munged.pid, only if we started munged)
#       $BASE/run/mariadb.pid
#       $BASE/run/slurmdbd.pid
#       $BASE/run/slurmctld.pid
#       $BASE/run/slurmd.pid
#       $BASE/run/mariadb.sock
# Tests may kill a daemon by the pid in its pid file (e.g. slurmctld with SIGKILL);
# `scripts/slurm.sh start` then brings just that daemon back (state and job ids kept).
#
# Environment knobs: LAYERBOT_SLURM_DIR (base dir), LAYERBOT_SLURM_CLUSTER (cluster
# name, default "layerbot"), LAYERBOT_SLURM_DB_PORT (MariaDB TCP port on 127.0.0.1,
# default 16306). Slurm itself uses its default ports 6817 (ctld), 6818 (slurmd),
# 6819 (slurmdbd) on 127.0.0.1.
#
# See docs/slurm.md for what each slurm.conf setting is for and observed behaviour.
set -euo pipefail

BASE=${LAYERBOT_SLURM_DIR:-/var/tmp/layerbot-slurm}
CLUSTER=${LAYERBOT_SLURM_CLUSTER:-layerbot}
DB_PORT=${LAYERBOT_SLURM_DB_PORT:-16306}
ACCOUNT=layerbot

ETC=$BASE/etc
RUN=$BASE/run
LOG=$BASE/log
CONF=$ETC/slurm.conf
DBD_CONF=$ETC/slurmdbd.conf
DB_DIR=$BASE/mysql
DB_SOCK=$RUN/mariadb.sock
NODE=$(hostname -s)

PKGS=(slurmctld slurmd slurm-client munge mariadb-server slurmdbd)
MUNGE_SYS_PID=/run/munge/munged.pid

export SLURM_CONF=$CONF

log() { printf '[slurm.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- helpers
# pid_of PIDFILE -> prints the pid if the process is alive (not a zombie) and its
# command name starts with COMM; returns 1 otherwise. Killed daemons linger as
# zombies here (PID 1 reaps late), so `kill -0` is not enough.
pid_of() {
    local f=$1 comm=${2:-} pid state name
    [[ -r $f ]] || return 1
    pid=$(tr -dc '0-9' 2>/dev/null <"$f" || true)
    [[ -n $pid && -r /proc/$pid/status ]] || return 1
    state=$(awk '/^State:/{print $2; exit}' "/proc/$pid/status" 2>/dev/null || true)
    [[ -n $state && $state != Z && $state != X ]] || return 1
    if [[ -n $comm ]]; then
        name=$(cat "/proc/$pid/comm" 2>/dev/null || true)
        [[ $name == "$comm"* ]] || return 1
    fi
    echo "$pid"
}

# wait_for SECONDS DESCRIPTION CMD... : poll CMD every 0.1 s
wait_for() {
    local secs=$1 what=$2; shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            log "timed out after ${secs}s waiting for: $what"
            return 1
        fi
        sleep 0.1
    done
}

show_log() { [[ -f $1 ]] && { log "--- last lines of $1"; tail -n 25 "$1" >&2; } || true; }

# kill_pidfile PIDFILE COMM NAME: TERM, wait up to 15 s (zombie counts as gone), then KILL
kill_pidfile() {
    local f=$1 comm=$2 name=$3 pid i
    if ! pid=$(pid_of "$f" "$comm"); then
        log "$name: not running"
        rm -f "$f"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        pid_of "$f" "$comm" >/dev/null || break
        sleep 0.1
    done
    if pid_of "$f" "$comm" >/dev/null; then
        log "$name: still alive after 15 s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            pid_of "$f" "$comm" >/dev/null || break
            sleep 0.1
        done
    fi
    rm -f "$f"
    log "$name: stopped (pid $pid)"
}

pkgs_installed() {
    local p s
    for p in "${PKGS[@]}"; do
        s=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
        [[ $s == "install ok installed" ]] || return 1
    done
}

# ---------------------------------------------------------------- install
cmd_install() {
    [[ $(id -u) == 0 ]] || die "must run as root"
    if pkgs_installed; then
        log "packages already installed: ${PKGS[*]}"
    else
        export DEBIAN_FRONTEND=noninteractive
        # `apt-get update` only when the package lists do not know the packages yet.
        if ! apt-cache show "${PKGS[@]}" >/dev/null 2>&1 ||
            ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
            log "apt-get update"
            apt-get update -qq
        fi
        log "apt-get install ${PKGS[*]}"
        if ! apt-get install -y -qq --no-install-recommends "${PKGS[@]}" >"${TMPDIR:-/tmp}/layerbot-slurm-apt.log" 2>&1; then
            log "install failed, retrying after apt-get update"
            apt-get update -qq
            apt-get install -y -qq --no-install-recommends "${PKGS[@]}" ||
                { cat "${TMPDIR:-/tmp}/layerbot-slurm-apt.log" >&2; die "apt-get install failed"; }
        fi
    fi
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating /etc/munge/munge.key"
        mungekey --create --keyfile=/etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
}

# ---------------------------------------------------------------- config
gen_slurm_conf() {
    local cpus mem
    cpus=$(nproc)
    # 90% of total memory (MiB), so slurmd never reports less than configured.
    mem=$(free -m | awk '/^Mem:/{printf "%d", $2 * 0.9}')
    cat <<EOF
# Generated by scripts/slurm.sh — do not edit (regenerated by \`start\`).
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true

StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info

# No cgroups here (no systemd): track processes via /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none

SchedulerType=sched/backfill
SelectType=select/cons_tres
# Memory must be a consumable resource (CR_Core_Memory, not CR_Core) for --mem to be
# enforced at all; jobs without --mem get DefMemPerCPU per allocated CPU.
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=2048
EnforcePartLimits=ALL
DependencyParameters=kill_invalid_depend
ReturnToService=2

# Preemption only by the "high" QOS (created by start); normal jobs never preempt.
PreemptType=preempt/qos
PreemptMode=CANCEL

# Timers: Slurm defaults, except KillWait (SIGTERM -> SIGKILL) shortened for fast tests.
SlurmctldTimeout=120
SlurmdTimeout=300
MessageTimeout=10
InactiveLimit=0
MinJobAge=3600
KillWait=10
OverTimeLimit=0
Waittime=0

# Accounting through slurmdbd (sacct, sacct --json, sacctmgr).
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
AccountingStoreFlags=job_comment,job_script
JobAcctGatherType=jobacct_gather/linux
# Poll every 2 s: MaxRSS for short jobs and prompt memory-limit kills. OverMemoryKill
# kills a step whose RSS exceeds --mem: without cgroups the job ends FAILED, ExitCode 0:9
# (not OUT_OF_MEMORY, which needs task/cgroup) -- see docs/slurm.md.
JobAcctGatherFrequency=task=2
JobAcctGatherParams=OverMemoryKill
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG/jobcomp.log

NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$cpus Sockets=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=$mem Feature=zen2,x86_64 State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=60 State=UP
PartitionName=build Nodes=$NODE Default=NO MaxTime=INFINITE State=UP
# Up to 4 jobs per core: for pipelines of steps that mostly wait (benchmarks/bench_pipeline.py)
# on a machine with few cores.
PartitionName=shared Nodes=$NODE Default=NO MaxTime=60 OverSubscribe=FORCE:4 State=UP
EOF
}

gen_dbd_conf() {
    cat <<EOF
# Generated by scripts/slurm.sh — do not edit (regenerated by \`start\`).
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$(cat "$ETC/db.password")
StorageLoc=slurm_acct_db
EOF
}

# write_if_changed FILE MODE < content ; returns 0 if the file changed
write_if_changed() {
    local f=$1 mode=$2 tmp
    tmp=$(mktemp "$f.XXXXXX")
    cat >"$tmp"
    chmod "$mode" "$tmp"
    if [[ -f $f ]] && cmp -s "$tmp" "$f"; then
        rm -f "$tmp"
        return 1
    fi
    mv -f "$tmp" "$f"
    return 0
}

CONF_CHANGED=0
write_configs() {
    mkdir -p "$ETC" "$RUN" "$LOG" "$BASE/state" "$BASE/spool" "$DB_DIR"
    chmod 0755 "$BASE" "$ETC" "$RUN" "$LOG"
    chmod 0700 "$BASE/state" "$DB_DIR"
    if [[ ! -s $ETC/db.password ]]; then
        (umask 077 && head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$ETC/db.password")
    fi
    chmod 0600 "$ETC/db.password"
    if gen_slurm_conf | write_if_changed "$CONF" 0644; then CONF_CHANGED=1; log "wrote $CONF"; fi
    if gen_dbd_conf | write_if_changed "$DBD_CONF" 0600; then log "wrote $DBD_CONF"; fi
    printf 'export SLURM_CONF=%s\n' "$CONF" | write_if_changed "$BASE/env" 0644 || true
    mkdir -p /etc/slurm
    if [[ -e /etc/slurm/slurm.conf && ! -L /etc/slurm/slurm.conf ]]; then
        log "moving existing /etc/slurm/slurm.conf to /etc/slurm/slurm.conf.layerbot-bak"
        mv -f /etc/slurm/slurm.conf /etc/slurm/slurm.conf.layerbot-bak
    fi
    if [[ $(readlink /etc/slurm/slurm.conf 2>/dev/null || true) != "$CONF" ]]; then
        ln -sfn "$CONF" /etc/slurm/slurm.conf
    fi
}

# ---------------------------------------------------------------- daemons
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    if munge_ok; then
        return 0 # ours or someone else's: either way it works
    fi
    mkdir -p /run/munge
    chown munge:munge /run/munge
    chmod 0755 /run/munge
    log "starting munged"
    # -f: start even if a stale socket is left from a killed munged
    runuser -u munge -- /usr/sbin/munged -f
    wait_for 10 "munge" munge_ok || die "munged did not come up (see /var/log/munge/munged.log)"
    cp -f "$MUNGE_SYS_PID" "$RUN/munged.pid"
}

db_sql() { mariadb --no-defaults -S "$DB_SOCK" -u root -N -B; }
db_ok() { mariadb-admin --no-defaults -S "$DB_SOCK" -u root ping; }

start_mariadb() {
    if pid_of "$RUN/mariadb.pid" mariadbd >/dev/null && db_ok >/dev/null 2>&1; then
        return 0
    fi
    if [[ ! -d $DB_DIR/mysql ]]; then
        log "initialising MariaDB datadir $DB_DIR"
        mariadb-install-db --no-defaults --user=root --datadir="$DB_DIR" \
            --auth-root-authentication-method=socket --skip-test-db \
            >"$LOG/mariadb-install.log" 2>&1 || { show_log "$LOG/mariadb-install.log"; die "mariadb-install-db failed"; }
    fi
    log "starting mariadbd on 127.0.0.1:$DB_PORT"
    rm -f "$DB_SOCK"
    setsid /usr/sbin/mariadbd --no-defaults --user=root --datadir="$DB_DIR" \
        --socket="$DB_SOCK" --pid-file="$RUN/mariadb.pid" \
        --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve \
        --log-error="$LOG/mariadb.log" \
        --innodb-buffer-pool-size=256M --innodb-log-file-size=64M \
        --innodb-lock-wait-timeout=900 --max-allowed-packet=16M \
        </dev/null >>"$LOG/mariadb.out" 2>&1 &
    disown || true
    wait_for 60 "mariadbd" db_ok || { show_log "$LOG/mariadb.log"; die "mariadbd did not come up"; }
    local pw
    pw=$(cat "$ETC/db.password")
    db_sql <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pw';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$pw';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$pw';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$pw';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
EOF
}

dbd_ok() { sacctmgr -n -P show cluster format=cluster; }

start_slurmdbd() {
    if pid_of "$RUN/slurmdbd.pid" slurmdbd >/dev/null; then
        return 0
    fi
    log "starting slurmdbd"
    SLURM_CONF=$CONF /usr/sbin/slurmdbd || { show_log "$LOG/slurmdbd.log"; die "slurmdbd failed to start"; }
    wait_for 60 "slurmdbd" dbd_ok || { show_log "$LOG/slurmdbd.log"; die "slurmdbd did not answer"; }
}

# Cluster, account, user and the "high" QOS in the accounting DB (idempotent).
setup_accounting() {
    local out
    out=$(sacctmgr -n -P show cluster format=cluster)
    if ! grep -qx "$CLUSTER" <<<"$out"; then
        log "registering cluster $CLUSTER in accounting"
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
    if [[ -z $(sacctmgr -n -P show account "$ACCOUNT" format=account) ]]; then
        sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" \
            Description="layerbot builds" Organization=layerbot >/dev/null
    fi
    if [[ -z $(sacctmgr -n -P show qos high format=name) ]]; then
        sacctmgr -i add qos high Priority=1000 Preempt=normal PreemptMode=cancel >/dev/null
    fi
    if ! sacctmgr -n -P show assoc where user=root account="$ACCOUNT" cluster="$CLUSTER" format=user | grep -qx root; then
        sacctmgr -i add user root Account="$ACCOUNT" Cluster="$CLUSTER" >/dev/null
    fi
    sacctmgr -i modify user where name=root cluster="$CLUSTER" set DefaultAccount="$ACCOUNT" QOS=normal,high >/dev/null 2>&1 || true
}

ctld_ok() { scontrol ping 2>/dev/null | grep -q 'is UP'; }

start_slurmctld() {
    if pid_of "$RUN/slurmctld.pid" slurmctld >/dev/null && ctld_ok; then
        return 0
    fi
    if pid_of "$RUN/slurmctld.pid" slurmctld >/dev/null; then
        wait_for 30 "slurmctld ping" ctld_ok && return 0
        die "slurmctld is running but does not answer ping (see $LOG/slurmctld.log)"
    fi
    log "starting slurmctld"
    /usr/sbin/slurmctld -f "$CONF" || { show_log "$LOG/slurmctld.log"; die "slurmctld failed to start"; }
    wait_for 60 "scontrol ping" ctld_ok || { show_log "$LOG/slurmctld.log"; die "slurmctld did not answer ping"; }
}

node_state() { sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n1; }
node_up() {
    local s
    s=$(node_state)
    [[ -n $s && $s != *down* && $s != *unk* && $s != *drain* && $s != *fail* && $s != *not_responding* && $s != *'*'* ]]
}

start_slurmd() {
    if ! pid_of "$RUN/slurmd.pid" slurmd >/dev/null; then
        log "starting slurmd -N $NODE"
        /usr/sbin/slurmd -f "$CONF" -N "$NODE" || { show_log "$LOG/slurmd.log"; die "slurmd failed to start"; }
    fi
    # Wait for slurmd to register; a node left DOWN/DRAIN (e.g. by `scontrol update
    # State=DOWN|DRAIN` or a crash) is resumed.
    local i s
    for ((i = 0; i < 300; i++)); do
        node_up && return 0
        s=$(node_state)
        if ((i >= 20)) && [[ $s == *drain* || $s == down* ]]; then
            log "node state is '$s', resuming it"
            scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
            sleep 1
        fi
        sleep 0.1
    done
    show_log "$LOG/slurmd.log"
    die "node $NODE did not become idle (state '$(node_state)')"
}

all_ok() {
    munge_ok &&
        pid_of "$RUN/mariadb.pid" mariadbd >/dev/null &&
        pid_of "$RUN/slurmdbd.pid" slurmdbd >/dev/null &&
        pid_of "$RUN/slurmctld.pid" slurmctld >/dev/null &&
        pid_of "$RUN/slurmd.pid" slurmd >/dev/null &&
        ctld_ok && node_up
}

# ---------------------------------------------------------------- commands
cmd_start() {
    [[ $(id -u) == 0 ]] || die "must run as root"
    local t0=$SECONDS
    command -v slurmctld >/dev/null && command -v mariadbd >/dev/null && command -v slurmdbd >/dev/null ||
        cmd_install
    write_configs
    if all_ok; then
        if ((CONF_CHANGED)); then
            log "slurm.conf changed while running: restarting slurmctld and slurmd"
            kill_pidfile "$RUN/slurmd.pid" slurmd slurmd
            kill_pidfile "$RUN/slurmctld.pid" slurmctld slurmctld
        else
            log "already running and healthy"
            echo "$BASE/env"
            return 0
        fi
    fi
    start_munge
    start_mariadb
    start_slurmdbd
    setup_accounting
    start_slurmctld
    start_slurmd
    log "Slurm is up in $((SECONDS - t0))s; node $NODE is $(node_state). Use:  source $BASE/env"
    echo "$BASE/env"
}

cmd_stop() {
    kill_pidfile "$RUN/slurmd.pid" slurmd slurmd
    kill_pidfile "$RUN/slurmctld.pid" slurmctld slurmctld
    kill_pidfile "$RUN/slurmdbd.pid" slurmdbd slurmdbd
    kill_pidfile "$RUN/mariadb.pid" mariadbd mariadbd
    if [[ -f $RUN/munged.pid ]]; then
        kill_pidfile "$RUN/munged.pid" munged munged
    elif munge_ok; then
        log "munged: not started by this script, left alone"
    else
        log "munged: not running"
    fi
    local left
    left=$(pgrep -x slurmstepd 2>/dev/null | tr '\n' ' ' || true)
    [[ -z $left ]] || log "note: slurmstepd processes of running jobs left alone: $left"
}

cmd_status() {
    local rc=0 pid name f comm
    printf '%-10s %-8s %-8s %s\n' DAEMON STATE PID PIDFILE
    for name in munged mariadbd slurmdbd slurmctld slurmd; do
        case $name in
        munged) f=$RUN/munged.pid; [[ -f $f ]] || f=$MUNGE_SYS_PID ;;
        mariadbd) f=$RUN/mariadb.pid ;;
        *) f=$RUN/$name.pid ;;
        esac
        comm=$name
        if pid=$(pid_of "$f" "$comm"); then
            printf '%-10s %-8s %-8s %s\n' "$name" running "$pid" "$f"
        else
            printf '%-10s %-8s %-8s %s\n' "$name" DOWN - "$f"
            rc=1
        fi
    done
    if munge_ok; then echo "munge: credential round trip OK"; else echo "munge: FAILED"; rc=1; fi
    if ctld_ok; then scontrol ping; else echo "slurmctld: not answering ping"; rc=1; fi
    if [[ -f $CONF ]]; then
        echo "SLURM_CONF=$CONF  (env file: $BASE/env)"
        sinfo 2>&1 || rc=1
        node_up || { echo "node $NODE is not up: '$(node_state)'"; rc=1; }
    else
        echo "no $CONF: run '$0 start'"
        rc=1
    fi
    return $rc
}

cmd_env() { echo "export SLURM_CONF=$CONF"; }

case ${1:-} in
install) cmd_install ;;
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) cmd_env ;;
*)
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
