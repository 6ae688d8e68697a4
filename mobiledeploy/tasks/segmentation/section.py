"""``architecture.segmentation``: the LR-ASPP head's options in a definition."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, StrictInt

from ...schema import Strict


class SegmentationSection(BaseModel):
    """LR-ASPP head options (``task: semantic-segmentation``), defaults as in the MobileNetV3 paper."""

    model_config = Strict
    inter_channels: StrictInt = Field(128, ge=8, le=1024)
    low_level_stride: Literal[4, 8] = 8
    output_stride: Literal[16, 32] | None = 16
    reduced_tail: bool = True

    def options(self):
        from ...architectures.spec import SegmentationOptions

        return SegmentationOptions(self.inter_channels, self.low_level_stride, self.output_stride,
                                   self.reduced_tail)
