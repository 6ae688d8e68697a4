"""Seeded procedural images of printed shapes and symbols, as a phone camera would see them.

Ten classes, each drawn at 2x and downsampled for anti-aliasing onto varied backgrounds (solid,
gradients, faint textures, a few distractor strokes), then degraded like a camera shot: uneven
lighting, colour cast, gamma, blur, sensor noise and JPEG artefacts. Every image depends only on
(seed, class, index), so a split is byte-identical on rerun and growing ``n_per_class`` keeps the
earlier images. Pillow + NumPy only.

    python -m mobiledeploy.demo.shapes OUT --split validation --n-per-class 20 --size 128
"""

from __future__ import annotations

import argparse
import bisect
import functools
import io
import itertools
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES: list[str] = [
    "circle", "square", "triangle", "star", "cross",
    "arrow", "heart", "ring", "hexagon", "crescent",
]  # fmt: skip

# Default seed per split: an image's randomness comes from (seed, class, index), so distinct
# seeds give disjoint image sets.
SPLIT_SEEDS: dict[str, int] = {"train": 1000, "calibration": 2000, "validation": 3000}
FORMATS = ("png", "jpg", "mixed")
MIN_SIZE = 32  # below this the smaller symbols stop being recognisable
_SS = 2  # supersampling factor for the masks
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_MIN_CONTRAST = 0.3  # luma gap between symbol and the background under it
_BANK = 384  # side of the cached sensor-noise field
_ITER_KEY = 0x5EED  # keeps iterate()'s class-order stream apart from the per-image streams


# --------------------------------------------------------------------------- geometry
# Each class is a list of (polygon in unit coordinates, fill): fill 255 adds, 0 cuts a hole.


def _ngon(n: int, r: float = 1.0, phase: float = 0.0, cx: float = 0.0) -> np.ndarray:
    t = phase + np.arange(n) * (2 * np.pi / n)
    return np.stack([cx + r * np.cos(t), r * np.sin(t)], axis=1)


def _geometry(cls: int, rng: np.random.Generator) -> list[tuple[np.ndarray, int]]:
    name = CLASSES[cls]
    if name == "circle":
        return [(_ngon(96), 255)]
    if name == "square":
        return [(_ngon(4, 1.0, np.pi / 4), 255)]
    if name == "triangle":
        return [(_ngon(3, 1.15, -np.pi / 2) + [0, 0.2], 255)]  # centroid -> bbox centre
    if name == "star":
        pts = _ngon(10, 1.15, -np.pi / 2)
        pts[1::2] *= rng.uniform(0.4, 0.5)
        return [(pts, 255)]
    if name == "cross":
        w = rng.uniform(0.24, 0.33)
        q = [(w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1)]
        half = np.array(q, dtype=float)
        return [(np.concatenate([half, -half]), 255)]
    if name == "arrow":
        s, h, hw = rng.uniform(0.15, 0.24), rng.uniform(-0.1, 0.2), rng.uniform(0.5, 0.62)
        pts = [(-1, -s), (h, -s), (h, -hw), (1, 0), (h, hw), (h, s), (-1, s)]
        return [(np.array(pts, dtype=float), 255)]
    if name == "heart":
        t = np.linspace(0, 2 * np.pi, 96, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        pts = np.stack([x, y - (y.max() + y.min()) / 2], axis=1) / 16.5
        return [(pts, 255)]
    if name == "ring":
        return [(_ngon(96), 255), (_ngon(96, rng.uniform(0.45, 0.62)), 0)]
    if name == "hexagon":
        return [(_ngon(6, 1.05), 255)]
    if name == "crescent":
        d, r2 = rng.uniform(0.38, 0.5), rng.uniform(0.8, 0.9)
        return [(_ngon(96), 255), (_ngon(96, r2, cx=d), 0)]
    raise IndexError(cls)


def _rot(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s], [s, c]])


