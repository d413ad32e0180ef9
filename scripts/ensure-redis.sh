#!/usr/bin/env bash
# Makes sure `redis-server` is on PATH for the Redis prediction-store tests.
# Installs Debian's redis-server package with apt-get when it is missing; quiet unless it fails.
# Safe to run repeatedly: does nothing when redis-server is already there.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-redis: redis-server is missing and apt-get is not available; install Redis by hand" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo -n"
    else
        echo "ensure-redis: redis-server is missing and installing it needs root (or sudo)" >&2
        exit 1
    fi
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -qq && \
       $SUDO apt-get install -y -qq --no-install-recommends redis-server; } >"$log" 2>&1; then
    echo "ensure-redis: installing redis-server with apt-get failed:" >&2
    tail -n 20 "$log" >&2
    exit 1
fi

# The package starts a system service where an init system runs; the tests start their own
# redis-server on a free loopback port, so that one is not needed (and is left as the package set it).
command -v redis-server >/dev/null 2>&1 || { echo "ensure-redis: redis-server still not on PATH" >&2; exit 1; }
