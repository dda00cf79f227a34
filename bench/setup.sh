#!/usr/bin/env bash
# Benchmark suite setup: installs wrk (the load generator) from Debian if it is missing,
# and py-spy (the profiler) into the project venv. Safe to run repeatedly; CI calls it.
#   bash bench/setup.sh            # wrk only
#   bash bench/setup.sh --profiler # also pip-install the `bench` extra (py-spy) and, from Debian,
#                                  # valgrind (bench/instructions.py: instructions per request)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ]; then
        SUDO=""
    elif command -v sudo >/dev/null 2>&1; then
        SUDO="sudo -n"
    else
        echo "bench/setup.sh: wrk missing and no root/sudo to install it" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq wrk
fi
wrk --version 2>&1 | head -1 || true

if [ "${1:-}" = "--profiler" ]; then
    .venv/bin/pip install -q -e '.[bench]'
    if ! command -v valgrind >/dev/null 2>&1; then
        [ "$(id -u)" = "0" ] && SUDO="" || SUDO="sudo -n"
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq valgrind
    fi
fi
