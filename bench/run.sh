#!/usr/bin/env bash
# Load benchmark: a release wagate on a temp data dir and a no-op tonic
# server with the same API, driven over loopback by h2load and a tonic
# client in one run. Arguments filter workloads by name (e.g. "inbound").
# `bench/run.sh --scale` runs the scale benchmark instead (1M windows,
# 10k templates, startup, RSS, a 1M-window sweep under load).
# `bench/run.sh --store-ceiling` measures how fast sled alone commits
# RecordInbound's transaction, with durability off.
# `bench/run.sh --phone-parse` measures parsing a phone number against a
# GetWindow call in the same run.
# `bench/run.sh --backend postgres` runs the load against 1 and 3 replicas
# on one PostgreSQL, beside the same SQL through pgbench and a no-op server.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v h2load >/dev/null; then
    echo "installing h2load (Debian nghttp2-client)" >&2
    apt-get update -qq && apt-get install -y -qq nghttp2-client >/dev/null
fi
if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
    echo "installing Redis (Debian redis-server), the durable-write anchor" >&2
    apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
fi
if [ "${1:-}" = "--store-ceiling" ]; then
    exec cargo bench --locked --bench store_ceiling
fi
if [ "${1:-}" = "--phone-parse" ]; then
    exec cargo bench --locked --bench phone_parse
fi
if [ "${1:-}" = "--backend" ] && [ "${2:-}" = "postgres" ]; then
    shift 2
    if ! command -v pg_config >/dev/null || [ ! -x "$(pg_config --bindir)/initdb" ]; then
        echo "installing PostgreSQL (Debian postgresql)" >&2
        apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
    fi
    exec cargo bench --locked --bench postgres -- "$@"
fi
if [ "${1:-}" = "--backend" ] && [ "${2:-}" != "sled" ]; then
    echo "--backend takes postgres or sled" >&2
    exit 2
fi
[ "${1:-}" = "--backend" ] && shift 2
if [ "${1:-}" = "--scale" ]; then
    shift
    exec cargo bench --locked --bench scale -- "$@"
fi
exec cargo bench --locked --bench load -- "$@"
