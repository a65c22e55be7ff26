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

GRID ?= sweeps/demo.yaml

.PHONY: help install test test-slow test-science test-slurm test-attacks test-clip bench demo demo-clip reproduce cell sweep sweep-cifar10 score report wandb-sync wandb-dashboard fashion-mnist wordnet clean-store

help: ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-14s %s\n", $$1, $$2}'

install: $(STAMP) ## create $(VENV) and install the suite with its dependencies

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PACKAGES)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: install wordnet ## fast test suite (CPU, synthetic data, a few minutes)
	$(PY) -m pytest -q

test-slow: install fashion-mnist wordnet ## science tests on real Fashion-MNIST that CI runs (~30 min)
	$(PY) -m pytest -q -m "slow and not attack_science and not full_science and not clip_science and not reproduce" --override-ini="addopts="

test-science: install fashion-mnist ## every claim on the demo's cells (all defenses that worked, TBRA, controls) and SSBA's invisibility (~60 min)
	$(PY) -m pytest -q -s -m "full_science or (slow and not attack_science and not clip_science and not reproduce)" --override-ini="addopts="

# The local cluster needs root (packages, daemons); sudo is used when not root.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

test-slurm: install ## the tiny grid through a real one-node SLURM cluster started here (Debian; root or sudo)
	$(SUDO) bash slurm/local-cluster-up.sh
	$(PY) -m pytest -q -m slurm --override-ini="addopts=" tests/test_slurm.py

bench: install ## images/s of the suite's stages beside plain PyTorch loops; the paper grid's time on this machine
	$(PY) -m benchmark.speed.bench $(BENCH_ARGS)

test-attacks: install fashion-mnist ## science of every attack beyond BadNets/Blended on Fashion-MNIST (~30 min)
	$(PY) -m pytest -q -s -m attack_science --override-ini="addopts="

test-clip: install fashion-mnist wordnet ## CLIP science on Fashion-MNIST captions: positive control, poisoning, CleanCLIP, WBA vs gUAA (~80 min on 2 cores from nothing)
	$(PY) -m pytest -q -s -m clip_science --override-ini="addopts="

demo-clip: install fashion-mnist wordnet ## the CLIP demo cell on Fashion-MNIST captions (CPU): tiny CLIP, BadNets, CleanCLIP and FT, BEC, WBA + gUAA
	$(PY) -m sweeps run sweeps/clip-demo.yaml

demo: install fashion-mnist ## the demo grid on Fashion-MNIST (CPU, ~15 min): BadNets and Blended x the paper's defenses, BEC, WBA + gUAA, report
	$(PY) -m sweeps run sweeps/demo.yaml

reproduce: install fashion-mnist ## the paper's protocol on a ladder of model capacities with seeds (~90 min on 2 cores, resumable) -> docs/results-fashion-mnist.md
	$(PY) -m sweeps run sweeps/reproduce.yaml
	$(PY) -m sweeps results-page sweeps/reproduce.yaml --page docs/results-fashion-mnist.md
	$(PY) -m pytest -q -s -m reproduce --override-ini="addopts=" tests/test_reproduce.py

cell: install fashion-mnist ## one cell on Fashion-MNIST: BadNets vs FT and NAD at their defaults, BEC, WBA
	$(PY) -m benchmark cell --dataset fashion_mnist --arch small_cnn --attack badnets --defenses ft nad \
		--epochs 3 --seed 0 --data-dir $(DATA_DIR) --store $(STORE) --out runs/cell/cell.json

sweep: install ## run any grid: make sweep GRID=sweeps/<grid>.yaml (resumable; DRY=1 lists the jobs only)
	$(PY) -m sweeps run $(GRID) $(if $(DRY),--dry-run,)

sweep-cifar10: install ## the paper's CIFAR-10 grid on every GPU (CIFAR-10 under DATA_DIR=$(DATA_DIR))
	$(PY) -m sweeps run sweeps/cifar10.yaml --data-dir $(DATA_DIR)

DEFENSE ?= examples/head_reset.py:HeadReset
score: install fashion-mnist ## score one defense against a grid: make score DEFENSE=<name | file.py:Class> [GRID=sweeps/demo.yaml]
	$(PY) -m benchmark score $(DEFENSE) --grid $(GRID)

report: install ## rewrite a grid's report from the store: make report GRID=sweeps/<grid>.yaml
	$(PY) -m sweeps report $(GRID)

wandb-sync: install ## upload a grid's offline W&B runs: make wandb-sync GRID=sweeps/<grid>.yaml
	$(PY) -m sweeps wandb-sync $(GRID)

wandb-dashboard: install ## save a grid's W&B workspace and report (after wandb-sync): make wandb-dashboard GRID=sweeps/<grid>.yaml
	$(PY) -m sweeps wandb-dashboard $(GRID)

fashion-mnist: ## install Debian's dataset-fashion-mnist when it is missing and apt is usable (else torchvision downloads it)
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) || echo "apt could not install dataset-fashion-mnist; torchvision will try to download"; \
	fi

wordnet: ## install Debian's wordnet-base (CleanCLIP's EDA synonyms, offline) when missing and apt is usable
	@if [ ! -d /usr/share/wordnet ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && apt-get install -y -qq wordnet-base) || echo "apt could not install wordnet-base; CleanCLIP needs text_operations without sr/ri or BDBENCH_WORDNET_DIR"; \
	fi

clean-store: ## delete the artifact store (everything will be recomputed)
	rm -rf $(STORE)
