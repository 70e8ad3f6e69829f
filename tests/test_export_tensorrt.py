"""The ``tensorrt`` export format (``edgezoo.export.tensorrt``).

What runs where:

* With TensorRT and a CUDA GPU: a real engine is built for ez_efficientvit_b0 and the pipeline's
  parity gate runs it against PyTorch (``test_real_engine_matches_pytorch``).
* Everywhere else: the missing-dependency error; the ONNX graph TensorRT would parse (fp32 with a
  dynamic batch, int8 QDQ) checked in onnxruntime against PyTorch; the pure decisions (builder
  flags, profile shapes, which layers are pinned to fp32, the engine header); and ``convert`` driven
  end to end against a small fake ``tensorrt`` module that records its calls. The fake proves the
  code calls the TensorRT API in the right order with the right values; it cannot prove TensorRT
  accepts the graph or builds an engine.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

import edgezoo.export.tensorrt as trt_format
from edgezoo.data.calib import CalibrationSet
from edgezoo.errors import InvalidArgumentError, MissingDependencyError
from edgezoo.export.api import _check_options, export, metadata_for, prepare
from edgezoo.export.base import ExportJob, NotRunnable, get_format
from edgezoo.export.tensorrt import (
    TensorrtFormat,
    builder_flags,
    layer_onnx_node,
    pack_engine,
    parser_error_line,
    pin_fp32_layers,
    profile_shapes,
    read_engine,
    unpack_engine,
)
from tests.util import activation_zero_points, calibrate_bn_

MODEL = "ez_efficientvit_b0"
SIZE = 64
BATCH = 2
HAS_TRT = importlib.util.find_spec("tensorrt") is not None


# ---------------------------------------------------------------------------------------------
# A fake ``tensorrt`` that records calls (API order and values only; it builds nothing)
# ---------------------------------------------------------------------------------------------

class _Tensor:
    def __init__(self, name: str, dtype: str, shape: tuple[int, ...] = ()) -> None:
        self.name, self.dtype, self.shape = name, dtype, shape


class _Layer:
    def __init__(self, name: str, metadata: str, type_: str, dtypes: list[str]) -> None:
        self.name, self.metadata, self.type = name, metadata, type_
        self.outputs = [_Tensor(f"{name}:{i}", d) for i, d in enumerate(dtypes)]
        self.precision: str | None = None
        self.output_types: dict[int, str] = {}

    @property
    def num_outputs(self) -> int:
        return len(self.outputs)

    def get_output(self, i: int) -> _Tensor:
        return self.outputs[i]

    def set_output_type(self, i: int, dtype: str) -> None:
        self.output_types[i] = dtype


class _Network:
    def __init__(self, layers: list[_Layer] | None = None) -> None:
        self.layers, self.inputs = layers or [], []

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def get_layer(self, i: int) -> _Layer:
        return self.layers[i]

    def get_input(self, i: int) -> _Tensor:
        return self.inputs[i]


def fake_tensorrt(calls: list[tuple], version: str = "10.9.0.34") -> types.ModuleType:
    """A ``tensorrt`` stand-in. Its parser models TensorRT's naming: one layer per ONNX node (named
    after it, ``[ONNX Layer: <node>]`` metadata, int64 outputs for Shape), plus an extra helper layer
    without metadata for MatMul and LayerNormalization nodes; a taken name gets ``_<counter>``."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.float32, trt.float16, trt.int64 = "float32", "float16", "int64"
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16", INT8="INT8", TF32="TF32",
                                            OBEY_PRECISION_CONSTRAINTS="OBEY_PRECISION_CONSTRAINTS")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.LayerType = types.SimpleNamespace(CONSTANT="CONSTANT")

    class Logger:
        WARNING = "WARNING"

        def __init__(self, severity: str) -> None:
            calls.append(("Logger", severity))

    class Parser:
        def __init__(self, network: _Network, logger: Logger) -> None:
            calls.append(("OnnxParser",))
            self.network, self.num_errors = network, 0

        def parse_from_file(self, path: str) -> bool:
            import onnx

            calls.append(("parse_from_file", Path(path).name))
            graph = onnx.load(path).graph
            dims = graph.input[0].type.tensor_type.shape.dim
            shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims)
            self.network.inputs.append(_Tensor(graph.input[0].name, "float32", shape))
            used: set[str] = set()
            counter = 0

            def unique(name: str) -> str:  # the parser's generateUniqueName: <name>, else <name>_<counter>
                nonlocal counter
                candidate = name
                while candidate in used:
                    candidate, counter = f"{name}_{counter}", counter + 1
                used.add(candidate)
                return candidate

            for node in graph.node:
                if node.op_type == "Constant":
                    continue
                dtype = "int64" if node.op_type == "Shape" else "float32"
                self.network.layers.append(_Layer(unique(node.name), f"[ONNX Layer: {node.name}]", node.op_type,
                                                  [dtype]))
                if node.op_type in ("MatMul", "LayerNormalization"):
                    self.network.layers.append(_Layer(unique(node.name), "", "SHUFFLE", ["float32"]))
            return True

    class Profile:
        def set_shape(self, name: str, lo: tuple, opt: tuple, hi: tuple) -> None:
            calls.append(("set_shape", name, tuple(lo), tuple(opt), tuple(hi)))

    class Cache:
        def __init__(self, blob: bytes) -> None:
            self.blob = bytes(blob)

        def serialize(self) -> bytes:
            calls.append(("serialize_timing_cache",))
            return self.blob + b"+timed"

    class Config:
        def __init__(self) -> None:
            self.cache: Cache | None = None
            self._level = None

        @property
        def builder_optimization_level(self) -> int | None:
            return self._level

        @builder_optimization_level.setter
        def builder_optimization_level(self, level: int) -> None:
            calls.append(("builder_optimization_level", level))
            self._level = level

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            calls.append(("set_memory_pool_limit", pool, size))

        def set_flag(self, flag: str) -> None:
            calls.append(("set_flag", flag))

        def clear_flag(self, flag: str) -> None:
            calls.append(("clear_flag", flag))

        def add_optimization_profile(self, profile: Profile) -> int:
            calls.append(("add_optimization_profile",))
            return 0

        def create_timing_cache(self, blob: bytes) -> Cache:
            calls.append(("create_timing_cache", bytes(blob)))
            return Cache(blob)

        def set_timing_cache(self, cache: Cache, ignore_mismatch: bool) -> bool:
            calls.append(("set_timing_cache", ignore_mismatch))
            self.cache = cache
            return True

        def get_timing_cache(self) -> Cache:
            return self.cache

    class Builder:
        def __init__(self, logger: Logger) -> None:
            calls.append(("Builder",))

        def create_network(self, flags: int) -> _Network:
            calls.append(("create_network", flags))
            trt.network = _Network()
            return trt.network

        def create_builder_config(self) -> Config:
            calls.append(("create_builder_config",))
            return Config()

        def create_optimization_profile(self) -> Profile:
            calls.append(("create_optimization_profile",))
            return Profile()

        def build_serialized_network(self, network: _Network, config: Config) -> bytes:
            calls.append(("build_serialized_network",))
            return b"FAKE-PLAN"

    trt.Logger, trt.OnnxParser, trt.Builder = Logger, Parser, Builder
    return trt


