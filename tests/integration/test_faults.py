"""Seeded faults: artifacts with the mistakes people really make must fail `mobiledeploy validate`.

One correct bundle of the trained demo is built once and must pass. Each fault is a copy of it
with ONE artifact replaced by a wrong one (the manifest's sha256 rewritten so integrity passes,
except where integrity is the point). Plain ``mobiledeploy validate BUNDLE`` must exit 1 and its
report must name the target and the metric that caught it; the other targets still pass.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import EXAMPLE, example_data, run_cli, write_definition

pytestmark = pytest.mark.slow

WEIGHTS = EXAMPLE / "shapes.safetensors"


def _available(backend: str) -> bool:
    from mobiledeploy.backends.registry import missing

    return not missing(backend)


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """The correct bundle (built once): TFLite fp32 + int8, Core ML fp16, ExecuTorch fp32."""
    if not WEIGHTS.is_file():
        pytest.skip(f"{WEIGHTS} not present: train it with `make train-demo`")
    pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("torch")
    targets = ["tflite-fp32", "tflite-int8"]
    targets += ["coreml-fp16"] if _available("coreml") else []
    targets += ["executorch-xnnpack"] if _available("executorch") else []
    root = tmp_path_factory.mktemp("faults")
    # 64 validation images spread over the classes travel with the bundle, so that plain
    # `mobiledeploy validate` on every faulty copy stays quick
    data = example_data()
    data["validation"] = {"source": str(EXAMPLE / "validation"), "max_images": 64}
    for key in ("labels", "weights"):
        data[key] = str(EXAMPLE / data[key])
    data["calibration"]["source"] = str(EXAMPLE / data["calibration"]["source"])
    data["allow_outside_paths"] = True  # the shipped example's files, not copies
    definition = write_definition(root, data, "shapes.yaml")
    out = root / "good"
    args = ["build", str(definition), "-o", str(out), "--jobs", "2", "--no-app", "-q"]
    for t in targets:
        args += ["--target", t]
    res = run_cli(*args)
    assert res.returncode == 0, f"the correct bundle must pass:\n{res.stderr[-3000:]}"
    return out


# ---------------------------------------------------------------- making wrong artifacts
class Maker:
    """Wrong artifacts from the good bundle's own definition and weights."""

    def __init__(self, bundle: Path):
        from mobiledeploy.architectures.weights import read_weights
        from mobiledeploy.bundle import load_manifest
        from mobiledeploy.images import load_batch
        from mobiledeploy.validate.runner import bundle_definition

        self.bundle = bundle
        self.manifest = load_manifest(bundle)
        self.d = bundle_definition(bundle)
        self.state = read_weights(bundle / self.manifest["reference"]["weights"])
        self.calib = load_batch(self.d, "calibration")
        self.spec = self.d.architecture_spec()

    def art(self, target: str) -> dict:
        return next(a for a in self.manifest["artifacts"] if a["target"] == target)

    def keras(self, state, precision="fp32"):
        from mobiledeploy.architectures.reference import build_keras_reference

        return build_keras_reference(self.d, state, batch_size=1,
                                     hswish="lowered" if precision == "int8" else "fused")

    def tflite(self, state=None, precision="fp32", calibration=None, wrap=None) -> bytes:
        from mobiledeploy.backends.tflite.backend import convert_keras_to_tflite

        model = self.keras(self.state if state is None else state, precision)
        if wrap is not None:
            model = wrap(model)
        if precision == "int8" and calibration is None:
            calibration = self.calib.nhwc()
        data = convert_keras_to_tflite(model, precision, calibration=calibration, io_dtype="int8")
        # an artifact carries its own input metadata (a file without it fails on its own): this model
        # takes the definition's normalised input, i.e. per-channel mean/std in pixel units
        from mobiledeploy.backends.tflite import metadata as meta

        info = meta.metadata_for(self.d, io_dtype="float32")
        i = self.d.input
        lo, hi = i.pixel_range
        scale = (hi - lo) / 255.0
        info.inputs[0].mean = [(m - lo) / scale for m in i.mean]
        info.inputs[0].std = [s / scale for s in i.std]
        return meta.attach(data, meta.build_metadata(info), {meta.LABEL_FILE: meta.labels_file(self.d)})

    def torch(self, state):
        from mobiledeploy.architectures.reference import build_torch_reference

        return build_torch_reference(self.d, state)

    def coreml_fp16(self, module, out: Path) -> None:
        from mobiledeploy.backends.coreml.backend import convert_torch_to_mlpackage

        i = self.d.input
        convert_torch_to_mlpackage(module, out, height=i.height, width=i.width,
                                   color_order=i.color_order.value, pixel_range=i.pixel_range,
                                   mean=i.mean, std=i.std, labels=self.d.labels_list(), precision="fp16")


