"""Import existing MobileNetV3 checkpoints exactly: keras.applications model files and torchvision
state dicts become a preset, width, conventions, class count, preprocessing and canonical weights.

A source is read without trusting its names: every candidate architecture (preset x width under
the source framework's conventions) is laid against the source's tensors, and the one that takes
every tensor with its exact shape wins. Anything less is a one-line error naming the first source
tensor that does not fit. A Keras source is also *run* against the PyTorch reference built from
the result (``check_function``), so that an import that maps but computes something else fails.

Name maps (canonical = ``torch_builder``'s state-dict names; see ``architectures.weights``):

==============================  ======================================  ================================
canonical                       keras.applications                      torchvision
==============================  ======================================  ================================
stem.conv / stem.bn             conv / conv_bn                          features.0.0 / features.0.1
blocks.i.expand                 expanded_conv_{i}_expand(_bn)           features.{i+1}.block.0.{0,1}
blocks.i.dw                     expanded_conv_{i}_depthwise(_bn)        features.{i+1}.block.{j}.{0,1}
blocks.i.se.fc1 / fc2           ..._squeeze_excite_conv / _conv_1       features.{i+1}.block.{j}.fc1/fc2
blocks.i.project                expanded_conv_{i}_project(_bn)          features.{i+1}.block.{j}.{0,1}
last.conv / last.bn             conv_1 / conv_1_bn                      features.{n+1}.0 / .1
head.fc1 / head.classifier      conv_2 / logits (1x1 convs)             classifier.0 / classifier.3
==============================  ======================================  ================================

(keras' block 0 is ``expanded_conv_`` without an index; torchvision's ``j`` counts the block's
sub-modules, which depend on whether it expands and has SE.)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .bundle import sha256_file
from .errors import UserError

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
TORCH_SUFFIXES = (".pth", ".pt", ".safetensors")

# widths tried, common ones first (ties between equivalent widths go to the first)
WIDTHS = (1.0, 0.75, 0.5, 0.35, 1.25, 1.5, 2.0, *[round(0.05 * i, 2) for i in range(2, 41)])
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KERAS_PRESETS = ("mobilenet_v3_small", "mobilenet_v3_large", "mobilenet_v3_small_minimalistic",
                 "mobilenet_v3_large_minimalistic")
# torchvision defines no minimalistic variant
TORCHVISION_PRESETS = ("mobilenet_v3_small", "mobilenet_v3_large")
# the layer classes a keras.applications MobileNetV3 consists of
KERAS_LAYERS = {"InputLayer", "Rescaling", "Conv2D", "BatchNormalization", "Activation", "ReLU",
                "ZeroPadding2D", "DepthwiseConv2D", "GlobalAveragePooling2D", "Add", "Multiply",
                "Dropout", "Flatten"}
_BN_KERAS = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
             "running_var": "moving_variance"}


class ImportMismatch(UserError):
    """A source that cannot be imported exactly (exit 2, nothing written)."""


@dataclass
class Source:
    """What a checkpoint says about itself, in its own names and layouts."""

    path: Path
    format: str  # "keras" | "torchvision"
    tensors: dict[str, np.ndarray]  # source name -> array, in file order
    presets: tuple[str, ...]
    conventions: dict[str, str]
    resolution: tuple[int, int] | None  # None: the source takes any size
    pixel_range: tuple[float, float]
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    classifier_activation: str = "none"
    preprocessing_in_model: bool = False
    description: str = ""
    notes: list[str] = field(default_factory=list)
    config: dict | None = None  # keras: the functional config
    model: object = None  # keras: a runnable model with the source's function


@dataclass
class Imported:
    """A source mapped onto one architecture: the definition's facts and canonical weights."""

    source: Source
    preset: str
    width: float
    num_classes: int
    resolution: tuple[int, int]
    spec: object  # ArchitectureSpec
    state: dict[str, np.ndarray]  # canonical names and layouts, float32


# -- layouts ---------------------------------------------------------------------------------------