def _shape_mask(
    cls: int, rng: np.random.Generator, size: int, scale: tuple[float, float] = (0.2, 0.38)
) -> np.ndarray:
    """Alpha mask (size, size) float32 in [0, 1] of one randomly placed, posed symbol whose
    half-extent is ``scale`` (a range, drawn) times the image side."""
    parts = _geometry(cls, rng)
    # hearts read as hearts only roughly upright; everything else is rotation-invariant
    theta = rng.uniform(-0.7, 0.7) if CLASSES[cls] == "heart" else rng.uniform(0, 2 * np.pi)
    phi = rng.uniform(0, np.pi)  # direction of the camera tilt (foreshortening)
    squash = np.diag([rng.uniform(0.8, 1.0), 1.0])
    m = _rot(-phi) @ squash @ _rot(phi) @ _rot(theta) * (rng.uniform(*scale) * size)
    parts = [(p @ m.T, f) for p, f in parts]
    solid = np.concatenate([p for p, f in parts if f])
    lo, hi = solid.min(0), solid.max(0)
    margin = 0.04 * size
    fit = min(1.0, (size - 2 * margin) / float((hi - lo).max()))
    parts = [(p * fit, f) for p, f in parts]
    lo, hi = lo * fit, hi * fit
    centre = rng.uniform(margin - lo, size - margin - hi)
    canvas = Image.new("L", (size * _SS, size * _SS), 0)
    draw = ImageDraw.Draw(canvas)
    for p, f in parts:
        draw.polygon(((p + centre) * _SS).ravel().tolist(), fill=f)
    return np.asarray(canvas.reduce(_SS), dtype=np.float32) / 255.0


# --------------------------------------------------------------------------- appearance


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    i, f = int(h * 6) % 6, h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array(rgb, dtype=np.float32)


def _pick(rng: np.random.Generator, probs: list[float]) -> int:
    """Index drawn with ``probs`` (Generator.choice with p= is ~20x slower per call)."""
    return min(bisect.bisect(list(itertools.accumulate(probs)), rng.random()), len(probs) - 1)


def _surface_colour(rng: np.random.Generator) -> np.ndarray:
    kind = _pick(rng, [0.45, 0.4, 0.15])
    if kind == 0:  # paper, card, wall: light and nearly neutral
        return _hsv(rng.uniform(), rng.uniform(0, 0.15), rng.uniform(0.7, 0.97))
    if kind == 1:  # coloured surface
        return _hsv(rng.uniform(), rng.uniform(0.2, 0.8), rng.uniform(0.35, 0.9))
    return _hsv(rng.uniform(), rng.uniform(0, 0.4), rng.uniform(0.08, 0.3))  # dark desk


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1) - 0.5
    x.flags.writeable = y.flags.writeable = False  # shared between calls
    return x, y


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    base = _surface_colour(rng)
    x, y = _grid(size)
    kind = _pick(rng, [0.25, 0.3, 0.15, 0.3])
    if kind == 0:
        bg = np.broadcast_to(base, (size, size, 3)).copy()
    elif kind == 1:  # linear gradient towards a related colour
        other = np.clip(base + rng.uniform(-0.3, 0.3, 3).astype(np.float32), 0, 1)
        a = rng.uniform(0, 2 * np.pi)
        t = (x * math.cos(a) + y * math.sin(a) + 0.5)[..., None]
        bg = base * (1 - t) + other * t
    elif kind == 2:  # radial gradient
        other = np.clip(base * rng.uniform(0.6, 1.3), 0, 1)
        cx, cy = rng.uniform(-0.3, 0.3, 2)
        t = np.clip(np.hypot(x - cx, y - cy) / 0.8, 0, 1)[..., None]
        bg = base * (1 - t) + other * t
    else:
        bg = np.broadcast_to(base, (size, size, 3)).copy()
    if kind == 3 or rng.random() < 0.3:
        bg = bg + _texture(rng, size, x, y)[..., None]
    return np.clip(bg, 0, 1).astype(np.float32)