def bgr_state(m: Maker):
    """A model that expects BGR: its first conv's input channels swapped."""
    s = dict(m.state)
    s["stem.conv.weight"] = np.ascontiguousarray(s["stem.conv.weight"][:, ::-1])
    return s


def wrong_norm_state(m: Maker, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)):
    """A model that sees its input as if normalised with ``mean``/``std`` (folded into the stem).

    p/255 = x*s + m, so the model computes net(x*s/std' + (m - mean')/std'): the stem weights are
    scaled per input channel and the constant's response moves into the BN running mean.
    """
    s = dict(m.state)
    inp = m.d.input
    lo, hi = inp.pixel_range
    true_s = np.array(inp.std, np.float32) / (hi - lo)
    true_m = (np.array(inp.mean, np.float32) - lo) / (hi - lo)
    a = true_s / np.array(std, np.float32)
    c = (true_m - np.array(mean, np.float32)) / np.array(std, np.float32)
    w = s["stem.conv.weight"]
    s["stem.conv.weight"] = (w * a[None, :, None, None]).astype(np.float32)
    offset = (w * c[None, :, None, None]).sum(axis=(1, 2, 3))
    s["stem.bn.running_mean"] = (s["stem.bn.running_mean"] - offset).astype(np.float32)
    return s


def transposed_input(model):
    """NHWC bytes read as NCHW: the network gets a scrambled image of the same shape."""
    import keras

    _, h, w, c = model.input.shape
    x = keras.Input((h, w, c), batch_size=1, name="image")
    y = keras.layers.Permute((2, 3, 1), name="fault_to_nhwc")(keras.layers.Reshape((c, h, w), name="fault_as_nchw")(x))
    return keras.Model(x, model(y))


def swapped_state(m: Maker):
    """Two conv weights of equal shape swapped (a loader keyed by order, not by name)."""
    s = dict(m.state)
    names = sorted((k for k in s if k.endswith("expand.conv.weight")), key=lambda k: int(k.split(".")[1]))
    a, b = next((a, b) for i, a in enumerate(names) for b in names[i + 1:] if s[a].shape == s[b].shape)
    s[a], s[b] = s[b], s[a]
    return s, a.removesuffix(".conv.weight")


def fp16_overflow_state(m: Maker):
    """A function-preserving rescale that makes a ReLU block's expand output exceed 65504.

    relu(alpha*z) = alpha*relu(z) and the depthwise conv is linear, so scaling the expand BN by
    alpha and the depthwise weights by 1/alpha keeps the float32 function; float16 overflows.
    """
    from mobiledeploy.validate.localize import reference_intermediates

    i = next(i for i, b in enumerate(m.spec.blocks) if b.activation == "relu" and b.exp != b.out)
    name = f"blocks.{i}.expand"
    acts = reference_intermediates(m.torch(m.state), m.calib.x[:16])[name]
    alpha = np.float32(4 * 65504 / np.median(acts.reshape(len(acts), -1).max(1)))
    s = dict(m.state)
    s[f"{name}.bn.weight"] = s[f"{name}.bn.weight"] * alpha
    s[f"{name}.bn.bias"] = s[f"{name}.bn.bias"] * alpha
    s[f"blocks.{i}.dw.conv.weight"] = s[f"blocks.{i}.dw.conv.weight"] / alpha
    return s, name


def scaled_layer_state(m: Maker, layer: str, factor: float):
    """The weights with ``layer``'s convolution kernel scaled by ``factor`` (its bias unchanged)."""
    key = f"{layer}.conv.weight"
    state = dict(m.state)
    state[key] = state[key] * np.float32(factor)
    return state, layer


