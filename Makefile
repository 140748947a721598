# Two commands set up everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install run test lint bench soak clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install
	$(PY) -m app serve --host 127.0.0.1 --port 8080

test: install
	$(PY) -m pytest -q

lint: install
	$(PY) -m mypy
	$(PY) -m ruff check

# warpzip (default flags), the inline, inline-2proc and executor peers and the echo floor; 4k, 64k,
# 1m at 32 connections, then 4k and 64k at 256 (overload): about 5 minutes. Custom runs:
# `$(PY) -m bench --help` (--servers, --loads, or --sizes with --connections).
bench: install
	$(PY) -m bench --out BENCHMARKS-run.md --json docs/bench/run.json --plots docs/bench

# Memory soak: wrk -c64 for SOAK_DURATION seconds, fails if the processes' RSS grew > 10% after warm-up.
SOAK_DURATION ?= 600
soak: install
	$(PY) -m bench.soak --duration $(SOAK_DURATION)

clean:
	rm -rf $(VENV) build *.egg-info