def _node_names(path: Path) -> set[str]:
    import onnx

    return {n.name for n in onnx.load(str(path)).graph.node}


def _names(calls: list[tuple]) -> list[str]:
    return [c[0] for c in calls]


# ---------------------------------------------------------------------------------------------
# Fixtures: the model, and convert() run once per precision against the fake
# ---------------------------------------------------------------------------------------------

@dataclass
class Built:
    job: ExportJob
    engine: Path
    onnx: Path
    calls: list[tuple]
    network: _Network


def _job(src: Any, precision: str, dynamic: bool, work: Path, **options: Any) -> ExportJob:
    fmt = get_format("tensorrt")
    return ExportJob(model=src.model, name=src.name, input_size=src.input_size, batch=BATCH, dynamic=dynamic,
                     precision=precision, options=_check_options(fmt, options),
                     metadata=metadata_for(src, fmt, precision, BATCH, dynamic), work_dir=work)


def _convert(job: ExportJob) -> tuple[Path, list[tuple], _Network]:
    calls: list[tuple] = []
    fake = fake_tensorrt(calls)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "tensorrt", fake)
        engine = TensorrtFormat().convert(job)
    return engine, calls, fake.network


@pytest.fixture(scope="module")
def src() -> Any:
    return prepare(calibrate_bn_(_create(), SIZE), img_size=SIZE)


