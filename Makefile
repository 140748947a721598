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
	$(PY) -m ruff check app warp bench tests

bench: install
	$(PY) -m bench --out BENCHMARKS-run.md --plots docs/bench

# Memory soak: wrk -c64 for SOAK_DURATION seconds, fails if the processes' RSS grew > 10% after warm-up.
SOAK_DURATION ?= 600
soak: install
	$(PY) -m bench.soak --duration $(SOAK_DURATION)

clean:
	rm -rf $(VENV) build *.egg-info
