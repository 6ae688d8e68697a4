"""TFLite metadata (the public ``metadata_schema.fbs``, file identifier ``M001``): writer and reader.

Written with the ``flatbuffers`` runtime alone, so nothing fights TensorFlow (tflite-support pins
protobuf 3.20). The model itself is edited with the TFLite schema's object API that LiteRT ships
(``ai_edge_litert.schema_py_generated``): a ``TFLITE_METADATA`` entry pointing at a new buffer.
Associated files (the label file) are appended to the model file as an uncompressed zip, as the
TFLite metadata tooling does; MediaPipe and the metadata extractor libraries read them from there.

Only the tables an image classifier needs are covered; the vtable slots below follow the schema's
field order (a union takes two slots: its type, then its value).

The input contract this module gives every TFLite artifact (``input_plan``): an RGB image whose
pixels p in [0, 255] are normalised with ONE mean/std, ``x = (p - mean) / std``, because that is
all MediaPipe Tasks implement ("Per-channel image normalization is not available"), and, for
integer inputs, quantization parameters that make ``q = p`` (uint8) or ``q = p - 128`` (int8), because
MediaPipe feeds uint8 models the raw camera bytes. A definition whose preprocessing is not of that
form (per-channel mean/std, BGR) gets a fixed 1x1 convolution in front of the network that maps
``p / 255`` to the definition's input exactly.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

METADATA_NAME = "TFLITE_METADATA"  # the model's metadata entry that holds the buffer
IDENTIFIER = b"M001"
MIN_PARSER_VERSION = "1.0.0"  # every field written here exists since schema 1.0.0
LABEL_FILE = "labels.txt"

COLOR_SPACES = {"UNKNOWN": 0, "RGB": 1, "GRAYSCALE": 2}
FILE_TYPES = {"UNKNOWN": 0, "DESCRIPTIONS": 1, "TENSOR_AXIS_LABELS": 2, "TENSOR_VALUE_LABELS": 3,
              "TENSOR_AXIS_SCORE_CALIBRATION": 4, "VOCABULARY": 5}
_CONTENT_FEATURE, _CONTENT_IMAGE = 1, 2  # union ContentProperties
_PU_NORMALIZATION = 1  # union ProcessUnitOptions


# --------------------------------------------------------------------------- the data


@dataclass
class AssociatedFile:
    name: str
    description: str = ""
    type: str = "UNKNOWN"  # a FILE_TYPES key
    locale: str = ""


@dataclass
class TensorInfo:
    """One input or output tensor's metadata."""

    name: str
    description: str = ""
    content: str = "feature"  # "image" (ImageProperties) or "feature" (FeatureProperties)
    color_space: str = "UNKNOWN"  # image only: a COLOR_SPACES key
    image_size: tuple[int, int] | None = None  # image only: (width, height)
    mean: list[float] = field(default_factory=list)  # NormalizationOptions, empty = none
    std: list[float] = field(default_factory=list)
    stats_min: list[float] = field(default_factory=list)
    stats_max: list[float] = field(default_factory=list)
    associated_files: list[AssociatedFile] = field(default_factory=list)


@dataclass
class ModelInfo:
    """The whole ModelMetadata table (one subgraph)."""

    name: str
    description: str = ""
    version: str = ""
    author: str = ""
    license: str = ""
    inputs: list[TensorInfo] = field(default_factory=list)
    outputs: list[TensorInfo] = field(default_factory=list)
    subgraph_name: str = ""
    min_parser_version: str = MIN_PARSER_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- writer