def _create() -> torch.nn.Module:
    import timm

    import edgezoo  # noqa: F401  registers the ez_* models with timm

    return timm.create_model(MODEL)


@pytest.fixture(scope="module")
def fp32(src: Any, tmp_path_factory: pytest.TempPathFactory) -> Built:
    work = tmp_path_factory.mktemp("fp32")
    # a folder that does not exist yet, one per fixture instance (pytest-xdist's worksteal can run this
    # module's tests in two stretches on one worker, which builds the fixture twice)
    cache = work.parent / f"{work.name}-cache" / "timing.cache"
    job = _job(src, "fp32", True, work, timing_cache=str(cache), max_batch="16")
    engine, calls, network = _convert(job)
    return Built(job, engine, work / f"{job.stem}.onnx", calls, network)


@pytest.fixture(scope="module")
def int8(src: Any, tmp_path_factory: pytest.TempPathFactory) -> Built:
    work = tmp_path_factory.mktemp("int8")
    cache = work / "old.cache"
    cache.write_bytes(b"OLD")
    job = _job(src, "int8", False, work, timing_cache=str(cache), embed_metadata="true", workspace="0.5")
    gen = torch.Generator().manual_seed(0)
    job.calibration = CalibrationSet(torch.randn(16, 3, SIZE, SIZE, generator=gen),
                                     torch.randn(8, 3, SIZE, SIZE, generator=gen), "random normal")
    engine, calls, network = _convert(job)
    return Built(job, engine, work / f"{job.stem}.onnx", calls, network)


def _rel_err(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-12))


# ---------------------------------------------------------------------------------------------
# Registry and missing dependency
# ---------------------------------------------------------------------------------------------

def test_registered_with_the_contract() -> None:
    fmt = get_format("tensorrt")
    assert isinstance(fmt, TensorrtFormat)
    assert (fmt.suffix, fmt.extra, fmt.modules, fmt.precisions) == (".engine", "tensorrt", ("tensorrt",),
                                                                     ("fp32", "fp16", "int8"))
    assert fmt.supports_dynamic and fmt.parity == "TensorRT on a CUDA GPU against PyTorch"
    assert {"workspace", "max_batch", "timing_cache", "opset", "builder_optimization_level",
            "embed_metadata"} <= set(fmt.options)


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed here")
def test_export_without_tensorrt_names_the_extra(tmp_path: Path) -> None:
    with pytest.raises(MissingDependencyError) as info:
        export(MODEL, "tensorrt", tmp_path / "out")
    message = str(info.value)
    assert "\n" not in message
    assert 'pip install "edgezoo[tensorrt]"' in message
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed here")
def test_runtime_reason_and_run_without_tensorrt(tmp_path: Path) -> None:
    fmt = get_format("tensorrt")
    reason = fmt.runtime_reason()
    assert reason.startswith("TensorRT is not installed") and 'pip install "edgezoo[tensorrt]"' in reason
    with pytest.raises(NotRunnable, match="not installed"):
        fmt.run(tmp_path / "x.engine", np.zeros((1, 3, 8, 8), np.float32), None)


def test_runtime_reason_without_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt([]))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert get_format("tensorrt").runtime_reason() == "no CUDA GPU"


@pytest.mark.parametrize("module", [types.ModuleType("tensorrt"), fake_tensorrt([], version="8.6.1")],
                         ids=["stub", "tensorrt8"])
