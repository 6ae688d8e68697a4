"""The one tolerance model: which limits exist, what each bounds, and the verdict per metric.

A target's limits come from its backend's defaults for its precision, then its profile, then the
definition's ``tolerances:`` section (each layer may set any key; unset keys fall through). The
verdict is computed once, by ``judge``, and stored in the report row (``checks``); the report
shows those verdicts and never recomputes them.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Kind = Literal["max", "min"]


def _limit(metric: str, kind: Kind, **kw):
    """A tolerance field bounding ``metric`` from above (max) or below (min)."""
    return Field(None, json_schema_extra={"metric": metric, "kind": kind}, **kw)


class Tolerance(BaseModel):
    """Limits a row is judged by; any field may be omitted (no limit, or the layer below's)."""

    # a task's own limits (``register_limit``) are extra keys, checked by ``_known``
    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)
    max_abs: float | None = _limit("max_abs", "max", ge=0)
    mean_abs: float | None = _limit("mean_abs", "max", ge=0)
    min_cosine: float | None = _limit("cosine", "min", ge=-1, le=1)
    min_snr_db: float | None = _limit("snr_db", "min")
    max_gain_error: float | None = _limit("gain_error", "max", ge=0)
    max_layer_gain_step: float | None = _limit("layer_gain_step", "max", ge=0)
    min_top1_agreement: float | None = _limit("top1_agreement", "min", ge=0, le=1)
    max_accuracy_drop: float | None = _limit("accuracy_drop", "max", ge=0, le=1)
    @model_validator(mode="before")
    @classmethod
    def _known(cls, data: Any):
        if not isinstance(data, dict):
            return data
        for key, value in data.items():
            if key in cls.model_fields:
                continue
            if key not in _TASK_LIMITS:  # tasks register theirs when loaded (the definition loads all)
                raise ValueError(f"unknown limit {key!r}; allowed: {', '.join(sorted(LIMITS))}")
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{key}: a finite number, not {value!r}")
            ge, le = _TASK_LIMITS[key][2:]
            if (ge is not None and value < ge) or (le is not None and value > le):
                raise ValueError(f"{key}: {value!r} is outside [{ge}, {le}]")
        return {k: (float(v) if k not in cls.model_fields and v is not None else v) for k, v in data.items()}

    def __getattr__(self, item: str):
        try:
            return super().__getattr__(item)
        except AttributeError:
            if item in LIMITS:  # a task's limit this tolerance does not set
                return None
            raise

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


# tolerance key -> (metric it bounds, "max" | "min"): the model's own fields (limits on raw outputs
# and scores every task has), then each task's (``register_limit``, called by the task's module)
LIMITS: dict[str, tuple[str, Kind]] = {
    name: (f.json_schema_extra["metric"], f.json_schema_extra["kind"])  # type: ignore[index]
    for name, f in Tolerance.model_fields.items()
}
_TASK_LIMITS: dict[str, tuple[str, Kind, float | None, float | None]] = {}


# task-owned limit key -> the task that registered it (the model's own fields belong to no task)
OWNER: dict[str, str] = {}


def register_limit(task: str, key: str, metric: str, kind: Kind, ge: float | None = None,
                   le: float | None = None) -> None:
    """A limit task ``task`` adds: ``key`` bounds its rows' ``metric`` from above (max) or below (min).

    Called where the task is defined, before its default tolerances are built; registering a key
    twice with another meaning is a bug."""
    from .errors import InternalError

    entry = (metric, kind, ge, le)
    if key in Tolerance.model_fields or _TASK_LIMITS.get(key, entry) != entry or OWNER.get(key, task) != task:
        raise InternalError(f"limit {key!r} registered twice")
    _TASK_LIMITS[key] = entry
    LIMITS[key] = (metric, kind)
    OWNER[key] = task


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