def build_metadata(info: ModelInfo) -> bytes:
    """The ModelMetadata flatbuffer (identifier M001) for ``info``."""
    import flatbuffers

    b = flatbuffers.Builder(1024)

    def string(s: str | None):
        return b.CreateString(s) if s else None

    def floats(values):
        b.StartVector(4, len(values), 4)
        for v in reversed(list(values)):
            b.PrependFloat32(float(v))
        return b.EndVector()

    def offsets(offs):
        b.StartVector(4, len(offs), 4)
        for o in reversed(offs):
            b.PrependUOffsetTRelative(o)
        return b.EndVector()

    def table(slots: list[tuple[int, str, Any]], n: int):
        """slots: (index, kind, value) with kind 'off', 'u8', 'u32'; None values are left out."""
        b.StartObject(n)
        for slot, kind, value in slots:
            if value is None:
                continue
            if kind == "off":
                b.PrependUOffsetTRelativeSlot(slot, value, 0)
            elif kind == "u8":
                b.PrependUint8Slot(slot, value, 0)
            elif kind == "u32":
                b.PrependUint32Slot(slot, value, 0)
        return b.EndObject()

    def assoc(f: AssociatedFile):
        name, desc, loc = string(f.name), string(f.description), string(f.locale)
        return table([(0, "off", name), (1, "off", desc), (2, "u8", FILE_TYPES[f.type]), (3, "off", loc)], 4)

    def tensor(t: TensorInfo):
        name, desc = string(t.name), string(t.description)
        if t.content == "image":
            size = None
            if t.image_size is not None:
                size = table([(0, "u32", int(t.image_size[0])), (1, "u32", int(t.image_size[1]))], 2)
            props = table([(0, "u8", COLOR_SPACES[t.color_space]), (1, "off", size)], 2)
            content = table([(0, "u8", _CONTENT_IMAGE), (1, "off", props)], 3)
        else:
            props = table([], 0)
            content = table([(0, "u8", _CONTENT_FEATURE), (1, "off", props)], 3)
        units = None
        if t.mean or t.std:
            mean, std = floats(t.mean), floats(t.std)
            norm = table([(0, "off", mean), (1, "off", std)], 2)
            units = offsets([table([(0, "u8", _PU_NORMALIZATION), (1, "off", norm)], 2)])
        stats = None
        if t.stats_min or t.stats_max:
            mx, mn = floats(t.stats_max), floats(t.stats_min)
            stats = table([(0, "off", mx), (1, "off", mn)], 2)
        files = offsets([assoc(f) for f in t.associated_files]) if t.associated_files else None
        return table([(0, "off", name), (1, "off", desc), (3, "off", content), (4, "off", units),
                      (5, "off", stats), (6, "off", files)], 7)

    inputs = offsets([tensor(t) for t in info.inputs])
    outputs = offsets([tensor(t) for t in info.outputs])
    sg_name = string(info.subgraph_name)
    subgraph = table([(0, "off", sg_name), (2, "off", inputs), (3, "off", outputs)], 7)
    subgraphs = offsets([subgraph])
    name, desc, ver = string(info.name), string(info.description), string(info.version)
    author, lic, mpv = string(info.author), string(info.license), string(info.min_parser_version)
    root = table([(0, "off", name), (1, "off", desc), (2, "off", ver), (3, "off", subgraphs),
                  (4, "off", author), (5, "off", lic), (7, "off", mpv)], 8)
    b.Finish(root, file_identifier=IDENTIFIER)
    return bytes(b.Output())


# --------------------------------------------------------------------------- reader


