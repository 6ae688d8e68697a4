"""Core ML backend: real coremltools conversions, run by the NumPy MIL executor on this host.

Inputs are the demo's camera-like shape images and BatchNorm statistics are recalibrated on
them, so logits have a real spread and an agreement figure means something.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("coremltools")

from mobiledeploy.architectures.torch_builder import recalibrate_bn  # noqa: E402
from mobiledeploy.backends.base import ConvertContext, InputBatch, SkipRun  # noqa: E402
from mobiledeploy.backends.coreml.backend import CoreMLBackend, content_sha256, convert_torch_to_mlpackage  # noqa: E402
from mobiledeploy.backends.coreml.milexec import MILProgram, UnsupportedMILOp, execute  # noqa: E402
from mobiledeploy.demo.shapes import iterate  # noqa: E402

nn = torch.nn
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
LABELS = [f"c{i}" for i in range(10)]


def camera_pixels(n: int, size: int, seed: int = 3000) -> np.ndarray:
    return np.stack([img for img, _ in iterate(n, seed, size)])


def normalise(pixels, color_order="rgb", pixel_range=(0.0, 1.0), mean=MEAN, std=STD):
    """The definition's preprocessing contract, written out (NCHW float32, model colour order)."""
    p = pixels[..., ::-1] if color_order == "bgr" else pixels
    lo, hi = pixel_range
    x = lo + p.astype(np.float32) / 255.0 * (hi - lo)
    x = (x - np.float32(mean)) / np.float32(std)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


def recalibrate(model, x: np.ndarray):
    """BatchNorm statistics from real images, so activations are not degenerate."""
    recalibrate_bn(model, x)
    return model


