#!/usr/bin/env bash
# Runs every test of wagate. Installs the client tools the tests drive wagate
# with (grpcurl and grpcio, pinned in tests/python/requirements.txt) into
# .venv, the manifest checkers (tests/k8s/requirements.txt) into .venv-k8s,
# the Node example's packages (examples/node, npm ci), and PostgreSQL
# (Debian's postgresql, which the PostgreSQL tests start on their own temp
# directories) and promtool (Debian's prometheus, which lints /metrics) when
# missing, then runs cargo test.
# Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v pg_config >/dev/null || [ ! -x "$(pg_config --bindir)/initdb" ]; then
    echo "installing PostgreSQL (Debian postgresql) for the PostgreSQL tests" >&2
    apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
fi

if ! command -v promtool >/dev/null; then
    echo "installing promtool (Debian prometheus) for the metrics lint test" >&2
    apt-get update -qq && apt-get install -y -qq prometheus >/dev/null
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

# The manifest checkers pull in much that the client tools must not share.
if [ ! -x .venv-k8s/bin/python ]; then
    python3 -m venv .venv-k8s
fi
if ! cmp -s tests/k8s/requirements.txt .venv-k8s/installed-requirements.txt; then
    .venv-k8s/bin/pip install --quiet --disable-pip-version-check -r tests/k8s/requirements.txt
    cp tests/k8s/requirements.txt .venv-k8s/installed-requirements.txt
fi

export WAGATE_GRPCURL="$PWD/.venv/bin/grpcurl"
export WAGATE_K8S_TOOLS="$PWD/.venv-k8s/bin"
export WAGATE_PYTHON="$PWD/.venv/bin/python"
exec cargo test --locked "$@"
