#!/usr/bin/env bash
# Starts a Docker engine for the real-engine tests if none answers, idempotently. The flags
# keep it off every network but loopback: no bridge, no iptables rules; tasks run with
# network none anyway.
set -euo pipefail
if docker info >/dev/null 2>&1; then exit 0; fi
log="${TMPDIR:-/tmp}/boxgrid-dockerd.log"
nohup dockerd --bridge=none --iptables=false --ip6tables=false >"$log" 2>&1 &
for _ in $(seq 120); do
  if docker info >/dev/null 2>&1; then exit 0; fi
  sleep 0.5
done
echo "dockerd did not come up within 60 s; its log ($log) ends with:" >&2
tail -20 "$log" >&2
exit 1