def _texture(rng: np.random.Generator, size: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Faint luminance texture: blotches, paper grain or fabric/wood stripes."""
    kind = rng.integers(3)
    if kind == 0:
        k = int(rng.integers(3, 10))
        low = Image.fromarray(rng.standard_normal((k, k)).astype(np.float32))
        tex = np.asarray(low.resize((size, size), Image.Resampling.BICUBIC)) * rng.uniform(
            0.03, 0.07
        )
    elif kind == 1:
        half = max(size // 2, 1)
        low = Image.fromarray(rng.standard_normal((half, half)).astype(np.float32))
        tex = np.asarray(low.resize((size, size), Image.Resampling.BILINEAR)) * rng.uniform(
            0.015, 0.04
        )
    else:
        a, f = rng.uniform(0, np.pi), rng.uniform(3, 12)
        wobble = 0.02 * np.sin(2 * np.pi * rng.uniform(1, 3) * y)
        tex = np.sin(2 * np.pi * f * (x * math.cos(a) + y * math.sin(a) + wobble))
        tex = tex * rng.uniform(0.02, 0.06)
    return tex.astype(np.float32)


def _distractors(rng: np.random.Generator, img: np.ndarray, size: int) -> None:
    """A few thin strokes and small dots (pencil marks, crumbs) drawn under the symbol."""
    n = int(_pick(rng, [0.4, 0.25, 0.15, 0.1, 0.1]))
    for _ in range(n):
        canvas = Image.new("L", (size * _SS, size * _SS), 0)
        draw = ImageDraw.Draw(canvas)
        s = size * _SS
        if rng.random() < 0.6:
            a, b = rng.uniform(-0.1, 1.1, 2) * s, rng.uniform(-0.1, 1.1, 2) * s
            width = max(1, int(rng.uniform(0.004, 0.012) * s))
            draw.line([tuple(a), tuple(b)], fill=255, width=width)
        else:
            for _ in range(int(rng.integers(1, 6))):
                c, r = rng.uniform(0, 1, 2) * s, rng.uniform(0.005, 0.02) * s
                draw.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=255)
        alpha = np.asarray(canvas.reduce(_SS), dtype=np.float32)[..., None] / 255.0
        colour = _hsv(rng.uniform(), rng.uniform(0, 0.7), rng.uniform(0.05, 0.95))
        alpha *= rng.uniform(0.2, 0.6)
        img *= 1 - alpha
        img += alpha * colour


def _symbol_colour(rng: np.random.Generator, lo: float, hi: float) -> np.ndarray | None:
    """A colour whose luma is at least _MIN_CONTRAST away from [lo, hi], or None."""
    dark, light = lo - _MIN_CONTRAST, hi + _MIN_CONTRAST
    room = [max(0.0, dark - 0.02), max(0.0, 0.98 - light)]
    if sum(room) <= 0:
        return None
    go_dark = rng.random() < room[0] / sum(room)
    target = rng.uniform(0.02, dark) if go_dark else rng.uniform(light, 0.98)
    sat = 0.0 if rng.random() < 0.25 else rng.uniform(0.4, 1.0)
    c = _hsv(rng.uniform(), sat, 1.0)
    luma = float(c @ _LUMA)
    if target <= luma:  # luma is linear in RGB, so scaling / mixing with white hits it exactly
        return c * (target / luma)
    return c + (1 - c) * ((target - luma) / (1 - luma))


def _compose(cls: int, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    img = _background(rng, size)
    _distractors(rng, img, size)
    mask = _shape_mask(cls, rng, size)
    return _paint(img, mask, rng, size), mask


def _paint(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Ink the symbol ``mask`` onto ``img`` in a colour that stands out, maybe with a shadow."""
    alpha = mask[..., None]
    colour = None
    for _ in range(6):
        under = img[mask > 0.5] @ _LUMA
        lo, hi = np.percentile(under, [2, 98]) if under.size else (0.5, 0.5)
        colour = _symbol_colour(rng, float(lo), float(hi))
        if colour is not None:
            break
        # background too varied under the symbol for any ink to stand out: flatten it
        img = img.mean((0, 1)) + (img - img.mean((0, 1))) * 0.6
    if colour is None:  # pragma: no cover - six flattenings always leave room
        colour = np.zeros(3, np.float32)
    if rng.random() < 0.35:  # cast shadow of a sticker or cut-out card
        d = rng.uniform(-0.04, 0.04, 2) * size
        blur = rng.uniform(0.01, 0.03) * size
        sh = Image.fromarray((mask * 255).astype(np.uint8)).transform(
            (size, size),
            Image.Transform.AFFINE,
            (1, 0, -d[0], 0, 1, -d[1]),
            Image.Resampling.BILINEAR,
        )
        sh = np.asarray(sh.filter(ImageFilter.GaussianBlur(blur)), np.float32) / 255.0
        img *= 1 - rng.uniform(0.15, 0.4) * sh[..., None]
    x, y = _grid(size)
    shade = 1 + rng.uniform(-0.08, 0.08) * (x + y)  # ink is never perfectly flat
    return img * (1 - alpha) + alpha * np.clip(colour * shade[..., None], 0, 1)


@functools.lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    # drawing fresh Gaussians costs as much as the rest of an image; windows of one fixed
    # field at random offsets look the same to a network and keep generation fast
    bank = np.random.default_rng(0x0015E).standard_normal((_BANK, _BANK, 3), dtype=np.float32)
    bank.flags.writeable = False
    return bank


def _noise(rng: np.random.Generator, size: int) -> np.ndarray:
    if size > _BANK:
        return rng.standard_normal((size, size, 3), dtype=np.float32)
    oy, ox = rng.integers(0, _BANK - size + 1, 2)
    win = _noise_bank()[oy : oy + size, ox : ox + size]
    return win.transpose(1, 0, 2) if rng.random() < 0.5 else win


def _camera(rng: np.random.Generator, img: np.ndarray, size: int) -> Image.Image:
    """Lighting, white balance, tone curve, focus blur, sensor noise, JPEG artefacts."""
    x, y = _grid(size)
    a = rng.uniform(0, 2 * np.pi)
    light = 1 + rng.uniform(0, 0.25) * (x * math.cos(a) + y * math.sin(a))
    light = light - rng.uniform(0, 0.35) * (x * x + y * y)  # vignette
    contrast = np.float32(rng.uniform(0.8, 1.15))
    gain = (light * np.float32(rng.uniform(0.75, 1.2) * contrast))[..., None]
    img = img * gain
    img *= rng.uniform(0.88, 1.12, 3).astype(np.float32)  # white balance
    img += 0.5 * (1 - contrast)
    np.clip(img, 0, 1, out=img)
    img **= np.float32(rng.uniform(0.75, 1.35))
    if rng.random() < 0.5:
        pil = Image.fromarray((img * 255 + 0.5).astype(np.uint8))
        pil = pil.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.1) * size / 128))
        img = np.asarray(pil, np.float32) / 255.0
    shot, read = rng.uniform(0, 0.03), rng.uniform(0.003, 0.025)
    noise = _noise(rng, size)
    img = img + noise * (read + shot * np.sqrt(img))
    pil = Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))
    if rng.random() < 0.5:
        buf = io.BytesIO()
        pil.save(buf, "JPEG", quality=int(rng.integers(40, 91)))
        pil = Image.open(buf).convert("RGB")
    return pil


