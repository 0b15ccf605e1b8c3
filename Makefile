# The venv lives outside the clone (it is ~5.5 GB) and is reused by every clone and by CI.
VENV ?= $(HOME)/.cache/seqgen/venv
PYTHON := $(VENV)/bin/python
PYTEST_FLAGS ?=

.PHONY: setup demo test test-fast lint fmt bench clean

$(PYTHON):
	python3 -m venv $(VENV)

# Installs torch/torchvision (pinned in pyproject.toml) and the rest; pip skips what is already there.
setup: $(PYTHON)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[test,serve]'

demo: setup
	$(PYTHON) recipes/textgen.py --out runs/textgen --overwrite

# The checks people use to help themselves first (fast), then the tests.
lint: setup
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy

fmt: setup
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .

test: lint
	$(PYTHON) -m pytest -q $(PYTEST_FLAGS)

test-fast: lint
	$(PYTHON) -m pytest -q -m "not slow" $(PYTEST_FLAGS)

bench: setup
	$(PYTHON) benchmarks/decode.py
	$(PYTHON) benchmarks/train.py

clean:
	rm -rf runs build *.egg-info .pytest_cache .mypy_cache .ruff_cache
