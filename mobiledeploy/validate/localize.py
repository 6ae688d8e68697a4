"""Failure localisation: the first layer where an artifact departs from the PyTorch reference.

The reference's intermediate outputs come from forward hooks on its named modules (``stem``,
``blocks.N.expand|dw|se|project``, ``blocks.N`` where a residual add ends the block, ``last``,
``head``, and for segmentation ``head.cbr|scale|low|high``; NCHW). The candidate's come from the artifact's own runner (``Runner.intermediates``):

* with layer names (TFLite and Edge TPU tensors carry the Keras layer names, the torch names with
  ``_``), each module is matched to the last value that its layers produced;
* without (Core ML through milexec: the converter's own names), each module is matched to the
  same-shaped value that agrees with it best.

A layer diverges when its SNR falls below the target's ``min_snr_db`` (or 60 dB for targets judged
by ``max_abs``, whose healthy layers sit near 100 dB).

Each matched layer also gets its gain (least-squares slope of the candidate on the reference). The
gain STEP between consecutive layers is what catches a scale fault that int8 noise hides: rounding
noise leaves every layer's gain near 1 (on the demo, consecutive gains differ by at most 1.4%),
while one layer computing 5% too much steps the gain by ~5% exactly there, even where the output's
SNR stays within the noise (README, "Tolerances with teeth").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..backends.base import OUTPUT
from .metrics import gain

DEFAULT_THRESHOLD_DB = 60.0
# The lowered h-swish graph (int8 / Edge TPU) computes 6*hswish and 6*hsigmoid and folds the 1/6
# into the next op's weights, so healthy tensors there are 1x, 6x or 36x the reference.
LOWERED_SCALES = (1.0, 6.0, 36.0)


def module_points(model) -> list[tuple[str, set[str]]]:
    """(torch module name, Keras layer names whose output is that module's output), in order."""
    points: list[tuple[str, set[str]]] = []

    def conv_bn(name: str) -> set[str]:
        n = name.replace(".", "_")
        return {n + "_act", n + "_act_scale", n + "_bn", n + "_conv"}

    points.append(("stem", conv_bn("stem")))
    for i, block in enumerate(model.blocks):
        for part in ("expand", "dw", "se", "project"):
            if hasattr(block, part):
                name = f"blocks.{i}.{part}"
                points.append((name, {f"blocks_{i}_se_mul"} if part == "se" else conv_bn(name)))
        if block.use_res:
            points.append((f"blocks.{i}", {f"blocks_{i}_add"}))
    points.append(("last", conv_bn("last")))
    spec = getattr(model, "spec", None)
    if spec is not None and getattr(spec, "detection", None) is not None:
        # SSDLite: the extra layers are single tensors; the two heads leave as one pair (not a layer)
        for k in range(len(spec.detection.extras)):
            points.append((f"head.extras.{k}", conv_bn(f"head.extras.{k}.project")))
        return points
    if hasattr(getattr(model, "head", None), "cbr"):
        # LR-ASPP (tasks/segmentation/lraspp.py): the gate's conv, the high branch, the low branch,
        # the high branch's conv after the first bilinear resize, then the resized logits. A
        # resize convention fault first shows at head.high (the resize feeds it)
        points += [("head.cbr", conv_bn("head.cbr")), ("head.scale", {"head_scale"}),
                   ("head.low", {"head_low"}), ("head.high", {"head_high"}),
                   # the lowered final resize (tasks/segmentation/upsample.py) ends in its crop
                   ("head", {"head_resize", "head_resize_crop", OUTPUT})]
        return points
    points.append(("head", {"head_classifier", OUTPUT}))
    return points


def reference_intermediates(model, x: np.ndarray) -> dict[str, np.ndarray]:
    """Outputs of the reference's named modules for input ``x`` (NCHW float), in forward order."""
    import torch

    mods = dict(model.named_modules())
    out: dict[str, np.ndarray] = {}
    hooks = [mods[name].register_forward_hook(
        lambda _m, _i, o, name=name: out.__setitem__(name, o.detach().numpy().copy()))
        for name, _ in module_points(model)]
    try:
        with torch.no_grad():
            model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    finally:
        for h in hooks:
            h.remove()
    return {name: out[name] for name, _ in module_points(model) if name in out}


def _snr(ref: np.ndarray, out: np.ndarray) -> float:
    noise = float(np.sum((ref.astype(np.float64) - out) ** 2))
    signal = float(np.sum(ref.astype(np.float64) ** 2))
    if not np.isfinite(noise):
        return float("-inf")
    if noise == 0.0:
        return float("inf")
    return 10.0 * np.log10(signal / noise) if signal > 0 else float("-inf")


def largest_gain_step(layers: list[dict]) -> dict | None:
    """The largest relative change of gain between consecutive matched layers:
    ``{"layer", "from_layer", "step"}`` with step = |gain / previous gain - 1|; NaN gains count as
    an infinite step (a layer that is not a function of its input any more)."""
    best, prev = None, None
    for x in layers:
        g = x.get("gain")
        if g is None:
            continue
        if prev is not None:
            ok = np.isfinite(g) and np.isfinite(prev["gain"]) and prev["gain"] != 0
            step = abs(g / prev["gain"] - 1.0) if ok else float("inf")
            if best is None or step > best["step"]:
                best = {"layer": x["layer"], "from_layer": prev["layer"],
                        "step": round(step, 5) if np.isfinite(step) else step}
        prev = x
    return best


def _best(ref: np.ndarray, cands: list[tuple[str, np.ndarray]], scales) -> tuple[str, float, float]:
    """(name, snr, scale) of the candidate (and legitimate scale) that agrees best with ref."""
    best = ("", float("-inf"), 1.0)
    for name, v in cands:
        v = v.reshape(ref.shape).astype(np.float64)
        for s in scales:
            snr = _snr(ref, v / s)
            if snr > best[1] or not best[0]:
                best = (name, snr, s)
    return best


def compare_layers(ref: dict[str, np.ndarray], cands: list[tuple[str, set, np.ndarray]], *,
                   points: list[tuple[str, set[str]]], threshold: float, scales=(1.0,)) -> dict:
    """Match each reference point to a candidate value and find the first divergent layer.

    With layer names (TFLite), a point matches the last value produced by its Keras layers;
    without (``layers`` empty), any value of the same shape may match and the best one is taken.
    """
    layers: list[dict[str, Any]] = []
    named = any(c[1] for c in cands)
    for name, keys in points:
        r = ref.get(name)
        if r is None:
            continue
        if named:
            hits = [(n, v) for n, ls, v in cands if ls & keys and v.size == r.size]
            hits = hits[-1:]
        else:
            hits = [(n, v) for n, _, v in cands if v.shape == r.shape]
            if not hits and r.ndim == 4:  # an NHWC runtime without names
                hits = [(n, v.transpose(0, 3, 1, 2)) for n, _, v in cands
                        if v.shape == (r.shape[0], *r.shape[2:], r.shape[1])]
        if not hits:
            layers.append({"layer": name, "shape": list(r.shape[1:]), "snr_db": None,
                           "matched": None})
            continue
        tensor, snr, scale = _best(r, hits, scales)
        v = dict(hits)[tensor].reshape(r.shape).astype(np.float64) / scale
        row = {"layer": name, "shape": list(r.shape[1:]), "snr_db": round(snr, 2),
               "gain": round(gain(r, v), 5), "matched": tensor[:120]}
        if scale != 1.0:
            row["scale"] = scale
        layers.append(row)
    judged = [x for x in layers if x["snr_db"] is not None]
    first = next((x for x in judged if x["snr_db"] < threshold), None)
    drop, prev = None, None
    for x in judged:
        if prev is not None and np.isfinite(prev["snr_db"]):
            d = prev["snr_db"] - x["snr_db"]
            if drop is None or d > drop["db"]:
                drop = {"layer": x["layer"], "from_layer": prev["layer"], "db": round(d, 2)}
        prev = x
    step = largest_gain_step(layers)
    return {
        "first_divergent_layer": first["layer"] if first else None,
        "largest_gain_step": step,
        "metric": "snr_db",
        "value": first["snr_db"] if first else None,
        "threshold_db": threshold,
        "largest_drop": drop,
        "matched_layers": len(judged),
        "layers": layers,
    }


def localize_artifact(path: Path, art: dict, tolerance: dict, definition, torch_model, batch, *,
                      samples: int = 4) -> dict:
    """Localise a failed artifact's divergence; never raises (a problem becomes ``error``).

    The runtime's taps come from the artifact's own runner (``Runner.intermediates``); healthy
    scales come from the graph variant the manifest records for the artifact.
    """
    from ..backends.base import GraphVariant
    from ..backends.registry import get_backend
    from ..targets import ResolvedTarget

    threshold = float(tolerance.get("min_snr_db") or DEFAULT_THRESHOLD_DB)
    small = batch.subset(min(samples, len(batch)))
    try:
        ref = reference_intermediates(torch_model, small.x)
        target = ResolvedTarget.from_record(art)
        runner = get_backend(target.backend).load(Path(path), target, definition)
        cands = runner.intermediates(small)
        if not cands:
            return {"first_divergent_layer": None, "samples": len(small),
                    "error": f"{runner.executor} exposes no intermediate values"}
        graph = GraphVariant.from_dict(art.get("graph"))
        scales = LOWERED_SCALES if graph.hswish == "lowered" else (1.0,)
        result = compare_layers(ref, cands, points=module_points(torch_model), threshold=threshold,
                                scales=scales)
    except Exception as exc:  # localisation explains a failure; it must never hide it
        return {"first_divergent_layer": None, "samples": len(small),
                "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    result.update(samples=len(small), executor=runner.executor)
    return result


def localize_keras(keras_model, torch_model, batch, tolerance: dict, *, samples: int = 4) -> dict:
    """The same for the Keras twin (layer outputs by name), when reference-keras fails."""
    try:
        import keras

        small = batch.subset(min(samples, len(batch)))
        ref = reference_intermediates(torch_model, small.x)
        names = [layer.name for layer in keras_model.layers]
        probe = keras.Model(keras_model.inputs, [keras_model.get_layer(n).output for n in names])
        outs = probe.predict(small.nhwc(), verbose=0)
        cands = [(n, {n}, np.asarray(v).transpose(0, 3, 1, 2) if np.ndim(v) == 4 else np.asarray(v))
                 for n, v in zip(names, outs, strict=True)]
        result = compare_layers(ref, cands, points=module_points(torch_model),
                                threshold=float(tolerance.get("min_snr_db") or DEFAULT_THRESHOLD_DB))
        result.update(samples=len(small), executor="keras")
        return result
    except Exception as exc:
        return {"first_divergent_layer": None, "error": f"{type(exc).__name__}: {exc}"}
