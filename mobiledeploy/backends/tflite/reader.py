"""Read any .tflite flatbuffer without running it: subgraphs, operators, tensors, quantization.

The flatbuffer schema classes come from whichever installed package ships them, tried in this
order: ``ai_edge_litert.schema_py_generated`` (LiteRT, no TensorFlow needed), the ``tflite``
PyPI package, then ``tensorflow.lite.python.schema_py_generated``. All three expose the same
generated class names, so one reader serves them all.
"""

from __future__ import annotations

import importlib
import re
import struct
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

from ...errors import MissingDependencyError, UserError

_SCHEMA_MODULES = (
    "ai_edge_litert.schema_py_generated",
    "tflite",
    "tensorflow.lite.python.schema_py_generated",
)
_CUSTOM = 32  # BuiltinOperator.CUSTOM
_INT_WIDTH = {"INT32": 4, "INT64": 8}
# enum-typed option fields, decoded to names so callers never see schema integers
_ENUM_FIELDS = {
    "fused_activation_function": "ActivationFunctionType",
    "padding": "Padding",
    "weights_format": "FullyConnectedOptionsWeightsFormat",
    "kernel_type": "LSTMKernelType",
    "combiner": "CombinerType",
    "mode": "MirrorPadMode",
}


@lru_cache(maxsize=1)
def schema() -> ModuleType:
    """The first importable TFLite flatbuffer schema module (see module docstring)."""
    for name in _SCHEMA_MODULES:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(mod, "Model") and hasattr(mod, "BuiltinOperator"):
            return mod
    raise MissingDependencyError("ai_edge_litert", "tflite", "reading .tflite files")


@cache
def _enum_names(enum_cls_name: str) -> dict[int, str]:
    cls = getattr(schema(), enum_cls_name, None)
    if cls is None:
        return {}
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


