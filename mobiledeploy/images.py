"""Real inputs, decoded and preprocessed once from the definition's input spec.

Image sources are a folder (labels by sub-folder name, or unlabelled files at its top) or a list
file with one ``path [label]`` per line (paths relative to the list file).
"""

from __future__ import annotations

import contextlib
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
MAX_PIXELS = 64_000_000  # a camera frame is 12-50 MP; beyond this an image is a decompression bomb


def list_images(source: Path, labels: list[str], *, where: str = "",
                root: Path | None = None) -> list[tuple[Path, int | None]]:
    """Every image of a source with its label index (None when unlabelled), sorted.

    ``root`` (the definition's folder unless it allows outside paths) confines every image a
    list file names; a list entry must be an image file. Labels are data, never paths.
    """
    if _LISTINGS is not None:
        key = (str(source), tuple(labels), where, str(root))
        if key not in _LISTINGS:
            _LISTINGS[key] = _list_images(source, labels, where=where, root=root)
        return list(_LISTINGS[key])
    return _list_images(source, labels, where=where, root=root)


_LISTINGS: dict | None = None  # listings remembered inside ``listings_remembered()``


@contextlib.contextmanager
def listings_remembered():
    """Within the block (one build), a source is listed once, however many times it is asked for."""
    global _LISTINGS
    prev, _LISTINGS = _LISTINGS, {}
    try:
        yield
    finally:
        _LISTINGS = prev


def _list_images(source: Path, labels: list[str], *, where: str = "",
                 root: Path | None = None) -> list[tuple[Path, int | None]]:
    from .safety import clip, confine, read_text_file, walk_files

    index = {name: i for i, name in enumerate(labels)}
    src = where or clip(str(source))
    items: list[tuple[Path, int | None]] = []
    if source.is_dir():
        for p in walk_files(source, src, "source"):
            if p.suffix.lower() not in IMAGE_SUFFIXES or not p.is_file():
                continue
            if root is not None:
                confine(p, root, src, "source")  # a symlinked image must not lead outside
            rel = p.relative_to(source)
            if len(rel.parts) == 1:
                items.append((p, None))
                continue
            cls = rel.parts[0]
            if cls not in index:
                raise DefinitionError(src, "source",
                                      f"folder '{clip(cls, 60)}' in {clip(str(source))} is not a label "
                                      "in the labels file")
            items.append((p, index[cls]))
    elif source.is_file():
        text = read_text_file(source, src, "source")
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            rel, label = _list_entry(line, index, len(labels))
            at = f"{clip(str(source))}:{n}"
            if label is False:
                raise DefinitionError(src, "source", f"{at}: label {clip(line.rsplit(None, 1)[-1], 60)!r} "
                                                     "is not in the labels file")
            if Path(rel).suffix.lower() not in IMAGE_SUFFIXES:
                raise DefinitionError(src, "source", f"{at}: {clip(rel, 60)} is not an image "
                                                     f"({', '.join(sorted(IMAGE_SUFFIXES))})")
            path = confine(source.parent / rel, root, src, "source", hint=at) if root is not None \
                else (source.parent / rel).resolve()
            if not path.is_file():
                raise DefinitionError(src, "source", f"{at}: image not found: {clip(str(path))}")
            items.append((path, label))
    else:
        raise DefinitionError(src, "source", f"not found: {clip(str(source))}")
    if not items:
        raise DefinitionError(src, "source",
                              f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {clip(str(source))}")
    return items


def _list_entry(line: str, index: dict[str, int], n_labels: int):
    """(path, label index | None | False for an unknown label) of one list-file line.

    ``path label`` with the label as the last word, or as a label name with spaces after a
    path without any; a number is a label index when no label has that name.
    """
    words = line.split()
    if len(words) == 1:
        return line, None
    path, last = line.rsplit(None, 1)
    if last in index:
        return path, index[last]
    first, rest = line.split(None, 1)
    if rest in index:
        return first, index[rest]
    if last.isdigit() and int(last) < n_labels:
        return path, int(last)
    return path, False


def write_image_list(folder: Path, name: str, labels: list[str],
                     items: list[tuple[Path, int | None]]) -> str:
    """Copy images into ``folder/name/`` under index-based names and write ``folder/name.txt``.

    The list file carries the labels (``name/00003.png label``), so a label is never a path
    component: ``../../x`` as a label stays a string. Returns the list file's name.
    """
    import shutil

    images = folder / name
    images.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (p, lab) in enumerate(items):
        rel = f"{name}/{i:05d}{p.suffix.lower()}"
        shutil.copyfile(p, folder / rel)
        lines.append(rel if lab is None else f"{rel} {labels[lab]}")
    (folder / f"{name}.txt").write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    return f"{name}.txt"


def decode_resized(path: Path, height: int, width: int, resize: str = "bilinear") -> np.ndarray:
    """Decode any image file to RGB uint8 (H, W, 3), resized to the model's input size."""
    from PIL import Image, UnidentifiedImageError

    from .safety import clip

    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise UserError(f"{path}: {im.width}x{im.height} pixels; images are at most "
                                f"{MAX_PIXELS // 1_000_000} megapixels (resize it)")
            im = im.convert("RGB")
            if im.size != (width, height):
                method = Image.Resampling.BILINEAR if resize == "bilinear" else Image.Resampling.NEAREST
                im = im.resize((width, height), method)
            return np.asarray(im, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError) as exc:
        raise UserError(f"{path}: cannot decode image ({clip(str(exc), 120)})") from None


def source_relative(image: str | Path, source: Path, where: str, field: str) -> Path:
    """``image``'s path relative to its source (the folder, or a list file's folder): where its
    mask or boxes entry is found. A list file may name images outside its own folder; those
    cannot carry labels by relative path: a one-line error naming the field."""
    from .safety import clip

    root = source if source.is_dir() else source.parent
    try:
        return Path(image).resolve().relative_to(root.resolve())
    except ValueError:
        raise DefinitionError(where, field, f"{clip(str(image))} lies outside {clip(str(root))}: {field} are "
                              "found by the image's path relative to the source; list images below the "
                              "list file's folder") from None


def probe_image(path: Path) -> None:
    """Decode an image once (no resize) so that a corrupt or oversized file is a user error
    before the build writes anything, not a converter crash later. Contents that decoded before
    (digests.py: same bytes, same Pillow) are not decoded again."""
    from .digests import probed

    probed(path, _probe_image, tag=str(MAX_PIXELS))


def _probe_image(path: Path) -> None:
    from PIL import Image, UnidentifiedImageError

    from .safety import clip

    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise UserError(f"{path}: {im.width}x{im.height} pixels; images are at most "
                                f"{MAX_PIXELS // 1_000_000} megapixels (resize it)")
            im.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError) as exc:
        raise UserError(f"{path}: cannot decode image ({clip(str(exc), 120)})") from None


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
    items = list_images(definition.confined(src.source, f"{which}.source"), definition.labels_list(),
                        where=f"{definition.source_path}: {which}", root=definition.root)
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