def _to_canonical(kind: str, a: np.ndarray) -> np.ndarray:
    if kind == "conv":  # HWIO -> OIHW
        return a.transpose(3, 2, 0, 1)
    if kind == "dw":  # (kh, kw, C, 1) -> (C, 1, kh, kw)
        return a.transpose(2, 3, 0, 1)
    if kind == "fc":  # a 1x1 conv (1, 1, in, out) -> Linear (out, in)
        return a.reshape(a.shape[-2], a.shape[-1]).T
    return a


def _source_shape(kind: str, canonical: tuple) -> tuple:
    """The shape a source tensor must have to become ``canonical`` under ``kind``."""
    if kind == "conv":
        o, i, kh, kw = canonical
        return (kh, kw, i, o)
    if kind == "dw":
        c, one, kh, kw = canonical
        return (kh, kw, c, one)
    if kind == "fc":
        o, i = canonical
        return (1, 1, i, o)
    return tuple(canonical)


def keras_names(spec) -> dict[str, tuple[str, str]]:
    """canonical name -> (keras.applications weight name, layout kind) for ``spec``."""
    m: dict[str, tuple[str, str]] = {}

    def conv_bn(canon: str, layer: str, kind: str) -> None:
        m[f"{canon}.conv.weight"] = (f"{layer}/kernel", kind)
        for ours, theirs in _BN_KERAS.items():
            m[f"{canon}.bn.{ours}"] = (f"{layer}_bn/{theirs}", "same")

    conv_bn("stem", "conv", "conv")
    cin = spec.stem_out
    for i, b in enumerate(spec.blocks):
        p = "expanded_conv_" if i == 0 else f"expanded_conv_{i}_"
        c = f"blocks.{i}"
        if b.has_expand(cin):
            conv_bn(f"{c}.expand", p + "expand", "conv")
        conv_bn(f"{c}.dw", p + "depthwise", "dw")
        if b.se:
            for ours, theirs in (("fc1", "squeeze_excite_conv"), ("fc2", "squeeze_excite_conv_1")):
                m[f"{c}.se.{ours}.weight"] = (f"{p}{theirs}/kernel", "conv")
                m[f"{c}.se.{ours}.bias"] = (f"{p}{theirs}/bias", "same")
        conv_bn(f"{c}.project", p + "project", "conv")
        cin = b.out
    conv_bn("last", "conv_1", "conv")
    if spec.head_hidden:
        m["head.fc1.weight"] = ("conv_2/kernel", "fc")
        m["head.fc1.bias"] = ("conv_2/bias", "same")
    m["head.classifier.weight"] = ("logits/kernel", "fc")
    m["head.classifier.bias"] = ("logits/bias", "same")
    return m


def torchvision_names(spec) -> dict[str, tuple[str, str]]:
    """canonical name -> (torchvision ``mobilenet_v3_*`` state-dict name, layout kind)."""
    m: dict[str, tuple[str, str]] = {}

    def conv_bn(canon: str, seq: str) -> None:
        m[f"{canon}.conv.weight"] = (f"{seq}.0.weight", "same")
        for name in ("weight", "bias", "running_mean", "running_var"):
            m[f"{canon}.bn.{name}"] = (f"{seq}.1.{name}", "same")

    conv_bn("stem", "features.0")
    cin = spec.stem_out
    for i, b in enumerate(spec.blocks):
        c, f, j = f"blocks.{i}", f"features.{i + 1}.block", 0
        if b.has_expand(cin):
            conv_bn(f"{c}.expand", f"{f}.{j}")
            j += 1
        conv_bn(f"{c}.dw", f"{f}.{j}")
        j += 1
        if b.se:
            for fc in ("fc1", "fc2"):
                m[f"{c}.se.{fc}.weight"] = (f"{f}.{j}.{fc}.weight", "same")
                m[f"{c}.se.{fc}.bias"] = (f"{f}.{j}.{fc}.bias", "same")
            j += 1
        conv_bn(f"{c}.project", f"{f}.{j}")
        cin = b.out
    conv_bn("last", f"features.{len(spec.blocks) + 1}")
    # Linear, Hardswish, Dropout, Linear
    for ours, theirs in (("fc1", "classifier.0"), ("classifier", "classifier.3")):
        m[f"head.{ours}.weight"] = (f"{theirs}.weight", "same")
        m[f"head.{ours}.bias"] = (f"{theirs}.bias", "same")
    return m


