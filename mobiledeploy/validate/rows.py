"""Rows of the validation table: one per reference twin and artifact."""

from __future__ import annotations

REFERENCE_ROW = "reference-pytorch"  # what every other row is judged against


def row(target: str, status: str, executor: str = "", metrics=None, tolerance=None, reason: str = "",
        **extra) -> dict:
    """A report row: ``status`` pass | fail | skipped, with its metrics, limits and reason."""
    return {"target": target, "status": status, "executor": executor, "metrics": metrics or {},
            "tolerance": tolerance or {}, "reason": reason, **extra}
