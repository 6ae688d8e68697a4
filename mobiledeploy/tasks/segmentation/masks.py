"""Labelled segmentation masks beside a definition's images.

An image source may name ``masks``: a folder of PNG class-id masks, one per image, found at
the image's path relative to the source (the list file's folder for a list file) with the
suffix ``.png``. Pixel values are class ids (palette PNGs store them as indices; greyscale
works too): 0..classes-1 index the labels file, 255 means "ignore" (not scored).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import DefinitionError, UserError

IGNORE = 255  # mask value left out of every score (object borders, unlabelled pixels)


def palette(num_classes: int) -> np.ndarray:
    """(classes, 3) uint8 colours: class 0 (background) black, the others well apart in hue."""
    import colorsys

    out = np.zeros((max(num_classes, 1), 3), np.uint8)
    for c in range(1, num_classes):
        r, g, b = colorsys.hsv_to_rgb(((c - 1) * 0.61803398875) % 1.0, 0.75, 0.95)
        out[c] = (int(r * 255), int(g * 255), int(b * 255))
    return out


def mask_path(image: str | Path, source: Path, masks: Path, where: str = "") -> Path:
    """The mask file that belongs to ``image`` of the image source ``source``."""
    from ...images import source_relative

    return masks / source_relative(image, source, where, "masks").with_suffix(".png")


def read_mask(path: Path, height: int, width: int, num_classes: int, where: str = "", *,
              image_size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode one mask to uint8 (height, width) class ids, resized nearest-neighbour.

    Nearest keeps ids as ids (a bilinear resize would invent classes between two others).
    ``image_size`` (width, height of the mask's image), when given, must be the mask's own size.
    """
    from PIL import Image, UnidentifiedImageError

    from ...safety import clip

    if not path.is_file():
        raise DefinitionError(where or str(path), "masks", f"mask not found: {clip(str(path))} (one PNG per "
                              "image, same relative path as the image, suffix .png)")
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I", "I;16"):
                raise DefinitionError(where or str(path), "masks", f"{clip(str(path))} is a {im.mode} image; a "
                                      "mask is a palette or greyscale PNG of class ids")
            if image_size is not None and im.size != tuple(image_size):
                raise DefinitionError(where or str(path), "masks", f"{clip(str(path))} is {im.width}x{im.height}, "
                                      f"its image {image_size[0]}x{image_size[1]}: a mask labels its image's "
                                      "pixels, at the image's size")
            if im.size != (width, height):
                im = im.resize((width, height), Image.Resampling.NEAREST)
            ids = np.asarray(im).astype(np.int64)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError) as exc:
        raise UserError(f"{clip(str(path))}: cannot decode mask ({clip(str(exc), 120)})") from None
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
    return np.stack([read_mask(mask_path(f, source, masks, where), h, w, n, where) for f in files])


def probe_masks(definition, which: str, images: list[Path]) -> None:
    """Every mask of ``images`` (the definition's ``which`` source) exists, decodes, is its image's
    size and holds known class ids: a user error before the build writes anything, not a
    validation failure after every conversion. Contents checked before are not decoded again."""
    from PIL import Image

    from ...digests import probed

    src = getattr(definition, which)
    if src.masks is None:
        return
    source = definition.confined(src.source, f"{which}.source")
    masks = definition.confined(src.masks, f"{which}.masks")
    where = f"{definition.source_path}: {which}"
    n = definition.num_classes
    for image in images:
        path = mask_path(image, source, masks, where)
        if not path.is_file():  # the probe's memo needs the file: say it here, naming the field
            read_mask(path, 1, 1, n, where)
        with Image.open(image) as im:
            size = im.size
        probed(path, lambda p, size=size: read_mask(p, size[1], size[0], n, where, image_size=size),
               tag=f"mask:{n}:{size[0]}x{size[1]}")
