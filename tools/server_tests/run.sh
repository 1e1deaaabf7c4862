#!/usr/bin/env bash
# Runs the `ferrolm serve` tests with the official openai client.
#   tools/server_tests/run.sh [pytest args...]      e.g. -k stop -x
# Binary: $FERROLM_BIN (default target/release/ferrolm; build it first with cargo build --release).
# Model: the server's default (fetched on first use), or $FERROLM_MODEL.
# The venv lives in target/server-tests-venv and is made on first use.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=tools/server_tests
venv=target/server-tests-venv
export FERROLM_BIN="${FERROLM_BIN:-target/release/ferrolm}"
case "$FERROLM_BIN" in /*) ;; *) FERROLM_BIN="$PWD/$FERROLM_BIN" ;; esac
if [ ! -x "$FERROLM_BIN" ]; then
    echo "run.sh: no binary at $FERROLM_BIN (cargo build --release, or set FERROLM_BIN)" >&2
    exit 2
fi
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$here/requirements.txt" "$venv/requirements.txt"; then
    mkdir -p target
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$venv/requirements.txt"
fi
exec "$venv/bin/python" -m pytest "$here" -p no:cacheprovider -q -rfE --durations=10 "$@"
