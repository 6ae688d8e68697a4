"""Comparators: small functions of (reference, candidate[, labels]) feeding one table.

All compare logits of shape (N, classes). SNR is 10*log10(sum(ref^2) / sum((ref - out)^2)).
"""

from __future__ import annotations

import numpy as np


def max_abs(ref: np.ndarray, out: np.ndarray) -> float:
    return float(np.max(np.abs(ref - out))) if ref.size else 0.0


def mean_abs(ref: np.ndarray, out: np.ndarray) -> float:
    return float(np.mean(np.abs(ref - out))) if ref.size else 0.0


def cosine(ref: np.ndarray, out: np.ndarray) -> float:
    """Mean over samples of the cosine similarity between the two logit vectors."""
    num = np.sum(ref * out, axis=1)
    den = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.where(den > 0, num / den, np.where(np.all(ref == out, axis=1), 1.0, 0.0))
    return float(np.mean(c))


def snr_db(ref: np.ndarray, out: np.ndarray) -> float:
    noise = float(np.sum((ref.astype(np.float64) - out) ** 2))
    signal = float(np.sum(ref.astype(np.float64) ** 2))
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return 10.0 * np.log10(signal / noise)


def top1_agreement(ref: np.ndarray, out: np.ndarray) -> float:
    return float(np.mean(ref.argmax(1) == out.argmax(1)))


def top5_agreement(ref: np.ndarray, out: np.ndarray) -> float:
    """Fraction of samples whose reference top-1 is among the candidate's top 5."""
    k = min(5, out.shape[1])
    top = np.argsort(-out, axis=1)[:, :k]
    return float(np.mean([r in t for r, t in zip(ref.argmax(1), top, strict=True)]))


def top1_accuracy(out: np.ndarray, labels: list[int | None]) -> float | None:
    pairs = [(o, lab) for o, lab in zip(out, labels, strict=True) if lab is not None]
    if not pairs:
        return None
    return float(np.mean([int(np.argmax(o)) == lab for o, lab in pairs]))


def compare(ref: np.ndarray, out: np.ndarray, labels: list[int | None]) -> dict[str, float | None]:
    """Every comparator against the reference, plus accuracy against labels."""
    if ref.shape != out.shape:
        raise ValueError(f"output shape {out.shape} differs from the reference's {ref.shape}")
    m: dict[str, float | None] = {
        "max_abs": max_abs(ref, out),
        "mean_abs": mean_abs(ref, out),
        "cosine": cosine(ref, out),
        "snr_db": snr_db(ref, out),
        "top1_agreement": top1_agreement(ref, out),
    }
    if ref.shape[1] >= 5:
        m["top5_agreement"] = top5_agreement(ref, out)
    m["top1_accuracy"] = top1_accuracy(out, labels)
    return m
