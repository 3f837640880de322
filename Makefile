# finetune — every target runs inside .venv (made by `make install`).
# Pass Hydra overrides with ARGS, e.g.  make train ARGS="data.root=/data/scenes trainer=gpu"

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The newest model: a run that stopped early leaves a folder without best_model.pt, so the newest
# best_model.pt is taken, not the newest folder (run folders are named by date and time).
CKPT   ?= $(lastword $(sort $(wildcard outputs/train/*/*/best_model.pt)))
NEED_CKPT = $(if $(CKPT),,$(error no outputs/train/*/*/best_model.pt here: train first \
	(make train ARGS="data.root=...") or pass CKPT=path/to/best_model.pt))
ARGS   ?=

.PHONY: help install demo train eval analyze test test-slow bench parity device-check tensorboard lint clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,slurm,export,mlflow,optuna]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the package (editable) with the dev tools

demo: $(STAMP)  ## train + evaluate on the embedded demo data (offline; ~3 min on 2 CPU cores)
	$(PY) -m finetune experiment=demo $(ARGS)
	$(MAKE) --no-print-directory eval ARGS="$(ARGS)"

train: $(STAMP)  ## train: make train ARGS="data.root=/path/to/scenes trainer=gpu"
	$(PY) -m finetune mode=train $(ARGS)

eval: $(STAMP)  ## evaluate the newest run's best_model.pt (or CKPT=...)
	$(NEED_CKPT)$(PY) -m finetune mode=eval ckpt=$(CKPT) $(ARGS)

analyze: $(STAMP)  ## feature-map statistics of the newest run's model (or CKPT=...)
	$(NEED_CKPT)$(PY) -m finetune mode=analyze ckpt=$(CKPT) $(ARGS)

test: $(STAMP)  ## run the test suite (the few `slow` tests left out), one worker per CPU core
	$(PY) -m pytest -q -m "not slow" -n auto --dist loadscope $(ARGS)

test-slow: $(STAMP)  ## run only the slow tests (minutes each)
	$(PY) -m pytest -q -m slow $(ARGS)

bench: $(STAMP)  ## the seed's fp32 loop vs the package default, side by side; loader share -> benchmarks/RESULTS.md (~4 min)
	$(PY) benchmarks/run_all.py $(ARGS)

parity: $(STAMP)  ## fp32 vs the automatic bf16 setting, 3 seeds x 2 data sets -> benchmarks/parity.json (~15 min)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/parity.py $(ARGS)

device-check: $(STAMP)  ## on a GPU host: GPU tests, demo with trainer=gpu (+compile), GPU speed -> benchmarks/device_check.json
	$(PY) benchmarks/device_check.py $(ARGS)

tensorboard: $(STAMP)  ## TensorBoard on all runs in outputs/
	$(VENV)/bin/tensorboard --logdir outputs

lint: $(STAMP)  ## ruff
	$(VENV)/bin/ruff check src tests benchmarks

clean:  ## remove caches and build files (keeps .venv and outputs/)
	rm -rf build dist src/*.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
