# Entry points of the benchmark. `make help` lists them.
# Every target creates the virtual environment and installs what it needs.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision are pinned here so that the releases this project is tested
# with are the ones installed; override for another platform, e.g.
#   make install TORCH_PACKAGES="torch==2.9.1 torchvision==0.24.1"
TORCH_PACKAGES ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed-stamp
DATA_DIR ?= data
STORE ?= store

.PHONY: help install test test-slow demo fashion-mnist clean-store

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-14s %s\n", $$1, $$2}'

install: $(STAMP) ## create $(VENV) and install the suite with its dependencies

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PACKAGES)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: install ## fast test suite (CPU, synthetic data, a few minutes)
	$(PY) -m pytest -q

test-slow: install fashion-mnist ## science tests on real Fashion-MNIST (slow)
	$(PY) -m pytest -q -m slow --override-ini="addopts="

demo: install fashion-mnist ## one benchmark cell on Fashion-MNIST on the CPU: BadNets vs FT and NAD, BEC, re-activation
	$(PY) -m benchmark cell --dataset fashion_mnist --arch small_cnn --attack badnets --defenses ft nad \
		--epochs 3 --seed 0 --data-dir $(DATA_DIR) --store $(STORE) --out runs/demo/cell.json

fashion-mnist: ## install Debian's dataset-fashion-mnist when it is missing and apt is usable (else torchvision downloads it)
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) || echo "apt could not install dataset-fashion-mnist; torchvision will try to download"; \
	fi

clean-store: ## delete the artifact store (everything will be recomputed)
	rm -rf $(STORE)
