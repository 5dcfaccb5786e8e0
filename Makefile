# Two commands do all the set-up on a fresh machine:
#   make demo   - install, then run the main job on generated sample tiles
#   make test   - install, then run the test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test demo bench clean

install: $(STAMP)

# torch and torchvision come as a matched pair from the package index (segment-anything
# imports torchvision; a torchvision built for another torch fails at import).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -c "import torch, torchvision, segment_anything, modAL; print('installed: torch', torch.__version__, '| torchvision', torchvision.__version__)"
	touch $@

test: install
	$(PY) -m pytest -q -rs

demo: install
	$(VENV)/bin/al-loop sample al-workspace/sample --train 40 --valid 10
	$(VENV)/bin/al-loop simulate --dataset al-workspace/sample --encoder filterbank --oracle box \
		--steps 5,10,15 --strategy entropy,random --seeds 1 --epochs 100 \
		--json al-workspace/sample-curve.json --png al-workspace/sample-curve.png

bench: install
	$(PY) bench/decoder_pool.py
	$(PY) bench/encoder_precision.py
	$(PY) bench/backend_latency.py

clean:
	rm -rf $(VENV) al-workspace