class _T:
    """A flatbuffers table with the few accessors the metadata needs."""

    def __init__(self, buf: bytes, pos: int):
        from flatbuffers.table import Table

        self.t = Table(bytearray(buf) if not isinstance(buf, bytearray) else buf, pos)

    def _o(self, slot: int) -> int:
        return self.t.Offset(4 + 2 * slot)

    def string(self, slot: int) -> str:
        o = self._o(slot)
        return self.t.String(o + self.t.Pos).decode("utf-8") if o else ""

    def u8(self, slot: int) -> int:
        from flatbuffers import number_types as N

        o = self._o(slot)
        return int(self.t.Get(N.Uint8Flags, o + self.t.Pos)) if o else 0

    def u32(self, slot: int) -> int:
        from flatbuffers import number_types as N

        o = self._o(slot)
        return int(self.t.Get(N.Uint32Flags, o + self.t.Pos)) if o else 0

    def table(self, slot: int) -> _T | None:
        o = self._o(slot)
        return _T(self.t.Bytes, self.t.Indirect(o + self.t.Pos)) if o else None

    def tables(self, slot: int) -> list[_T]:
        o = self._o(slot)
        if not o:
            return []
        start, n = self.t.Vector(o), self.t.VectorLen(o)
        return [_T(self.t.Bytes, self.t.Indirect(start + 4 * i)) for i in range(n)]

    def floats(self, slot: int) -> list[float]:
        from flatbuffers import number_types as N

        o = self._o(slot)
        if not o:
            return []
        start, n = self.t.Vector(o), self.t.VectorLen(o)
        return [float(self.t.Get(N.Float32Flags, start + 4 * i)) for i in range(n)]

    def union(self, slot: int) -> _T | None:
        o = self._o(slot)
        return _T(self.t.Bytes, self.t.Indirect(o + self.t.Pos)) if o else None


def parse_metadata(buf: bytes) -> ModelInfo:
    """Every field ``build_metadata`` writes, read back from a ModelMetadata flatbuffer."""
    import flatbuffers

    if bytes(buf[4:8]) != IDENTIFIER:
        raise ValueError(f"not TFLite metadata (identifier {bytes(buf[4:8])!r}, expected {IDENTIFIER!r})")
    root = _T(buf, flatbuffers.encode.Get(flatbuffers.packer.uoffset, bytearray(buf), 0))
    names = {v: k for k, v in FILE_TYPES.items()}
    spaces = {v: k for k, v in COLOR_SPACES.items()}

    def files(t: _T, slot: int) -> list[AssociatedFile]:
        return [AssociatedFile(f.string(0), f.string(1), names.get(f.u8(2), "UNKNOWN"), f.string(3))
                for f in t.tables(slot)]

    def tensor(t: _T) -> TensorInfo:
        info = TensorInfo(name=t.string(0), description=t.string(1))
        content = t.table(3)
        if content is not None and content.u8(0) == _CONTENT_IMAGE:
            props = content.union(1)
            info.content = "image"
            if props is not None:
                info.color_space = spaces.get(props.u8(0), "UNKNOWN")
                size = props.table(1)
                if size is not None:
                    info.image_size = (size.u32(0), size.u32(1))
        for unit in t.tables(4):
            if unit.u8(0) == _PU_NORMALIZATION and not info.mean:
                norm = unit.union(1)
                if norm is not None:
                    info.mean, info.std = norm.floats(0), norm.floats(1)
        stats = t.table(5)
        if stats is not None:
            info.stats_max, info.stats_min = stats.floats(0), stats.floats(1)
        info.associated_files = files(t, 6)
        return info

    sgs = root.tables(3)
    sg = sgs[0] if sgs else None
    return ModelInfo(
        name=root.string(0), description=root.string(1), version=root.string(2),
        author=root.string(4), license=root.string(5), min_parser_version=root.string(7),
        subgraph_name=sg.string(0) if sg else "",
        inputs=[tensor(t) for t in sg.tables(2)] if sg else [],
        outputs=[tensor(t) for t in sg.tables(3)] if sg else [],
    )


# --------------------------------------------------------------------------- the model file


