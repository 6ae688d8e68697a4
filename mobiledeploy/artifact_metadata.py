"""What every artifact says about itself, from the definition: one place for Core ML's model fields
and the ExecuTorch sidecar (TFLite has its own flatbuffer metadata in ``backends/tflite/metadata.py``).

The sidecar (``executorch/NAME_xnnpack.json`` next to each ``.pte``) is what the Android app reads:
a .pte has no metadata section an app can query, so input spec, preprocessing, labels and the
output's meaning travel beside it, with the .pte's sha256 so a stale sidecar is caught.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

SIDECAR_SCHEMA = "mobiledeploy.executorch-sidecar/1"


def preprocessing(definition) -> dict[str, Any]:
    """The definition's preprocessing, spelled out for clients (pixels p in 0..255)."""
    inp = definition.input
    scale, bias = inp.normalise_affine()
    return {
        "color_order": inp.color_order.value,
        "pixel_range": list(inp.pixel_range), "mean": list(inp.mean), "std": list(inp.std),
        "formula": "x[c] = scale[c] * p[c] + bias[c], p in 0..255 in color_order",
        "scale": scale, "bias": bias, "resize": inp.resize,
    }


def coreml_fields(definition) -> dict[str, Any]:
    """Core ML model fields: author, license, version, short description, input/output texts."""
    inp = definition.input
    m = definition.metadata
    return {
        "author": m.author, "license": m.license, "version": m.version,
        "short_description": definition.description_text(),
        "input": (f"{inp.width}x{inp.height} {inp.color_order.value.upper()} image; the model applies "
                  f"the definition's normalisation (mean {list(inp.mean)}, std {list(inp.std)} over "
                  f"pixel range {list(inp.pixel_range)})"),
        "outputs": {
            "logits": "unnormalised class scores (pre-softmax), in label order",
            "probs": "softmax probability per class label",
            "classLabel": "the most likely class label",
        },
        "user": {"com.mobiledeploy.preprocessing": json.dumps(preprocessing(definition)),
                 "com.mobiledeploy.labels": json.dumps(definition.labels_list())},
    }


def apply_coreml_fields(mlmodel, fields: dict[str, Any]) -> None:
    """Set ``coreml_fields`` on a coremltools MLModel before it is saved."""
    mlmodel.author = fields["author"]
    mlmodel.license = fields["license"]
    mlmodel.version = fields["version"]
    mlmodel.short_description = fields["short_description"]
    spec = mlmodel.get_spec()
    for inp in spec.description.input:
        mlmodel.input_description[inp.name] = fields["input"]
    for out in spec.description.output:
        if out.name in fields["outputs"]:
            mlmodel.output_description[out.name] = fields["outputs"][out.name]
        elif out.name.endswith("_probs") or out.name.endswith("Probs"):
            mlmodel.output_description[out.name] = fields["outputs"]["probs"]
    for k, v in fields["user"].items():
        mlmodel.user_defined_metadata[k] = v


def sidecar(definition, pte: Path, *, target: str, layout: str = "nchw") -> dict[str, Any]:
    """The ExecuTorch sidecar document for ``pte``."""
    inp = definition.input
    m = definition.metadata
    shape = [1, inp.channels, inp.height, inp.width] if layout == "nchw" else [1, inp.height, inp.width, inp.channels]
    return {
        "schema": SIDECAR_SCHEMA,
        "model": Path(pte).name, "model_sha256": hashlib.sha256(Path(pte).read_bytes()).hexdigest(),
        "target": target, "name": definition.name, "task": definition.task.value,
        "description": definition.description_text(), "version": m.version, "author": m.author,
        "license": m.license,
        "input": {"name": "x", "dtype": "float32", "layout": layout, "shape": shape},
        "preprocessing": preprocessing(definition),
        "labels": definition.labels_list(),
        **_outputs(definition),
    }


def _outputs(definition) -> dict[str, Any]:
    """The sidecar's output description: the task's (``Task.sidecar_outputs``)."""
    from .tasks import get_task

    return get_task(definition).sidecar_outputs(definition)


def write_sidecar(definition, pte: Path, dest: Path, *, target: str) -> Path:
    """Write the sidecar for ``pte`` to ``dest`` (temp name, then rename)."""
    doc = sidecar(definition, pte, target=target)
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    tmp.replace(dest)
    return dest


def check_sidecar(doc: dict, definition, pte: Path | None = None) -> list[str]:
    """What in a sidecar disagrees with the definition (and with ``pte``'s bytes when given)."""
    want = sidecar(definition, pte, target=doc.get("target", "")) if pte is not None else None
    bad = []
    if doc.get("schema") != SIDECAR_SCHEMA:
        bad.append(f"schema {doc.get('schema')!r} != {SIDECAR_SCHEMA!r}")
    if doc.get("labels") != definition.labels_list():
        bad.append("labels differ from the definition's")
    if doc.get("preprocessing") != preprocessing(definition):
        bad.append("preprocessing differs from the definition's")
    if want is not None and doc.get("model_sha256") != want["model_sha256"]:
        bad.append(f"model_sha256 does not match {Path(pte).name}")
    return bad