def test_unusable_tensorrt_is_a_missing_dependency(monkeypatch: pytest.MonkeyPatch, module: Any) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    with pytest.raises(MissingDependencyError, match="edgezoo\\[tensorrt\\]"):
        trt_format._import_trt()


def test_options_are_parsed_and_checked() -> None:
    fmt = get_format("tensorrt")
    opts = _check_options(fmt, {"embed_metadata": "yes", "workspace": "1.5", "max_batch": "8"})
    assert opts["embed_metadata"] is True and opts["workspace"] == 1.5 and opts["max_batch"] == 8
    assert opts["timing_cache"] is None and opts["builder_optimization_level"] == 3
    with pytest.raises(InvalidArgumentError):
        _check_options(fmt, {"embed_metadata": "maybe"})
    with pytest.raises(InvalidArgumentError):
        _check_options(fmt, {"builder_optimization_level": "9"})


# ---------------------------------------------------------------------------------------------
# Pure decisions
# ---------------------------------------------------------------------------------------------

def test_builder_flags_per_precision() -> None:
    assert builder_flags("fp32") == ((), ("TF32",))
    assert builder_flags("fp16") == (("FP16", "OBEY_PRECISION_CONSTRAINTS"), ())
    assert builder_flags("int8") == (("INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS"), ())
    with pytest.raises(InvalidArgumentError):
        builder_flags("bf16")


def test_profile_shapes() -> None:
    size = (3, 64, 96)
    assert profile_shapes((2, 3, 64, 96), size, 2, 32, dynamic=False) is None
    assert profile_shapes((-1, 3, 64, 96), size, 2, 32, dynamic=False) == ((2, 3, 64, 96),) * 3
    assert profile_shapes((-1, 3, 64, 96), size, 4, 32, dynamic=True) == (
        (1, 3, 64, 96), (4, 3, 64, 96), (32, 3, 64, 96))
    assert profile_shapes((-1, 3, -1, -1), size, 1, 8, dynamic=True) == (
        (1, 3, 32, 32), (1, 3, 64, 96), (8, 3, 128, 192))
    assert profile_shapes((-1, 3, -1, -1), (3, 16, 16), 1, 8, dynamic=True)[0] == (1, 3, 16, 16)
    assert profile_shapes((2, 3, 64, 96), size, 2, 32, dynamic=True) == ((2, 3, 64, 96),) * 3
    with pytest.raises(InvalidArgumentError, match="max_batch"):
        profile_shapes((-1, 3, 64, 96), size, 8, 4, dynamic=True)
    with pytest.raises(InvalidArgumentError, match="NCHW"):
        profile_shapes((-1, 3, 64), size, 1, 4, dynamic=True)


def test_layer_onnx_node() -> None:
    nodes = {"node_add", "node_add_1", "node_matmul", "/blocks.0/LayerNorm"}
    assert layer_onnx_node("anything", "[ONNX Layer: node_matmul]", nodes) == "node_matmul"
    assert layer_onnx_node("x", "[ONNX Layer: gone]\x1f[ONNX Layer: node_add]", nodes) == "node_add"
    assert layer_onnx_node("node_add_1", "", nodes) == "node_add_1"  # an exact node name is that node
    assert layer_onnx_node("node_add_12", "", nodes) == "node_add"  # a helper of node_add, not of node_add_1
    assert layer_onnx_node("node_add_1_40_41", "", nodes) == "node_add_1"
    assert layer_onnx_node("/blocks.0/LayerNorm_7", "", nodes) == "/blocks.0/LayerNorm"
    assert layer_onnx_node("node_addition", "", nodes) is None  # no bare prefix matches
    assert layer_onnx_node("node_conv", "", nodes) is None


