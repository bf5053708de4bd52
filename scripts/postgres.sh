#!/bin/sh
# A throwaway PostgreSQL server for the tests and the benchmark: Debian's
# postgresql, run as the postgres user (it refuses root) in DIR, on a unix
# socket only (no TCP port), with no fsync at initdb time.
#   scripts/postgres.sh start DIR   prints the URL to put in TALLY_TEST_POSTGRES
#   scripts/postgres.sh stop DIR
set -eu
action=${1:?start or stop}
dir=${2:?a folder for the server}
port=5433
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$pgbin" ] || { echo "postgresql is not installed (apt-get install postgresql)" >&2; exit 1; }
as_postgres() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
case $action in
start)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_postgres "$pgbin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-locale \
            --no-sync >/dev/null
    fi
    as_postgres "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
        -o "-k $dir -p $port -c listen_addresses=''" start >/dev/null
    as_postgres "$pgbin/psql" -h "$dir" -p "$port" -U postgres -qtAc \
        "SELECT 1 FROM pg_database WHERE datname = 'tally'" | grep -q 1 ||
        as_postgres "$pgbin/createdb" -h "$dir" -p "$port" -U postgres tally
    echo "postgresql://postgres@/tally?host=$dir&port=$port"
    ;;
stop)
    as_postgres "$pgbin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    ;;
*)
    echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
