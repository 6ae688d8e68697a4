"""Runs a .tflite through a MediaPipe Tasks vision task and prints JSON (a real metadata client).

Executed by the MediaPipe virtual environment's own Python (``make mediapipe-venv``), not imported
by mobiledeploy: MediaPipe's dependencies do not fit beside TensorFlow. So this file imports only
the standard library, numpy, flatbuffers and mediapipe.

    python mediapipe_runner.py MODEL.tflite --pixels X.npy      # (N, H, W, 3) RGB uint8
    python mediapipe_runner.py MODEL.tflite IMAGE [IMAGE ...]   # files, MediaPipe decodes them
    python mediapipe_runner.py MODEL.tflite --metadata          # MediaPipe's own schema parser
    python mediapipe_runner.py --serve     # requests on stdin, one JSON line each, answers on stdout:
                                           # {"model": M, "pixels": X.npy} or {"model": M, "metadata": true}

A request may name the task: {"task": "ObjectDetector", "method": "detect", "options": {...},
"arrays": DIR} runs ``vision.ObjectDetector`` with ``vision.ObjectDetectorOptions(**options)``
and answers {"executor": ..., "labels": [...], "results": [one result per image]}, each result
converted generically (dataclasses -> dicts, enums -> names, images and arrays -> .npy files in
DIR, given as {"__ndarray__": path}); nothing here knows what a task's result means: the task
module that asked interprets it. Without "task": the ImageClassifier, answered as
{"results": [{"top1": i, "label": ..., "scores": [per class index]}]}.
The preprocessing (normalisation, colour space) and the labels come from the model's metadata
alone; MediaPipe reads them the way an app using it would.
"""

from __future__ import annotations

import json
import os
import sys

# run as a script, this file's folder is sys.path[0], and it holds mobiledeploy's own mediapipe.py,
# which would shadow the mediapipe package ("'mediapipe' is not a package")
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]


def _images(pixels=None, files=()):
    import mediapipe as mp
    import numpy as np

    if pixels is not None:
        return [mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(p)) for p in pixels]
    return [mp.Image.create_from_file(f) for f in files]


def classify(model: str, pixels=None, files=()) -> dict:
    from mediapipe.tasks.python import BaseOptions, vision

    opts = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=model), max_results=-1)
    results = []
    with vision.ImageClassifier.create_from_options(opts) as clf:
        for img in _images(pixels, files):
            cats = clf.classify(img).classifications[0].categories
            scores = [0.0] * (max(c.index for c in cats) + 1)
            for c in cats:
                scores[c.index] = float(c.score)
            best = max(cats, key=lambda c: c.score)
            results.append({"top1": int(best.index), "label": best.category_name, "scores": scores})
    from importlib.metadata import version

    return {"executor": f"mediapipe {version('mediapipe')} (ImageClassifier, preprocessing from metadata)",
            "results": results}


class _Arrays:
    """Writes arrays as .npy files under ``folder`` and names them in the JSON."""

    def __init__(self, folder: str | None):
        self.folder, self.n = folder, 0

    def __call__(self, a) -> dict:
        import os

        import numpy as np

        if self.folder is None:
            return {"__list__": np.asarray(a).tolist()}
        path = os.path.join(self.folder, f"mp-array-{self.n:06d}.npy")
        self.n += 1
        np.save(path, np.ascontiguousarray(a))
        return {"__ndarray__": path}


def to_json(value, arrays):
    """A MediaPipe result as JSON values, generically (see the module doc)."""
    import dataclasses
    import enum

    import mediapipe as mp
    import numpy as np

    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, mp.Image):
        return arrays(value.numpy_view())
    if isinstance(value, np.ndarray):
        return arrays(value)
    if isinstance(value, np.generic):
        return value.item()
    if dataclasses.is_dataclass(value):
        return {f.name: to_json(getattr(value, f.name), arrays) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_json(v, arrays) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v, arrays) for v in value]
    return repr(value)


def run_task(model: str, task: str, method: str, options: dict, pixels=None, files=(),
             arrays: str | None = None) -> dict:
    """``vision.<task>`` built with ``<task>Options(**options)``, ``method`` called per image."""
    from mediapipe.tasks.python import BaseOptions, vision

    cls, opts_cls = getattr(vision, task), getattr(vision, f"{task}Options")
    opts = opts_cls(base_options=BaseOptions(model_asset_path=model), **options)
    out = _Arrays(arrays)
    with cls.create_from_options(opts) as runner:
        results = [to_json(getattr(runner, method)(img), out) for img in _images(pixels, files)]
        labels = list(runner.labels) if hasattr(runner, "labels") else None
    from importlib.metadata import version

    return {"executor": f"mediapipe {version('mediapipe')} ({task}, preprocessing from metadata)",
            "labels": labels, "results": results}


