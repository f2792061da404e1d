#!/usr/bin/env bash
# Starts a private PostgreSQL server for the PostgreSQL suites and benchmarks if none answers,
# idempotently. It is a throwaway cluster of its own (not Debian's "main"), owned by the postgres
# user, listening on 127.0.0.1 only, with password-less access for local roles. Never use these
# settings for a real deployment: see docs/operations.md.
#
# The tests find it at BOXGRID_TEST_POSTGRES (default postgres://boxgrid@127.0.0.1:55432/boxgrid).
set -euo pipefail
PORT="${BOXGRID_TEST_POSTGRES_PORT:-55432}"
DATA="${BOXGRID_TEST_POSTGRES_DATA:-/var/tmp/boxgrid-test-postgres}"
BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
if [ -z "$BIN" ]; then echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; fi

as_postgres() { if [ "$(id -un)" = postgres ]; then "$@"; else runuser -u postgres -- "$@"; fi; }

if [ ! -f "$DATA/PG_VERSION" ]; then
  mkdir -p "$DATA"
  chown postgres:postgres "$DATA"
  chmod 700 "$DATA"
  as_postgres "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  # Loopback only, the unix socket inside the data dir; fsync stays on, so the tests and
  # benchmarks see the durability users get.
  {
    echo "listen_addresses = '127.0.0.1'"
    echo "port = $PORT"
    echo "unix_socket_directories = '$DATA'"
    echo "max_connections = 300"
    echo "shared_buffers = 256MB"
  } >>"$DATA/postgresql.conf"
fi
if ! "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
  as_postgres "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 start >/dev/null
fi

psql_admin() { as_postgres "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -qtA "$@"; }
# The role and database the tests use (each made once).
if [ -z "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = 'boxgrid'")" ]; then psql_admin -c "CREATE ROLE boxgrid LOGIN CREATEDB"; fi
if [ -z "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = 'boxgrid'")" ]; then psql_admin -c "CREATE DATABASE boxgrid OWNER boxgrid"; fi
