"""Embedding comparators: per-image cosine, nearest-neighbour agreement, retrieval by label.

``nearest(e)[i]`` is the image whose embedding is most cosine-similar to image i's, i itself left
out. ``nn_agreement`` is the fraction of images whose nearest neighbour is the same image under the
artifact as under the reference: what a gallery search over these images would return.
``retrieval_top1`` is the fraction of labelled images whose nearest labelled neighbour has their label.
"""

from __future__ import annotations

import numpy as np


def _unit(e: np.ndarray) -> np.ndarray:
    e = np.asarray(e, np.float64).reshape(len(e), -1)
    n = np.linalg.norm(e, axis=1, keepdims=True)
    return np.divide(e, n, out=np.zeros_like(e), where=n > 0)


def cosine_per_image(ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Cosine similarity of each image's two embeddings (1.0 where both are all zero)."""
    a, b = _unit(ref), _unit(out)
    c = np.sum(a * b, axis=1)
    both_zero = ~a.any(1) & ~b.any(1)
    return np.where(both_zero, 1.0, c)


def nearest(e: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """Each image's most similar other image (index), among ``keep`` (a mask) when given."""
    u = _unit(e)
    sim = u @ u.T
    np.fill_diagonal(sim, -np.inf)
    if keep is not None:
        sim[:, ~keep] = -np.inf
    return sim.argmax(1)


def nn_agreement(ref: np.ndarray, out: np.ndarray) -> float | None:
    """Fraction of images with the same nearest neighbour under both (None below 2 images)."""
    if len(ref) < 2:
        return None
    return float(np.mean(nearest(ref) == nearest(out)))


def retrieval_top1(e: np.ndarray, labels) -> float | None:
    """Fraction of labelled images whose nearest labelled other image shares their label."""
    if labels is None:
        return None
    lab = np.array([-1 if v is None else int(v) for v in labels])
    keep = lab >= 0
    if keep.sum() < 2:
        return None
    nn = nearest(e, keep)
    return float(np.mean(lab[keep] == lab[nn[keep]]))
