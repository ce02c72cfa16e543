# Set-up and everyday commands. Needs only python3 (>= 3.11) and make.
PYTHON ?= python3
VENV ?= .venv
BENCH_VENV ?= .venv-bench
PY := $(VENV)/bin/python

.PHONY: demo test bench lint docs clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $@

# The main job: low-pass filter a synthetic 32-channel recording on a local dask cluster.
demo: $(VENV)/.installed
	$(VENV)/bin/acme-xr demo

# The test suite (a real LocalCluster, real files).
test: $(VENV)/.installed
	$(PY) -m pytest -q

# Benchmarks against esi-acme 2026.6.2, raw dask and joblib, in their own environment
# (esi-acme pins dask <= 2026.6.0, so every contender runs on that dask there).
$(BENCH_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install -q -e ".[bench]" "esi-acme==2026.6.2"
	touch $@

# The default run leaves out the 200,000-call scaling rows and the xr.open_mfdataset (~3 min)
# peer; run those with: make bench BENCH_ARGS='-m "big or mfdataset"' BENCH_JSON=.benchmarks/big.json
BENCH_ARGS ?= -m "not big and not mfdataset"
BENCH_JSON ?= .benchmarks/summary.json
bench: $(BENCH_VENV)/.installed
	# byte-compile acme_xr as a pip install would (the editable install does not, and with
	# PYTHONDONTWRITEBYTECODE set every process recompiles it: ~40 ms of each cold start)
	$(BENCH_VENV)/bin/python -m compileall -q acme_xr
	$(BENCH_VENV)/bin/python -m pytest benchmarks -p no:cacheprovider -o addopts="" \
		--strict-markers --benchmark-only --benchmark-columns=min,median,max,rounds \
		--bench-json $(BENCH_JSON) $(BENCH_ARGS)

# The documentation site, docs/_build/html/index.html (Sphinx; warnings are errors, as in CI).
$(VENV)/.installed-docs: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install -q -e ".[docs]"
	touch $@

docs: $(VENV)/.installed-docs
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html
	@echo "docs: docs/_build/html/index.html"

# Pinned: a new release's new rules must not fail CI on code that did not change.
lint: $(VENV)/.installed
	$(PY) -m pip install -q ruff==0.17.6 mypy==2.4.1
	$(VENV)/bin/ruff check acme_xr tests benchmarks
	$(VENV)/bin/mypy acme_xr

clean:
	rm -rf $(VENV) $(BENCH_VENV) acme_xr_demo .pytest_cache .benchmarks docs/_build docs/generated
