# Two commands on a fresh clone:  `make demo` (the pipeline on built-in synthetic data)
# and `make test` (the test suite). Both create .venv and install fnacli into it first.
#
# `make install` installs fnacli with its optional extras (plots, TensorBoard, timm);
# `make test` / `make lint` add the test tools (pytest, hypothesis, ruff) on top.
#
# TORCH_INDEX: take torch and torchvision from PyTorch's own wheel index first, e.g. the
# CPU-only build (about 1 GB instead of 5.6 GB with the CUDA libraries):
#     make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
# Empty (the default): the registry's build (on Linux, with CUDA).
PY ?= python3.11
TORCH_INDEX ?=
VENV := .venv
BIN := $(VENV)/bin
# An inherited PIP_FIND_LINKS folder could supply a torch build that torchvision's
# compiled ops do not load with; the index (registry or TORCH_INDEX) decides instead.
PIP := PIP_FIND_LINKS= $(BIN)/pip
# torch and torchvision of one release: the same bounds as pyproject.toml
TORCH_REQS := "torch>=2.14,<3" "torchvision>=0.29,<1"
CHECK_OPS := $(BIN)/python -c "import torch, torchvision.ops as o; o.nms(torch.zeros(1, 4), torch.ones(1), 0.5)"

.PHONY: install test demo lint bench docs clean

$(BIN)/fnacli: pyproject.toml
	$(PY) -m venv $(VENV)
	$(if $(TORCH_INDEX),$(PIP) install --index-url $(TORCH_INDEX) $(TORCH_REQS))
	$(PIP) install -e ".[all]"
	$(CHECK_OPS)
	touch $@

$(BIN)/.test-extras: $(BIN)/fnacli pyproject.toml
	$(PIP) install -e ".[test]"
	touch $@

install: $(BIN)/fnacli

test: $(BIN)/.test-extras
	$(BIN)/python -m pytest -q -n 2 --durations=15

# ruff, then the layers as a contract (pyproject.toml [tool.importlinter], docs/layout.md)
lint: $(BIN)/.test-extras
	$(BIN)/ruff check fnacli tests benchmarks
	$(BIN)/lint-imports

demo: install
	PATH="$(abspath $(BIN)):$$PATH" bash recipes/quickstart.sh

bench: install
	$(BIN)/python benchmarks/bench_madds.py

docs: install
	$(BIN)/python -m fnacli.docgen -o docs/cli-reference.md
	$(BIN)/python docs/img/make_figures.py

clean:
	rm -rf $(VENV) demo .pytest_cache