NAME_MAPS = {"keras": keras_names, "torchvision": torchvision_names}
CLASSIFIER = {"keras": "logits/bias", "torchvision": "classifier.3.bias"}


# -- fitting ---------------------------------------------------------------------------------------

def _fit(src: Source, spec) -> tuple[int, str | None, dict[str, np.ndarray]]:
    """(tensors that fit, the first problem or None, canonical state) of ``src`` on ``spec``."""
    from .architectures.reference import expected_shapes

    expected = expected_shapes(spec)
    names = NAME_MAPS[src.format](spec)
    inverse = {s: (c, kind) for c, (s, kind) in names.items()}
    fits, problem, state = 0, None, {}
    for name, a in src.tensors.items():
        if name not in inverse:
            problem = problem or f"tensor '{name}' {tuple(a.shape)} has no place in it"
            continue
        canon, kind = inverse[name]
        need = _source_shape(kind, expected[canon])
        if tuple(a.shape) != need:
            problem = problem or f"tensor '{name}' has shape {tuple(a.shape)}, it needs {need}"
            continue
        fits += 1
        state[canon] = np.ascontiguousarray(_to_canonical(kind, a), dtype=np.float32)
    for canon, (s, kind) in names.items():
        if s not in src.tensors:
            problem = problem or (f"tensor '{s}' {_source_shape(kind, expected[canon])} is missing "
                                  "from the source")
    return fits, problem, state


def fit(src: Source, *, size: int | None = None) -> Imported:
    """The architecture that takes every source tensor exactly, or an error naming the first misfit."""
    from .architectures.spec import preset

    res = src.resolution or (size or 224, size or 224)
    num_classes = _num_classes(src)
    best = None
    for name in src.presets:
        for w in WIDTHS:
            spec = preset(name, w, num_classes, res, **src.conventions)
            fits, problem, state = _fit(src, spec)
            if problem is None:
                return Imported(src, name, w, num_classes, res, spec, state)
            if best is None or fits > best[0]:
                best = (fits, problem, name, w)
    _, problem, name, w = best
    conv = ", ".join(f"{k} {v}" for k, v in src.conventions.items())
    raise ImportMismatch(
        f"{src.path}: not exactly a {src.description or src.format} MobileNetV3: closest is {name} at "
        f"width {w:g} ({conv}), where {problem}")


def _num_classes(src: Source) -> int:
    key = CLASSIFIER[src.format]
    if key not in src.tensors:
        raise ImportMismatch(
            f"{src.path}: no classifier tensor '{key}' (a model without its top cannot be "
            "deployed as a classifier; save it with include_top=True / the full classifier)")
    return int(src.tensors[key].shape[0])


# -- readers ---------------------------------------------------------------------------------------

