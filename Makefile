# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev

.PHONY: demo test install lint bench-core bench-evaluate clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Installs the package with its dev extra once, and again when pyproject.toml changes.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -e ".[dev]"
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/gradcam explain src/gradcam/data/cat_and_coffee.jpg --top-k 2 --counterfactual --out demo_out

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts
	$(VENV)/bin/mypy src

test: lint
	$(PY) -m pytest -q

bench-core: $(STAMP)
	$(PY) benchmarks/bench_core.py

bench-evaluate: $(STAMP)
	$(PY) benchmarks/bench_evaluate.py

clean:
	rm -rf $(VENV) demo_out
