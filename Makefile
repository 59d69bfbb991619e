# Two commands on a fresh clone:  `make demo` (the pipeline on built-in synthetic data)
# and `make test` (the test suite). Both create .venv and install fnacli into it first.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Keep the machine's local CPU-only torch wheel (/opt/wheels) out of the resolution: it
# cannot load torchvision's compiled ops. The registry's torch matching torchvision is used.
PIP_ENV := PIP_FIND_LINKS=

.PHONY: install test demo lint bench docs clean

$(BIN)/fnacli: pyproject.toml
	$(PY) -m venv $(VENV)
	$(PIP_ENV) $(BIN)/pip install -q -e ".[test]"
	$(BIN)/python -c "import torch, torchvision.ops as o; o.nms(torch.zeros(1, 4), torch.ones(1), 0.5)"
	touch $@

install: $(BIN)/fnacli

test: install
	$(BIN)/python -m pytest -q -n 2 --durations=15

lint: install
	$(BIN)/ruff check fnacli tests benchmarks

demo: install
	PATH="$(abspath $(BIN)):$$PATH" bash recipes/quickstart.sh

bench: install
	$(BIN)/python benchmarks/bench_madds.py

docs: install
	$(BIN)/python -m fnacli.cli.docgen -o docs/cli-reference.md
	$(BIN)/python docs/img/make_figures.py

clean:
	rm -rf $(VENV) demo .pytest_cache
