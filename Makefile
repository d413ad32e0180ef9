# The two commands of the README: `make demo` (the main job on the embedded server) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `pip install tritonkit` alone (the client, on numpy 2) and the test runner: what the batch image holds
CLIENT_VENV ?= .venv-client
CLIENT_BIN := $(CLIENT_VENV)/bin
CLIENT_STAMP := $(CLIENT_VENV)/.installed

.PHONY: demo test install client-env server-env clean

# Every job and the test tools (`[all]`).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[all]'
	touch $(STAMP)

install: $(STAMP)

# Built from scratch whenever pyproject.toml changes, so no package of an older dependency list stays behind.
$(CLIENT_STAMP): pyproject.toml
	rm -rf $(CLIENT_VENV)
	$(PYTHON) -m venv $(CLIENT_VENV)
	$(CLIENT_BIN)/pip install --quiet -e . 'pytest>=8' 'hypothesis>=6.100'
	touch $(CLIENT_STAMP)

client-env: $(CLIENT_STAMP)

# The embedded server's own environment (tritonserver, numpy<2, onnxruntime, tokenizers; SERVER_GROUPS adds
# trees for the fil backend, torch for the pytorch backend): built once, in the user's cache folder or at
# $TRITONKIT_SERVER_ENV; a marker check when it is there.
SERVER_GROUPS ?=
server-env: $(STAMP)
	$(BIN)/tritonkit server-env $(if $(SERVER_GROUPS),--with $(SERVER_GROUPS))

demo: $(STAMP) server-env
	bash scripts/demo.sh

# The client's tests in the client-only environment (modules that need an extra skip, naming it), then the
# whole suite in the `[all]` one, which also drives the client environment against the real server
# (tests/integration/test_client_install.py). The suite serves fil and pytorch models too.
test: SERVER_GROUPS = trees,torch
test: $(STAMP) $(CLIENT_STAMP) server-env
	bash scripts/ensure-redis.sh
	VENV=$(VENV) bash scripts/ensure-perf-analyzer.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	TRITONKIT_CLIENT_ONLY=1 $(CLIENT_BIN)/python -m pytest -p no:cacheprovider tests/unit tests/property
	TRITONKIT_CLIENT_VENV=$(CURDIR)/$(CLIENT_VENV) $(BIN)/python -m pytest tests

clean:
	rm -rf $(VENV) $(CLIENT_VENV) runs
