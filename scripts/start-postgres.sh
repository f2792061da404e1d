#!/usr/bin/env bash
# Starts a private PostgreSQL server for the PostgreSQL suites if none answers, idempotently.
# It is a throwaway cluster of its own (not Debian's "main"), owned by the postgres user,
# listening on 127.0.0.1 only, with password-less access for the local test role. Never use
# these settings for a real deployment: see docs/operations.md.
#
# Prints nothing on success; the tests find it at BOXGRID_TEST_POSTGRES (default below).
set -euo pipefail
PORT="${BOXGRID_TEST_POSTGRES_PORT:-55432}"
DATA="${BOXGRID_TEST_POSTGRES_DATA:-/var/tmp/boxgrid-test-postgres}"
BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
if [ -z "$BIN" ]; then echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; fi

as_postgres() { if [ "$(id -un)" = postgres ]; then "$@"; else runuser -u postgres -- "$@"; fi; }

if "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then exit 0; fi

if [ ! -f "$DATA/PG_VERSION" ]; then
  mkdir -p "$DATA"
  chown postgres:postgres "$DATA"
  chmod 700 "$DATA"
  as_postgres "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  # Loopback only, no unix socket outside the data dir, settings for a test box (durability
  # is not what these tests measure, but fsync stays on so they measure what users get).
  cat >>"$DATA/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DATA'
max_connections = 300
shared_buffers = 256MB
EOF
fi
as_postgres "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 start >/dev/null
# The role and database the tests use (created once; errors for existing ones are ignored).
as_postgres "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -qtA -c "CREATE ROLE boxgrid LOGIN CREATEDB" 2>/dev/null || true
as_postgres "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -qtA -c "CREATE DATABASE boxgrid OWNER boxgrid" 2>/dev/null || true