# --------------------------------------------------------------------------- public API


def render(cls_index: int, rng: np.random.Generator, size: int = 128) -> Image.Image:
    """Draw one camera-like RGB image of class ``CLASSES[cls_index]`` using ``rng``.

    The result depends only on the generator's state, so a seeded generator reproduces it.
    """
    return render_with_mask(cls_index, rng, size)[0]


def render_with_mask(
    cls_index: int, rng: np.random.Generator, size: int = 128
) -> tuple[Image.Image, np.ndarray]:
    """Like ``render``, also returning the symbol's coverage mask (size, size) float32 in [0, 1]."""
    if not 0 <= cls_index < len(CLASSES):
        raise ValueError(f"cls_index must be in 0..{len(CLASSES) - 1}, got {cls_index}")
    if size < MIN_SIZE:
        raise ValueError(f"size must be >= {MIN_SIZE}, got {size}")
    img, mask = _compose(cls_index, rng, size)
    return _camera(rng, img, size), mask


def sample_rng(seed: int, cls_index: int, index: int) -> np.random.Generator:
    """The generator behind image ``index`` of class ``cls_index`` in the split seeded ``seed``."""
    return np.random.default_rng([seed, cls_index, index])


def _extension(fmt: str, index: int) -> str:
    if fmt == "mixed":  # mostly JPEG to keep shipped files small; every 10th PNG
        return "png" if index % 10 == 9 else "jpg"
    return fmt