def test_pin_fp32_layers_against_a_fake_network() -> None:
    layers = [
        _Layer("node_conv2d", "[ONNX Layer: node_conv2d]", "CONVOLUTION", ["float32"]),
        _Layer("node_matmul", "[ONNX Layer: node_matmul]", "MATRIX_MULTIPLY", ["float32"]),
        _Layer("node_matmul_3", "", "SHUFFLE", ["float32"]),  # parser helper of node_matmul
        _Layer("node_div", "[ONNX Layer: node_div]", "ELEMENTWISE", ["float32"]),
        _Layer("node_div_shape", "[ONNX Layer: node_div]", "SHAPE", ["int64"]),  # integer output: untouched
        _Layer("node_div_4", "", "CONSTANT", ["float32"]),  # constants are skipped
        _Layer("node_add_1", "[ONNX Layer: node_add_1]", "ELEMENTWISE", ["float32"]),
        _Layer("node_add_12", "[ONNX Layer: node_add_12]", "ELEMENTWISE", ["float32"]),
        _Layer("node_sum", "[ONNX Layer: node_sum]", "REDUCE", ["float16", "float32"]),
    ]
    net = _Network(layers)
    keep = ["node_matmul", "node_div", "node_add_1", "node_sum", "node_not_in_graph"]
    nodes = {"node_conv2d", "node_matmul", "node_div", "node_add_1", "node_add_12", "node_sum"}
    pinned = pin_fp32_layers(net, keep, nodes, "float32", ("float32", "float16"), ("CONSTANT",))
    assert pinned == ["node_matmul", "node_matmul_3", "node_div", "node_add_1", "node_sum"]
    by_name = {layer.name: layer for layer in layers}
    for name in pinned:
        layer = by_name[name]
        assert layer.precision == "float32"
        assert layer.output_types == {i: "float32" for i in range(layer.num_outputs)}
    for name in ("node_conv2d", "node_div_shape", "node_div_4", "node_add_12"):
        assert by_name[name].precision is None and not by_name[name].output_types


def test_engine_header_round_trip(tmp_path: Path) -> None:
    meta = {"model": MODEL, "input_size": [3, 64, 64], "classes": ["zéro", "un"]}
    plan = b"\x00\x01ftrt" + bytes(range(256))
    packed = pack_engine(meta, plan)
    blob = json.dumps(meta).encode()
    assert packed[:4] == len(blob).to_bytes(4, "little") and packed[4:4 + len(blob)] == blob  # Ultralytics layout
    assert unpack_engine(packed) == (meta, plan)
    assert unpack_engine(plan) == (None, plan)  # a bare plan passes through
    assert unpack_engine(b"\x05\x00\x00\x00{bad}rest") == (None, b"\x05\x00\x00\x00{bad}rest")
    (tmp_path / "m.engine").write_bytes(plan)
    assert read_engine(tmp_path / "m.engine") == (None, plan)
    (tmp_path / "m.engine.json").write_text(json.dumps(meta))
    assert read_engine(tmp_path / "m.engine") == (meta, plan)  # the pipeline's sidecar


def test_parser_error_is_one_line() -> None:
    class Err:
        def __init__(self, node: str) -> None:
            self._node = node

        def desc(self) -> str:
            return "Assertion failed:\n  unsupported attribute"

        def node_name(self) -> str:
            return self._node

        def node_operator(self) -> str:
            return "Einsum"

    parser = types.SimpleNamespace(num_errors=3, get_error=lambda i: Err("node_einsum"))
    line = parser_error_line(parser, "m.onnx")
    assert line == ("TensorRT's ONNX parser rejected m.onnx at node node_einsum (Einsum): Assertion failed: "
                    "unsupported attribute (+2 more error(s))")
    bare = types.SimpleNamespace(num_errors=1, get_error=lambda i: types.SimpleNamespace(desc=lambda: "bad"))
    assert parser_error_line(bare, "m.onnx") == "TensorRT's ONNX parser rejected m.onnx: bad"
    assert "\n" not in parser_error_line(types.SimpleNamespace(num_errors=0), "m.onnx")


# ---------------------------------------------------------------------------------------------
# convert() end to end against the fake (API order and values, not TensorRT's acceptance)
# ---------------------------------------------------------------------------------------------