def read_source(path: str | Path, *, size: int | None = None) -> Source:
    """Read a keras.applications model file or a torchvision state dict (by suffix)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found; give a .keras/.h5 model file or a .pth/.safetensors "
                        "state dict")
    suffix = path.suffix.lower()
    if suffix in KERAS_SUFFIXES:
        return read_keras(path, size=size)
    if suffix in TORCH_SUFFIXES:
        return read_torchvision(path)
    raise UserError(f"{path}: unknown checkpoint type '{suffix}'; give a keras.applications model file "
                    f"({', '.join(KERAS_SUFFIXES)}) or a torchvision state dict ({', '.join(TORCH_SUFFIXES)})")


def read_torchvision(path: Path) -> Source:
    """A torchvision MobileNetV3 state dict: ``.pth``/``.pt`` (read with ``weights_only=True``,
    never unpickling code) or ``.safetensors``."""
    if path.suffix.lower() == ".safetensors":
        from .architectures.weights import read_weights

        raw = read_weights(path)
    else:
        from ._deps import require

        torch = require("torch", "reading a .pth state dict")
        try:
            raw = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle errors, code objects refused by weights_only, ...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ImportMismatch(f"{path}: not a state dict torch.load(weights_only=True) can read ({first})"
                               ) from None
        # training scripts often wrap the state dict
        for key in ("state_dict", "model"):
            if isinstance(raw, dict) and isinstance(raw.get(key), dict) and len(raw) <= 4:
                raw = raw[key]
        if not isinstance(raw, dict):
            raise ImportMismatch(f"{path}: holds a {type(raw).__name__}, not a state dict (save "
                               "model.state_dict())")
        raw = {k: v.detach().cpu().float().numpy() if hasattr(v, "detach") else v for k, v in raw.items()}
    tensors = {}
    for k, v in raw.items():
        k = k.removeprefix("module.")  # DataParallel
        if k.endswith("num_batches_tracked"):
            continue
        if not isinstance(v, np.ndarray):
            raise ImportMismatch(f"{path}: entry '{k}' is a {type(v).__name__}, not a tensor")
        tensors[k] = v
    return Source(
        path=path, format="torchvision", tensors=tensors, presets=TORCHVISION_PRESETS,
        conventions={"padding": "symmetric", "channel_rounding": "torchvision"}, resolution=None,
        pixel_range=(0.0, 1.0), mean=IMAGENET_MEAN, std=IMAGENET_STD, description="torchvision",
        notes=["preprocessing: torchvision's ImageNet normalisation (pixels/255, mean/std); "
               "torchvision resizes to 256 and centre-crops 224, mobiledeploy resizes the whole frame"],
    )


def _keras_config_h5(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Config and weights of a legacy .h5 model file, read with h5py (Keras 3 cannot rebuild a
    keras.applications MobileNetV3 from .h5: its ``x + 3.0`` nodes do not deserialise)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "model_config" not in f.attrs:
                raise ImportMismatch(f"{path}: an .h5 without a model config (a weights-only file); "
                                   "save the whole model (model.save('x.h5') or 'x.keras')")
            config = json.loads(f.attrs["model_config"])
            group = f["model_weights"] if "model_weights" in f else f
            tensors = {}
            for layer in group.attrs.get("layer_names", []):
                layer = layer.decode() if isinstance(layer, bytes) else str(layer)
                g = group[layer]
                for wn in g.attrs.get("weight_names", []):
                    wn = wn.decode() if isinstance(wn, bytes) else str(wn)
                    tensors[f"{layer}/{wn.split('/')[-1].split(':')[0]}"] = np.asarray(g[wn])
    except OSError as exc:
        raise ImportMismatch(f"{path}: not a readable HDF5 model file ({exc})") from None
    return config, tensors


def read_keras(path: Path, *, size: int | None = None) -> Source:
    """A keras.applications MobileNetV3Small/Large model file (.keras or legacy .h5)."""
    from ._deps import require

    require("tensorflow", "reading a Keras model file")
    keras = require("keras", "reading a Keras model file")
    model = None
    if path.suffix.lower() == ".keras":
        try:
            model = keras.saving.load_model(str(path), compile=False, safe_mode=True)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ImportMismatch(f"{path}: Keras cannot load it ({first})") from None
        config = model.get_config()
        tensors = {f"{layer.name}/{w.name}": np.asarray(w.numpy()) for layer in model.layers
                   for w in layer.weights}
    else:
        config, tensors = _keras_config_h5(path)
        config = config.get("config", config)
    layers = config.get("layers", [])
    by_name = {lay["config"]["name"]: lay for lay in layers}
    odd = [lay for lay in layers if lay["class_name"] not in KERAS_LAYERS]
    if odd:
        raise ImportMismatch(f"{path}: layer '{odd[0]['config']['name']}' ({odd[0]['class_name']}) is not part "
                           "of a keras.applications MobileNetV3")
    for lay in layers:
        if lay["class_name"] == "BatchNormalization" and abs(lay["config"].get("epsilon", 1e-3) - 1e-3) > 1e-12:
            raise ImportMismatch(f"{path}: layer '{lay['config']['name']}' has BatchNorm epsilon "
                               f"{lay['config']['epsilon']}, MobileNetV3 uses 0.001")
        if lay["class_name"] in ("Conv2D", "DepthwiseConv2D") and \
                lay["config"].get("data_format", "channels_last") != "channels_last":
            raise ImportMismatch(f"{path}: layer '{lay['config']['name']}' is channels_first; "
                               "save the model with channels_last")
    inputs = [lay for lay in layers if lay["class_name"] == "InputLayer"]
    shape = (inputs[0]["config"].get("batch_shape") or inputs[0]["config"].get("batch_input_shape")) if inputs else None
    resolution = None
    if shape and shape[1] and shape[2]:
        resolution = (int(shape[1]), int(shape[2]))
        if size and (size, size) != resolution:
            raise UserError(f"{path}: the model's input is fixed at {resolution[0]}x{resolution[1]}; "
                            f"drop --size {size} (or re-create the model with input_shape=({size}, {size}, 3))")
    notes = []
    rescale = [lay for lay in layers if lay["class_name"] == "Rescaling"]
    if rescale:
        c = rescale[0]["config"]
        scale, offset = float(np.ravel(c["scale"])[0]), float(np.ravel(c["offset"])[0])
        pixel_range = (offset, round(offset + 255.0 * scale, 9))
    else:
        pixel_range = (-1.0, 1.0)
        notes.append("no Rescaling layer in the model (include_preprocessing=False): assumed it takes "
                     "pixels scaled to [-1, 1] as keras.applications' MobileNetV3 weights do; edit "
                     "input.pixel_range if yours differs")
    act = by_name.get("predictions", {}).get("config", {}).get("activation", "linear")
    act = act if isinstance(act, str) else str(act)
    if act not in ("softmax", "linear"):
        raise ImportMismatch(f"{path}: classifier activation '{act}' is not supported (softmax or None)")
    src = Source(
        path=path, format="keras", tensors=tensors, presets=KERAS_PRESETS,
        conventions={"padding": "tf_same", "channel_rounding": "tf_slim"}, resolution=resolution,
        pixel_range=pixel_range, classifier_activation="softmax" if act == "softmax" else "none",
        preprocessing_in_model=bool(rescale), description="keras.applications", notes=notes,
        config=config, model=model,
    )
    if resolution is None and size and size % 32:
        # a model built without input_shape pads as for even sizes at every stride-2 conv
        raise UserError(f"{path}: the model takes any input size and pads as for even sizes; "
                        f"--size {size} must be a multiple of 32")
    return src


def keras_application(imported: Imported):
    """keras.applications' own constructor, called with the settings the import inferred, and the
    source's weights set by layer name (how a legacy .h5 is run: Keras 3 cannot load it whole)."""
    import keras

    src = imported.source
    cls = keras.applications.MobileNetV3Large if "large" in imported.preset else keras.applications.MobileNetV3Small
    dropout = [lay["config"]["rate"] for lay in src.config["layers"] if lay["class_name"] == "Dropout"]
    model = cls(
        input_shape=(*src.resolution, 3) if src.resolution else (None, None, 3), alpha=imported.width,
        minimalistic="minimalistic" in imported.preset, include_top=True, weights=None,
        classes=imported.num_classes, dropout_rate=dropout[0] if dropout else 0.0,
        classifier_activation="softmax" if src.classifier_activation == "softmax" else None,
        include_preprocessing=src.preprocessing_in_model,
    )
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([src.tensors[f"{layer.name}/{w.name}"] for w in layer.weights])
    return model


