#!/bin/sh
# The container's command (Dockerfile): Tally alone, or, when a replica is
# configured (LITESTREAM_REPLICA_URL) in an image built with Litestream
# (--build-arg LITESTREAM=1), Tally under Litestream (docs/replication.md).
set -eu
if [ -z "${LITESTREAM_REPLICA_URL:-}" ]; then
    exec python server.py serve
fi
if ! command -v litestream >/dev/null 2>&1; then
    echo "tally: LITESTREAM_REPLICA_URL is set but this image has no Litestream" \
         "(build it with --build-arg LITESTREAM=1)" >&2
    exit 2
fi
config=${LITESTREAM_CONFIG:-/app/deploy/litestream.yml}
# A new, empty volume: the counts come back from the replica first (none
# there yet: a first start).
litestream restore -config "$config" -if-db-not-exists -if-replica-exists "$TALLY_DB"
# Litestream runs Tally and ends with it; SIGTERM reaches both.
exec litestream replicate -config "$config" -exec "python server.py serve"