def generate_split(
    out_dir: str | Path,
    *,
    n_per_class: int,
    seed: int,
    size: int = 128,
    fmt: str = "png",
    quality: int = 90,
) -> list[tuple[Path, int]]:
    """Write ``out_dir/<class>/<index>.<ext>`` for every class; return ``[(path, label)]``.

    ``fmt`` is "png", "jpg" (at ``quality``) or "mixed" (every tenth image PNG). The same
    arguments give byte-identical files; image ``i`` of a class does not depend on
    ``n_per_class``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    out = Path(out_dir)
    written: list[tuple[Path, int]] = []
    for label, name in enumerate(CLASSES):
        (out / name).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            img = render(label, sample_rng(seed, label, i), size)
            ext = _extension(fmt, i)
            path = out / name / f"{i:04d}.{ext}"
            if ext == "jpg":
                img.save(path, "JPEG", quality=quality)
            else:
                img.save(path, "PNG")
            written.append((path, label))
    return written


def iterate(n: int, seed: int, size: int = 128) -> Iterator[tuple[np.ndarray, int]]:
    """Yield ``n`` (uint8 HWC RGB array, label) pairs in memory, classes balanced per block of 10.

    Block ``b`` holds image ``b`` of every class in a seeded random order, i.e. the same pixels
    ``generate_split(..., seed=seed, fmt="png")`` writes as index ``b``.
    """
    k = len(CLASSES)
    for b in range((n + k - 1) // k):
        order = np.random.default_rng([seed, _ITER_KEY, b]).permutation(k)
        for label in order[: n - b * k]:
            label = int(label)
            yield np.asarray(render(label, sample_rng(seed, label, b), size)), label


def write_labels(path: str | Path) -> Path:
    """Write the class names, one per line in ``CLASSES`` order (the label index order)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    return p


# --------------------------------------------------------------------------- segmentation
# Scenes of one to three symbols with a per-pixel class-id mask: 0 background, k+1 CLASSES[k].

SEG_CLASSES: list[str] = ["background", *CLASSES]
SEG_SPLIT_SEEDS: dict[str, int] = {"train": 1100, "calibration": 2100, "validation": 3100}
_SCENE_KEY = 0x5E6  # keeps scene streams apart from the classification images' streams
_SHAPE_COUNTS = [0.5, 0.35, 0.15]  # P(1, 2, 3 symbols)
_MAX_OVERLAP = 0.1  # a new symbol may cover at most this share of itself with earlier ones


