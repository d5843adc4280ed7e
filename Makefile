# `make run` and `make test` are the two entry points; both keep .venv in step with requirements.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: run test test-fast bench gpu-wheels gpu-check examples clean

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

run: $(VENV)/.installed
	$(PY) app.py

# The whole suite, slow tests included (they replay every reference trace with live OCR).
test: $(VENV)/.installed-dev
	$(PY) -m pytest $(PYTEST_ARGS)

# Quick loop while developing: everything but the slow tests.
test-fast: $(VENV)/.installed-dev
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: $(VENV)/.installed-dev
	$(PY) -m benchmarks.bench_engine
	$(PY) -m benchmarks.bench_tools
	$(PY) -m benchmarks.bench_store
	$(PY) -m benchmarks.bench_model
	$(PY) -m benchmarks.bench_eval
	$(PY) -m benchmarks.bench_review
	$(PY) -m benchmarks.bench_first_run

# The GPU check (README, *The GPU check*): fetch its wheels into .whl/ where there is internet, then
# run it on the GPU machine (Python 3.12, torch, transformers; no .venv, no internet needed there).
GPU_CHECK_OUT ?= gpu-check.json

gpu-wheels:
	PYTHON=$(PYTHON) bash scripts/gpu_check.sh wheels

gpu-check:
	PYTHON=$(PYTHON) bash scripts/gpu_check.sh run $(GPU_CHECK_OUT)

examples: $(VENV)/.installed
	$(PY) -m taco_app.examples

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