def metadata(model: str) -> dict:
    """The model's TFLITE_METADATA read with MediaPipe's generated metadata schema."""
    import flatbuffers
    from flatbuffers import number_types as N
    from flatbuffers.table import Table
    from mediapipe.tasks.metadata import metadata_schema_py_generated as S

    data = bytearray(open(model, "rb").read())
    root = Table(data, flatbuffers.encode.Get(flatbuffers.packer.uoffset, data, 0))

    def vec(t: Table, slot: int) -> list[Table]:
        o = t.Offset(4 + 2 * slot)
        if not o:
            return []
        start = t.Vector(o)
        return [Table(data, t.Indirect(start + 4 * i)) for i in range(t.VectorLen(o))]

    buffers = vec(root, 4)  # Model.buffers
    raw = None
    for e in vec(root, 6):  # Model.metadata: {name, buffer}
        name = e.String(e.Offset(4) + e.Pos).decode()
        if name == "TFLITE_METADATA":
            idx = e.Get(N.Uint32Flags, e.Offset(6) + e.Pos)
            b = buffers[idx]
            o = b.Offset(4)
            raw = bytes(data[b.Vector(o):b.Vector(o) + b.VectorLen(o)])
    if raw is None:
        return {"metadata": None}
    m = S.ModelMetadataT.InitFromObj(S.ModelMetadata.GetRootAs(raw, 0))

    def s(v):
        return v.decode() if isinstance(v, bytes) else v

    def files(fs):
        return [{"name": s(f.name), "description": s(f.description), "type": f.type, "locale": s(f.locale)}
                for f in fs or []]

    def tensor(t):
        out = {"name": s(t.name), "description": s(t.description), "process_units": [],
               "associated_files": files(t.associatedFiles)}
        c = t.content
        if c is not None:
            out["content_type"] = c.contentPropertiesType
            p = c.contentProperties
            if c.contentPropertiesType == S.ContentProperties.ImageProperties:
                out["color_space"] = p.colorSpace
                out["image_size"] = [p.defaultSize.width, p.defaultSize.height] if p.defaultSize else None
        for u in t.processUnits or []:
            if u.optionsType == S.ProcessUnitOptions.NormalizationOptions:
                out["process_units"].append({"mean": [float(v) for v in u.options.mean],
                                             "std": [float(v) for v in u.options.std]})
        if t.stats is not None:  # numpy arrays in the object API: no truth value
            out["stats"] = {k: [float(v) for v in (getattr(t.stats, k) if getattr(t.stats, k) is not None else [])]
                            for k in ("min", "max")}
        return out

    sg = m.subgraphMetadata[0]
    return {"metadata": {
        "name": s(m.name), "description": s(m.description), "version": s(m.version),
        "author": s(m.author), "license": s(m.license), "min_parser_version": s(m.minParserVersion),
        "subgraph_name": s(sg.name),
        "inputs": [tensor(t) for t in sg.inputTensorMetadata or []],
        "outputs": [tensor(t) for t in sg.outputTensorMetadata or []],
    }}


def _answer(model: str, pixels: str | None = None, files=(), meta: bool = False, task: dict | None = None) -> dict:
    try:
        if meta:
            return metadata(model)
        import numpy as np

        px = np.load(pixels) if pixels is not None else None
        if task:
            return run_task(model, task["task"], task["method"], task.get("options") or {}, pixels=px,
                            files=files, arrays=task.get("arrays"))
        return classify(model, pixels=px, files=files)
    except Exception as exc:  # report MediaPipe's own message to the caller, one line
        msg = str(exc).strip()
        return {"error": f"{type(exc).__name__}: {msg.splitlines()[0] if msg else ''}"}


def serve() -> int:
    """Answer requests until stdin closes: MediaPipe is imported once for all of them."""
    for line in sys.stdin:
        if line.strip():
            req = json.loads(line)
            task = {k: req[k] for k in ("task", "method", "options", "arrays") if k in req} or None
            out = _answer(req["model"], pixels=req.get("pixels"), meta=bool(req.get("metadata")), task=task)
            print(json.dumps(out), flush=True)
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    if argv == ["--serve"]:
        return serve()
    model, rest = argv[0], argv[1:]
    out = _answer(model, pixels=rest[1] if rest[:1] == ["--pixels"] else None,
                  files=rest if rest[:1] not in (["--pixels"], ["--metadata"]) else (),
                  meta=rest[:1] == ["--metadata"])
    print(json.dumps(out))
    return 1 if "error" in out else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
