VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# The router with its dev tools, its OpenTelemetry extra (tests/process/
# test_tracing.py) and the plugins of plugins/, editable.
PACKAGES := -e '.[dev,otel]' -e plugins/chatbot -e plugins/whatsapp -e plugins/twilio \
	-e plugins/telegram -e plugins/amqp -e plugins/nats -e plugins/mqtt

.PHONY: run test lint faults bench clean

# uv installs in about 6 s what pip takes 23 s for (a fresh clone's `make
# test`); compiled, as pip does, so that no router process a test starts
# pays for it. uv reads no pip.conf (index, find-links): where it cannot
# install, pip does, saying so.
$(STAMP): pyproject.toml plugins/chatbot/pyproject.toml plugins/whatsapp/pyproject.toml \
		plugins/twilio/pyproject.toml plugins/telegram/pyproject.toml \
		plugins/amqp/pyproject.toml plugins/nats/pyproject.toml plugins/mqtt/pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q uv \
		&& $(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) $(PACKAGES) \
		|| { echo "uv could not install: installing with pip"; $(PIP) install -q $(PACKAGES); }
	touch $(STAMP)

# Ingest + delivery in one process on $PORT (default 3000); without REDIS_URL
# an embedded Valkey keeps its append-only file in ./data.
run: $(STAMP)
	$(VENV)/bin/router serve

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The suite in parallel: its tests mostly wait (on servers, routers,
# retries), so 6 workers on 2 cores (211 s here; 4 workers: 222-237 s; one
# process: 635 s). Each worker starts its own Redis and cluster
# (tests/conftest.py). PYTEST_WORKERS=0 runs it in one process.
PYTEST_WORKERS ?= 6

# Tests marked `serial` assert a time bound (an answer within a deadline, a
# delivery within a probe interval) that six workers on two cores can break:
# they run after the parallel pass, alone.
#
# A fresh clone has no bytecode, and where PYTHONDONTWRITEBYTECODE is set
# (as on this machine) nothing writes any: each pytest process then
# rewrote and compiled every test module (5 s of CPU) and each of the
# hundreds of router processes compiled the router (0.25 s). So, while
# lint runs (mypy keeps one core busy and leaves the other idle), the
# sources are compiled once and one collection writes pytest's rewritten
# test modules; the test runs read both and write nothing.
test: $(STAMP)
	@PYTHONDONTWRITEBYTECODE= sh -c '$(PY) -m compileall -q router plugins tests \
		&& $(VENV)/bin/pytest -q --collect-only -p no:cacheprovider' >/dev/null 2>&1 & \
	$(MAKE) --no-print-directory lint; lint=$$?; wait $$!; exit $$lint
	$(VENV)/bin/pytest -q -m "not faults and not serial" -n $(PYTEST_WORKERS) --dist worksteal
	$(VENV)/bin/pytest -q -m "serial and not faults"

# The slow fault-injection suite (crashes, Redis outage, flapping bot, ...).
faults: $(STAMP)
	$(VENV)/bin/pytest -q -m faults tests/faults

# The router beside its peers and floors (bench/peers) in one run, as ratios;
# see docs/benchmarks.md. Needs wrk: apt-get update && apt-get install -y wrk.
# The BullMQ peer needs Node.js and npm; without them its columns are skipped.
# Options: make bench BENCH_ARGS="--rounds 3 --profile --docs"
bench: $(STAMP)
	$(PIP) install -q -r bench/requirements.txt
	# Without its redis<6 pin (see bench/requirements.txt); works on redis 8.
	$(PIP) install -q --no-deps 'arq>=0.26'
	@if command -v node >/dev/null && command -v npm >/dev/null; then \
		npm ci --prefix bench/peers/bullmq --no-audit --no-fund --loglevel=error \
		|| echo "bench: npm ci failed: the BullMQ peer will be skipped"; \
	else \
		echo "bench: node/npm not found: the BullMQ peer will be skipped"; \
	fi
	$(PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
