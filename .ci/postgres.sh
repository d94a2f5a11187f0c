#!/usr/bin/env bash
# A throwaway PostgreSQL server for the idempotency tests, on 127.0.0.1:${PG_PORT:-5433}.
#
#   eval "$(bash .ci/postgres.sh)"       # prints: export TEST_POSTGRES_URL=postgresql://...
#   bash .ci/postgres.sh stop            # stops it (its data dir stays until /tmp is cleared)
#
# Idempotent: installs Debian's postgresql package if no server binaries are found (as root),
# creates a cluster in /tmp/pipeline-postgres-$PG_PORT owned by the postgres user (or by the
# caller when not root) unless one is there, starts it unless it runs, waits for it to accept
# connections, and creates the test role and database unless they exist. Everything but the
# export line goes to stderr.
set -euo pipefail

PG_PORT="${PG_PORT:-5433}"
PG_USER=pipeline
PG_PASSWORD=pipeline
PG_DB=pipeline_test
DATA_DIR="/tmp/pipeline-postgres-${PG_PORT}"
LOG_FILE="${DATA_DIR}.log"

say() { echo "postgres.sh: $*" >&2; }

server_bin() {
    local dir
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [[ -x "$dir/initdb" && -x "$dir/pg_ctl" && -x "$dir/postgres" ]]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

install_server() {
    if [[ $EUID -ne 0 ]]; then
        say "no PostgreSQL server found and not root: install Debian's postgresql package"
        exit 1
    fi
    say "installing PostgreSQL from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
}

# Run a server binary as the cluster's owner, from a directory that owner can read.
as_owner() {
    if [[ $EUID -eq 0 ]]; then
        (cd /tmp && runuser -u postgres -- "$@")
    else
        (cd /tmp && "$@")
    fi
}

BIN="$(server_bin)" || { install_server; BIN="$(server_bin)"; }
OWNER=postgres
[[ $EUID -eq 0 ]] || OWNER="$(id -un)"

if [[ "${1:-}" == stop ]]; then
    if as_owner "$BIN/pg_ctl" status -D "$DATA_DIR" >/dev/null 2>&1; then
        as_owner "$BIN/pg_ctl" stop -D "$DATA_DIR" -m fast >&2
    fi
    exit 0
fi

# A half-made data dir (an initdb that died) or one of another server version is replaced.
if [[ -d "$DATA_DIR" && "$(cat "$DATA_DIR/PG_VERSION" 2>/dev/null)" != "$(basename "$(dirname "$BIN")")" ]]; then
    say "replacing unusable data dir $DATA_DIR"
    as_owner "$BIN/pg_ctl" stop -D "$DATA_DIR" -m immediate >/dev/null 2>&1 || true
    rm -rf "$DATA_DIR"
fi

if [[ ! -d "$DATA_DIR" ]]; then
    say "creating a cluster in $DATA_DIR"
    mkdir -p "$DATA_DIR"
    chown "$OWNER" "$DATA_DIR"
    chmod 700 "$DATA_DIR"
    as_owner "$BIN/initdb" -D "$DATA_DIR" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        --encoding=UTF8 --locale=C.UTF-8 --no-instructions >&2
fi

running() { as_owner "$BIN/pg_ctl" status -D "$DATA_DIR" >/dev/null 2>&1; }
ready() { "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; }

# A server killed a moment ago can look alive until its process is reaped: wait for either.
for _ in $(seq 1 20); do
    if ! running || ready; then break; fi
    sleep 0.5
done

if ! running; then
    if ready; then
        say "another server already listens on 127.0.0.1:$PG_PORT: stop it or set PG_PORT"
        exit 1
    fi
    say "starting PostgreSQL on 127.0.0.1:$PG_PORT (log: $LOG_FILE)"
    touch "$LOG_FILE"
    chown "$OWNER" "$LOG_FILE"
    as_owner "$BIN/pg_ctl" start -D "$DATA_DIR" -l "$LOG_FILE" -w -t 60 -o \
        "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$DATA_DIR -c max_connections=200" >&2
fi

for _ in $(seq 1 60); do
    ready && break
    sleep 1
done
"$BIN/pg_isready" -h 127.0.0.1 -p "$PG_PORT" >&2 || { say "not ready; see $LOG_FILE"; exit 1; }

psql_admin() {
    as_owner "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$DATA_DIR" -p "$PG_PORT" -U postgres "$@"
}
if [[ -z "$(psql_admin -tA -c "SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER'")" ]]; then
    psql_admin -c "CREATE ROLE $PG_USER LOGIN PASSWORD '$PG_PASSWORD'" >&2
fi
if [[ -z "$(psql_admin -tA -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" ]]; then
    psql_admin -c "CREATE DATABASE $PG_DB OWNER $PG_USER" >&2
fi

echo "export TEST_POSTGRES_URL=postgresql://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB"
