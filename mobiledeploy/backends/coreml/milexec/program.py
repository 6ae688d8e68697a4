"""Load a Core ML ML Program (.mlpackage) into plain Python objects and run it op by op.

The program is read from ``spec.mlProgram`` (protobuf) and the weights from the package's
``weight.bin`` (``storage``: neither imports coremltools); Core ML's ``predict`` is never called, so this
runs on Linux. Every op computes in float64 and its result is rounded to the dtype the program
declares for that output: an fp16 program therefore rounds and overflows where Core ML's fp16
kernels would (outputs are fp16; accumulation is wider, as on the GPU and Neural Engine).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .batch import Stacked, shared_value, stacked_args
from .ops import OPS, OPSET_AWARE, UnsupportedMILOp, opset_version

# MIL DataType enum name -> numpy dtype
_DTYPES = {
    "BOOL": np.bool_, "STRING": np.str_, "FLOAT16": np.float16, "FLOAT32": np.float32,
    "FLOAT64": np.float64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64,
}
# a batch is run in chunks of samples: per op, the largest array of a chunk stays within this many
# float64 elements (40 MB; a few such arrays are alive at once), with at most MAX_CHUNK samples
CHUNK_ELEMENTS = 5 << 20
MAX_CHUNK = 64
# weight dtypes a blob may hold (read as the program declares them; storage.py checks the record)
_BLOB_DTYPES = (np.float16, np.float32, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32)


@dataclass
class Op:
    """One MIL operation: inputs map a parameter to var names or literal values."""

    type: str
    inputs: dict[str, list[tuple[str, Any]]]  # param -> [("name", var) | ("value", ndarray)]
    outputs: list[tuple[str, Any]]  # (var name, numpy dtype or None)
    attrs: dict[str, Any]


@dataclass
class ImageInput:
    """An image feature: Core ML turns it into a float NCHW tensor in ``color_space`` order."""

    name: str
    color_space: str  # "RGB" | "BGR" | "GRAYSCALE"
    height: int
    width: int


def _load_spec(path: Path):
    from .storage import load_spec

    return load_spec(path)  # a broken package raises storage.StorageError (a ValueError)


def _weights_dir(path: Path) -> Path:
    return path / "Data" / "com.apple.CoreML" / "weights"


class MILProgram:
    """A loaded ML Program: parse once, run many times.

    ``run(inputs)`` takes ``{input name: array}``; an image input takes uint8 RGB pixels
    (H, W, C) or (N, H, W, C) (or a PIL image), a tensor input its float array. A batch of N
    over a batch-1 program gives what N one-sample runs give, stacked: its samples go through each
    op together, a chunk at a time (``batch.py`` says which ops may; the others run per sample).
    """

    def __init__(self, mlpackage_path: str | Path, spec=None):
        """``spec``: one model of the package's pipeline (its weights are the package's)."""
        self.path = Path(mlpackage_path)
        spec = spec if spec is not None else _load_spec(self.path)
        if spec.WhichOneof("Type") != "mlProgram":
            raise UnsupportedMILOp(f"{self.path} is not an ML Program (it is {spec.WhichOneof('Type')})")
        self.spec = spec
        self._readers: dict[str, Any] = {}
        fn = spec.mlProgram.functions["main"]
        block = fn.block_specializations[fn.opset]
        self.opset = fn.opset
        self.input_names = [i.name for i in fn.inputs]
        # None marks a symbolic (unknown) dimension
        self.input_shapes = {
            i.name: tuple(d.constant.size if d.WhichOneof("dimension") == "constant" else None
                          for d in i.type.tensorType.dimensions) for i in fn.inputs
        }
        self.opset_version = opset_version(self.opset)
        self.input_dtypes = {i.name: self._dtype(i.type) for i in fn.inputs}
        self.output_names = list(block.outputs)
        self.images = {
            f.name: ImageInput(
                f.name,
                type(f.type.imageType).ColorSpace.Name(f.type.imageType.colorSpace),
                f.type.imageType.height,
                f.type.imageType.width,
            )
            for f in spec.description.input
            if f.type.WhichOneof("Type") == "imageType"
        }
        self.ops = [self._parse_op(op) for op in block.operations]
        self.consts = {}
        for op in self.ops:
            if op.type == "const":
                self.consts[op.outputs[0][0]] = op.attrs["val"]
        self.sample_elements = self._largest_value(block)

    # ---------------------------------------------------------------- parsing
    @staticmethod
    def _dtype(vtype):
        kind = vtype.WhichOneof("type")
        if kind == "tensorType":
            from .storage import proto

            return _DTYPES.get(proto("MIL_pb2").DataType.Name(vtype.tensorType.dataType))
        return None

    def _reader(self, file_name: str):
        rel = file_name.replace("@model_path/weights/", "")
        if rel not in self._readers:
            from .storage import BlobFile, StorageError

            root = _weights_dir(self.path).resolve()
            path = (root / rel).resolve()
            if not path.is_relative_to(root):
                raise StorageError(f"{self.path}: weight file {file_name!r} leaves the package")
            self._readers[rel] = BlobFile(path)
        return self._readers[rel]

    def _value(self, value) -> Any:
        """A proto ``Value`` (immediate or blob) as a numpy array, list or str."""
        kind = value.WhichOneof("value")
        if kind == "blobFileValue":
            dtype = self._dtype(value.type)
            if dtype not in _BLOB_DTYPES:
                raise UnsupportedMILOp(f"unsupported MIL weight dtype {np.dtype(dtype).name}")
            from .storage import StorageError

            shape = [d.constant.size for d in value.type.tensorType.dimensions]
            data = self._reader(value.blobFileValue.fileName).read(value.blobFileValue.offset, dtype)
            if data.size != int(np.prod(shape)):
                raise StorageError(f"weight blob at {value.blobFileValue.offset} holds {data.size} values, "
                                       f"the program declares {shape}")
            return data.reshape(shape)
        imm = value.immediateValue
        ikind = imm.WhichOneof("value")
        if ikind == "tensor":
            return self._tensor(imm.tensor, value.type)
        if ikind in ("list", "tuple"):
            return [self._value(v) for v in getattr(imm, ikind).values]
        raise UnsupportedMILOp(f"unsupported MIL immediate value {ikind}")

    def _tensor(self, tv, vtype) -> np.ndarray:
        dtype = self._dtype(vtype)
        shape = [d.constant.size for d in vtype.tensorType.dimensions]
        kind = tv.WhichOneof("value")
        if kind == "bytes":
            arr = np.frombuffer(tv.bytes.values, dtype=dtype).copy()
        elif kind == "strings":
            arr = np.array(list(tv.strings.values), dtype=object)
        else:
            arr = np.array(list(getattr(tv, kind).values), dtype=dtype)
        return arr.reshape(shape) if shape else arr.reshape(())

    def _parse_op(self, op) -> Op:
        inputs = {}
        for key, arg in op.inputs.items():
            binds = []
            for b in arg.arguments:
                if b.WhichOneof("binding") == "name":
                    binds.append(("name", b.name))
                else:
                    binds.append(("value", self._value(b.value)))
            inputs[key] = binds
        outputs = [(o.name, self._dtype(o.type)) for o in op.outputs]
        attrs = {}
        if op.type == "const":
            attrs["val"] = self._value(op.attributes["val"])
        if op.blocks:
            raise UnsupportedMILOp(f"unsupported MIL op {op.type} (nested blocks)")
        return Op(op.type, inputs, outputs, attrs)

    def _largest_value(self, block) -> int:
        """Elements of the largest array one sample's run makes: the declared output shapes, and
        for a conv the window matrix its kernel builds (output x kernel taps x input channels per group)."""
        big = 1
        for spec_op, op in zip(block.operations, self.ops, strict=True):
            if op.type == "const":  # shared by every sample, not made per sample
                continue
            for o in spec_op.outputs:
                if o.type.WhichOneof("type") != "tensorType":
                    continue
                dims = o.type.tensorType.dimensions
                if not all(d.WhichOneof("dimension") == "constant" for d in dims):
                    continue
                size = math.prod(d.constant.size for d in dims)
                big = max(big, size)
                if op.type != "conv":
                    continue
                w, g = (self._const_arg(op, k) for k in ("weight", "groups"))
                if isinstance(w, np.ndarray) and w.ndim == 4 and w.shape[0]:
                    groups = int(np.asarray(g).reshape(())) if g is not None else 1
                    big = max(big, size * groups * math.prod(w.shape[1:]) // w.shape[0])
        return big

    def _const_arg(self, op: Op, key: str):
        binds = op.inputs.get(key)
        if not binds:
            return None
        kind, v = binds[0]
        return v if kind == "value" else self.consts.get(v)

    def chunk_size(self) -> int:
        """Samples run together: as many as keep the largest value of a chunk within
        ``CHUNK_ELEMENTS`` (float64), at most ``MAX_CHUNK``; at least one."""
        return max(1, min(MAX_CHUNK, CHUNK_ELEMENTS // max(self.sample_elements, 1)))

    # ---------------------------------------------------------------- running
    def _feed(self, name: str, value) -> np.ndarray:
        """The tensor the program sees for one input, batch-first."""
        arr = np.asarray(value)
        img = self.images.get(name)
        if img is None:
            arr = arr.astype(self.input_dtypes.get(name) or np.float32, copy=False)
            return arr[None] if arr.ndim == len(self.input_shapes[name]) - 1 else arr
        if img.color_space == "GRAYSCALE":
            arr = arr[..., 0] if arr.ndim in (3, 4) and arr.shape[-1] == 1 else arr
            arr = arr[None] if arr.ndim == 2 else arr
            return arr[:, None].astype(np.float32)
        arr = arr[None] if arr.ndim == 3 else arr
        if arr.shape[-1] != 3 or arr.shape[1:3] != (img.height, img.width):
            raise ValueError(
                f"image input {name!r} needs (N, {img.height}, {img.width}, 3) RGB pixels, "
                f"got {arr.shape}"
            )
        # Core ML hands the program the pixel values (0..255) in the declared colour order;
        # the ImageType scale/bias are ops inside an ML Program.
        nchw = arr.astype(np.float32).transpose(0, 3, 1, 2)
        return nchw[:, ::-1].copy() if img.color_space == "BGR" else nchw

    def run(self, inputs: dict[str, Any], *, intermediates: bool = False,
            chunk: int | None = None) -> dict[str, Any]:
        """Run the program; returns its outputs (and every op output when ``intermediates``).

        A batch over a batch-1 program runs ``chunk`` samples at a time (default:
        ``chunk_size()``); the result is the same for any chunk."""
        if chunk is not None and chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        with _one_blas_thread():
            return self._run(inputs, intermediates, chunk)

    def _run(self, inputs: dict[str, Any], intermediates: bool, chunk: int | None = None) -> dict[str, Any]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise ValueError(f"missing program inputs {missing}; expected {self.input_names}")
        feeds = {n: self._feed(n, inputs[n]) for n in self.input_names}
        for k, shape in self.input_shapes.items():
            if shape and shape[0] is None:
                # a symbolic batch could be run whole or split; which one Core ML does per op is
                # not knowable here, so refuse rather than guess
                raise UnsupportedMILOp(f"input {k!r} has a symbolic first dimension {shape}; "
                                       "this executor runs fixed shapes only")
        if all(v.shape == self.input_shapes[k] for k, v in feeds.items()):
            return self._run_one(feeds, intermediates)
        # a batch of N samples through a batch-1 program is exact only when every input is a
        # batch-1 sample input fed the same N (a weights input must never be sliced)
        batches = {k: v.shape[0] if v.ndim else None for k, v in feeds.items()}
        n = next(iter(batches.values()), None)
        if not all(self.input_shapes[k][:1] == (1,) and v.shape[1:] == self.input_shapes[k][1:]
                   and batches[k] == n for k, v in feeds.items()):
            got = {k: tuple(v.shape) for k, v in feeds.items()}
            raise UnsupportedMILOp(f"inputs {got} do not match the program's shapes "
                                   f"{self.input_shapes} (only a common batch over batch-1 inputs "
                                   "is split sample by sample)")
        size = chunk or self.chunk_size()
        parts = [self._run_stacked({k: v[i : i + size] for k, v in feeds.items()}, intermediates)
                 for i in range(0, n, size)]
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}

    def _outputs(self, env: dict[str, Any], record: dict[str, Any] | None) -> dict[str, Any]:
        """The program's outputs, with every intermediate in ``record`` when one is kept."""
        out = {name: env[name] for name in self.output_names}
        if record is not None:
            record.update(out)
            return record
        return out

    def _calls(self, env: dict[str, Any]):
        """(op, kernel, arguments) for each op in order, constants aside; arguments are read from
        ``env`` when the op's turn comes (the caller stores each op's outputs there)."""
        for op in self.ops:
            if op.type != "const":
                yield op, *self._call(op, env)

    def _call(self, op, env: dict[str, Any]):
        """The kernel of ``op`` and its arguments, read from ``env`` (the values computed so far)."""
        fn = OPS.get(op.type)
        if fn is None:
            raise UnsupportedMILOp(f"unsupported MIL op {op.type}")
        args = {}
        for key, binds in op.inputs.items():
            vals = [env[v] if kind == "name" else v for kind, v in binds]
            args[key] = vals if op.type in ("concat", "stack") and key == "values" else vals[0]
        if op.type in OPSET_AWARE:
            args["opset"] = self.opset_version
        return fn, args

    def _run_one(self, feeds: dict[str, np.ndarray], intermediates: bool) -> dict[str, Any]:
        env: dict[str, Any] = dict(feeds)
        env.update(self.consts)
        record: dict[str, Any] = {}
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for op, fn, args in self._calls(env):
                for (name, dtype), val in zip(op.outputs, _results(fn(**args)), strict=True):
                    val = _round(val, dtype)
                    env[name] = val
                    if intermediates:
                        record[name] = val
        return self._outputs(env, record if intermediates else None)

    def _run_stacked(self, feeds: dict[str, np.ndarray], intermediates: bool) -> dict[str, Any]:
        """Run N batch-1 samples at once; the result equals N runs of ``_run_one``, stacked.

        Each var is a ``Stacked`` value (every sample's, on axis 0), a shared value (the same
        for every sample: constants and what only they feed) or a ``_PerSample`` list. An op runs
        once on stacks when ``batch.stacked_args`` shows that is exact; otherwise it runs sample
        by sample and its outputs are stacked again. Rounding to the declared dtypes happens at
        the same points either way (elementwise, so stacking does not change it)."""
        n = next(iter(feeds.values())).shape[0]
        env: dict[str, Any] = {k: Stacked(v) for k, v in feeds.items()}
        env.update(self.consts)
        record: dict[str, Any] = {}
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for op, fn, args in self._calls(env):
                flat = [x for v in args.values() for x in (v if isinstance(v, list) else [v])]
                if any(isinstance(v, _PerSample) for v in flat):
                    values = self._per_sample(op, fn, args, n)
                elif not any(isinstance(v, Stacked) for v in flat):
                    values = [_round(v, dt) for v, dt in zip(_results(fn(**args)), _dtypes(op), strict=True)]
                elif (shared := shared_value(op.type, args)) is not None:
                    values = [_round(shared, op.outputs[0][1])]
                elif (call := stacked_args(op.type, args, n)) is not None:
                    values = [_restack([_round(v, dt)], n) for v, dt in
                              zip(_results(fn(**call)), _dtypes(op), strict=True)]
                    if not all(isinstance(v, Stacked) for v in values):  # pragma: no cover - a rule's bug
                        raise AssertionError(f"milexec: {op.type} did not keep the samples on axis 0")
                else:
                    values = self._per_sample(op, fn, args, n)
                for (name, _), val in zip(op.outputs, values, strict=True):
                    env[name] = val
                    if intermediates:
                        record[name] = val
        return {k: _unstacked(v, n) for k, v in self._outputs(env, record if intermediates else None).items()}

    @staticmethod
    def _per_sample(op: Op, fn, args: dict[str, Any], n: int) -> list[Any]:
        def pick(v, i):
            if isinstance(v, Stacked):
                return v.a[i : i + 1]
            return v.values[i] if isinstance(v, _PerSample) else v

        runs = []
        for i in range(n):
            one = {k: [pick(x, i) for x in v] if isinstance(v, list) else pick(v, i) for k, v in args.items()}
            runs.append([_round(v, dt) for v, dt in zip(_results(fn(**one)), _dtypes(op), strict=True)])
        return [_restack([r[j] for r in runs], n) for j in range(len(op.outputs))]

    # ---------------------------------------------------------------- hashing
    def content_sha256(self) -> str:
        """sha256 over the program's structure and weight values (stable across conversions)."""
        h = hashlib.sha256()
        h.update(self.opset.encode())
        for name in self.input_names:
            h.update(f"in {name} {self.input_shapes[name]}".encode())
        for op in self.ops:
            h.update(f"op {op.type} ->".encode())
            for name, dtype in op.outputs:
                h.update(f" {name}:{np.dtype(dtype).name if dtype else '-'}".encode())
            for key in sorted(op.inputs):
                h.update(f" {key}=".encode())
                for kind, v in op.inputs[key]:
                    _hash_value(h, v) if kind == "value" else h.update(f"%{v}".encode())
            if "val" in op.attrs:
                _hash_value(h, op.attrs["val"])
        h.update(("out " + ",".join(self.output_names)).encode())
        return h.hexdigest()


