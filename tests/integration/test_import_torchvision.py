"""torchvision MobileNetV3 state dicts: names, layouts and function, without torchvision.

torchvision does not install beside this torch, so the test holds its own copy of torchvision's
MobileNetV3 module structure, written from torchvision's documented architecture
(``torchvision.models.mobilenetv3``: ``features`` = Conv2dNormActivation stem, InvertedResidual
blocks with a ``block`` Sequential [expand?, depthwise, SqueezeExcitation?, project], last
Conv2dNormActivation; ``classifier`` = Linear, Hardswish, Dropout, Linear; BatchNorm eps 0.001).
Its state dict has torchvision's exact names and shapes, and its forward is torchvision's, so an
import that maps a name to the wrong place, or pads or rounds differently, fails here.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from tests.conftest import EXAMPLE, run_cli  # noqa: E402

# torchvision's tables: input_c, kernel, expanded_c, out_c, use_se, activation, stride
TV_SMALL = [(16, 3, 16, 16, True, "RE", 2), (16, 3, 72, 24, False, "RE", 2), (24, 3, 88, 24, False, "RE", 1),
            (24, 5, 96, 40, True, "HS", 2), (40, 5, 240, 40, True, "HS", 1), (40, 5, 240, 40, True, "HS", 1),
            (40, 5, 120, 48, True, "HS", 1), (48, 5, 144, 48, True, "HS", 1), (48, 5, 288, 96, True, "HS", 2),
            (96, 5, 576, 96, True, "HS", 1), (96, 5, 576, 96, True, "HS", 1)]
TV_LARGE = [(16, 3, 16, 16, False, "RE", 1), (16, 3, 64, 24, False, "RE", 2), (24, 3, 72, 24, False, "RE", 1),
            (24, 5, 72, 40, True, "RE", 2), (40, 5, 120, 40, True, "RE", 1), (40, 5, 120, 40, True, "RE", 1),
            (40, 3, 240, 80, False, "HS", 2), (80, 3, 200, 80, False, "HS", 1), (80, 3, 184, 80, False, "HS", 1),
            (80, 3, 184, 80, False, "HS", 1), (80, 3, 480, 112, True, "HS", 1),
            (112, 3, 672, 112, True, "HS", 1), (112, 5, 672, 160, True, "HS", 2),
            (160, 5, 960, 160, True, "HS", 1), (160, 5, 960, 160, True, "HS", 1)]
TV_LAST_CHANNEL = {"small": 1024, "large": 1280}


def _make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's _make_divisible (from TF-slim): nearest multiple, never 10% below."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _cna(cin, cout, k, stride=1, groups=1, act=None):
    """torchvision's Conv2dNormActivation: Sequential(conv, bn[, act])."""
    layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout, eps=0.001, momentum=0.01)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class _SE(nn.Module):
    """torchvision.ops.SqueezeExcitation with scale_activation=Hardsigmoid."""

    def __init__(self, c, squeeze):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(c, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, c, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x):
        return x * self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))


