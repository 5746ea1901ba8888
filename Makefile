# Tickerbell: `make run` to start everything, `make test` to run the whole suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export FLASK_APP := wsgi.py

.PHONY: run demo cluster test coverage lint bench migration clean browser

run: $(VENV)/.runtime
	@$(BIN)/flask db upgrade
	@$(BIN)/python -m devtools.launch

demo: $(VENV)/.runtime
	@$(BIN)/flask db upgrade
	@$(BIN)/python -m devtools.launch --demo

# a Redis Cluster on loopback for trying REDIS_CLUSTER_NODES (README); ARGS="--dir D" keeps
# its files, ARGS="--port 7001" puts it on 7001-7006
cluster: $(VENV)/.runtime
	$(BIN)/python -m devtools.rediscluster $(ARGS)

test: $(VENV)/.dev browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The suite under coverage.py, the processes it starts included (pyproject.toml says how);
# prints each module's line and branch coverage, least covered first. About 25 min.
coverage: $(VENV)/.dev browser
	rm -f .coverage .coverage.*
	$(BIN)/coverage run -m pytest $(PYTEST_ARGS); status=$$?; \
	  $(BIN)/coverage combine -q && $(BIN)/coverage json -q -o .coverage.json \
	  && $(BIN)/python -m devtools.coverage_table .coverage.json; \
	  rm -f .coverage.json; exit $$status

lint: $(VENV)/.dev
	$(BIN)/ruff check .

# Benchmarks print tables and JSON; sse_fanout takes a few minutes.
bench: $(VENV)/.dev
	$(BIN)/python bench/matching.py
	$(BIN)/python bench/e2e_tick.py
	$(BIN)/python bench/e2e_latency.py
	$(BIN)/python bench/events.py
	$(BIN)/python bench/sse_fanout.py
	$(BIN)/python bench/reconnect.py
	$(BIN)/python bench/db_lock.py
	$(BIN)/python bench/hooks.py
	$(BIN)/python bench/cluster.py --ceiling

# A new migration after a model change: make migration m="what changed"
migration: $(VENV)/.runtime
	$(BIN)/flask db migrate -m "$(m)"

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(VENV)/bin/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(VENV)/bin/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

# Browser tests drive Debian's Chromium; install it when we can, else they skip loudly.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "!! could not install chromium: browser tests will be skipped"; \
	  else \
	    echo "!! /usr/bin/chromium missing: run 'sudo apt-get install chromium' for the browser tests"; \
	  fi; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache
