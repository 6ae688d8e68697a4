"""Labelled boxes beside a definition's images (``task: object-detection``).

An image source may name ``boxes``: one JSON file::

    {"format": "mobiledeploy-boxes-1",
     "box_order": "ymin, xmin, ymax, xmax; normalised to the image (0..1)",
     "images": {"0000.jpg": [{"label": "circle", "box": [0.1, 0.2, 0.4, 0.5]}, ...], ...}}

keyed by each image's path relative to the source folder (the list file's folder for a list
file), with ``/`` separators. Labels are names from the labels file (no background entry).
Normalised coordinates survive the resize to the model's input, so boxes are never rescaled.
An image with no objects has an empty list; an image missing from the file is an error.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...errors import DefinitionError, UserError

FORMAT = "mobiledeploy-boxes-1"
BOX_ORDER = "ymin, xmin, ymax, xmax; normalised to the image (0..1)"


def write_boxes(path: str | Path, entries: dict[str, list[dict]]) -> Path:
    """Write a boxes file (atomically) from ``{relative image path: [{label, box}, ...]}``."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    # one line per image: small, and a diff shows which image's boxes changed
    rows = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in entries.items())
    head = json.dumps({"format": FORMAT, "box_order": BOX_ORDER})[:-1]
    tmp.write_text(f'{head},\n "images": {{\n{rows}\n }}\n}}\n', encoding="utf-8")
    tmp.replace(p)
    return p


def read_boxes(path: Path, labels: list[str], where: str = "") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Parse and check a boxes file: ``{relative path: (boxes float32 (k, 4), classes int64 (k,))}``."""
    where = where or str(path)

    def bad(msg: str):
        return DefinitionError(where, "boxes", f"{path}: {msg}")

    from ...safety import clip, read_text_file

    if not path.is_file():
        raise bad("file not found (a JSON file of labelled boxes)")
    text = read_text_file(path, where, "boxes")  # bounded size, decoded as UTF-8 or a one-line error
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, and integers of > 4300 digits
        raise UserError(f"{path}: not a readable boxes JSON file ({str(exc)[:120]})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("images"), dict):
        raise bad(f'needs {{"format": "{FORMAT}", "images": {{"path": [{{"label", "box"}}]}}}}')
    index = {name: i for i, name in enumerate(labels)}
    out = {}
    for rel, objs in data["images"].items():
        if not isinstance(objs, list):
            raise bad(f"images[{rel!r}] must be a list of {{label, box}}")
        boxes, classes = [], []
        for k, o in enumerate(objs):
            if not isinstance(o, dict) or set(o) != {"label", "box"}:
                raise bad(f"images[{rel!r}][{k}] must be {{\"label\": NAME, \"box\": [ymin, xmin, ymax, xmax]}}")
            if not isinstance(o["label"], str) or o["label"] not in index:
                raise bad(f"images[{rel!r}][{k}]: label {clip(repr(o['label']), 80)} is not in the labels file")
            b = o["box"]
            if (not isinstance(b, list) or len(b) != 4
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in b)
                    or not (0 <= b[0] < b[2] <= 1 and 0 <= b[1] < b[3] <= 1)):
                raise bad(f"images[{rel!r}][{k}]: box {clip(repr(b), 80)} must be [ymin, xmin, ymax, xmax] with "
                          "0 <= min < max <= 1 (normalised)")
            boxes.append(b)
            classes.append(index[o["label"]])
        out[rel] = (np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes, np.int64))
    return out


def load_boxes(definition, which: str, files: list[str]) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """The labelled boxes of ``files`` (images of the definition's ``which`` source), or None
    when that source names no boxes file."""
    src = getattr(definition, which)
    if src.boxes is None:
        return None
    from ...images import source_relative

    source = definition.path(src.source)
    where = f"{definition.source_path}: {which}"
    table = read_boxes(definition.confined(src.boxes, f"{which}.boxes"), definition.labels_list(), where)
    out = []
    for f in files:
        rel = source_relative(f, source, where, "boxes").as_posix()
        if rel not in table:
            raise DefinitionError(where, "boxes", f"{definition.path(src.boxes)} has no entry for {rel} "
                                  "(give every image a list, empty when it shows no object)")
        out.append(table[rel])
    return out