@contextlib.contextmanager
def _one_blas_thread():
    """The program's products are small (one sample, a few hundred channels): a BLAS thread pool
    only adds synchronisation, and on a busy machine its spinning threads cost 5x the work
    (milexec's ms/sample in ``make bench``). Same results: each product is one BLAS call either way."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it the BLAS keeps its own thread count
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _hash_value(h, v) -> None:
    if isinstance(v, list):
        for x in v:
            _hash_value(h, x)
        return
    arr = np.asarray(v)
    h.update(f"[{arr.dtype.name}{arr.shape}]".encode())
    h.update(repr(arr.tolist()).encode() if arr.dtype == object else arr.tobytes())


class _PerSample:
    """One value per sample (an op that could not run on the stack made them)."""

    __slots__ = ("values",)

    def __init__(self, values: list[Any]):
        self.values = values


def _results(result) -> tuple:
    return result if isinstance(result, tuple) else (result,)


def _dtypes(op: Op) -> list[Any]:
    return [dt for _, dt in op.outputs]


def _round(val, dtype):
    """The executor's one rounding point: an op's result to the dtype the program declares."""
    if dtype is not None and dtype is not np.str_ and isinstance(val, np.ndarray):
        return val.astype(dtype, copy=False)
    return val


def _restack(values: list[Any], n: int):
    """A stack when the values are (or can be concatenated into) N samples on axis 0."""
    if len(values) == 1 and n != 1:
        v = values[0]
        return Stacked(v) if isinstance(v, np.ndarray) and v.ndim and v.shape[0] == n else _PerSample(values)
    first = values[0]
    if all(isinstance(v, np.ndarray) and v.ndim and v.shape[0] == 1 and v.shape == first.shape
           and v.dtype == first.dtype for v in values):
        return Stacked(values[0] if n == 1 else np.concatenate(values, axis=0))
    return _PerSample(values)


def _unstacked(v, n: int) -> Any:
    """What ``_stack`` makes of the N one-sample values of ``v``."""
    if isinstance(v, Stacked):
        return v.a  # the one-sample values have a size-1 axis 0: _stack concatenates them
    return _stack(v.values if isinstance(v, _PerSample) else [v] * n)


def _stack(parts: list[Any]) -> Any:
    first = parts[0]
    if isinstance(first, np.ndarray) and first.ndim >= 1 and first.shape[0] == 1:
        return np.concatenate(parts, axis=0)
    return np.stack([np.asarray(p) for p in parts])


def execute(
    mlpackage_path: str | Path, inputs: dict[str, Any], *, intermediates: bool = False
) -> dict[str, Any]:
    """Run an .mlpackage ML Program in NumPy; returns ``{var name: value}`` for its outputs.

    With ``intermediates=True`` every op output is returned too (MIL var names).
    Raises ``UnsupportedMILOp`` for an op this executor does not implement.
    """
    return MILProgram(mlpackage_path).run(inputs, intermediates=intermediates)
