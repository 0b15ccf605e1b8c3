# The venv lives outside the clone (it is ~5.5 GB) and is reused by every clone and by CI.
VENV ?= $(HOME)/.cache/seqgen/venv
PYTHON := $(VENV)/bin/python
PYTEST_FLAGS ?=

.PHONY: setup demo test test-fast lint fmt bench peers clean

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

# benchmarks/peers.py's peers, in a throwaway venv that reuses this project's torch (a .pth file adds the
# project venv's site-packages): the three toolkits with --no-deps, and only what they import at start-up.
# fairseq 0.12.2 comes as source: pip builds it in an isolated env (its C++ extensions that need torch are
# skipped there, as the benchmark needs none of them).
PEERS_VENV ?= $(HOME)/.cache/seqgen/peers-venv
PEERS_PYTHON := $(PEERS_VENV)/bin/python
PEERS := joeynmt==2.3.0 OpenNMT-py==3.5.1 fairseq==0.12.2
PEERS_IMPORTS := PyYAML==6.0.4 importlib_metadata==10.2.0 lazy-importer==0.1.0 tensorboard==2.21.0 \
	protobuf==7.36.2 absl-py==2.5.1 subword-nmt==0.3.8 pyonmttok==1.38.1 spacy==3.8.18 thinc==8.3.14 \
	catalogue==2.0.10 confection==1.3.4 wasabi==1.1.3 blis==1.3.4 cymem==2.0.16 preshed==3.0.15 \
	murmurhash==1.0.16 srsly==2.5.6 requests==2.34.2 typer==0.29.3 shellingham==1.5.4 weasel==1.0.1 \
	pyahocorasick==2.3.1 RapidFuzz==3.14.6 fasttext-wheel==0.9.2 ConfigArgParse==1.10.2 omegaconf==2.0.6 \
	hydra-core==1.0.7 antlr4-python3-runtime==4.8 bitarray==3.12.3

$(PEERS_VENV)/.installed: | $(PYTHON)
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PYTHON) -c 'import site; print(site.getsitepackages()[0])' > \
		"$$($(PEERS_PYTHON) -c 'import site; print(site.getsitepackages()[0])')/seqgen-venv.pth"
	$(PEERS_PYTHON) -m pip install --quiet --disable-pip-version-check --no-deps $(PEERS) $(PEERS_IMPORTS)
	touch $@

# The peers venv if missing, then the full comparison (JSON on stdout, benchmarks/peers.png).
peers: setup $(PEERS_VENV)/.installed
	$(PYTHON) benchmarks/peers.py

clean:
	rm -rf runs build *.egg-info .pytest_cache .mypy_cache .ruff_cache