def _layer_signature(config: dict) -> list[tuple]:
    """The functional config without names (auto-generated names differ between sessions)."""
    out = []
    for lay in config["layers"]:
        c = {k: v for k, v in lay["config"].items() if k not in ("name", "trainable")}
        out.append((lay["class_name"], json.dumps(c, sort_keys=True, default=str)))
    return out


def source_model(imported: Imported):
    """A runnable Keras model with the source's function: the loaded .keras model, or for an .h5 the
    keras.applications rebuild, whose layer-by-layer config must equal the file's."""
    src = imported.source
    if src.model is not None:
        return src.model
    model = keras_application(imported)
    mine, theirs = _layer_signature(model.get_config()), _layer_signature(src.config)
    for i, (a, b) in enumerate(zip(mine, theirs, strict=False)):
        if a != b:
            name = src.config["layers"][i]["config"]["name"]
            raise ImportMismatch(f"{src.path}: layer '{name}' ({b[0]}) differs from keras.applications' "
                               f"{imported.preset} at width {imported.width:g}: {b[1][:120]}")
    if len(mine) != len(theirs):
        raise ImportMismatch(f"{src.path}: {len(theirs)} layers, keras.applications' {imported.preset} has "
                           f"{len(mine)}")
    return model


def check_function(imported: Imported, pixels: np.ndarray, input_spec) -> dict[str, float]:
    """Run the source (Keras) and the PyTorch reference built from the import on the same pixels.

    Returns max_abs and the logits' scale; raises when they differ by more than float32 rounding
    (1e-4 relative to the logits' range). The source's softmax, if any, is left out: the
    reference outputs logits.
    """
    import keras
    import torch

    from .architectures.torch_builder import build_torch_model
    from .architectures.weights import load_torch_weights
    from .images import normalise

    src = imported.source
    model = source_model(imported)
    logits = keras.Model(model.input, model.get_layer("predictions").input)
    x = normalise(pixels, input_spec)
    feed = pixels.astype(np.float32) if src.preprocessing_in_model else x.transpose(0, 2, 3, 1)
    theirs = np.asarray(logits(np.ascontiguousarray(feed), training=False))
    ref = build_torch_model(imported.spec)
    load_torch_weights(ref, imported.state, source=str(src.path))
    with torch.no_grad():
        ours = ref(torch.from_numpy(x)).numpy()
    max_abs = float(np.max(np.abs(ours - theirs)))
    scale = float(np.max(np.abs(theirs)))
    limit = 1e-4 * max(1.0, scale)
    if not max_abs <= limit:
        raise ImportMismatch(
            f"{src.path}: the imported model does not reproduce the source: max |reference - source| "
            f"= {max_abs:.3g} on {len(pixels)} inputs (limit {limit:.2g})")
    return {"max_abs": max_abs, "logit_scale": scale, "inputs": len(pixels),
            "top1_agreement": float(np.mean(ours.argmax(1) == theirs.argmax(1)))}


