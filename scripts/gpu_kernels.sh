#!/usr/bin/env bash
# The GPU check of edgezoo.kernels, in one command for a lent GPU machine (python3 there already holds
# torch, triton, timm and pytest-xdist; nothing is installed): the Triton kernel and block tests on
# CUDA (EDGEZOO_TEST_CUDA=1), then scripts/bench_kernels.py. Everything lands in $OUT (default
# results/bench): nvidia-smi.txt, pytest.txt, bench.txt and kernels-<gpu>.json.
#
#     OUT=/tmp/gpu bash scripts/gpu_kernels.sh
#     PYTEST_K="linear_attention and not slow" SWEEP= PYTEST_S=60 BENCH_S=150 bash scripts/gpu_kernels.sh
set -u
OUT=${OUT:-results/bench}
mkdir -p "$OUT"
site=$(mktemp -d)  # the package as pyproject.toml maps it, without pip (no index there)
python3 - "$site" <<'PY'  # every folder as pyproject.toml's package-dir maps it (edgezoo = zoo, edgezoo.x = x)
import shutil, sys, tomllib
mapping = tomllib.load(open("pyproject.toml", "rb"))["tool"]["setuptools"]["package-dir"]
for name, folder in sorted(mapping.items()):
    shutil.copytree(folder, "/".join([sys.argv[1], *name.split(".")]), dirs_exist_ok=True)
PY
export PYTHONPATH="$site:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem,temperature.gpu --format=csv \
    | tee "$OUT/nvidia-smi.txt"
python3 -c "import torch, triton, timm; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'triton', triton.__version__, 'timm', timm.__version__)" | tee -a "$OUT/nvidia-smi.txt"
EDGEZOO_TEST_CUDA=1 timeout "${PYTEST_S:-120}" python3 -m pytest -q -n 8 -p no:cacheprovider \
    tests/test_kernels_triton.py tests/test_kernels.py -k "${PYTEST_K:-not slow}" >"$OUT/pytest.txt" 2>&1
echo "pytest rc=$?"; grep -E "^FAILED|^ERROR|passed|failed" "$OUT/pytest.txt" | tail -15
timeout "${BENCH_S:-300}" python3 scripts/bench_kernels.py ${SWEEP---sweep} --out "$OUT" >"$OUT/bench.txt" 2>&1
echo "bench rc=$?"
python3 - "$OUT" <<'PY'
import json, pathlib, sys
for f in pathlib.Path(sys.argv[1]).glob("kernels-*.json"):
    d = json.loads(f.read_text())
    print(f.name, "copy GB/s", round(d["copy_bandwidth_gbs"]))
    for r in d["sweep"] + d["ops"] + d["training"] + d["models"]:
        if "sweep" in r:
            r = {**r, "ms": {k: round(v, 4) for k, v in r["ms"].items() if isinstance(v, float)}}
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k != "bytes"})
PY
