"""Seeded detection scenes: one to four printed symbols per image, each with its class and box.

The same symbols, surfaces and camera model as the classification and segmentation demos
(``shapes.py``); a box is the tight extent of the symbol's pixels (coverage > 1/2) before later
symbols are drawn, so a partly covered symbol keeps its whole box (symbols overlap by at most a
tenth of the smaller one's area, when six placements allow it). Boxes are
``[ymin, xmin, ymax, xmax]`` normalised to the image, as detectors report them.

A split is ``OUT/images/NNNN.<ext>`` and ``OUT/boxes.json`` (``mobiledeploy/boxes.py``), named by
a definition as ``{source: DIR/images, boxes: DIR/boxes.json}``::

    python -m mobiledeploy.demo.shapes_det OUT --split validation --n 200 --size 160
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from . import shapes

CLASSES = shapes.CLASSES  # label index k = CLASSES[k]; the model's logit k + 1 (0 = background)
DET_SPLIT_SEEDS: dict[str, int] = {"train": 1200, "calibration": 2200, "validation": 3200}
_DET_KEY = 0xDE7  # keeps detection scene streams apart from the other demos' streams
_COUNTS = [0.2, 0.35, 0.3, 0.15]  # P(1, 2, 3, 4 symbols)
_MAX_OVERLAP = 0.1


def render_det_scene(rng: np.random.Generator, size: int = 160, max_shapes: int = 4
                     ) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    """One camera-like RGB scene of 1..``max_shapes`` symbols, their boxes float32 (k, 4)
    ``[ymin, xmin, ymax, xmax]`` in 0..1 and label indices int64 (k,). Depends only on ``rng``."""
    if size < shapes.MIN_SIZE:
        raise ValueError(f"size must be >= {shapes.MIN_SIZE}, got {size}")
    if not 1 <= max_shapes <= len(_COUNTS):
        raise ValueError(f"max_shapes must be in 1..{len(_COUNTS)}, got {max_shapes}")
    img = shapes._background(rng, size)
    shapes._distractors(rng, img, size)
    n = 1 + shapes._pick(rng, _COUNTS[:max_shapes])
    scale = (0.18, 0.32) if n == 1 else (0.12, 0.24)
    cover = np.zeros((size, size), np.float32)
    boxes, labels = [], []
    smallest = np.inf  # area of the smallest symbol so far: a new one must not hide it either
    for _ in range(n):
        cls = int(rng.integers(len(CLASSES)))
        for _try in range(6):  # re-place a symbol that would hide behind earlier ones, or hide them
            mask = shapes._shape_mask(cls, rng, size, scale)
            if float((mask * cover).sum()) <= _MAX_OVERLAP * min(float(mask.sum()), smallest):
                break
        smallest = min(smallest, float(mask.sum()))
        img = shapes._paint(img, mask, rng, size).astype(np.float32)
        ys, xs = np.nonzero(mask > 0.5)
        if len(ys):
            boxes.append([ys.min() / size, xs.min() / size, (ys.max() + 1) / size, (xs.max() + 1) / size])
            labels.append(cls)
        np.maximum(cover, mask, out=cover)
    return (shapes._camera(rng, img, size), np.asarray(boxes, np.float32).reshape(-1, 4),
            np.asarray(labels, np.int64))


def det_rng(seed: int, index: int) -> np.random.Generator:
    """The generator behind detection scene ``index`` of the split seeded ``seed``."""
    return np.random.default_rng([seed, _DET_KEY, index])


def iterate_det_scenes(n: int, seed: int, size: int = 160, start: int = 0, max_shapes: int = 4
                       ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield scenes ``start .. start+n-1`` as (uint8 HWC RGB, boxes (k, 4), labels (k,))."""
    for i in range(start, start + n):
        img, boxes, labels = render_det_scene(det_rng(seed, i), size, max_shapes)
        yield np.asarray(img), boxes, labels


def generate_det_split(out_dir: str | Path, *, n: int, seed: int, size: int = 160, fmt: str = "jpg",
                       quality: int = 90, max_shapes: int = 4) -> Path:
    """Write ``out_dir/images/NNNN.<ext>`` and ``out_dir/boxes.json``; return the JSON's path.

    Byte-identical on rerun; scene ``i`` does not depend on ``n``.
    """
    if fmt not in shapes.FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(shapes.FORMATS)}, got {fmt!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    entries = {}
    for i in range(n):
        img, boxes, labels = render_det_scene(det_rng(seed, i), size, max_shapes)
        ext = shapes._extension(fmt, i)
        name = f"{i:04d}.{ext}"
        if ext == "jpg":
            img.save(out / "images" / name, "JPEG", quality=quality)
        else:
            img.save(out / "images" / name, "PNG")
        entries[name] = [{"label": CLASSES[int(c)], "box": [round(float(v), 6) for v in b]}
                         for b, c in zip(boxes, labels, strict=True)]
    from ..tasks.detection.boxes import write_boxes

    return write_boxes(out / "boxes.json", entries)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: generate one split of detection scenes into OUT."""
    ap = argparse.ArgumentParser(prog="python -m mobiledeploy.demo.shapes_det", description=__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("--split", choices=sorted(DET_SPLIT_SEEDS), default="validation")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=None, help="default: a fixed seed per split")
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--format", choices=shapes.FORMATS, default="jpg", dest="fmt")
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--max-shapes", type=int, default=4)
    ap.add_argument("--labels", type=Path, default=None, help="also write labels.txt here")
    args = ap.parse_args(argv)
    seed = DET_SPLIT_SEEDS[args.split] if args.seed is None else args.seed
    try:
        path = generate_det_split(args.out, n=args.n, seed=seed, size=args.size, fmt=args.fmt,
                                  quality=args.quality, max_shapes=args.max_shapes)
    except ValueError as exc:
        ap.error(str(exc))
    if args.labels:
        shapes.write_labels(args.labels)
    objects = sum(len(v) for v in json.loads(path.read_text())["images"].values())
    print(f"{args.n} scenes, {objects} boxes in {args.out} (seed {seed})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