def definition_name(path: Path) -> str:
    """A definition name (``^[a-z][a-z0-9_]{0,39}$``) from a file name."""
    name = re.sub(r"[^a-z0-9_]+", "_", path.stem.lower()).strip("_")
    if not name or not name[0].isalpha():
        name = "model_" + name
    return name[:40].rstrip("_")


# -- the folder an import writes -------------------------------------------------------------------

PROBE_IMAGES = 8


@dataclass
class ImportPlan:
    """Everything ``write_import`` puts on disk, decided (and checked) before anything is written."""

    imported: Imported
    out: Path
    name: str
    files: dict[str, bytes | dict]  # file name in DIR -> text bytes, or a canonical state (weights)
    check: dict | None
    notes: list[str]
    make_images_dir: bool = False
    written: list[Path] = field(default_factory=list)

    @property
    def definition_path(self) -> Path:
        return self.out / f"{self.name}.yaml"


def _labels(labels_file: str | None, n: int) -> tuple[list[str], str]:
    from .definition import read_labels

    if labels_file is None:
        digits = len(str(n - 1))
        return [f"class_{i:0{digits}d}" for i in range(n)], "generated"
    labels = read_labels(Path(labels_file))
    if len(labels) != n:
        raise UserError(f"{labels_file}: {len(labels)} labels, the checkpoint's classifier has {n} classes; "
                        "give one label per class, in the classifier's order")
    return labels, str(labels_file)


