# edgezoo: every target creates .venv when it is missing and installs what it needs.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-dev
JOBS    ?= 2
# worksteal: an idle worker takes tests queued on the other, so the run does not end with one worker
# grinding through a queue of slow export tests while the other waits (it saved about 2 of 21 minutes of a
# make test on a 2-core AVX2-only EPYC, 2026-12-03)
XDIST   := -n $(JOBS) --dist worksteal

.PHONY: demo test test-all lint docs tables bench bench-runtimes bench-timm bench-curve bench-digits export-matrix int8-table clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# One install for every target: the dev extra pulls export+train+pytest+ruff.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/edgezoo demo

# the remote-benchmark tests start a real sshd on the loopback: install OpenSSH's server where it is missing;
# --durations: the slowest tests of the run are printed with its summary (what each issue's test budget is checked on)
test: $(STAMP)
	scripts/ensure_sshd.sh
	$(BIN)/python -m pytest -q $(XDIST) --durations=15 -m "not slow" tests

test-all: $(STAMP)
	scripts/ensure_sshd.sh
	$(BIN)/python -m pytest -q $(XDIST) tests

lint: $(STAMP)
	$(BIN)/ruff check .

# The documentation site (MkDocs Material, API reference from docstrings) into site/
docs: $(STAMP)
	$(BIN)/mkdocs build --strict

# Every generated table of the docs and the README, from its JSON (tests/test_docs.py checks they match)
tables: $(STAMP)
	$(BIN)/python -m edgezoo.pipelines.tables

# Latency on every runtime present here (edgezoo bench; absent runtimes are recorded as absent):
# the smallest model of each family, the ratios against timm's same models, the cost curve
# (latency against input size), each as results/bench/<fingerprint>[-timm|-sizes].json, then the
# docs' runtime tables are regenerated from them.
BENCH_OUT  ?= results/bench/
BENCH_THREADS ?= 2
BENCH_TIMM ?= ez_efficientvit_m0 ez_shvit_s1 ez_focalnet_tiny_srf ez_efficientvit_b0 ez_efficientvit_b1 \
	ez_resnet18_cbam ez_resnet50_se
bench: bench-runtimes bench-timm bench-curve bench-digits tables

BENCH_BATCH ?= 1,16
bench-runtimes: $(STAMP)
	$(BIN)/pip install -q -e ".[openvino]"
	-$(BIN)/edgezoo bench --smallest --runtime all --batch $(BENCH_BATCH) --threads $(BENCH_THREADS) --json $(BENCH_OUT) \
		--interleave-runtimes --work runs/bench-runtimes --plot $(BENCH_OUT)pareto.png -q

# --repeat: the whole run R times, each ratio the median of its per-pass ratios (one run is one draw)
TIMM_REPEAT ?= 3
bench-timm: $(STAMP)
	-$(BIN)/edgezoo bench $(BENCH_TIMM) --compare-timm --runtime ort --runs 300 --threads $(BENCH_THREADS) \
		--repeat $(TIMM_REPEAT) --json $(BENCH_OUT) -q

bench-curve: $(STAMP)
	-$(BIN)/edgezoo bench --smallest --runtime ort --sizes 128,192,256,384,512 --threads $(BENCH_THREADS) --json $(BENCH_OUT) \
		--curve $(BENCH_OUT) -q

# The fastest faithful CPU path per family: digits-trained models (cached under runs/int8-table),
# every CPU runtime timed interleaved, top-1 agreement on every held-out digit: at the rows' own
# 32-48 px (<fingerprint>-digits.json) and at DIGITS_PX (<fingerprint>-digits-<px>px.json).
DIGITS_PX ?= 128
DIGITS_REPEAT ?= 5
bench-digits: $(STAMP)
	$(BIN)/pip install -q -e ".[openvino]"
	-$(BIN)/python -m edgezoo.pipelines.fastest_path --json $(BENCH_OUT) --threads $(BENCH_THREADS) --repeat $(DIGITS_REPEAT)
	-$(BIN)/python -m edgezoo.pipelines.fastest_path --json $(BENCH_OUT) --threads $(BENCH_THREADS) --img-size $(DIGITS_PX) \
		--repeat $(DIGITS_REPEAT)

# Every model x format x precision through its gate (hours on 2 cores; a stopped run continues where it
# stopped), then the docs' export table is regenerated from the JSON.
MATRIX_FORMATS ?= onnx,coreml,executorch,litert
export-matrix: $(STAMP)
	-$(BIN)/edgezoo export --all --format $(MATRIX_FORMATS) --out exported --json results/export-matrix.json
	$(BIN)/python -m edgezoo.pipelines.tables export-matrix

# Digits-trained models exported int8 (ONNX full / weighted, ExecuTorch): results/int8.json and its docs table
int8-table: $(STAMP)
	$(BIN)/python -m edgezoo.pipelines.int8 --json results/int8.json
	$(BIN)/python -m edgezoo.pipelines.tables int8

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache exported site