def test_fake_convert_fp32_dynamic(fp32: Built) -> None:
    job, calls, names = fp32.job, fp32.calls, _names(fp32.calls)
    assert names.index("create_network") < names.index("OnnxParser") < names.index("parse_from_file") \
        < names.index("create_builder_config") < names.index("build_serialized_network") \
        < names.index("serialize_timing_cache")
    assert ("create_network", 0) in calls and ("parse_from_file", fp32.onnx.name) in calls
    assert ("set_memory_pool_limit", "WORKSPACE", 4 << 30) in calls
    assert ("clear_flag", "TF32") in calls and not [c for c in calls if c[0] == "set_flag"]
    assert job.notes["fp32_layers"] == 0 and not any(layer.precision for layer in fp32.network.layers)
    hw = job.notes["dynamic_hw"]
    expected = ((1, 3, 32, 32), (2, 3, 64, 64), (16, 3, 128, 128)) if hw else \
        ((1, 3, 64, 64), (2, 3, 64, 64), (16, 3, 64, 64))
    assert ("set_shape", "input", *expected) in calls
    assert names.index("set_shape") < names.index("add_optimization_profile") < names.index("build_serialized_network")
    assert ("create_timing_cache", b"") in calls and ("set_timing_cache", False) in calls
    cache = Path(job.options["timing_cache"])
    assert cache.read_bytes() == b"+timed"
    assert fp32.engine == job.work_dir / f"{MODEL}.engine" and fp32.engine.read_bytes() == b"FAKE-PLAN"


def test_fake_convert_int8_pins_policy_layers(int8: Built) -> None:
    job, calls = int8.job, int8.calls
    assert [c[1] for c in calls if c[0] == "set_flag"] == ["INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS"]
    assert ("set_memory_pool_limit", "WORKSPACE", 1 << 29) in calls
    assert "set_shape" not in _names(calls)  # static export of a static graph: no profile
    keep = set(job.notes["fp32_nodes"]) | set(job.notes["float_nodes"])
    pinned = [layer for layer in int8.network.layers if layer.precision == "float32"]
    assert job.notes["fp32_layers"] == len(pinned) > 0
    nodes = _node_names(int8.onnx)
    for layer in int8.network.layers:
        owner = layer_onnx_node(layer.name, layer.metadata, nodes)
        should = owner in keep and layer.outputs[0].dtype == "float32"
        assert (layer.precision == "float32") == should, layer.name
    assert any(not layer.metadata for layer in pinned)  # helper layers follow their node
    assert ("create_timing_cache", b"OLD") in calls and Path(job.options["timing_cache"]).read_bytes() == b"OLD+timed"
    meta, plan = read_engine(int8.engine)
    assert plan == b"FAKE-PLAN" and meta == json.loads(json.dumps(job.metadata))
    assert int8.engine.name == f"{MODEL}_int8.engine"
    # TensorRT's explicit quantisation takes symmetric int8 activations only, whatever the ONNX default
    assert activation_zero_points(int8.onnx) == {(onnx.TensorProto.INT8, 0)}