@dataclass
class TensorInfo:
    """One tensor of a subgraph."""

    index: int
    name: str
    shape: list[int]
    shape_signature: list[int]
    dtype: str  # schema name: INT8, UINT8, FLOAT32, INT32, ...
    scale: list[float] = field(default_factory=list)
    zero_point: list[int] = field(default_factory=list)
    quantized_dimension: int = 0
    is_constant: bool = False  # backed by a non-empty buffer (weights, bias, shape params)
    is_variable: bool = False
    values: list[int] | None = None  # contents of small constant int tensors (axes, paddings)

    @property
    def quantized(self) -> bool:
        """True when the tensor carries affine quantization parameters."""
        return bool(self.scale)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; per-channel scales are summarised beyond 4 values."""
        q = None
        if self.quantized:
            scale = self.scale if len(self.scale) <= 4 else [min(self.scale), max(self.scale)]
            q = {"scale": scale, "zero_point": self.zero_point[:4],
                 "per_channel": len(self.scale) > 1, "axis": self.quantized_dimension}
        return {"index": self.index, "name": self.name, "shape": self.shape,
                "shape_signature": self.shape_signature, "dtype": self.dtype,
                "quantization": q, "constant": self.is_constant}


@dataclass
class OpInfo:
    """One operator in execution order."""

    index: int
    op: str  # builtin name (CONV_2D) or the custom code (edgetpu-custom-op)
    custom: bool
    version: int
    inputs: list[int]  # tensor indices; -1 marks an omitted optional input
    outputs: list[int]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class SubgraphInfo:
    """A subgraph: its tensors, operators in execution order, and its inputs/outputs."""

    index: int
    name: str
    tensors: list[TensorInfo]
    operators: list[OpInfo]
    inputs: list[int]
    outputs: list[int]

    def producers(self) -> dict[int, int]:
        """Tensor index -> index of the operator that writes it."""
        return {t: op.index for op in self.operators for t in op.outputs if t >= 0}


@dataclass
class TFLiteModel:
    """A parsed .tflite file."""

    path: str
    version: int
    description: str
    subgraphs: list[SubgraphInfo]
    bytes: int

    @property
    def main(self) -> SubgraphInfo:
        """The primary subgraph (index 0), the one the interpreter runs."""
        return self.subgraphs[0]

    def op_counts(self) -> dict[str, int]:
        """Operator name -> count over the main subgraph, in first-seen order."""
        counts: dict[str, int] = {}
        for op in self.main.operators:
            counts[op.op] = counts.get(op.op, 0) + 1
        return counts


def _np_list(obj: Any, name: str) -> list:
    if getattr(obj, f"{name}Length")() == 0:
        return []
    return [x.item() if hasattr(x, "item") else x for x in getattr(obj, f"{name}AsNumpy")()]


def _options(op: Any, s: ModuleType) -> dict[str, Any]:
    type_name = _enum_names("BuiltinOptions").get(op.BuiltinOptionsType())
    table = op.BuiltinOptions()
    if not type_name or type_name == "NONE" or table is None:
        return {}
    cls = getattr(s, type_name, None)
    if cls is None:
        return {}
    obj = cls()
    obj.Init(table.Bytes, table.Pos)
    out: dict[str, Any] = {}
    for attr in dir(cls):
        if (attr.startswith(("_", "GetRootAs", "Init")) or not attr[0].isupper()
                or attr.endswith(("IsNone", "Length", "AsNumpy", "BufferHasIdentifier"))):
            continue
        try:
            if hasattr(cls, f"{attr}AsNumpy"):
                value = _np_list(obj, attr)
            else:
                value = getattr(obj, attr)()
        except TypeError:
            continue
        key = _snake(attr)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if key in _ENUM_FIELDS and isinstance(value, int):
            value = _enum_names(_ENUM_FIELDS[key]).get(value, value)
        out[key] = value
    return out


def _root(cls: Any, buf: bytes) -> Any:
    getter = getattr(cls, "GetRootAs", None) or getattr(cls, f"GetRootAs{cls.__name__}")
    return getter(buf, 0)


def parse(buf: bytes, path: str = "<bytes>") -> TFLiteModel:
    """Parse the bytes of a .tflite file. A buffer that is not a TFLite model is a UserError."""
    s = schema()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise UserError(f"{path}: not a TFLite flatbuffer (no 'TFL3' identifier); "
                        "pass a .tflite file")
    try:
        return _parse(s, buf, path)
    except (IndexError, ValueError, struct.error, UnicodeDecodeError, AttributeError,
            TypeError) as exc:
        raise UserError(f"{path}: corrupt TFLite flatbuffer ({type(exc).__name__}); "
                        "re-export the model") from exc


def _parse(s: ModuleType, buf: bytes, path: str) -> TFLiteModel:
    model = _root(s.Model, buf)
    op_names = _enum_names("BuiltinOperator")
    tensor_types = _enum_names("TensorType")
    codes = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        custom = code == _CUSTOM
        name = oc.CustomCode().decode() if custom and oc.CustomCode() else op_names.get(code, str(code))
        codes.append((name, custom, oc.Version()))

    def has_data(idx: int) -> bool:
        if idx <= 0 or idx >= model.BuffersLength():  # buffer 0 is the shared empty buffer
            return False
        b = model.Buffers(idx)
        size = getattr(b, "Size", lambda: 0)()
        return b.DataLength() > 0 or bool(size)

    def small_ints(idx: int, dtype: str) -> list[int] | None:
        width = _INT_WIDTH.get(dtype)
        if width is None or not has_data(idx):
            return None
        b = model.Buffers(idx)
        n = b.DataLength()
        if n == 0 or n > 64 * width:
            return None
        raw = b.DataAsNumpy().tobytes()
        return [int.from_bytes(raw[i:i + width], "little", signed=True)
                for i in range(0, n - n % width, width)]

    subgraphs = []
    for si in range(model.SubgraphsLength()):
        sg = model.Subgraphs(si)
        tensors = []
        for ti in range(sg.TensorsLength()):
            t = sg.Tensors(ti)
            q = t.Quantization()
            scale = _np_list(q, "Scale") if q is not None else []
            zp = _np_list(q, "ZeroPoint") if q is not None else []
            shape = _np_list(t, "Shape")
            sig = _np_list(t, "ShapeSignature") or list(shape)
            dtype = tensor_types.get(t.Type(), str(t.Type()))
            tensors.append(TensorInfo(
                index=ti, name=(t.Name() or b"").decode("utf-8", "replace"),
                shape=shape, shape_signature=sig,
                dtype=dtype, values=small_ints(t.Buffer(), dtype),
                scale=[float(x) for x in scale], zero_point=[int(x) for x in zp],
                quantized_dimension=q.QuantizedDimension() if q is not None else 0,
                is_constant=has_data(t.Buffer()), is_variable=bool(t.IsVariable())))
        ops = []
        for oi in range(sg.OperatorsLength()):
            o = sg.Operators(oi)
            name, custom, version = codes[o.OpcodeIndex()]
            ops.append(OpInfo(index=oi, op=name, custom=custom, version=version,
                              inputs=_np_list(o, "Inputs"), outputs=_np_list(o, "Outputs"),
                              options=_options(o, s)))
        subgraphs.append(SubgraphInfo(
            index=si, name=(sg.Name() or b"").decode("utf-8", "replace"), tensors=tensors,
            operators=ops, inputs=_np_list(sg, "Inputs"), outputs=_np_list(sg, "Outputs")))
    if not subgraphs:
        raise UserError(f"{path}: TFLite model has no subgraph; re-export the model")
    desc = model.Description()
    return TFLiteModel(path=path, version=model.Version(),
                       description=desc.decode("utf-8", "replace") if desc else "",
                       subgraphs=subgraphs, bytes=len(buf))


def read_tflite(path: str | Path) -> TFLiteModel:
    """Read and parse a .tflite file. A missing, unreadable or corrupt file is a UserError."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such file; pass the path of a .tflite model")
    try:
        buf = p.read_bytes()
    except OSError as exc:
        raise UserError(f"{p}: cannot read ({exc.strerror}); check permissions") from exc
    return parse(buf, str(p))


