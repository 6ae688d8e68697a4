"""milexec reads .mlpackage files without importing coremltools (milexec/storage.py): every weight
blob of real converted packages equals coremltools' own reader's, the executor never imports
coremltools, coremltools still loads and converts in the same process afterwards, and broken
packages fail loudly."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

ct = pytest.importorskip("coremltools")
torch = pytest.importorskip("torch")

from mobiledeploy.backends.coreml.milexec import MILProgram  # noqa: E402
from mobiledeploy.backends.coreml.milexec.storage import BlobFile, StorageError, load_spec, proto  # noqa: E402

_DT = {"FLOAT16": np.float16, "FLOAT32": np.float32, "INT8": np.int8, "UINT8": np.uint8}


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlpackages")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Hardswish(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5)).eval()
    traced = torch.jit.trace(model, torch.zeros(1, 3, 16, 16))
    out = {}
    for name, precision in (("fp32", ct.precision.FLOAT32), ("fp16", ct.precision.FLOAT16)):
        m = ct.convert(traced, inputs=[ct.TensorType(name="x", shape=(1, 3, 16, 16))], convert_to="mlprogram",
                       compute_precision=precision, minimum_deployment_target=ct.target.iOS16)
        path = root / f"tiny_{name}.mlpackage"
        m.save(str(path))
        out[name] = path
    return out


def _blobs(spec):
    mil = proto("MIL_pb2")
    fn = spec.mlProgram.functions["main"]
    for op in fn.block_specializations[fn.opset].operations:
        for value in op.attributes.values():
            if value.WhichOneof("value") == "blobFileValue":
                yield value.blobFileValue, _DT[mil.DataType.Name(value.type.tensorType.dataType)]


@pytest.mark.parametrize("name", ["fp32", "fp16"])
def test_every_blob_equals_coremltools_reader(packages, name):
    from coremltools import libmilstoragepython

    pkg = packages[name]
    ours = load_spec(pkg)
    assert ours.SerializeToString() == ct.utils.load_spec(str(pkg)).SerializeToString()
    weights = pkg / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    theirs = libmilstoragepython._BlobStorageReader(str(weights))
    read = {np.float16: theirs.read_fp16_data, np.float32: theirs.read_float_data}
    blobs = list(_blobs(ours))
    assert len(blobs) >= 2  # conv and linear weights (coremltools keeps tiny tensors inline)
    f = BlobFile(weights)
    for blob, dtype in blobs:
        a = f.read(blob.offset, dtype)
        b = np.asarray(read[dtype](blob.offset))
        assert a.dtype == dtype and a.size == b.size
        assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), (name, blob.offset)


def test_reading_a_program_imports_no_coremltools(packages):
    code = ("import sys, numpy as np\n"
            "from mobiledeploy.backends.coreml.milexec import MILProgram\n"
            f"p = MILProgram({str(packages['fp16'])!r})\n"
            "y = p.run({'x': np.ones((1, 3, 16, 16), np.float32)})\n"
            "assert 'coremltools' not in sys.modules, 'coremltools was imported'\n"
            "import coremltools, torch\n"  # and coremltools still works in this process afterwards
            f"spec = coremltools.utils.load_spec({str(packages['fp32'])!r})\n"
            "m = torch.jit.trace(torch.nn.Conv2d(3, 2, 1).eval(), torch.zeros(1, 3, 4, 4))\n"
            "coremltools.convert(m, inputs=[coremltools.TensorType(shape=(1, 3, 4, 4))], convert_to='mlprogram')\n"
            "print('OK', spec.WhichOneof('Type'))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "OK mlProgram" in r.stdout, r.stderr[-2000:]


def test_the_executor_agrees_with_torch_through_our_reader(packages):
    prog = MILProgram(packages["fp32"])
    x = np.random.default_rng(0).normal(size=(1, 3, 16, 16)).astype(np.float32)
    out = prog.run({"x": x})
    y = np.asarray(next(iter(out.values())))
    assert y.shape == (1, 5) and np.abs(y).max() > 1e-3  # weights were read, not zeros


def test_broken_packages_fail_naming_the_file(packages, tmp_path):
    bad = tmp_path / "escape.mlpackage"
    shutil.copytree(packages["fp32"], bad)
    manifest = json.loads((bad / "Manifest.json").read_text())
    manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]["path"] = "../../../etc/passwd"
    (bad / "Manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StorageError, match="leaves the package"):
        MILProgram(bad)

    cut = tmp_path / "cut.mlpackage"
    shutil.copytree(packages["fp32"], cut)
    w = cut / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    w.write_bytes(w.read_bytes()[:200])  # truncated weights
    with pytest.raises(StorageError, match="weight.bin"):
        MILProgram(cut)

    blob, dtype = next(_blobs(load_spec(packages["fp32"])))
    with pytest.raises(StorageError, match="no blob record"):
        BlobFile(packages["fp32"] / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").read(blob.offset + 4, dtype)