def _schema():
    """The TFLite model schema's generated Python (object API): LiteRT's, else TensorFlow's."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # pragma: no cover - LiteRT is part of the tflite extra
        from tensorflow.lite.python import schema_py_generated as schema
    return schema


def attach(model: bytes, metadata: bytes, files: dict[str, bytes] | None = None) -> bytes:
    """``model`` with its TFLITE_METADATA entry set to ``metadata`` and ``files`` zipped on the end.

    An earlier entry (and an earlier appended zip) is replaced, so attaching twice is the same as
    attaching once.
    """
    import flatbuffers

    schema = _schema()
    base = model_only(model)
    m = schema.ModelT.InitFromPackedBuf(bytearray(base), 0)
    buffers = list(m.buffers or [])
    entries = [e for e in (m.metadata or []) if _name(e.name) != METADATA_NAME]
    buf = schema.BufferT()
    buf.data = np.frombuffer(metadata, dtype=np.uint8).copy()
    buffers.append(buf)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(buffers) - 1
    entries.append(entry)
    m.buffers, m.metadata = buffers, entries
    b = flatbuffers.Builder(len(base) + len(metadata) + 1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    out = bytes(b.Output())
    if files:
        stream = io.BytesIO()
        stream.write(out)
        # stored, not deflated: readers memory-map the files straight out of the model
        with zipfile.ZipFile(stream, "a", compression=zipfile.ZIP_STORED) as zf:
            for name, content in files.items():
                zi = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # reproducible bytes
                zi.compress_type = zipfile.ZIP_STORED
                zf.writestr(zi, content)
        out = stream.getvalue()
    return out


def _name(v) -> str:
    return v.decode("utf-8") if isinstance(v, (bytes, bytearray)) else str(v or "")


def model_only(data: bytes) -> bytes:
    """The flatbuffer part of a .tflite, without an appended zip of associated files."""
    data = bytes(data)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
    except zipfile.BadZipFile:
        return data
    # ZipFile reports header offsets from the start of the file (it adds the prepended model)
    return data[:min(i.header_offset for i in infos)] if infos else data


def read_model_metadata(model: bytes | str | Path) -> tuple[ModelInfo | None, dict[str, bytes]]:
    """The metadata and the associated files of a .tflite (None, {} when it carries none)."""
    data = Path(model).read_bytes() if isinstance(model, (str, Path)) else bytes(model)
    schema = _schema()
    m = schema.Model.GetRootAs(bytearray(data), 0)
    info = None
    for i in range(m.MetadataLength()):
        e = m.Metadata(i)
        if _name(e.Name()) == METADATA_NAME:
            buf = m.Buffers(e.Buffer())
            raw = buf.DataAsNumpy()
            if isinstance(raw, np.ndarray) and raw.size:
                info = parse_metadata(raw.tobytes())
            elif buf.Offset() and buf.Size():  # buffers stored outside the flatbuffer
                info = parse_metadata(data[buf.Offset():buf.Offset() + buf.Size()])
    files: dict[str, bytes] = {}
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for zi in zf.infolist():
                files[zi.filename] = zf.read(zi)
    except zipfile.BadZipFile:
        pass
    return info, files


# --------------------------------------------------------------------------- from the definition


@dataclass(frozen=True)
class InputPlan:
    """How a TFLite artifact takes its image: what its metadata says and how the graph gets there.

    ``mean``/``std``: the uniform normalisation over RGB pixels 0..255 (x_in = (p - mean) / std);
    ``adapter``: None, or (matrix 3x3, bias 3) of the 1x1 convolution from x_in to the definition's
    input (rows: the definition's channels; columns: RGB), when the definition's preprocessing is
    not a uniform RGB normalisation; ``quant``: (scale, zero point) the integer input must have so
    that q = p (uint8) or q = p - 128 (int8); None for float inputs.
    """

    mean: float
    std: float
    adapter: tuple[list[list[float]], list[float]] | None
    quant: tuple[float, int] | None


def input_plan(input_spec, io_dtype: str = "float32") -> InputPlan:
    """The input contract of a TFLite artifact for a definition's ``input`` (see module doc)."""
    scale, bias = input_spec.normalise_affine()  # definition: x_c = scale_c * p_c' + bias_c
    bgr = input_spec.color_order.value == "bgr"
    uniform = (not bgr and max(scale) - min(scale) <= 1e-12 * abs(scale[0])
               and max(bias) - min(bias) <= 1e-12 * max(1.0, abs(bias[0])))
    if uniform:
        std = 1.0 / scale[0]
        mean = -bias[0] * std
        if io_dtype == "float32" or (abs(mean - round(mean)) < 1e-6 and 0 <= round(mean) <= 255):
            mean = float(round(mean)) if abs(mean - round(mean)) < 1e-6 else float(mean)
            return InputPlan(mean, float(std), None, _quant(mean, std, io_dtype))
    # x_in = p / 255 (RGB); the adapter maps it to the definition's channels exactly
    n = len(scale)
    matrix = [[0.0] * n for _ in range(n)]
    for c in range(n):
        src = n - 1 - c if bgr else c
        matrix[c][src] = scale[c] * 255.0
    return InputPlan(0.0, 255.0, (matrix, [float(v) for v in bias]), _quant(0.0, 255.0, io_dtype))


def _quant(mean: float, std: float, io_dtype: str) -> tuple[float, int] | None:
    if io_dtype == "float32":
        return None
    # q = p (uint8) or p - 128 (int8): x_in = (p - mean) / std = scale * (q - zp)
    return 1.0 / std, int(round(mean)) - (128 if io_dtype == "int8" else 0)


def _detection_outputs(definition, order: list[str]) -> list[TensorInfo]:
    """Output metadata of a detector with the post-processing op, in the subgraph's ``order``."""
    n = len(definition.labels_list())
    labels = [AssociatedFile(LABEL_FILE, "class labels, one per line: class k is line k", "TENSOR_VALUE_LABELS")]
    desc = {
        "detection_boxes": ("location", "boxes [ymin, xmin, ymax, xmax], normalised 0..1 (TFLite_Detection_"
                            "PostProcess); rows past num_detections are zero", []),
        "detection_classes": ("category", f"class index (float) into {LABEL_FILE} ({n} classes, no background)",
                              labels),
        "detection_scores": ("score", "confidence of each detection (softmax over background + classes)", []),
        "num_detections": ("number of detections", "how many rows of the other outputs are valid", []),
        "class_logits": ("class_logits", f"raw class logits per anchor ({n} classes + background at index 0)",
                         []),
        "box_encodings": ("box_encodings", "raw box encodings (ty, tx, th, tw) per anchor", []),
    }
    return [TensorInfo(name=desc[k][0], description=desc[k][1], associated_files=desc[k][2]) for k in order]


def metadata_for(definition, *, io_dtype: str = "float32", stats: tuple[list, list] | None = None,
                 target: str = "", output_order: list[str] | None = None) -> ModelInfo:
    """The ModelInfo of a definition's TFLite artifact with this input dtype.

    ``stats`` (min, max per channel) describes the values the input tensor takes on the
    calibration images, in the tensor's own units.
    """
    from ...tasks import get_task

    plan = input_plan(definition.input, io_dtype)
    inp = definition.input
    meta = definition.metadata
    labels = definition.labels_list()
    kind = {"float32": "float32", "uint8": "uint8 (q = pixel)", "int8": "int8 (q = pixel - 128)"}[io_dtype]
    image = TensorInfo(
        name="image",
        description=(f"RGB image {inp.width}x{inp.height}, {kind}, normalised as "
                     f"(pixel - {plan.mean:g}) / {plan.std:g} over pixels 0..255"),
        content="image", color_space="RGB", image_size=(inp.width, inp.height),
        mean=[plan.mean] * inp.channels, std=[plan.std] * inp.channels,
        # float32, as the flatbuffer stores them, so that what is read back equals what was meant
        stats_min=_f32(stats[0]) if stats else [], stats_max=_f32(stats[1]) if stats else [],
    )
    task = get_task(definition)
    scores = TensorInfo(
        name=task.output_names[0],
        description=task.output_description(len(labels), LABEL_FILE),
        content="feature",
        # the labels name the output's last axis unless it is a feature vector
        associated_files=[AssociatedFile(LABEL_FILE, "class labels, one per line, in output order",
                                         "TENSOR_AXIS_LABELS")] if task.output_kind != "vector" else [],
    )
    return ModelInfo(
        name=definition.name, description=definition.description_text(), version=meta.version,
        author=meta.author, license=meta.license, inputs=[image],
        outputs=_detection_outputs(definition, output_order) if output_order else [scores],
        subgraph_name=target or definition.name,
    )


def _f32(values) -> list[float]:
    return [float(np.float32(v)) for v in values]


def labels_file(definition) -> bytes:
    return "".join(lab + "\n" for lab in definition.labels_list()).encode("utf-8")


# --------------------------------------------------------------------------- the converter side


def wrap_keras(model, definition, io_dtype: str = "float32"):
    """The Keras model a TFLite artifact is converted from: ``model`` behind the input adapter when
    the input plan needs one, else ``model`` itself."""
    plan = input_plan(definition.input, io_dtype)
    if plan.adapter is None:
        return model
    import keras

    matrix, bias = plan.adapter
    inp = definition.input
    x = keras.Input((inp.height, inp.width, inp.channels), batch_size=model.inputs[0].shape[0],
                    name="image")
    conv = keras.layers.Conv2D(inp.channels, 1, name="metadata_input_adapter")
    y = conv(x)
    # Keras kernels are (kh, kw, in, out): column = input channel (RGB), row = definition channel
    conv.set_weights([np.asarray(matrix, np.float32).T.reshape(1, 1, inp.channels, inp.channels),
                      np.asarray(bias, np.float32)])
    return keras.Model(x, model(y), name=f"{model.name}_rgb")


def calibration_input(pixels: np.ndarray, definition, io_dtype: str = "float32") -> np.ndarray:
    """Calibration pixels (N, H, W, 3 RGB uint8) as the artifact's float input (x_in)."""
    plan = input_plan(definition.input, io_dtype)
    if plan.adapter is None:
        from ...images import normalise

        return normalise(pixels, definition.input).transpose(0, 2, 3, 1).copy()
    return ((pixels.astype(np.float32) - np.float32(plan.mean)) / np.float32(plan.std)).astype(np.float32)


def force_input_quantization(model: bytes, scale: float, zero_point: int) -> bytes:
    """Set the integer input tensor's scale/zero point (the QUANTIZE op after it requantizes into
    the calibrated range), so that the raw pixel bytes are the right input."""
    import flatbuffers

    schema = _schema()
    m = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    sg = m.subgraphs[0]
    t = sg.tensors[sg.inputs[0]]
    q = t.quantization or schema.QuantizationParametersT()
    q.scale, q.zeroPoint = [float(scale)], [int(zero_point)]
    q.min = q.max = None
    t.quantization = q
    b = flatbuffers.Builder(len(model) + 1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def finish_tflite(data: bytes, definition, *, io_dtype: str = "float32", target: str = "",
                  stats: tuple[list, list] | None = None, output_order: list[str] | None = None) -> bytes:
    """A converted model -> the artifact: forced integer input quantization, metadata, labels."""
    plan = input_plan(definition.input, io_dtype)
    if plan.quant is not None:
        data = force_input_quantization(data, *plan.quant)
    info = metadata_for(definition, io_dtype=io_dtype, stats=stats, target=target, output_order=output_order)
    return attach(data, build_metadata(info), {LABEL_FILE: labels_file(definition)})


# --------------------------------------------------------------------------- the runner side


def artifact_input(info: ModelInfo | None, batch) -> np.ndarray:
    """The float input (N, H, W, 3) an artifact takes, from its metadata alone: RGB pixels
    normalised with the metadata's mean/std; without metadata, the definition's normalisation."""
    if info is None or not info.inputs or not info.inputs[0].mean:
        return batch.nhwc()
    t = info.inputs[0]
    p = batch.pixels.astype(np.float32)
    if t.color_space not in ("RGB", "UNKNOWN"):
        raise ValueError(f"metadata colour space {t.color_space} is not an RGB image")
    n = p.shape[-1]
    mean = np.resize(np.asarray(t.mean, np.float32), n)
    std = np.resize(np.asarray(t.std, np.float32), n)
    return ((p - mean) / std).astype(np.float32)


def check_against_definition(info: ModelInfo | None, files: dict[str, bytes], definition,
                             io_dtype: str = "float32") -> list[str]:
    """What in an artifact's metadata disagrees with the definition (empty: all agree)."""
    if info is None:
        return ["no TFLite metadata"]
    want = metadata_for(definition, io_dtype=io_dtype)
    bad = []
    for key in ("name", "version", "author", "license", "description"):
        if getattr(info, key) != getattr(want, key):
            bad.append(f"{key} {getattr(info, key)!r} != {getattr(want, key)!r}")
    if not info.inputs or not info.outputs:
        return [*bad, "no input/output tensor metadata"]
    got, exp = info.inputs[0], want.inputs[0]
    if not (np.allclose(got.mean, exp.mean, rtol=1e-6) and np.allclose(got.std, exp.std, rtol=1e-6)):
        bad.append(f"normalisation mean {got.mean} std {got.std} != {exp.mean} {exp.std}")
    if got.color_space != exp.color_space:
        bad.append(f"colour space {got.color_space} != {exp.color_space}")
    if got.image_size != exp.image_size:
        bad.append(f"image size {got.image_size} != {exp.image_size}")
    label_files = [f.name for t in info.outputs for f in t.associated_files
                   if f.type in ("TENSOR_AXIS_LABELS", "TENSOR_VALUE_LABELS")]
    if not any(f.type in ("TENSOR_AXIS_LABELS", "TENSOR_VALUE_LABELS") for t in want.outputs
               for f in t.associated_files):
        pass  # a feature vector: no output is indexed by the labels
    elif not label_files or label_files[0] not in files:
        bad.append("no labels file (TENSOR_AXIS_LABELS / TENSOR_VALUE_LABELS) in the model")
    elif files[label_files[0]] != labels_file(definition):
        bad.append(f"{label_files[0]} differs from the definition's labels")
    return bad


def facts(model: bytes) -> dict[str, Any]:
    """What the manifest records about an artifact's metadata."""
    info, files = read_model_metadata(model)
    if info is None:
        return {}
    t = info.inputs[0] if info.inputs else None
    return {"name": info.name, "version": info.version, "min_parser_version": info.min_parser_version,
            "input_mean": t.mean[:1] if t else [], "input_std": t.std[:1] if t else [],
            "color_space": t.color_space if t else "", "associated_files": sorted(files)}


def app_preprocessing(model: str | Path) -> dict[str, Any]:
    """The app's preprocessing constants (scale, bias, colour order) from a .tflite's metadata:
    x = (p - mean) / std is x = scale * p + bias; {} when the model carries no normalisation."""
    info, _ = read_model_metadata(model)
    if info is None or not info.inputs or not info.inputs[0].mean:
        return {}
    t = info.inputs[0]
    n = 3
    mean, std = np.resize(np.asarray(t.mean, np.float64), n), np.resize(np.asarray(t.std, np.float64), n)
    return {"scale": [float(v) for v in 1.0 / std], "bias": [float(v) for v in 0.0 - mean / std],
            "color_order": "rgb"}


def planned_app_preprocessing(definition, target) -> dict[str, Any]:
    """``app_preprocessing`` before any model exists: what ``target``'s TFLite file will say."""
    io = target.option("io_dtype", "int8") if target.precision == "int8" else "float32"
    plan = input_plan(definition.input, io)
    n = definition.input.channels
    return {"scale": [1.0 / plan.std] * n, "bias": [0.0 - plan.mean / plan.std] * n, "color_order": "rgb"}
