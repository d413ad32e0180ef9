# The two commands of the README: `make demo` (the main job on the embedded server) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install server-env clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[all]'
	touch $(STAMP)

install: $(STAMP)

# The embedded server's own environment (tritonserver, numpy<2, onnxruntime): built once, in the user's cache
# folder or at $TRITONKIT_SERVER_ENV; a marker check when it is there.
server-env: $(STAMP)
	$(BIN)/tritonkit server-env

demo: $(STAMP)
	bash scripts/demo.sh

test: $(STAMP) server-env
	bash scripts/ensure-redis.sh
	VENV=$(VENV) bash scripts/ensure-perf-analyzer.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest tests

clean:
	rm -rf $(VENV) runs
