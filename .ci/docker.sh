#!/usr/bin/env bash
# A Docker engine for the containerized-Kafka tests, started by hand: this kind of machine runs
# no engine by default, and no image registry is reachable (`make kafka-image` builds the image).
#
#   eval "$(bash .ci/docker.sh)"   # prints: export DOCKER_HOST=unix://...
#   bash .ci/docker.sh stop        # stops the engine this script started (no other)
#
# Idempotent: installs Debian's docker.io and debootstrap if missing (as root). An engine that
# already answers (DOCKER_HOST, or the default socket) is used as is. Otherwise dockerd is
# started (overlay2, cgroupfs) on a socket of its own, $SOCKET, so tools that look for the
# default socket do not find it; it is waited for up to 60 s, and a failure prints its log's
# tail. Everything but the export line goes to stderr.
set -euo pipefail

SOCKET=/run/pipeline-docker.sock
LOG_FILE=/tmp/pipeline-dockerd.log
PID_FILE=/run/pipeline-dockerd.pid

say() { echo "docker.sh: $*" >&2; }
answers() { timeout 10 docker info >/dev/null 2>&1; }
ours() { [[ -f "$PID_FILE" ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; }

if [[ "${1:-}" == stop ]]; then
    if ours; then
        say "stopping dockerd (pid $(cat "$PID_FILE"))"
        kill "$(cat "$PID_FILE")"
        for _ in $(seq 1 30); do ours || break; sleep 1; done
        if ours; then say "dockerd did not stop within 30 s"; exit 1; fi
    fi
    rm -f "$PID_FILE"
    exit 0
fi

if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null \
    || ! command -v debootstrap >/dev/null; then
    if [[ $EUID -ne 0 ]]; then
        say "dockerd, docker or debootstrap is missing and this is not root: install Debian's docker.io and debootstrap"
        exit 1
    fi
    say "installing docker.io and debootstrap from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 apt-get update -qq >&2
    timeout 600 apt-get install -y -qq docker.io debootstrap >&2
fi

if answers; then
    say "a Docker engine already answers (${DOCKER_HOST:-the default socket})"
    [[ -n "${DOCKER_HOST:-}" ]] && echo "export DOCKER_HOST=$DOCKER_HOST"
    exit 0
fi
export DOCKER_HOST="unix://$SOCKET"
if ! answers; then
    if [[ $EUID -ne 0 ]]; then say "no Docker engine answers, and starting dockerd needs root"; exit 1; fi
    say "starting dockerd on $SOCKET (log: $LOG_FILE)"
    setsid dockerd --host "$DOCKER_HOST" --storage-driver=overlay2 \
        --exec-opt native.cgroupdriver=cgroupfs >"$LOG_FILE" 2>&1 </dev/null &
    echo $! >"$PID_FILE"
    for _ in $(seq 1 60); do
        answers && break
        if ! ours; then break; fi
        sleep 1
    done
    if ! answers; then
        tail -n 30 "$LOG_FILE" >&2
        say "dockerd did not answer on $SOCKET within 60 s (its log is above: $LOG_FILE)"
        exit 1
    fi
fi
say "Docker engine $(docker info --format '{{.ServerVersion}}') answers on $SOCKET"
echo "export DOCKER_HOST=$DOCKER_HOST"