def test_fake_convert_fp16_pins_policy_layers(fp32: Built, src: Any, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """fp16 parses the fp32 graph: reuse the fp32 fixture's file instead of exporting it again."""
    import edgezoo.export.onnx as onnx_format

    def reuse(job: ExportJob, path: Path, precision: str | None = None) -> Path:
        assert precision == "fp32"
        job.notes.update({k: fp32.job.notes[k] for k in ("fp32_nodes", "dynamic_hw")})
        return Path(shutil.copy(fp32.onnx, path))

    monkeypatch.setattr(onnx_format, "build_onnx", reuse)
    job = _job(src, "fp16", False, tmp_path, builder_optimization_level="5")
    engine, calls, network = _convert(job)
    assert [c[1] for c in calls if c[0] == "set_flag"] == ["FP16", "OBEY_PRECISION_CONSTRAINTS"]
    assert ("builder_optimization_level", 5) in calls
    assert ("set_shape", "input", *((BATCH, 3, SIZE, SIZE),) * 3) in calls  # dynamic graph, static export
    keep, nodes = set(job.notes["fp32_nodes"]), _node_names(fp32.onnx)
    pinned = [layer for layer in network.layers if layer.precision == "float32"]
    assert job.notes["fp32_layers"] == len(pinned) > len(keep)  # every policy node, plus its helper layers
    assert {layer_onnx_node(layer.name, layer.metadata, nodes) for layer in pinned} == keep
    assert engine.name == f"{MODEL}_fp16.engine"


def test_fake_convert_rejects_small_max_batch(src: Any, tmp_path: Path) -> None:
    job = _job(src, "fp32", True, tmp_path, max_batch="1")
    job.batch = 4
    with pytest.raises(InvalidArgumentError, match="max_batch"):
        _convert(job)


# ---------------------------------------------------------------------------------------------
# The ONNX graph TensorRT consumes, checked in onnxruntime
# ---------------------------------------------------------------------------------------------

def test_fp32_graph_matches_pytorch_with_dynamic_batch(fp32: Built) -> None:
    import onnx

    from edgezoo.export.onnx import ort_session

    proto = onnx.load(str(fp32.onnx))
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.HasField("dim_value")
    sess = ort_session(fp32.onnx)
    cases = [(BATCH + 1, (SIZE, SIZE))] + ([(1, (SIZE + 32, SIZE + 32))] if fp32.job.notes["dynamic_hw"] else [])
    for batch, size in cases:  # another batch than exported (and another size where height/width are dynamic)
        x = fp32.job.example_input(batch=batch, size=size)
        with torch.no_grad():
            ref = fp32.job.model(x).numpy()
        out = sess.run(None, {"input": x.numpy()})[0]
        assert out.shape == ref.shape
        assert _rel_err(out, ref) <= 1e-4, (batch, size)


def _policy_checks(built: Built, listed: list[str]) -> set[str]:
    import onnx

    proto = onnx.load(str(built.onnx))
    names = {n.name for n in proto.graph.node}
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["edgezoo.fp32_nodes"]) == built.job.notes["fp32_nodes"]
    assert props["model"] == MODEL
    assert listed and set(listed) <= names
    return names


def test_fp32_graph_policy_nodes_exist(fp32: Built) -> None:
    _policy_checks(fp32, fp32.job.notes["fp32_nodes"])


def test_int8_qdq_graph_runs_and_keeps_policy_nodes_float(int8: Built) -> None:
    import onnx

    from edgezoo.export.onnx import ort_session

    names = _policy_checks(int8, int8.job.notes["float_nodes"])
    proto = onnx.load(str(int8.onnx))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    assert set(int8.job.notes["fp32_nodes"]) & names  # the policy survives quantisation pre-processing
    x = int8.job.calibration.held_out[:BATCH]
    with torch.no_grad():
        ref = int8.job.model(x).numpy()
    out = ort_session(int8.onnx).run(None, {"input": x.numpy()})[0]
    assert out.shape == ref.shape and np.isfinite(out).all()
    # Random weights and random calibration images amplify int8 noise (relative error ~0.8 here), so this only
    # checks that the QDQ graph computes the same function; the pipeline's gate measures top-1 agreement.
    assert np.corrcoef(out.ravel(), ref.ravel())[0, 1] > 0.5


# ---------------------------------------------------------------------------------------------
# A real engine (needs TensorRT and a CUDA GPU)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("precision,dynamic", [("fp32", True), ("fp16", False), ("int8", False)])
def test_real_engine_matches_pytorch(precision: str, dynamic: bool, tmp_path: Path) -> None:
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (pip install \"edgezoo[tensorrt]\" on a "
                                           "machine with an NVIDIA GPU)")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU: TensorRT engines build and run on NVIDIA GPUs only")
    model = calibrate_bn_(_create(), SIZE)
    result = export(model, "tensorrt", tmp_path, img_size=SIZE, batch=BATCH, dynamic=dynamic, precision=precision,
                    calib_size=16)
    assert result.status == "verified", result.summary()
    engine = Path(result.path)
    assert engine.suffix == ".engine" and engine.is_file() and (tmp_path / f"{engine.name}.json").is_file()
    if precision != "fp32":
        assert result.notes["fp32_layers"] > 0
    meta, plan = read_engine(engine)
    assert meta["model"] == MODEL and plan == engine.read_bytes()
