# Two commands set up everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# `make run` installs what serving needs; the test, lint and bench targets add the dev extras
# (pytest, mypy, matplotlib, the deploy validators ...).
SERVE_STAMP := $(VENV)/.installed-serve
DEV_STAMP   := $(VENV)/.installed-dev

.PHONY: install run test lint bench bench-streams soak stream-soak clean

install: $(SERVE_STAMP)

$(SERVE_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $(SERVE_STAMP)

$(DEV_STAMP): $(SERVE_STAMP)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(DEV_STAMP)

run: install
	$(PY) -m app serve --host 127.0.0.1 --port 8080

test: $(DEV_STAMP)
	$(PY) -m pytest -q

lint: $(DEV_STAMP)
	$(PY) -m mypy
	$(PY) -m ruff check

# warpzip (default flags), the inline, inline-2proc and executor peers and the echo floor; 4k, 64k,
# 1m at 32 connections, then 4k and 64k at 256 (overload): about 5 minutes. Custom runs:
# `$(PY) -m bench --help` (--servers, --loads, or --sizes with --connections).
bench: $(DEV_STAMP)
	$(PY) -m bench --out BENCHMARKS-run.md --json docs/bench/run.json --plots docs/bench

# Streaming MiB/s: one STREAM_BENCH_SIZE body through /compress and back through /decompress.
STREAM_BENCH_SIZE ?= 512M
bench-streams: $(DEV_STAMP)
	$(PY) -m bench.streams --size $(STREAM_BENCH_SIZE)

# Memory soak: wrk -c64 for SOAK_DURATION seconds, fails if the processes' RSS grew > 10% after warm-up.
SOAK_DURATION ?= 600
soak: $(DEV_STAMP)
	$(PY) -m bench.soak --duration $(SOAK_DURATION)

# Streaming: a STREAM_BYTES body (2 GiB) through /compress and back through /decompress, one frame
# checked by zstd, every warpzip process's RSS growth under a fixed bound (the suite runs 256 MiB).
STREAM_BYTES ?= 2147483648
stream-soak: $(DEV_STAMP)
	WARPZIP_STREAM_BYTES=$(STREAM_BYTES) $(PY) -m pytest -q -s tests/e2e/test_stream_memory.py

clean:
	rm -rf $(VENV) build *.egg-info
