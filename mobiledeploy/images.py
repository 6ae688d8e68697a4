"""Real inputs, decoded and preprocessed once from the definition's input spec.

Image sources are a folder (labels by sub-folder name, or unlabelled files at its top) or a list
file with one ``path [label]`` per line (paths relative to the list file).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DefinitionError, UserError


@dataclass
class InputBatch:
    """The same real inputs for every backend, decoded and preprocessed once.

    ``pixels`` is what a camera gives (resized, RGB, uint8, NHWC); ``x`` is the normalised
    float tensor the reference models take (NCHW, channels in the definition's colour order).
    """

    pixels: np.ndarray  # (N, H, W, C) uint8, RGB order, already resized
    x: np.ndarray  # (N, C, H, W) float32, normalised, definition's colour order
    labels: list[int | None] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def nhwc(self) -> np.ndarray:
        """The normalised input in NHWC layout (Keras / TFLite)."""
        return np.ascontiguousarray(self.x.transpose(0, 2, 3, 1))

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, n: int) -> InputBatch:
        return InputBatch(self.pixels[:n], self.x[:n], self.labels[:n], self.files[:n])


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def list_images(source: Path, labels: list[str], *, where: str = "") -> list[tuple[Path, int | None]]:
    """Every image of a source with its label index (None when unlabelled), sorted."""
    index = {name: i for i, name in enumerate(labels)}
    items: list[tuple[Path, int | None]] = []
    if source.is_dir():
        for p in sorted(source.rglob("*")):
            if not p.is_file() or p.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            rel = p.relative_to(source)
            if len(rel.parts) == 1:
                items.append((p, None))
                continue
            cls = rel.parts[0]
            if cls not in index:
                raise DefinitionError(where or str(source), "source",
                                      f"folder '{cls}' in {source} is not a label in the labels file")
            items.append((p, index[cls]))
    elif source.is_file():
        for n, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.rsplit(None, 1) if len(line.split()) > 1 else [line]
            path = (source.parent / parts[0]).resolve()
            label = None
            if len(parts) == 2:
                label = index.get(parts[1])
                if label is None and parts[1].isdigit() and int(parts[1]) < len(labels):
                    label = int(parts[1])
                if label is None:
                    raise DefinitionError(where or str(source), "source",
                                          f"{source}:{n}: label '{parts[1]}' is not in the labels file")
            if not path.is_file():
                raise DefinitionError(where or str(source), "source", f"{source}:{n}: image not found: {path}")
            items.append((path, label))
    else:
        raise DefinitionError(where or str(source), "source", f"not found: {source}")
    if not items:
        raise DefinitionError(where or str(source), "source",
                              f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {source}")
    return items


def decode_resized(path: Path, height: int, width: int, resize: str = "bilinear") -> np.ndarray:
    """Decode any image file to RGB uint8 (H, W, 3), resized to the model's input size."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (width, height):
                method = Image.Resampling.BILINEAR if resize == "bilinear" else Image.Resampling.NEAREST
                im = im.resize((width, height), method)
            return np.asarray(im, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"{path}: cannot decode image ({exc})") from None


def normalise(pixels: np.ndarray, input_spec) -> np.ndarray:
    """RGB uint8 NHWC pixels -> the reference models' float NCHW input.

    Colour order first (the model sees BGR when the definition says so), then
    x = lo + p/255*(hi-lo), then (x - mean) / std, per channel.
    """
    p = pixels.astype(np.float32)
    if input_spec.color_order.value == "bgr":
        p = p[..., ::-1]
    scale, bias = input_spec.normalise_affine()
    x = p * np.asarray(scale, np.float32) + np.asarray(bias, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


def select_images(definition, which: str, limit: int | None = None) -> list[tuple[Path, int | None]]:
    """The calibration or validation images a definition uses: its source, capped by
    ``max_images`` (and ``limit``), spread evenly so that a cap keeps every class."""
    src = getattr(definition, which)
    items = list_images(definition.path(src.source), definition.labels_list(),
                        where=f"{definition.source_path}: {which}")
    cap = min(x for x in (limit, src.max_images, len(items)) if x is not None)
    return _spread(items, cap)


def load_batch(definition, which: str = "validation", limit: int | None = None) -> InputBatch:
    """Decode and preprocess the definition's calibration or validation images once."""
    items = select_images(definition, which, limit)
    inp = definition.input
    pixels = np.stack([decode_resized(p, inp.height, inp.width, inp.resize) for p, _ in items])
    return InputBatch(
        pixels=pixels,
        x=normalise(pixels, inp),
        labels=[lab for _, lab in items],
        files=[str(p) for p, _ in items],
    )


def _spread(items: list, n: int) -> list:
    """n items spread evenly over the (class-sorted) list, so a cap keeps every class."""
    if n >= len(items):
        return items
    idx = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in sorted(set(idx.tolist()))]