def install(bundle: Path, target: str, write, *, rewrite_sha: bool = True) -> None:
    """Replace one artifact of ``bundle`` with what ``write(path)`` puts there."""
    from mobiledeploy.bundle import sha256_path, size_of

    man = json.loads((bundle / "manifest.json").read_text())
    art = next(a for a in man["artifacts"] if a["target"] == target)
    path = bundle / art["path"]
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    write(path)
    if rewrite_sha:
        art["sha256"], art["bytes"] = sha256_path(path), size_of(path)
        (bundle / "manifest.json").write_text(json.dumps(man, indent=2))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# fault -> (target, what makes it); each returns extra facts the test checks
def make_faults(m: Maker, root: Path) -> dict[str, dict]:
    faults: dict[str, dict] = {}
    targets = {a["target"] for a in m.manifest["artifacts"]}

    def add(name, target, write, rewrite_sha=True, **facts):
        if target not in targets:
            return
        b = root / name
        shutil.copytree(m.bundle, b, ignore=shutil.ignore_patterns("report"))
        install(b, target, write, rewrite_sha=rewrite_sha)
        faults[name] = {"bundle": b, "target": target, **facts}

    def raw(data: bytes):
        return lambda p: p.write_bytes(data)

    add("bgr", "tflite-fp32", raw(m.tflite(bgr_state(m))), layer="stem")
    add("wrong-mean-std", "tflite-fp32", raw(m.tflite(wrong_norm_state(m))), layer="stem")
    add("nchw-nhwc", "tflite-fp32", raw(m.tflite(wrap=transposed_input)), layer="stem")
    swapped, first = swapped_state(m)
    add("swapped-weights", "tflite-fp32", raw(m.tflite(swapped)), layer=first)
    noise = np.random.default_rng(0).integers(0, 256, (100, *m.calib.pixels.shape[1:]), dtype=np.uint8)
    from mobiledeploy.images import normalise

    noise_x = np.ascontiguousarray(normalise(noise, m.d.input).transpose(0, 2, 3, 1))
    add("int8-calibrated-on-noise", "tflite-int8", raw(m.tflite(precision="int8", calibration=noise_x)))
    add("int8-calibrated-on-one-image", "tflite-int8",
        raw(m.tflite(precision="int8", calibration=m.calib.nhwc()[:1])))
    # a realistic converter slip: one mid-network layer computes 5% too much (its weights' scale),
    # calibrated consistently, so the int8 file is otherwise healthy. Its output SNR stays within
    # int8 noise (~24 vs 26 dB) and top-1 barely moves: only the gain checks can see it
    state, layer = scaled_layer_state(m, "blocks.3.dw", 1.05)
    add("int8-layer-scale-5pct", "tflite-int8", raw(m.tflite(state, precision="int8")), layer=layer,
        reason=r"layer_gain_step \S+ > ")
    add("truncated-tflite", "tflite-int8", lambda p: (p.write_bytes((m.bundle / m.art("tflite-int8")["path"])
                                                                     .read_bytes()), truncate(p)),
        rewrite_sha=False, reason=r"artifact changed since build")
    add("truncated-tflite-sha-rewritten", "tflite-int8",
        lambda p: (p.write_bytes((m.bundle / m.art("tflite-int8")["path"]).read_bytes()), truncate(p)),
        reason=r"cannot load")
    if "executorch-xnnpack" in targets:
        from mobiledeploy.architectures.torch_builder import build_torch_model
        from mobiledeploy.backends.executorch.backend import lower_to_pte

        other = lower_to_pte(build_torch_model(m.spec, seed=1234), (3, *m.spec.resolution))[0]
        add("another-model", "executorch-xnnpack", raw(other))
        add("truncated-pte-sha-rewritten", "executorch-xnnpack",
            lambda p: (p.write_bytes((m.bundle / m.art("executorch-xnnpack")["path"]).read_bytes()),
                       truncate(p)), reason=r"cannot load|fail")
    else:
        from mobiledeploy.architectures.torch_builder import build_torch_model
        from mobiledeploy.architectures.weights import state_dict_numpy

        add("another-model", "tflite-fp32", raw(m.tflite(state_dict_numpy(build_torch_model(m.spec, 1234)))))
    if "coreml-fp16" in targets:
        state, layer = fp16_overflow_state(m)
        faults_model = m.torch(state)
        add("fp16-overflow", "coreml-fp16", lambda p: m.coreml_fp16(faults_model, p), layer=layer,
            rescaled=state)
    return faults


