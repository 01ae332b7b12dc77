#!/usr/bin/env bash
# Runs every test of wagate. Installs the client tools the tests drive wagate
# with (grpcurl and grpcio, pinned in tests/python/requirements.txt) into
# .venv, the Node example's packages (examples/node, npm ci), and PostgreSQL
# (Debian's postgresql, which the PostgreSQL tests start on their own temp
# directories) when missing, then runs cargo test.
# Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v pg_config >/dev/null || [ ! -x "$(pg_config --bindir)/initdb" ]; then
    echo "installing PostgreSQL (Debian postgresql) for the PostgreSQL tests" >&2
    apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if ! cmp -s tests/python/requirements.txt .venv/installed-requirements.txt; then
    .venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
    cp tests/python/requirements.txt .venv/installed-requirements.txt
fi

if ! command -v npm >/dev/null; then
    echo "installing Node.js (Debian nodejs, npm) for the Node example" >&2
    apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi
if ! cmp -s examples/node/package-lock.json examples/node/node_modules/.installed-lock.json; then
    npm ci --silent --no-audit --no-fund --prefix examples/node >/dev/null
    cp examples/node/package-lock.json examples/node/node_modules/.installed-lock.json
fi

export WAGATE_GRPCURL="$PWD/.venv/bin/grpcurl"
export WAGATE_PYTHON="$PWD/.venv/bin/python"
exec cargo test --locked "$@"
