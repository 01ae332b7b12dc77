#!/usr/bin/env bash
# Load benchmark: a release wagate on a temp data dir and a no-op tonic
# server with the same API, driven over loopback by h2load and a tonic
# client in one run. Arguments filter workloads by name (e.g. "inbound").
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v h2load >/dev/null; then
    echo "installing h2load (Debian nghttp2-client)" >&2
    apt-get update -qq && apt-get install -y -qq nghttp2-client >/dev/null
fi
exec cargo bench --locked --bench load -- "$@"
