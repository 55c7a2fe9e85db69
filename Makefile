# iogate — the two set-up commands of the README are `make serve` and `make test`.
# Everything they need is installed here, into ./.venv, on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8080
ONLY   ?=
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: serve test lint bench install clean example-captions example-video

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[dev,cluster,otel]'
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed-dev
	$(BIN)/python -m pip install -q -e '.[dev,cluster,otel,bench]'
	touch $@

# Datasette, the gateway benchmark's peer, lives in a venv of its own so its
# dependencies never meet iogate's.
.venv-datasette/.installed:
	$(PYTHON) -m venv .venv-datasette
	.venv-datasette/bin/python -m pip install -q 'datasette>=0.65,<0.66'
	touch $@

install: $(VENV)/.installed

## Run the gateway on the embedded default (SQLite ./var/iogate.db + in-process cache).
serve: $(VENV)/.installed
	$(BIN)/iogate serve --host $(HOST) --port $(PORT) $(if $(CONFIG),--config $(CONFIG))

## Run the whole test suite: lint, types, unit and integration tests on real servers.
test: $(VENV)/.installed-dev
	scripts/test.sh

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check
	$(BIN)/ruff format --check
	$(BIN)/mypy

## Run the benchmarks (all, or one scenario with ONLY=policies|databases|upstreams|cache|metrics|gateway|hedging|examples|cluster).
bench: $(VENV)/.installed-bench .venv-datasette/.installed
	scripts/install-services.sh bench
	$(BIN)/python -m benchmarks $(if $(ONLY),--only $(ONLY))

## The examples, each against its bundled fake provider on loopback (offline).
example-captions: $(VENV)/.installed
	$(BIN)/python -m examples.captions_api

example-video: $(VENV)/.installed
	$(BIN)/python -m examples.video_jobs

clean:
	rm -rf $(VENV) .venv-datasette var .mypy_cache .ruff_cache .pytest_cache