def validate(bundle: Path) -> tuple[int, dict | None, str]:
    res = subprocess.run([sys.executable, "-m", "mobiledeploy", "validate", str(bundle), "-q"],
                         capture_output=True, text=True, timeout=1800)
    path = bundle / "report" / "validation.json"
    return res.returncode, json.loads(path.read_text()) if path.is_file() else None, res.stderr


@pytest.fixture(scope="module")
def caught(good, tmp_path_factory) -> dict[str, dict]:
    """Every fault bundle, validated with plain `mobiledeploy validate` (two at a time)."""
    m = Maker(good)
    faults = make_faults(m, tmp_path_factory.mktemp("faulty"))
    with ThreadPoolExecutor(2) as pool:
        results = dict(zip(faults, pool.map(validate, [f["bundle"] for f in faults.values()]), strict=True))
    for name, (code, report, stderr) in results.items():
        faults[name].update(code=code, report=report, stderr=stderr)
    faults["_maker"] = {"maker": m}
    return faults


def test_correct_bundle_passes(good):
    res = run_cli("validate", str(good))
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads((good / "report" / "validation.json").read_text())
    assert report["status"] == "pass" and report["failed"] == 0 and report["skipped"] == 0
    assert {r["target"] for r in report["results"]} >= {"reference-keras", "tflite-fp32", "tflite-int8"}


FAULTS = ["bgr", "wrong-mean-std", "nchw-nhwc", "swapped-weights", "int8-calibrated-on-noise",
          "int8-calibrated-on-one-image", "truncated-tflite", "truncated-tflite-sha-rewritten",
          "another-model", "truncated-pte-sha-rewritten", "fp16-overflow", "int8-layer-scale-5pct"]
METRIC = re.compile(r"\b(max_abs|mean_abs|cosine|snr_db|gain_error|layer_gain_step|top1_agreement|accuracy_drop) "
                    r"\S+ [<>] ")


@pytest.mark.parametrize("fault", FAULTS)
def test_fault_is_caught_and_named(caught, fault):
    if fault not in caught:
        pytest.skip(f"{fault}: its target is not built here (backend not installed)")
    f = caught[fault]
    rows = {r["target"]: r for r in f["report"]["results"]}
    row = rows[f["target"]]
    assert f["code"] == 1 and row["status"] == "fail", (
        f"{fault} not caught: exit {f['code']}, {f['target']} {row['status']}: {row['reason']}")
    assert f["target"] in f["stderr"], "the one-line failure summary names the target"
    assert re.search(f.get("reason", METRIC.pattern), row["reason"]), row["reason"]
    # only the faulty artifact fails: the report points at it and nothing else
    # (a MediaPipe row reads the same file: it belongs to the faulty target)
    others = {t: r["status"] for t, r in rows.items() if t.removeprefix("mediapipe:") != f["target"]}
    assert all(s == "pass" for s in others.values()), others
    if "layer" in f:
        loc = row["localization"]
        assert loc["first_divergent_layer"] == f["layer"], {k: v for k, v in loc.items() if k != "layers"}
    html = (f["bundle"] / "report" / "index.html").read_text()
    assert 'class="banner fail"' in html and f'id="t-{f["target"]}"' in html


def test_fp16_overflow_fault_keeps_the_float32_function(caught):
    """The rescaled model is the same function in float32: only float16 overflow breaks it."""
    if "fp16-overflow" not in caught:
        pytest.skip("coreml not installed")
    m = caught["_maker"]["maker"]
    import torch

    x = torch.from_numpy(m.calib.x[:8])
    with torch.no_grad():
        a, b = m.torch(m.state)(x).numpy(), m.torch(caught["fp16-overflow"]["rescaled"])(x).numpy()
    assert np.max(np.abs(a - b)) < 1e-3 * max(1.0, np.abs(a).max())
    row = next(r for r in caught["fp16-overflow"]["report"]["results"] if r["target"] == "coreml-fp16")
    assert not np.isfinite(row["metrics"]["max_abs"]) or row["metrics"]["max_abs"] > 1.0