def torch_logits(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


class SE(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, c // 2, 1), nn.Conv2d(c // 2, c, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x):
        return x * self.gate(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))


class OpsNet(nn.Module):
    """conv, depthwise, grouped, hardswish, hardsigmoid SE, relu6, avgpool, pad, concat, mean,
    linear."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16),
                                  nn.Hardswish())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 5, 2, 2, groups=16, bias=False),
                                nn.BatchNorm2d(16), nn.ReLU6())
        self.se = SE(16)
        self.grouped = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, groups=4, bias=False),
                                     nn.BatchNorm2d(16), nn.Hardswish())
        self.pool = nn.AvgPool2d(3, 1, 1)
        self.fc = nn.Linear(32, 10)
        self.scale = scale

    def forward(self, x):
        x = self.se(self.dw(self.stem(x)))
        a = self.pool(self.grouped(x))
        b = nn.functional.pad(x, (1, 1, 1, 1))[:, :, 1:-1, 1:-1]
        y = torch.cat([a, b], 1).mean((2, 3))
        return self.fc(y * self.scale)


@pytest.fixture(scope="module")
def images():
    return camera_pixels(20, 48)


@pytest.fixture(scope="module")
def opsnet(images):
    torch.manual_seed(0)
    return recalibrate(OpsNet(), normalise(images))


def _convert(model, out, precision="fp32", **kw):
    args = dict(height=48, width=48, color_order="rgb", pixel_range=(0.0, 1.0), mean=MEAN,
                std=STD, labels=LABELS, precision=precision)
    args.update(kw)
    return convert_torch_to_mlpackage(model, out, **args)


@pytest.fixture(scope="module")
def opsnet_packages(opsnet, tmp_path_factory):
    d = tmp_path_factory.mktemp("coreml")
    info = {p: _convert(opsnet, d / f"ops_{p}.mlpackage", p) for p in ("fp32", "fp16")}
    return d, info


def test_fp32_program_matches_torch(opsnet, opsnet_packages, images):
    d, info = opsnet_packages
    ref = torch_logits(opsnet, normalise(images))
    assert ref.std() > 0.05, "reference logits are near-constant; the comparison would be empty"
    out = execute(d / "ops_fp32.mlpackage", {"image": images})
    assert out["logits"].shape == ref.shape
    assert np.abs(out["logits"] - ref).max() <= 1e-4
    # the classifier head iOS sees: probabilities and the top label
    np.testing.assert_allclose(out["probs"] if "probs" in out else out["classLabel_probs"],
                               torch.softmax(torch.from_numpy(ref), 1).numpy(), atol=1e-5)
    assert list(out["classLabel"]) == [LABELS[i] for i in ref.argmax(1)]
    assert info["fp32"]["compute_precision"] == "FLOAT32"
    assert info["fp32"]["input"]["type"] == "image"


def test_fp16_program_is_float16_and_close(opsnet, opsnet_packages, images):
    d, _ = opsnet_packages
    prog = MILProgram(d / "ops_fp16.mlpackage")
    conv_dtypes = {dt for op in prog.ops if op.type == "conv" for _, dt in op.outputs}
    assert conv_dtypes == {np.float16}
    ref = torch_logits(opsnet, normalise(images))
    got = prog.run({"image": images})["logits"]
    rel = np.abs(got - ref).max() / np.abs(ref).max()
    assert rel <= 1e-2
    # fp16 rounding must be visible: the executor is not silently computing in fp32
    assert np.abs(got - ref).max() > 1e-6


def test_intermediates_are_named_mil_vars(opsnet_packages, images):
    d, _ = opsnet_packages
    prog = MILProgram(d / "ops_fp32.mlpackage")
    inter = prog.run({"image": images[:2]}, intermediates=True)
    conv_outs = [op.outputs[0][0] for op in prog.ops if op.type == "conv"]
    assert len(conv_outs) >= 5 and all(inter[n].shape[0] == 2 for n in conv_outs)
    assert inter["logits"].shape == (2, 10)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_batched_run_equals_sample_by_sample(opsnet_packages, images, precision):
    """A batch runs each op once per chunk of samples: bit for bit what one run per image gives,
    outputs and every intermediate, whatever the chunk (fp16 rounding at the same points)."""
    from mobiledeploy.backends.coreml.milexec.program import _stack

    d, _ = opsnet_packages
    prog = MILProgram(d / f"ops_{precision}.mlpackage")
    alone = [prog.run({"image": img}, intermediates=True) for img in images]
    want = {k: _stack([a[k] for a in alone]) for k in alone[0]}
    assert want["logits"].std() > 0.05  # not near-constant: equality would say little
    for chunk in (None, 1, 7, len(images)):
        got = prog.run({"image": images}, intermediates=True, chunk=chunk)
        assert got.keys() == want.keys()
        for k, v in want.items():
            assert got[k].dtype == v.dtype and got[k].shape == v.shape, (chunk, k)
            assert np.array_equal(got[k], v), (chunk, k)
    assert {want[op.outputs[0][0]].dtype for op in prog.ops if op.type == "conv"} == {np.dtype(precision.replace("fp", "float"))}


def test_wrong_conversions_differ_clearly(opsnet, images, tmp_path):
    ref = torch_logits(opsnet, normalise(images))
    # wrong bias in the ImageType: mean of 0 instead of ImageNet's
    _convert(opsnet, tmp_path / "bias.mlpackage", mean=(0.0, 0.0, 0.0))
    bad = execute(tmp_path / "bias.mlpackage", {"image": images})["logits"]
    assert np.abs(bad - ref).max() > 100 * 1e-4
    # a spatially flipped stem kernel
    flipped = OpsNet()
    flipped.load_state_dict(opsnet.state_dict())
    flipped.eval()
    with torch.no_grad():
        flipped.stem[0].weight.copy_(flipped.stem[0].weight.flip(-1))
    _convert(flipped, tmp_path / "flip.mlpackage")
    bad = execute(tmp_path / "flip.mlpackage", {"image": images})["logits"]
    assert np.abs(bad - ref).max() > 100 * 1e-4


def test_bgr_and_uniform_std_image_preprocessing(opsnet, images, tmp_path):
    """BGR model order and a uniform std (all in the ImageType's scale, nothing in the graph)."""
    kw = dict(color_order="bgr", pixel_range=(-1.0, 1.0), mean=(0.0, 0.1, 0.2), std=(0.5,) * 3)
    info = _convert(opsnet, tmp_path / "bgr.mlpackage", **kw)
    assert info["input"]["color_layout"] == "BGR"
    assert info["input"]["per_channel_multiplier_in_graph"] is None
    ref = torch_logits(opsnet, normalise(images, **kw))
    got = execute(tmp_path / "bgr.mlpackage", {"image": images})["logits"]
    assert np.abs(got - ref).max() <= 1e-4


def test_fp16_overflow_shows_as_inf(images, tmp_path):
    torch.manual_seed(1)
    net = recalibrate(OpsNet(scale=2e4), normalise(images))
    with torch.no_grad():  # both constants stay finite in fp16; their product's sums do not
        net.fc.weight.mul_(10.0)
    ref = torch_logits(net, normalise(images))
    assert np.abs(ref).max() > 65504 and np.isfinite(ref).all()
    _convert(net, tmp_path / "o32.mlpackage", "fp32")
    _convert(net, tmp_path / "o16.mlpackage", "fp16")
    f32 = execute(tmp_path / "o32.mlpackage", {"image": images})["logits"]
    f16 = execute(tmp_path / "o16.mlpackage", {"image": images})["logits"]
    assert np.isfinite(f32).all()
    assert np.isinf(f16).any()


def test_content_hash_stable_across_conversions(opsnet, tmp_path):
    _convert(opsnet, tmp_path / "a.mlpackage")
    _convert(opsnet, tmp_path / "b.mlpackage")
    assert content_sha256(tmp_path / "a.mlpackage") == content_sha256(tmp_path / "b.mlpackage")
    other = OpsNet()
    other.load_state_dict(opsnet.state_dict())
    other.eval()
    with torch.no_grad():
        other.fc.bias[0] += 1e-3
    _convert(other, tmp_path / "c.mlpackage")
    assert content_sha256(tmp_path / "c.mlpackage") != content_sha256(tmp_path / "a.mlpackage")


def _definition(size=48, labels=LABELS):
    from mobiledeploy.definition import InputSpec, MetadataSpec

    inp = InputSpec(height=size, width=size, color_order="rgb", pixel_range=(0.0, 1.0),
                    mean=MEAN, std=STD)
    return SimpleNamespace(name="t", input=inp, labels_list=lambda: list(labels), metadata=MetadataSpec(),
                           description_text=lambda: "a test classifier")


def _target(precision="fp32", **options):
    """The shipped target profile (targets/coreml-*.yaml), with option overrides."""
    from mobiledeploy.targets import get_target

    return get_target(f"coreml-{precision}").resolve(options)


def test_backend_convert_load_run(opsnet, images, tmp_path):
    d = _definition()
    x = normalise(images)
    batch = InputBatch(pixels=images, x=x, labels=[None] * len(x), files=[""] * len(x))
    ctx = ConvertContext(definition=d, workdir=tmp_path, calibration=batch, _torch_model=opsnet)
    be = CoreMLBackend()
    for precision, tol in (("fp32", 1e-4), ("fp16", 5e-2)):
        facts = be.convert(ctx, _target(precision), tmp_path / f"m_{precision}.mlpackage")
        assert facts["minimum_deployment_target"] == "iOS15" and facts["content_sha256"]
        runner = be.load(tmp_path / f"m_{precision}.mlpackage", _target(precision), d)
        assert "milexec" in runner.executor
        got = runner.run(batch)
        assert got.dtype == np.float32 and got.shape == (len(x), 10)
        assert np.abs(got - torch_logits(opsnet, x)).max() <= tol
    assert "logits" in [name for name, _, _ in runner.intermediates(batch.subset(1))]


def test_backend_tensor_input(opsnet, images, tmp_path):
    d = _definition()
    x = normalise(images)
    batch = InputBatch(pixels=images, x=x)
    ctx = ConvertContext(definition=d, workdir=tmp_path, calibration=batch, _torch_model=opsnet)
    be = CoreMLBackend()
    target = _target("fp32", image_input=False)
    facts = be.convert(ctx, target, tmp_path / "t.mlpackage")
    assert facts["input"]["type"] == "tensor"
    got = be.load(tmp_path / "t.mlpackage", target, d).run(batch)
    assert np.abs(got - torch_logits(opsnet, x)).max() <= 1e-4


def test_unknown_op_is_skipped_not_passed(images, tmp_path):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 10)).eval()
    _convert(net, tmp_path / "gelu.mlpackage")
    with pytest.raises(UnsupportedMILOp, match="unsupported MIL op gelu"):
        execute(tmp_path / "gelu.mlpackage", {"image": images[:1]})
    with pytest.raises(SkipRun, match="unsupported MIL op gelu"):
        CoreMLBackend().load(tmp_path / "gelu.mlpackage", _target(), _definition())


