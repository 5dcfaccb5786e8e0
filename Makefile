# Two commands do all the set-up on a fresh machine:
#   make demo   - install, then run the main job (al-loop demo) on generated sample tiles
#   make test   - install, then run the test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install browser test demo bench clean

install: $(STAMP)

# torch and torchvision come as a matched pair from the package index (segment-anything
# imports torchvision; a torchvision built for another torch fails at import).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -c "import torch, torchvision, segment_anything, modAL; print('installed: torch', torch.__version__, '| torchvision', torchvision.__version__)"
	touch $@

# The browser test drives Debian's Chromium; on a Debian/Ubuntu machine where we are root
# it is installed here, elsewhere the test skips and says how to get it.
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian's chromium and chromium-driver for the browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "note: no /usr/bin/chromium: the browser test will be skipped (install chromium to run it)"; fi

test: install browser
	$(PY) -m pytest -q -rs

# The main job: a local Label Studio + ML backend, generated tiles, 3 rounds with a simulated
# expert; prints the learning curve and the login. DEMO_ARGS passes flags, e.g.
#   make demo DEMO_ARGS="--keep-running"
demo: install
	$(VENV)/bin/al-loop demo $(DEMO_ARGS)

bench: install
	$(PY) bench/decoder_pool.py --types 1,5
	$(PY) bench/encoder_precision.py
	$(PY) bench/encoder_runtimes.py
	$(PY) bench/backend_latency.py
	$(PY) bench/next_batch.py
	$(PY) bench/map_product.py

clean:
	rm -rf $(VENV) al-workspace al-demo artifacts
