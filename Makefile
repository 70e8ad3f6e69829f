# edgezoo: every target creates .venv when it is missing and installs what it needs.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-dev
JOBS    ?= 2

.PHONY: demo test test-all lint bench table export-matrix int8-table clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# One install for every target: the dev extra pulls export+train+pytest+ruff.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/edgezoo demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(JOBS) -m "not slow" tests

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -n $(JOBS) tests

lint: $(STAMP)
	$(BIN)/ruff check .

# onnxruntime CPU latency of edgezoo's deploy form against timm's same model, one per family
bench: $(STAMP)
	$(BIN)/python scripts/speed_vs_timm.py efficientvit_m0 shvit_s1 focalnet_tiny_srf efficientvit_b1 \
		--runs 200 --json bench.json

table: $(STAMP)
	$(BIN)/python scripts/model_table.py --write README.md

# Every model x format x precision through its gate (long: about an hour on 2 cores), then the
# README's export section is regenerated from the JSON.
MATRIX_FORMATS ?= onnx,coreml,executorch
export-matrix: $(STAMP)
	-$(BIN)/edgezoo export --all --format $(MATRIX_FORMATS) --out exported --json results/export-matrix.json
	$(BIN)/python scripts/export_table.py results/export-matrix.json --write README.md

# Digits-trained models exported int8 (ONNX full / weighted, ExecuTorch): results/int8.json and the README table
int8-table: $(STAMP)
	$(BIN)/python scripts/int8_table.py --json results/int8.json --write README.md

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache exported
