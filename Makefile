# Two commands do all the set-up on a fresh machine:
#   make demo   - install what the demo needs, then run the main job (al-loop demo) on generated sample tiles
#   make test   - install everything (the test extra), then run the whole test suite (what CI runs)
# and one runs the fast tests while you work (no Label Studio, server process, Ray, browser or slow test):
#   make check
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo
# The markers are put on by tests/conftest.py from the fixtures and modules a test uses.
CHECK_MARKERS := not studio and not server and not slow
# torch and torchvision come as a matched pair from the package index (segment-anything
# imports torchvision; a torchvision built for another torch fails at import).
VERIFY := import torch, torchvision, segment_anything, modAL; print('installed: torch', torch.__version__, '| torchvision', torchvision.__version__)

.PHONY: install install-demo browser postgres test check lint demo bench clean docs docs-serve

# Everything: the test extra holds every optional part (Label Studio, Ray, S3, OpenVINO, ONNX, ...).
install: $(STAMP)
# The demo's part only: the package and Label Studio; a later `make test` installs the rest.
install-demo: $(DEMO_STAMP)

# torch from the default package index is, on Linux x86-64, the CUDA build: about 5 GB with its
# NVIDIA libraries, also on a machine without a GPU (it runs fine on the CPU). A CPU-only build is
# about 1 GB from PyTorch's own index, where the machine reaches it:
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@if [ -n "$(TORCH_INDEX)" ]; then \
		echo "installing torch and torchvision from $(TORCH_INDEX)"; \
		$(PY) -m pip install --quiet torch torchvision --index-url "$(TORCH_INDEX)"; \
	else echo "note: installing torch from the package index: on Linux that is the CUDA build, about 5 GB" \
		"and several minutes; for the CPU-only build (about 1 GB): make install TORCH_INDEX=https://download.pytorch.org/whl/cpu"; fi

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -c "$(VERIFY)"
	touch $@ $(DEMO_STAMP)

$(DEMO_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[demo]"
	$(PY) -c "$(VERIFY)"
	touch $@

# The browser test drives Debian's Chromium; on a Debian/Ubuntu machine where we are root
# it is installed here, elsewhere the test skips and says how to get it.
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian's chromium and chromium-driver for the browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "note: no /usr/bin/chromium: the browser test will be skipped (install chromium to run it)"; fi

# Label Studio's tests run it on PostgreSQL (issue 39): the system's server with its contrib
# extensions (Label Studio's migrations create pg_trgm and btree_gin; no server in a wheel on the
# package index ships both). Debian's is installed here where we are root; elsewhere the tests
# use SQLite and the PostgreSQL test skips, saying how to get it.
postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian's postgresql for Label Studio's tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else echo "note: no PostgreSQL server: Label Studio's tests run on SQLite (install postgresql to test it)"; fi

# -rfEs: the summary names failures, errors and skips; --durations=25 (pyproject's addopts) lists
# the slowest tests at the end of every run.
test: install browser postgres lint
	$(PY) -m pytest -q -rfEs

check: install lint
	$(PY) -m pytest -q -rfEs -m "$(CHECK_MARKERS)"

# ruff's rules and limits are in pyproject.toml ([tool.ruff]); zero findings is the bar.
lint: install
	$(VENV)/bin/ruff check .

# The main job: a local Label Studio + ML backend, generated tiles, 3 rounds with a simulated
# expert; prints the learning curve and the login. DEMO_ARGS passes flags, e.g.
#   make demo DEMO_ARGS="--keep-running"
demo: install-demo
	$(VENV)/bin/al-loop demo $(DEMO_ARGS)

bench: install
	$(PY) bench/decoder_pool.py --types 1,5
	$(PY) bench/encoder_precision.py
	$(PY) bench/encoder_runtimes.py
	$(PY) bench/backend_latency.py
	$(PY) bench/next_batch.py
	$(PY) bench/map_product.py

# The documentation site (mkdocs.yml): the reference pages generated from the parser and the
# settings resolver, then built strictly into build/site/, or served with live reload.
# The site has a light environment of its own: the docs extra (mkdocs-material, mkdocstrings,
# what gen_reference.py imports) and the package without its dependencies: no torch, no Label Studio.
DOCS_VENV ?= .venv-docs
DOCS_STAMP := $(DOCS_VENV)/.installed
$(DOCS_STAMP): pyproject.toml
	$(PYTHON) -m venv $(DOCS_VENV)
	$(DOCS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DOCS_VENV)/bin/python -m pip install --quiet --no-deps -e .
	$(DOCS_VENV)/bin/python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['docs']))" > $(DOCS_VENV)/requirements.txt
	$(DOCS_VENV)/bin/python -m pip install --quiet -r $(DOCS_VENV)/requirements.txt
	touch $@

docs: $(DOCS_STAMP)
	$(DOCS_VENV)/bin/python docs/gen_reference.py
	NO_MKDOCS_2_WARNING=1 $(DOCS_VENV)/bin/mkdocs build --strict

docs-serve: $(DOCS_STAMP)
	$(DOCS_VENV)/bin/python docs/gen_reference.py
	NO_MKDOCS_2_WARNING=1 $(DOCS_VENV)/bin/mkdocs serve -a 127.0.0.1:8000

clean:
	rm -rf $(VENV) al-workspace al-demo artifacts
