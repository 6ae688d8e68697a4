"""The detection report's worst images: each drawn with the reference's and the artifact's boxes.

Drawn once at validation time (``worst_images``) into small PNG data URIs stored in the row, so
the report page (``worst_images_section``) is rendered from the report alone.
"""

from __future__ import annotations

import numpy as np

from ..segmentation.report import _png

WORST = 3  # images shown per row
REF_COLOUR = (0, 200, 80)  # green: the reference's boxes
ART_COLOUR = (230, 30, 60)  # red: the artifact's
SCALE = 2  # images are small (160 px): drawn at twice the size so labels stay legible


def draw(pixels: np.ndarray, dets, colour, labels: list[str] | None = None, image=None):
    """``pixels`` (H, W, 3) uint8 with ``dets``' boxes ([ymin, xmin, ymax, xmax] normalised)
    drawn in ``colour``, each labelled with class and score. Returns a PIL image."""
    from PIL import Image, ImageDraw

    img = image or Image.fromarray(np.ascontiguousarray(pixels)).resize(
        (pixels.shape[1] * SCALE, pixels.shape[0] * SCALE), Image.NEAREST)
    w, h = img.size
    dr = ImageDraw.Draw(img)
    for b, c, s in zip(dets.boxes, dets.classes, dets.scores, strict=True):
        y0, x0, y1, x1 = (float(v) for v in b)
        box = [x0 * w, y0 * h, x1 * w, y1 * h]
        dr.rectangle(box, outline=colour, width=2)
        name = labels[int(c)] if labels and 0 <= int(c) < len(labels) else str(int(c))
        dr.text((box[0] + 2, box[1] + 1), f"{name} {float(s):.2f}", fill=colour)
    return img


def worst_images(recall: list[float], max_abs: list[float], refs, arts, batch, labels: list[str] | None = None,
                 k: int = WORST) -> list[dict]:
    """The ``k`` images whose reference boxes the artifact reproduces worst (then by raw max_abs),
    each as the image with the reference's boxes and the image with the artifact's."""
    order = sorted(range(len(recall)), key=lambda i: (recall[i], -max_abs[i]))[:k]
    shown = []
    for i in order:
        px = batch.pixels[i]
        shown.append({
            "index": i, "box_recall": float(recall[i]), "max_abs": float(max_abs[i]),
            "file": batch.files[i].rsplit("/", 1)[-1] if batch.files else str(i),
            "reference": _png(np.asarray(draw(px, refs[i], REF_COLOUR, labels))),
            "artifact": _png(np.asarray(draw(px, arts[i], ART_COLOUR, labels))),
            "reference_boxes": len(refs[i]), "artifact_boxes": len(arts[i]),
        })
    return shown


def worst_images_section(report: dict) -> str:
    """HTML: per judged row, its worst images with reference (green) and artifact (red) boxes."""
    from markupsafe import Markup, escape

    parts = []
    for r in report.get("results", []):
        worst = [w for w in r.get("worst_images") or [] if str(w.get("reference", "")).startswith("data:image/png")]
        if not worst:
            continue
        parts.append(f"<h3>{escape(r['target'])}: worst images by box recall</h3>"
                     "<table class='seg'><tr><th>reference boxes</th><th>artifact boxes</th><th>image</th></tr>")
        for w in worst:
            cells = "".join(f"<td><img alt='{k}' src='{escape(w[k])}' width='240'></td>"
                            for k in ("reference", "artifact"))
            parts.append(f"<tr>{cells}<td>{escape(w.get('file', ''))}<br>box recall {w['box_recall']:.3f}<br>"
                         f"boxes {int(w['reference_boxes'])} / {int(w['artifact_boxes'])}<br>"
                         f"raw max_abs {w['max_abs']:.3g}</td></tr>")
        parts.append("</table>")
    if not parts:
        return Markup("")
    return Markup("<section id='detection'><h2>Detection: worst images</h2><p>Green: the reference's "
                  "detections (host-decoded PyTorch); red: the artifact's (its runtime's own decoder when it "
                  "has one, else the host decoder on its heads).</p>" + "".join(parts) + "</section>")