def seg_palette() -> list[int]:
    """A 256-entry RGB palette for class-id masks: background black, symbols in distinct hues."""
    pal = [0, 0, 0]
    for k in range(len(CLASSES)):
        pal += [int(round(c * 255)) for c in _hsv(k / len(CLASSES), 0.85, 0.95)]
    return pal + [255, 255, 255] * (256 - len(pal) // 3)


def render_scene(
    rng: np.random.Generator, size: int = 128, max_shapes: int = 3
) -> tuple[Image.Image, np.ndarray]:
    """One camera-like RGB scene of 1..``max_shapes`` symbols and its class-id mask.

    The mask (size, size) uint8 holds 0 for background and ``k + 1`` where ``CLASSES[k]`` covers
    more than half the pixel (later symbols lie on top). Depends only on the generator's state.
    """
    if size < MIN_SIZE:
        raise ValueError(f"size must be >= {MIN_SIZE}, got {size}")
    if not 1 <= max_shapes <= len(_SHAPE_COUNTS):
        raise ValueError(f"max_shapes must be in 1..{len(_SHAPE_COUNTS)}, got {max_shapes}")
    img = _background(rng, size)
    _distractors(rng, img, size)
    n = 1 + _pick(rng, _SHAPE_COUNTS[:max_shapes])
    # several symbols must share the frame: smaller, as a phone sees a page of stickers
    scale = (0.2, 0.38) if n == 1 else (0.13, 0.27)
    ids = np.zeros((size, size), np.uint8)
    cover = np.zeros((size, size), np.float32)
    for _ in range(n):
        cls = int(rng.integers(len(CLASSES)))
        for _try in range(6):  # re-place a symbol that would hide behind earlier ones
            mask = _shape_mask(cls, rng, size, scale)
            if float((mask * cover).sum()) <= _MAX_OVERLAP * float(mask.sum()):
                break
        img = _paint(img, mask, rng, size).astype(np.float32)
        ids[mask > 0.5] = cls + 1
        np.maximum(cover, mask, out=cover)
    return _camera(rng, img, size), ids


def scene_rng(seed: int, index: int) -> np.random.Generator:
    """The generator behind scene ``index`` of the segmentation split seeded ``seed``."""
    return np.random.default_rng([seed, _SCENE_KEY, index])


def iterate_scenes(
    n: int, seed: int, size: int = 128, start: int = 0, max_shapes: int = 3
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield scenes ``start .. start+n-1`` as (uint8 HWC RGB array, uint8 class-id mask)."""
    for i in range(start, start + n):
        img, ids = render_scene(scene_rng(seed, i), size, max_shapes)
        yield np.asarray(img), ids


def save_mask(ids: np.ndarray, path: str | Path) -> None:
    """Write a class-id mask as a palette PNG (the pixel values are the class ids)."""
    im = Image.fromarray(ids.astype(np.uint8), mode="P")
    im.putpalette(seg_palette())
    im.save(path, "PNG", optimize=True)


def generate_seg_split(
    out_dir: str | Path,
    *,
    n: int,
    seed: int,
    size: int = 128,
    fmt: str = "png",
    quality: int = 90,
    max_shapes: int = 3,
) -> list[tuple[Path, Path]]:
    """Write ``out_dir/images/NNNN.<ext>`` and ``out_dir/masks/NNNN.png``; return the pairs.

    A definition names them as ``{source: DIR/images, masks: DIR/masks}``: each image's mask has
    the image's relative path with the suffix ``.png``. Byte-identical on rerun; scene ``i``
    does not depend on ``n``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    written: list[tuple[Path, Path]] = []
    for i in range(n):
        img, ids = render_scene(scene_rng(seed, i), size, max_shapes)
        ext = _extension(fmt, i)
        path = out / "images" / f"{i:04d}.{ext}"
        if ext == "jpg":
            img.save(path, "JPEG", quality=quality)
        else:
            img.save(path, "PNG")
        mpath = out / "masks" / f"{i:04d}.png"
        save_mask(ids, mpath)
        written.append((path, mpath))
    return written


def write_seg_labels(path: str | Path) -> Path:
    """Write the segmentation class names (``background`` first: mask value = line index)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("\n".join(SEG_CLASSES) + "\n", encoding="utf-8")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: generate one split of the demo dataset into OUT."""
    ap = argparse.ArgumentParser(prog="python -m mobiledeploy.demo.shapes", description=__doc__)
    ap.add_argument("out", type=Path, help="output folder (one sub-folder per class)")
    ap.add_argument("--split", choices=sorted(SPLIT_SEEDS), default="train")
    ap.add_argument("--n-per-class", type=int, default=10)
    ap.add_argument("--seed", type=int, default=None, help="default: a fixed seed per split")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--format", choices=FORMATS, default="png", dest="fmt")
    ap.add_argument("--quality", type=int, default=90, help="JPEG quality")
    ap.add_argument("--labels", type=Path, default=None, help="also write labels.txt here")
    ap.add_argument("--task", choices=["classification", "segmentation"], default="classification",
                    help="segmentation: OUT/images + OUT/masks scenes (n = --n-per-class x 10)")
    ap.add_argument("--max-shapes", type=int, default=3, help="segmentation: symbols per scene, 1-3")
    args = ap.parse_args(argv)
    if args.task == "segmentation":
        seed = SEG_SPLIT_SEEDS[args.split] if args.seed is None else args.seed
        try:
            pairs = generate_seg_split(args.out, n=args.n_per_class * len(CLASSES), seed=seed,
                                       size=args.size, fmt=args.fmt, quality=args.quality,
                                       max_shapes=args.max_shapes)
        except ValueError as exc:
            ap.error(str(exc))
        if args.labels:
            write_seg_labels(args.labels)
        total = sum(p.stat().st_size + m.stat().st_size for p, m in pairs)
        print(f"{len(pairs)} scenes with masks ({total / 1e6:.2f} MB) in {args.out} (seed {seed})")
        return 0
    seed = SPLIT_SEEDS[args.split] if args.seed is None else args.seed
    try:
        files = generate_split(
            args.out,
            n_per_class=args.n_per_class,
            seed=seed,
            size=args.size,
            fmt=args.fmt,
            quality=args.quality,
        )
    except ValueError as exc:
        ap.error(str(exc))
    if args.labels:
        write_labels(args.labels)
    total = sum(p.stat().st_size for p, _ in files)
    print(f"{len(files)} images ({total / 1e6:.2f} MB) in {args.out} (seed {seed})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
