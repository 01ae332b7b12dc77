#!/usr/bin/env bash
# Starts a throwaway PostgreSQL for trying wagate's PostgreSQL mode, prints
# its URL, and removes it on Ctrl-C. Installs Debian's postgresql when
# missing; runs the server as the postgres user (it refuses root) on a temp
# directory and a free port.
#
#   scripts/dev-postgres.sh            # prints WAGATE_DATABASE_URL=...
#   WAGATE_DATABASE_URL=... cargo run --release
set -euo pipefail

if ! command -v pg_config >/dev/null || [ ! -x "$(pg_config --bindir)/initdb" ]; then
    echo "installing PostgreSQL (Debian postgresql)" >&2
    apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
fi
bin=$(pg_config --bindir)
port=${PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
dir=$(mktemp -d /tmp/wagate-dev-pg.XXXXXX)
mkdir -p "$dir/sock"
echo wagate > "$dir/password"
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown -R postgres:postgres "$dir"
as_postgres "$bin/initdb" -D "$dir/data" -U postgres -E UTF8 --no-sync \
    --auth-local=trust --auth-host=scram-sha-256 --pwfile="$dir/password" >/dev/null
cleanup() {
    kill $(jobs -p) 2>/dev/null || true
    as_postgres "$bin/pg_ctl" -D "$dir/data" stop -m fast -s || true
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM
as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -s -w start \
    -o "-p $port -k $dir/sock -c listen_addresses=127.0.0.1"
PGPASSWORD=wagate "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -qc "CREATE DATABASE wagate"
echo "WAGATE_DATABASE_URL='postgres://postgres:wagate@127.0.0.1:$port/wagate'"
echo "PostgreSQL is running (log: $dir/postgres.log); Ctrl-C stops and removes it." >&2
# Waits in `wait`, so a TERM (not only a Ctrl-C) stops it at once.
while true; do sleep 3600 & wait $!; done
