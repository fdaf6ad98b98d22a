#!/usr/bin/env bash
# A PostgreSQL server for tests: start | stop | status.
# Runs as the `postgres` user (initdb refuses root) on a loopback port, with its data under
# ${LAYERBOT_PG_DIR:-/var/tmp/layerbot-pg}. Writes $BASE/env with LAYERBOT_TEST_PG_URL.
set -euo pipefail

BASE=${LAYERBOT_PG_DIR:-/var/tmp/layerbot-pg}
PORT=${LAYERBOT_PG_PORT:-55432}
DATA=$BASE/data
PGBIN=$(dirname "$(readlink -f "$(command -v pg_ctl || echo /usr/lib/postgresql/15/bin/pg_ctl)")")
URL="postgresql+psycopg://layerbot:layerbot@127.0.0.1:$PORT/layerbot"

as_pg() { runuser -u postgres -- "$@"; }

install() {
  if [ ! -x "$PGBIN/pg_ctl" ]; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    PGBIN=/usr/lib/postgresql/15/bin
  fi
}

running() { [ -f "$DATA/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

start() {
  install
  mkdir -p "$BASE" && chown postgres: "$BASE"
  if [ ! -f "$DATA/PG_VERSION" ]; then
    as_pg "$PGBIN/initdb" -D "$DATA" -U postgres -A trust >/dev/null
    # fsync stays on: the store tests and benchmarks measure durable commits.
    echo "listen_addresses = '127.0.0.1'" >> "$DATA/postgresql.conf"
    echo "max_connections = 200" >> "$DATA/postgresql.conf"
  fi
  if ! running; then
    as_pg "$PGBIN/pg_ctl" -D "$DATA" -o "-p $PORT -k $BASE" -l "$BASE/postgres.log" -w start >/dev/null
  fi
  if ! as_pg psql -h "$BASE" -p "$PORT" -U postgres -tAc "SELECT 1 FROM pg_roles WHERE rolname='layerbot'" | grep -q 1; then
    as_pg psql -h "$BASE" -p "$PORT" -U postgres -qc "CREATE ROLE layerbot LOGIN PASSWORD 'layerbot' CREATEDB"
    as_pg psql -h "$BASE" -p "$PORT" -U postgres -qc "CREATE DATABASE layerbot OWNER layerbot"
  fi
  # Dropping a test database WITH (FORCE) must also end an autovacuum worker that happens
  # to be on it; without this role that drop fails now and then.
  as_pg psql -h "$BASE" -p "$PORT" -U postgres -qc "GRANT pg_signal_backend TO layerbot" 2>/dev/null
  echo "export LAYERBOT_TEST_PG_URL='$URL'" > "$BASE/env"
  echo "PostgreSQL running on 127.0.0.1:$PORT; env in $BASE/env"
}

stop() {
  if running; then as_pg "$PGBIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null; fi
  echo "PostgreSQL stopped"
}

status() {
  if running; then echo "PostgreSQL running on 127.0.0.1:$PORT ($URL)"; else echo "PostgreSQL not running"; return 1; fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
