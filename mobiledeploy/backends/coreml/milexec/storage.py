"""An .mlpackage's files read without importing coremltools.

``import coremltools`` runs its package init, which imports its converters and with them
TensorFlow and torch: 4.3 s on top of both already loaded (``-X importtime``, AMD EPYC), paid by
every validation with a Core ML row just to parse one protobuf file and read weight blobs. Here:

- the generated protobuf modules (``Model_pb2``, ``MIL_pb2``) come from coremltools' installed
  ``proto`` folder, loaded as a private package (0.15 s); once coremltools itself is imported,
  its own modules are used (tested: importing coremltools after this still loads and converts);
- the weight file is read from its format: a 64-byte header (blob count, version 2), then per
  blob a 64-byte record (sentinel 0xDEADBEEF, data type, size in bytes, data offset) that the
  program's ``blobFileValue.offset`` points at. tests/unit checks every blob of a converted
  package against coremltools' own reader.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np

_PACKAGE = "_mobiledeploy_coreml_proto"
SENTINEL = 0xDEADBEEF
# the blob record's data type -> numpy dtype (the ones a program's declared type is checked against)
BLOB_DTYPES = {1: np.dtype(np.float16), 2: np.dtype(np.float32), 3: np.dtype(np.uint8), 4: np.dtype(np.int8)}


def proto(name: str):
    """coremltools' generated protobuf module ``name`` (e.g. ``"Model_pb2"``)."""
    if "coremltools" in sys.modules:  # already paid for: one set of modules per process
        return importlib.import_module(f"coremltools.proto.{name}")
    if _PACKAGE not in sys.modules:
        spec = importlib.util.find_spec("coremltools")
        if spec is None or not spec.submodule_search_locations:
            from ...._deps import require

            require("coremltools", "reading Core ML programs")  # raises, naming the extra
        pkg = types.ModuleType(_PACKAGE)
        pkg.__path__ = [str(Path(next(iter(spec.submodule_search_locations))) / "proto")]
        sys.modules[_PACKAGE] = pkg
    return importlib.import_module(f"{_PACKAGE}.{name}")


class StorageError(ValueError):
    """A package file that is not what its program says."""


def root_model(package: Path) -> Path:
    """The package's root model specification file, as its ``Manifest.json`` names it."""
    package = Path(package)
    try:
        manifest = json.loads((package / "Manifest.json").read_text())
        rel = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]["path"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StorageError(f"{package}: no readable Manifest.json naming the root model ({exc})") from None
    data = (package / "Data").resolve()
    path = (data / str(rel)).resolve()
    if not path.is_relative_to(data):
        raise StorageError(f"{package}/Manifest.json: root model path {rel!r} leaves the package")
    return path


def load_spec(package: Path):
    """The package's ``Model`` protobuf."""
    spec = proto("Model_pb2").Model()
    spec.ParseFromString(root_model(package).read_bytes())
    return spec


class BlobFile:
    """A MIL weight file: ``read(offset, dtype)`` is the blob whose record sits at ``offset``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.buf = self.path.read_bytes()

    def read(self, offset: int, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        if offset < 0 or offset + 64 > len(self.buf):
            raise StorageError(f"{self.path.name}: no blob record at offset {offset}")
        sentinel, kind = (int(v) for v in np.frombuffer(self.buf, np.uint32, 2, offset))
        size, start = (int(v) for v in np.frombuffer(self.buf, np.uint64, 2, offset + 8))
        if sentinel != SENTINEL:
            raise StorageError(f"{self.path.name}: no blob record at offset {offset}")
        if kind in BLOB_DTYPES and BLOB_DTYPES[kind] != dtype:
            raise StorageError(f"{self.path.name}: blob at {offset} holds {BLOB_DTYPES[kind].name}, the program "
                               f"declares {dtype.name}")
        if size % dtype.itemsize or start + size > len(self.buf):
            raise StorageError(f"{self.path.name}: blob at {offset} ({size} bytes at {start}) does not fit the file")
        return np.frombuffer(self.buf, dtype, size // dtype.itemsize, start).copy()
