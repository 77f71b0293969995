# Two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test test-fast lint check bench guard train clean

$(VENV)/.serve: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[cpu]'
	touch $@

$(VENV)/.dev: $(VENV)/.serve
	$(PY) -m pip install --quiet -e '.[cpu,train,dev]' -e ./client
	touch $@

## Create the virtual environment, install, and serve the committed models on $(HOST):$(PORT).
serve: $(VENV)/.serve
	DENOISE_HOST=$(HOST) DENOISE_PORT=$(PORT) $(PY) -m app

## Install everything (training included) and run the whole test suite (containers on a Docker engine too).
test: $(VENV)/.dev
	$(PY) -m pytest

## The development loop: the suite without TensorFlow training and exports, the browser or container builds.
test-fast: $(VENV)/.dev
	$(PY) -m pytest -m "not slow and not container and not browser"

## ruff (lint and format) and mypy.
lint: $(VENV)/.dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

check: test lint

## Run the benchmark (bench/README.md): our service and its peers, side by side; needs wrk and h2load.
bench: $(VENV)/.dev
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m bench.run

## The speed guard before committing a hot-path or model change (docs/performance.md); needs wrk.
guard: $(VENV)/.dev
	$(PY) -m bench.guard

## Retrain MNIST into runs/bundles/mnist (minutes per epoch on 2 CPU cores); the release gate puts it in models/.
train: $(VENV)/.dev
	$(PY) -m training run --dataset mnist
	$(PY) -m training gate runs/bundles/mnist --release

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