def test_bad_options_are_user_errors(opsnet, tmp_path):
    from mobiledeploy.errors import UserError

    with pytest.raises(UserError, match="minimum_deployment_target.*allowed: iOS15"):
        _convert(opsnet, tmp_path / "x.mlpackage", minimum_deployment_target="iOS9")
    with pytest.raises(UserError, match="labels: 3 labels but the model has 10 outputs"):
        _convert(opsnet, tmp_path / "x.mlpackage", labels=["a", "b", "c"])


PRESETS = ["mobilenet_v3_small", "mobilenet_v3_large", "mobilenet_v3_small_minimalistic",
           "mobilenet_v3_large_minimalistic", "mobilenet_edgetpu"]


@pytest.mark.slow
@pytest.mark.parametrize("name", PRESETS)
def test_preset_fp32_matches_torch(name, tmp_path):
    from mobiledeploy.architectures.spec import preset
    from mobiledeploy.architectures.torch_builder import build_torch_model

    size = 64
    pixels = camera_pixels(30, size, seed=2000)
    x = normalise(pixels)
    model = recalibrate(build_torch_model(preset(name, 0.5, 10, size), seed=0), x)
    # The classifier's init (std 0.01) gives logits of ~1e-2, against which 1e-4 means little;
    # scale it to unit logit spread. (At spread 2 the fp32 noise floor is ~1e-4: torch fp32 and
    # the program are each ~6e-5 from a float64 evaluation, in different directions.)
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(1.0 / torch_logits(model, x).std())
    ref = torch_logits(model, x)
    assert ref.std() > 0.5
    _convert(model, tmp_path / "p.mlpackage", height=size, width=size)
    got = execute(tmp_path / "p.mlpackage", {"image": pixels})["logits"]
    diff = np.abs(got - ref).max()
    print(f"{name}: max|diff| {diff:.3g}, logit std {ref.std():.3g}")
    assert diff <= 1e-4