MAX_IMPORT_IMAGES = 1000


def _images(images_dir: str | None, out: Path, labels: list[str], notes: list[str]):
    """(definition source, extra files, make DIR/images, image paths for the function check)."""
    from .images import IMAGE_SUFFIXES

    if images_dir is None:
        notes.append(f"no --images: put real images in {out / 'images'} (class sub-folders named as in "
                     "labels.txt, or images at the top) before building; int8 calibration and "
                     "validation need them")
        return "images", {}, True, []
    root = Path(images_dir)
    if not root.is_dir():
        raise UserError(f"--images {images_dir}: not a folder; give a folder of images or class sub-folders")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"--images {images_dir}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in it")
    if len(files) > MAX_IMPORT_IMAGES:  # a spread that keeps every folder represented
        step = len(files) / MAX_IMPORT_IMAGES
        files = [files[int(i * step)] for i in range(MAX_IMPORT_IMAGES)]
        notes.append(f"--images: {MAX_IMPORT_IMAGES} of the images copied (spread over the folder)")
    # every image copied is decoded once now: a corrupt or oversized file is a one-line error
    # naming it before anything is written, not a failed build later
    from .images import probe_image

    for p in files:
        probe_image(p)
    # copied into DIR/images: the definition stays self-contained (paths outside its folder are
    # refused by default) and the folder can be moved
    folders = {p.relative_to(root).parts[0] for p in files if len(p.relative_to(root).parts) > 1}
    if folders <= set(labels):
        extra = {f"images/{p.relative_to(root).as_posix()}": p.read_bytes() for p in files}
        return "images", extra, False, files
    # sub-folders that are not labels (e.g. synset ids): use the images, unlabelled
    stray = sorted(folders - set(labels))[0]
    notes.append(f"sub-folder '{stray}' of {images_dir} is not a label: images copied unlabelled "
                 "(agreement with the reference is measured, accuracy is not)")
    extra = {f"images/{i:05d}{p.suffix.lower()}": p.read_bytes() for i, p in enumerate(files)}
    return "images", extra, False, files


def _probe_pixels(files: list[Path], resolution: tuple[int, int]) -> np.ndarray:
    """Real images when given (spread over the folder), else seeded random pixels: the function
    check compares two implementations of one function, so any input serves."""
    from .images import decode_resized

    h, w = resolution
    if files:
        idx = np.linspace(0, len(files) - 1, min(PROBE_IMAGES, len(files))).round().astype(int)
        return np.stack([decode_resized(files[i], h, w) for i in sorted(set(idx.tolist()))])
    return np.random.default_rng(0).integers(0, 256, (4, h, w, 3), dtype=np.uint8)