class _InvertedResidual(nn.Module):
    def __init__(self, cin, k, exp, out, se, act, stride):
        super().__init__()
        a = nn.Hardswish if act == "HS" else nn.ReLU
        layers = []
        if exp != cin:
            layers.append(_cna(cin, exp, 1, act=a))
        layers.append(_cna(exp, exp, k, stride, groups=exp, act=a))
        if se:
            squeeze = _make_divisible(exp // 4)
            layers.append(_SE(exp, squeeze))
        layers.append(_cna(exp, out, 1))
        self.block = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and cin == out

    def forward(self, x):
        y = self.block(x)
        return x + y if self.use_res_connect else y


class TorchvisionMobileNetV3(nn.Module):
    """torchvision.models.MobileNetV3 at width 1.0 (its only published width)."""

    def __init__(self, arch: str, num_classes: int):
        super().__init__()
        table = TV_SMALL if arch == "small" else TV_LARGE
        layers = [_cna(3, table[0][0], 3, 2, act=nn.Hardswish)]
        layers += [_InvertedResidual(*row) for row in table]
        last_in = table[-1][3]
        layers.append(_cna(last_in, 6 * last_in, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(6 * last_in, TV_LAST_CHANNEL[arch]), nn.Hardswish(),
                                        nn.Dropout(0.2), nn.Linear(TV_LAST_CHANNEL[arch], num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _pixels(n: int = 16, size: int = 64) -> np.ndarray:
    from mobiledeploy.images import decode_resized, list_images

    labels = (EXAMPLE / "labels.txt").read_text().split()
    items = list_images(EXAMPLE / "validation", labels)[:: 200 // n][:n]
    return np.stack([decode_resized(p, size, size) for p, _ in items])


def _randomised(arch: str, num_classes: int, x) -> TorchvisionMobileNetV3:
    """Random weights, random BN affine, BN statistics from real images then perturbed."""
    from mobiledeploy.architectures.torch_builder import recalibrate_bn

    torch.manual_seed(0)
    m = TorchvisionMobileNetV3(arch, num_classes)
    recalibrate_bn(m, x)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                n = mod.num_features
                mod.weight.uniform_(0.6, 1.6)
                mod.bias.normal_(0, 0.3)
                mod.running_mean.add_(torch.randn(n) * 0.2 * mod.running_var.sqrt())
                mod.running_var.mul_(torch.empty(n).uniform_(0.6, 1.6))
            elif isinstance(mod, (nn.Linear, nn.Conv2d)) and mod.bias is not None:
                mod.bias.normal_(0, 0.2)
    return m.eval()


@pytest.mark.parametrize("arch, fmt", [("small", ".pth"), ("large", ".safetensors")])
def test_torchvision_state_dict_imports_exactly(arch, fmt, tmp_path):
    from mobiledeploy.architectures.torch_builder import build_torch_model
    from mobiledeploy.architectures.weights import load_torch_weights
    from mobiledeploy.definition import load_definition
    from mobiledeploy.importers import plan_import, write_import

    px = _pixels()
    tv_norm = (px.astype(np.float32) / 255 - np.array([0.485, 0.456, 0.406], np.float32)) / \
        np.array([0.229, 0.224, 0.225], np.float32)
    x = np.ascontiguousarray(tv_norm.transpose(0, 3, 1, 2), dtype=np.float32)
    tv = _randomised(arch, 7, x)
    src = tmp_path / f"tv_{arch}{fmt}"
    sd = tv.state_dict()
    assert "features.1.block.0.0.weight" in sd and f"features.{len(tv.features) - 1}.1.running_var" in sd
    if fmt == ".pth":
        torch.save(sd, src)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(src))
    plan = plan_import(src, tmp_path / "out", size=64)
    write_import(plan)
    imp = plan.imported
    assert (imp.preset, imp.width, imp.num_classes) == (f"mobilenet_v3_{arch}", 1.0, 7)
    assert imp.source.conventions == {"padding": "symmetric", "channel_rounding": "torchvision"}
    d = load_definition(tmp_path / "out" / f"tv_{arch}.yaml", check_files=False)
    assert d.conventions.padding.value == "symmetric" and d.imported_from.format == "torchvision"
    assert d.input.mean == (0.485, 0.456, 0.406) and d.input.std == (0.229, 0.224, 0.225)
    assert d.input.pixel_range == (0.0, 1.0)
    # the function, in float64 so that any misplaced tensor shows above rounding (random
    # weights make the logits large and the float32 error with them)
    ours = build_torch_model(d.architecture_spec())
    load_torch_weights(ours, imp.state)
    xd = torch.from_numpy(x).double()
    with torch.no_grad():
        ref = tv.double()(xd).numpy()
        out = ours.double()(xd).numpy()
    assert ref.std(axis=0).mean() > 0.05, "logits must vary across real images"
    assert len(set(ref.argmax(1).tolist())) >= 2
    assert np.abs(out - ref).max() <= 1e-9 * max(1.0, np.abs(ref).max()), np.abs(out - ref).max()
    assert (out.argmax(1) == ref.argmax(1)).all()


def test_a_tensor_that_does_not_fit_is_named_and_nothing_is_written(tmp_path):
    sd = TorchvisionMobileNetV3("small", 5).state_dict()
    sd["features.4.block.1.0.weight"] = torch.zeros(96, 1, 3, 3)  # torchvision's is 5x5
    src = tmp_path / "bad.pth"
    torch.save(sd, src)
    out = tmp_path / "out"
    r = run_cli("import", str(src), "-o", str(out))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "features.4.block.1.0.weight" in lines[0] and "(96, 1, 5, 5)" in lines[0], r.stderr
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_labels_must_match_the_classifier_and_unknown_files_are_refused(tmp_path):
    sd = TorchvisionMobileNetV3("small", 5).state_dict()
    src = tmp_path / "tv.pth"
    torch.save(sd, src)
    (tmp_path / "labels.txt").write_text("a\nb\nc\n")
    r = run_cli("import", str(src), "-o", str(tmp_path / "out"), "--labels", str(tmp_path / "labels.txt"))
    assert r.returncode == 2 and "3 labels" in r.stderr and "5 classes" in r.stderr, r.stderr
    (tmp_path / "model.onnx").write_bytes(b"x")
    r = run_cli("import", str(tmp_path / "model.onnx"), "-o", str(tmp_path / "out"))
    assert r.returncode == 2 and "unknown checkpoint type '.onnx'" in r.stderr, r.stderr
    torch.save({"features.0.0.weight": torch.zeros(16, 3, 3, 3)}, tmp_path / "partial.pth")
    r = run_cli("import", str(tmp_path / "partial.pth"), "-o", str(tmp_path / "out"))
    assert r.returncode == 2 and "classifier" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def test_images_are_decoded_before_anything_is_written(tmp_path):
    """`import --images` copies the images into the new definition's folder: one that does not
    decode (a truncated JPEG among good ones) fails the import naming it, and nothing is written."""
    from PIL import Image

    src = tmp_path / "tv.pth"
    torch.save(TorchvisionMobileNetV3("small", 2).state_dict(), src)
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    images = tmp_path / "images"
    for label in ("cat", "dog"):
        (images / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(_pixels(1, 32)[0]).save(images / label / f"{i}.png")
    good = (images / "dog" / "0.png").read_bytes()
    (images / "dog" / "1.jpg").write_bytes(b"\xff\xd8\xff\xe0" + good[:40])  # not an image
    out = tmp_path / "out"
    r = run_cli("import", str(src), "-o", str(out), "--labels", str(tmp_path / "labels.txt"),
                "--images", str(images))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "1.jpg" in lines[0] and "cannot decode image" in lines[0], r.stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    (images / "dog" / "1.jpg").unlink()  # the rest imports
    r = run_cli("import", str(src), "-o", str(out), "--labels", str(tmp_path / "labels.txt"),
                "--images", str(images))
    assert r.returncode == 0, r.stderr
    assert len(list((out / "images").rglob("*.png"))) == 6


def test_import_never_removes_a_folder_of_the_users_beside_the_output(tmp_path):
    """The import stages its files in a fresh folder of its own beside OUT; a folder of the user's
    under the name an older version used stays untouched, and nothing of ours is left behind."""
    from safetensors.torch import save_file

    from mobiledeploy.importers import plan_import, write_import

    torch.manual_seed(0)
    src = tmp_path / "tv.safetensors"
    save_file({k: v.contiguous() for k, v in TorchvisionMobileNetV3("small", 3).state_dict().items()}, str(src))
    mine = tmp_path / ".out.import-tmp"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    write_import(plan_import(src, tmp_path / "out", size=64))
    assert (mine / "keep.txt").read_text() == "mine"
    assert (tmp_path / "out" / "tv.yaml").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.import-tmp", "out", "tv.safetensors"]


def test_import_refuses_a_non_empty_folder_without_force_as_build_does(tmp_path):
    """`import -o DIR` into a folder holding files of the user's (a small.yaml of theirs) is
    refused, one line, exit 2, nothing changed; with --force it imports (same-named files replaced,
    others kept), as `build -o` does."""
    src = tmp_path / "tv.pth"
    torch.save(TorchvisionMobileNetV3("small", 2).state_dict(), src)
    out = tmp_path / "out"
    out.mkdir()
    (out / "small.yaml").write_text("mine: true\n")
    (out / "notes.txt").write_text("mine")
    r = run_cli("import", str(src), "-o", str(out), "--name", "small", "--size", "64")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "not empty" in lines[0] and "--force" in lines[0] and str(out) in lines[0], r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "small.yaml"]
    assert (out / "small.yaml").read_text() == "mine: true\n"
    r = run_cli("import", str(src), "-o", str(out), "--name", "small", "--size", "64", "--force")
    assert r.returncode == 0, r.stderr
    assert "preset" in (out / "small.yaml").read_text() and (out / "notes.txt").read_text() == "mine"
    assert (out / "small.safetensors").is_file()
