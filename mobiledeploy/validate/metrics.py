"""Comparators: small functions of (reference, candidate[, labels]) feeding one table.

All compare logits of shape (N, classes). SNR is 10*log10(sum(ref^2) / sum((ref - out)^2)).

``gain`` is the least-squares slope of the candidate on the reference, sum(ref*out) / sum(ref^2).
Rounding noise (int8, float16) is unbiased: it lowers the SNR but leaves the gain at 1 within a
fraction of a percent, whatever the noise level; a layer computing a few percent too much or too
little (a wrong weight or requantisation scale) moves the gain by about that much. So
``gain_error = |gain - 1|`` separates a scale fault from quantisation noise where the SNR cannot
(measured on the demo, README "Tolerances with teeth").
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


def gain(ref: np.ndarray, out: np.ndarray) -> float:
    """Least-squares slope of ``out`` on ``ref`` (1.0: no systematic scale error)."""
    r = ref.astype(np.float64)
    signal = float(np.sum(r * r))
    if signal == 0.0:
        return 1.0 if not np.any(out) else float("inf")
    g = float(np.sum(r * out)) / signal
    return g if np.isfinite(g) else float("nan")


def gain_error(ref: np.ndarray, out: np.ndarray) -> float:
    """``|gain - 1|``: the candidate's systematic scale error relative to the reference."""
    return abs(gain(ref, out) - 1.0)


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


def raw(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """The comparisons every task makes on its raw outputs, flattened per sample."""
    r, o = ref.reshape(len(ref), -1), out.reshape(len(out), -1)
    g = gain(r, o)
    return {"max_abs": max_abs(r, o), "mean_abs": mean_abs(r, o), "cosine": cosine(r, o),
            "snr_db": snr_db(r, o), "gain": g, "gain_error": abs(g - 1.0)}


def compare(ref: np.ndarray, out: np.ndarray, labels: list[int | None]) -> dict[str, float | None]:
    """Every comparator against the reference, plus accuracy against labels."""
    if ref.shape != out.shape:
        raise ValueError(f"output shape {out.shape} differs from the reference's {ref.shape}")
    m: dict[str, float | None] = {**raw(ref, out), "top1_agreement": top1_agreement(ref, out)}
    if ref.shape[1] >= 5:
        m["top5_agreement"] = top5_agreement(ref, out)
    m["top1_accuracy"] = top1_accuracy(out, labels)
    return m
