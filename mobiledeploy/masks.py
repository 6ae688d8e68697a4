"""Labelled segmentation masks beside a definition's images.

An image source may name ``masks``: a folder of PNG class-id masks, one per image, found at
the image's path relative to the source (the list file's folder for a list file) with the
suffix ``.png``. Pixel values are class ids (palette PNGs store them as indices; greyscale
works too): 0..classes-1 index the labels file, 255 means "ignore" (not scored).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DefinitionError, UserError

IGNORE = 255  # mask value left out of every score (object borders, unlabelled pixels)


def palette(num_classes: int) -> np.ndarray:
    """(classes, 3) uint8 colours: class 0 (background) black, the others well apart in hue."""
    import colorsys

    out = np.zeros((max(num_classes, 1), 3), np.uint8)
    for c in range(1, num_classes):
        r, g, b = colorsys.hsv_to_rgb(((c - 1) * 0.61803398875) % 1.0, 0.75, 0.95)
        out[c] = (int(r * 255), int(g * 255), int(b * 255))
    return out


def mask_path(image: str | Path, source: Path, masks: Path) -> Path:
    """The mask file that belongs to ``image`` of the image source ``source``."""
    root = source if source.is_dir() else source.parent
    rel = Path(image).resolve().relative_to(root.resolve())
    return masks / rel.with_suffix(".png")


def read_mask(path: Path, height: int, width: int, num_classes: int, where: str = "") -> np.ndarray:
    """Decode one mask to uint8 (height, width) class ids, resized nearest-neighbour.

    Nearest keeps ids as ids (a bilinear resize would invent classes between two others).
    """
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DefinitionError(where or str(path), "masks", f"mask not found: {path} (one PNG per image, "
                              "same relative path as the image, suffix .png)")
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I", "I;16"):
                raise DefinitionError(where or str(path), "masks", f"{path} is a {im.mode} image; a mask is a "
                                      "palette or greyscale PNG of class ids")
            if im.size != (width, height):
                im = im.resize((width, height), Image.Resampling.NEAREST)
            ids = np.asarray(im).astype(np.int64)
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"{path}: cannot decode mask ({exc})") from None
    bad = (ids >= num_classes) & (ids != IGNORE)
    if bad.any():
        raise DefinitionError(where or str(path), "masks", f"{path} holds class id {int(ids[bad].max())}, but "
                              f"the labels file has {num_classes} classes (ids 0..{num_classes - 1}, "
                              f"{IGNORE} = ignore)")
    return ids.astype(np.uint8)


def load_masks(definition, which: str, files: list[str]) -> np.ndarray | None:
    """The masks of ``files`` (images of the definition's ``which`` source) at the model's input
    size as uint8 (N, H, W), or None when that source names no masks."""
    src = getattr(definition, which)
    if src.masks is None:
        return None
    # confined like every path a definition names: a bundle's definition cannot point outside it
    source, masks = definition.confined(src.source, f"{which}.source"), definition.confined(src.masks, f"{which}.masks")
    where = f"{definition.source_path}: {which}"
    h, w, n = definition.input.height, definition.input.width, definition.num_classes
    return np.stack([read_mask(mask_path(f, source, masks), h, w, n, where) for f in files])
