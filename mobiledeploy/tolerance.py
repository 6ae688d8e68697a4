"""The one tolerance model: which limits exist, what each bounds, and the verdict per metric.

A target's limits come from its backend's defaults for its precision, then its profile, then the
definition's ``tolerances:`` section (each layer may set any key; unset keys fall through). The
verdict is computed once, by ``judge``, and stored in the report row (``checks``); the report
shows those verdicts and never recomputes them.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Kind = Literal["max", "min"]


def _limit(metric: str, kind: Kind, **kw):
    """A tolerance field bounding ``metric`` from above (max) or below (min)."""
    return Field(None, json_schema_extra={"metric": metric, "kind": kind}, **kw)


class Tolerance(BaseModel):
    """Limits a row is judged by; any field may be omitted (no limit, or the layer below's)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    max_abs: float | None = _limit("max_abs", "max", ge=0)
    mean_abs: float | None = _limit("mean_abs", "max", ge=0)
    min_cosine: float | None = _limit("cosine", "min", ge=-1, le=1)
    min_snr_db: float | None = _limit("snr_db", "min")
    max_gain_error: float | None = _limit("gain_error", "max", ge=0)
    max_layer_gain_step: float | None = _limit("layer_gain_step", "max", ge=0)
    min_top1_agreement: float | None = _limit("top1_agreement", "min", ge=0, le=1)
    max_accuracy_drop: float | None = _limit("accuracy_drop", "max", ge=0, le=1)
    # semantic segmentation (tasks/segmentation.py)
    min_pixel_agreement: float | None = _limit("pixel_agreement", "min", ge=0, le=1)
    min_miou_vs_reference: float | None = _limit("miou_vs_reference", "min", ge=0, le=1)
    max_miou_drop: float | None = _limit("miou_drop", "max", ge=0, le=1)
    # object detection (tasks/detection.py)
    min_box_recall: float | None = _limit("box_recall", "min", ge=0, le=1)
    min_box_precision: float | None = _limit("box_precision", "min", ge=0, le=1)
    min_matched_iou: float | None = _limit("matched_iou", "min", ge=0, le=1)
    max_score_abs: float | None = _limit("score_max_abs", "max", ge=0, le=1)
    max_map50_drop: float | None = _limit("map50_drop", "max", ge=0, le=1)
    min_decoder_recall: float | None = _limit("decoder_recall", "min", ge=0, le=1)

    def over(self, *layers: Tolerance | dict | None) -> Tolerance:
        """This tolerance with every key set in ``layers`` (later wins) replacing its own."""
        data = self.set_values()
        for layer in layers:
            if layer is None:
                continue
            extra = layer.set_values() if isinstance(layer, Tolerance) else Tolerance(**layer).set_values()
            data.update(extra)
        return Tolerance(**data)

    def set_values(self) -> dict[str, float]:
        """Only the keys that carry a limit."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


# tolerance key -> (metric it bounds, "max" | "min"), read off the model: one list of keys
LIMITS: dict[str, tuple[str, Kind]] = {
    name: (f.json_schema_extra["metric"], f.json_schema_extra["kind"])  # type: ignore[index]
    for name, f in Tolerance.model_fields.items()
}


def judge(metrics: dict, tolerance: Tolerance | dict) -> list[dict]:
    """One check per limit whose metric was measured: ``{key, metric, value, limit, kind, ok}``.

    NaN never passes. Limits on metrics a row does not have (accuracy without labels) are not
    checks: nothing was judged.
    """
    tol = tolerance if isinstance(tolerance, Tolerance) else Tolerance(**tolerance)
    checks = []
    for key, limit in tol.set_values().items():
        metric, kind = LIMITS[key]
        value = metrics.get(metric)
        if value is None:
            continue
        nan = isinstance(value, float) and math.isnan(value)
        ok = not nan and (value <= limit if kind == "max" else value >= limit)
        checks.append({"key": key, "metric": metric, "value": value, "limit": limit, "kind": kind,
                       "ok": bool(ok)})
    return checks


def failures(checks: list[dict]) -> list[str]:
    """The failed checks as 'metric value op limit (key)' strings."""
    return [f"{c['metric']} {fmt(c['value'])} {'>' if c['kind'] == 'max' else '<'} {fmt(c['limit'])} "
            f"({c['key']})" for c in checks if not c["ok"]]


def fmt(v) -> str:
    """A limit or value with 6 significant digits: a 0.99999 limit must not print as 1."""
    if isinstance(v, float):
        if v == 0 or 1e-3 <= abs(v) < 1e4:
            return f"{v:.6g}"
        return f"{v:.3e}"
    return str(v)
