"""The paper's reduced tail, shared by the segmentation and detection backbones."""

from __future__ import annotations

from dataclasses import replace
from typing import Any


def halve_last_stage(raw: Any, field: str) -> tuple[list, int]:
    """The paper's reduced tail (segmentation and detection): the stage after the last stride-2
    block and the last conv get half the channels. ``(rows, last_conv)``; ``field`` names the
    definition section in the error."""
    from ..errors import UserError

    rows = list(raw.rows)
    strided = [i for i, r in enumerate(rows) if r.stride > 1]
    if not strided:
        raise UserError(f"{field}: reduced_tail halves the stage after the last stride-2 block, but no "
                        "block has stride 2; set reduced_tail: false")
    first = strided[-1]
    for i in range(first, len(rows)):
        r = rows[i]
        # the stage's first block keeps its expansion (it reads the unhalved previous stage)
        rows[i] = replace(r, out=max(1, r.out // 2), exp=r.exp if i == first else r.exp / 2)
    return rows, max(1, raw.last_conv // 2)