def xnnpack_partitions(path: str | Path, model: TFLiteModel | None = None) -> dict[str, Any]:
    """How LiteRT's default delegate (XNNPACK) partitions the model on this machine.

    Loads the model in ``ai_edge_litert``'s Interpreter and reads its node list after
    ``allocate_tensors``: each DELEGATE node is one XNNPACK partition; an original op is
    delegated when it lies between a DELEGATE node's inputs and outputs. Returns
    ``{"partitions", "delegated_ops", "undelegated_ops": [{"index", "op"}], "runtime"}``, or
    ``{"available": false, "reason"}`` when LiteRT is missing or cannot load the model.
    """
    try:
        from ai_edge_litert import __version__ as litert_version
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return {"available": False, "reason": "ai-edge-litert is not installed: "
                "pip install 'mobiledeploy[tflite]'"}
    model = model or read_tflite(path)
    try:
        interp = Interpreter(model_path=str(path))
        interp.allocate_tensors()
        nodes = interp._get_ops_details()  # the only node-level view the Python API offers
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return {"available": False, "reason": f"LiteRT cannot load the model: {first}"}
    sg = model.main
    producers = sg.producers()
    delegates = [n for n in nodes if n["op_name"] == "DELEGATE"]
    delegated: set[int] = set()
    for node in delegates:
        stop = {int(t) for t in node["inputs"]}
        todo = [int(t) for t in node["outputs"]]
        while todo:  # walk back from the partition's outputs to its inputs
            tensor = todo.pop()
            op = producers.get(tensor)
            if tensor in stop or op is None or op in delegated:
                continue
            delegated.add(op)
            todo.extend(t for t in sg.operators[op].inputs if t >= 0)
    left = [{"index": op.index, "op": op.op} for op in sg.operators if op.index not in delegated]
    return {"available": True, "runtime": f"ai-edge-litert {litert_version}",
            "partitions": len(delegates), "delegated_ops": len(delegated),
            "undelegated_ops": left}
