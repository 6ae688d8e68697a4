"""Coral's classification test cases (classification_test_cases.csv) run on the CPU with LiteRT,
decoded and resized by mobiledeploy's own ``images``."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mobiledeploy.backends.tflite.backend import dequantize, make_interpreter
from mobiledeploy.images import decode_resized


@dataclass(frozen=True)
class ClassificationCase:
    """One row: model, image, preprocessing, and the label expected in the top k."""

    model: str
    image: str
    scale: float
    means: tuple[float, ...]
    rgb2bgr: bool
    score_threshold: float
    k: int
    expected_label: int


def read_cases(csv_path: str | Path) -> list[ClassificationCase]:
    """Rows of a classification_test_cases.csv (blank lines skipped)."""
    out = []
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            if not row.get("model_path"):
                continue
            out.append(ClassificationCase(
                model=row["model_path"], image=row["image_path"],
                scale=float(row["effective_scale"]),
                means=tuple(float(m) for m in row["effective_means"].split(":")),
                rgb2bgr=row["rgb2bgr"].strip().lower() == "true",
                score_threshold=float(row["score_threshold"]), k=int(row["k"]),
                expected_label=int(row["expected_topk_label"])))
    return out


def prepare_image(path: str | Path, width: int, height: int, means=(0.0, 0.0, 0.0),
                  scale: float = 1.0, rgb2bgr: bool = False, dtype: str = "uint8") -> np.ndarray:
    """Coral's convention on top of mobiledeploy's decode/resize: (p - mean) * scale, fed raw."""
    arr = decode_resized(Path(path), height, width).astype(np.float32)
    if rgb2bgr:
        arr = arr[..., ::-1]
    arr = (arr - np.asarray(means, dtype=np.float32)) * scale
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        arr = np.clip(np.rint(arr), info.min, info.max)
    return arr.astype(dtype)[None]


def classify(model_path: str | Path, image_path: str | Path, case: ClassificationCase | None = None,
             top: int = 5) -> list[tuple[int, float]]:
    """Top ``top`` (label, score) pairs of a classification .tflite on the CPU (LiteRT)."""
    interp = make_interpreter(model_path)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    _, h, w, _ = inp["shape"]
    c = case or ClassificationCase(str(model_path), str(image_path), 1.0, (0, 0, 0), False, 0, 1, -1)
    interp.set_tensor(inp["index"], prepare_image(image_path, int(w), int(h), c.means, c.scale, c.rgb2bgr,
                                                  np.dtype(inp["dtype"]).name))
    interp.invoke()
    scores = dequantize(interp.get_tensor(out["index"]), out).reshape(-1)
    order = np.argsort(-scores)[:top]
    return [(int(i), float(scores[i])) for i in order]