def _yaml(plan_name: str, imp: Imported, images_src: str, weights: str) -> bytes:
    import yaml

    src = imp.source
    h, w = imp.resolution
    data = {
        "name": plan_name,
        "task": "image-classification",
        "input": {"height": h, "width": w, "channels": 3, "color_order": "rgb",
                  "pixel_range": [float(v) for v in src.pixel_range], "mean": [float(v) for v in src.mean],
                  "std": [float(v) for v in src.std], "layout": "nhwc"},
        "labels": "labels.txt",
        "architecture": {"preset": imp.preset, "width_multiplier": imp.width},
        "conventions": dict(src.conventions),
        "weights": weights,
        "imported_from": {"format": src.format, "file": src.path.name, "sha256": sha256_file(src.path),
                          "classifier_activation": src.classifier_activation,
                          "preprocessing_in_model": src.preprocessing_in_model},
        "calibration": {"source": images_src, "max_images": 100},
        "validation": {"source": images_src},
    }
    head = [f"# imported by `mobiledeploy import` from {src.path.name} ({src.description} MobileNetV3)"]
    if src.classifier_activation == "softmax":
        head.append("# the source ends in softmax; the reference models and artifacts output logits "
                    "(softmax of them is the source's output)")
    if src.preprocessing_in_model:
        head.append("# the source's Rescaling layer is input.pixel_range here (the artifacts take it "
                    "from the app's normalisation)")
    return ("\n".join(head) + "\n" + yaml.safe_dump(data, sort_keys=False, default_flow_style=None)).encode()


def plan_import(source: Path, out: Path, *, labels_file: str | None = None, images_dir: str | None = None,
                name: str | None = None, size: int | None = None, force: bool = False) -> ImportPlan:
    """Read, map and check a checkpoint, and decide every file to write (nothing written yet)."""
    from .definition import InputSpec

    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory; choose another -o")
    if out.is_dir() and any(out.iterdir()) and not force:  # as `build -o`: a user's folder is theirs
        raise UserError(f"{out}: exists and is not empty; choose a new or empty folder for -o, or pass --force "
                        "to import into it (files of the same names are replaced)")
    name = name or definition_name(source)
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", name):
        raise UserError(f"--name {name!r}: use 1-40 lower-case letters, digits and _, starting with a letter")
    src = read_source(source, size=size)
    imp = fit(src, size=size)
    notes = list(src.notes)
    labels, _ = _labels(labels_file, imp.num_classes)
    images_src, extra, make_dir, files = _images(images_dir, out, labels, notes)
    check = None
    if src.format == "keras":
        spec = InputSpec(height=imp.resolution[0], width=imp.resolution[1], pixel_range=src.pixel_range,
                         mean=src.mean, std=src.std)
        check = check_function(imp, _probe_pixels(files, imp.resolution), spec)
    else:
        notes.append("torchvision source: mapped by name and shape; its function was not run here "
                     "(torchvision is not installed beside this torch)")
    weights = f"{name}.safetensors"
    files_out: dict = {f"{name}.yaml": _yaml(name, imp, images_src, weights), weights: imp.state,
                       "labels.txt": ("\n".join(labels) + "\n").encode(), **extra}
    if not force:
        clash = [out / f for f in files_out if (out / f).exists()]
        if clash:
            raise UserError(f"{clash[0]}: already exists; use --force to overwrite or choose an empty -o")
    return ImportPlan(imp, out, name, files_out, check, notes, make_images_dir=make_dir)


def write_import(plan: ImportPlan) -> None:
    """Write every file to a temporary folder, check the definition parses, then move them in."""
    import shutil
    import tempfile

    from .architectures.weights import save_weights
    from .definition import load_definition

    out = plan.out
    out.parent.mkdir(parents=True, exist_ok=True)
    # a fresh folder of our own beside OUT (same file system: the moves below are renames); a
    # fixed name could be a folder of the user's, which the cleanup would remove
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.import-", dir=out.parent))
    try:
        src = plan.imported.source
        for fname, content in plan.files.items():
            if isinstance(content, dict):
                save_weights(content, tmp / fname, metadata={"imported_from": src.path.name,
                                                             "format": src.format})
            else:
                (tmp / fname).parent.mkdir(parents=True, exist_ok=True)
                (tmp / fname).write_bytes(content)
        load_definition(tmp / f"{plan.name}.yaml", check_files=False)
        out.mkdir(parents=True, exist_ok=True)
        for fname in plan.files:
            (out / fname).parent.mkdir(parents=True, exist_ok=True)
            (tmp / fname).replace(out / fname)
            plan.written.append(out / fname)
        if plan.make_images_dir:
            (out / "images").mkdir(exist_ok=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
