# Two commands set everything up on a fresh machine:
#   make demo   -> environment + segment the bundled sample case into demo-output/
#   make test   -> environment + the default test suite (< 15 min on 2 cores)
#   make check-wheel -> build the sdist + wheel, install the wheel in a fresh venv, segment the sample
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SAMPLE := Resources/SampleData
export QT_QPA_PLATFORM ?= offscreen
# the venv's tools first (as if activated): the pinned cmake the CMake tests run
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: env demo test test-slow test-long lint bench check-wheel

$(BIN)/.installed: requirements-dev.txt pyproject.toml
	bash scripts/install_system_libs.sh
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

env: $(BIN)/.installed

demo: env
	$(BIN)/brainbarriers segment --ct $(SAMPLE)/sample_ct.nrrd --t1 $(SAMPLE)/sample_t1.nrrd \
		--t2 $(SAMPLE)/sample_t2.nrrd --output demo-output --case sample --overwrite --overview

test: env
	$(BIN)/python -m pytest -q

test-slow: env
	$(BIN)/python -m pytest -q -m slow

test-long: env
	$(BIN)/python -m pytest -q -m long

# The sdist and wheel as users install them, used from a fresh environment outside the checkout.
check-wheel: env
	bash scripts/check_wheel.sh

lint: env
	$(BIN)/ruff check .

bench: env
	$(BIN)/python bench/bench_networks.py
	$(BIN)/python bench/bench_pipeline.py
	$(BIN)/python bench/bench_synth.py
