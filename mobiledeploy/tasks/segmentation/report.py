"""The segmentation report's worst images: image, reference mask, artifact mask, difference.

Drawn once at validation time (``worst_images``) into small PNG data URIs stored in the row, so
the report page (``worst_images_section``) is rendered from the report alone.
"""

from __future__ import annotations

import base64
import io

import numpy as np

from .masks import palette

WORST = 3  # images shown per row


def _png(rgb: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def colour(ids: np.ndarray, num_classes: int) -> np.ndarray:
    """Class ids (H, W) as an RGB picture (ids outside the palette, e.g. 255 = ignore, grey)."""
    pal = np.vstack([palette(num_classes), [[128, 128, 128]]])
    return pal[np.where(ids < num_classes, ids, num_classes)].astype(np.uint8)


def worst_images(agreement: np.ndarray, ref_ids: np.ndarray, out_ids: np.ndarray, batch, truth,
                 num_classes: int, k: int = WORST) -> list[dict]:
    """The ``k`` images whose pixels agree least with the reference, as PNG data URIs."""
    order = np.argsort(agreement, kind="stable")[:k]
    shown = []
    for i in order.tolist():
        diff = np.zeros((*ref_ids[i].shape, 3), np.uint8)
        diff[ref_ids[i] != out_ids[i]] = (255, 0, 80)
        item = {"index": i, "pixel_agreement": float(agreement[i]),
                "file": batch.files[i].rsplit("/", 1)[-1] if batch.files else str(i),
                "image": _png(batch.pixels[i]), "reference": _png(colour(ref_ids[i], num_classes)),
                "artifact": _png(colour(out_ids[i], num_classes)), "difference": _png(diff)}
        if truth is not None:
            item["labels"] = _png(colour(truth[i], num_classes))
        shown.append(item)
    return shown


def worst_images_section(report: dict) -> str:
    """HTML: per judged row, its worst images side by side (autoescaped by the template)."""
    from markupsafe import Markup, escape

    parts = []
    for r in report.get("results", []):
        worst = [w for w in r.get("worst_images") or [] if str(w.get("image", "")).startswith("data:image/png")]
        if not worst:
            continue
        parts.append(f"<h3>{escape(r['target'])}: worst images by pixel agreement</h3>"
                     "<table class='seg'><tr><th>image</th><th>reference mask</th><th>artifact mask</th>"
                     "<th>difference</th><th>agreement</th></tr>")
        for w in worst:
            cells = "".join(f"<td><img alt='{k}' src='{escape(w[k])}' width='128'></td>"
                            for k in ("image", "reference", "artifact", "difference"))
            parts.append(f"<tr>{cells}<td>{escape(w.get('file', ''))}<br>{w['pixel_agreement']:.4f}</td></tr>")
        parts.append("</table>")
    if not parts:
        return Markup("")
    return Markup("<section id='segmentation'><h2>Segmentation: worst images</h2>" + "".join(parts)
                  + "</section>")
