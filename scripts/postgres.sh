#!/usr/bin/env bash
# A throw-away PostgreSQL for the tests of the audit index: Debian's package, one cluster under DIR, listening
# on 127.0.0.1:PORT only (trust authentication: loopback, tests only). Every verb is idempotent.
#
#   scripts/postgres.sh install            install Debian's postgresql when initdb/pg_ctl are missing
#   scripts/postgres.sh start DIR PORT     initdb once, then start (a running cluster is left as it is)
#   scripts/postgres.sh stop DIR           fast shutdown (nothing running: nothing to do)
#
# PostgreSQL refuses to run as root: as root, the cluster runs as the `postgres` user, which owns DIR. DIR's
# parent folders must let that user through (a folder made by `mktemp -d` under /tmp does).
set -euo pipefail

die() { echo "postgres.sh: $*" >&2; exit 1; }

pg_bindir() {  # the newest /usr/lib/postgresql/<version>/bin with initdb and pg_ctl, else the ones on PATH
    local d
    d=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
    if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
    if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then dirname "$(command -v pg_ctl)"; return 0; fi
    return 1
}

install() {
    pg_bindir >/dev/null && return 0
    [ "$(id -u)" = 0 ] || die "PostgreSQL is not installed; as root: apt-get install -y postgresql"
    echo "postgres.sh: installing Debian's postgresql" >&2
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql
    pg_bindir >/dev/null || die "postgresql installed, but no initdb/pg_ctl under /usr/lib/postgresql/*/bin"
}

as_pg() {  # run a PostgreSQL program as the user that owns the cluster (from / : the caller's cwd may be closed)
    if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else (cd / && "$@"); fi
}

start() {
    local dir=$1 port=$2 bin
    [[ $port =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$port'"
    install
    bin=$(pg_bindir)
    mkdir -p "$dir/sock"
    [ "$(id -u)" = 0 ] && chown -R postgres: "$dir"
    chmod 700 "$dir"
    as_pg test -w "$dir" || die "$dir is not writable by the postgres user (are its parents closed to it?)"
    if [ ! -s "$dir/data/PG_VERSION" ]; then
        as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
            || die "initdb failed: $(tail -n 20 "$dir/initdb.log")"
    fi
    if as_pg "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        echo "postgres.sh: already running ($dir)"
        return 0
    fi
    # fsync off: a test cluster that is thrown away, never a place for data that matters.
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir/sock -c fsync=off" start >/dev/null \
        || die "pg_ctl start failed: $(tail -n 20 "$dir/postgres.log")"
    echo "postgres.sh: listening on 127.0.0.1:$port ($dir)"
}

stop() {
    local dir=$1 bin
    [ -s "$dir/data/PG_VERSION" ] || return 0
    bin=$(pg_bindir) || return 0
    if as_pg "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null
        echo "postgres.sh: stopped ($dir)"
    fi
}

case "${1:-}" in
    install) install ;;
    start) [ $# -eq 3 ] || die "usage: $0 start DIR PORT"; start "$(realpath -m "$2")" "$3" ;;
    stop) [ $# -ge 2 ] || die "usage: $0 stop DIR"; stop "$(realpath -m "$2")" ;;
    *) die "usage: $0 install | start DIR PORT | stop DIR" ;;
esac
