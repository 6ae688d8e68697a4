"""``architecture.detection``: the SSDLite head's options in a definition (anchors, box coder,
decoding and NMS)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, StrictFloat, StrictInt, field_validator, model_validator

from ...schema import MAX_CHANNELS, Strict


class AnchorSpec(BaseModel):
    """SSD anchors (TF's ssd_anchor_generator): scales linear from min to max over the feature
    maps, one box per aspect ratio plus an interpolated-scale box, three in the lowest layer."""

    model_config = Strict
    min_scale: StrictFloat = Field(0.2, gt=0.0, le=1.0)
    max_scale: StrictFloat = Field(0.95, gt=0.0, le=1.0)
    aspect_ratios: tuple[StrictFloat, ...] = Field((1.0, 2.0, 0.5, 3.0, 1.0 / 3.0), min_length=1, max_length=16)
    interpolated_scale_aspect_ratio: StrictFloat = Field(1.0, ge=0.0, le=100.0)
    reduce_boxes_in_lowest_layer: bool = True

    @model_validator(mode="after")
    def _order(self):
        if self.min_scale > self.max_scale:
            raise ValueError(f"min_scale ({self.min_scale}) must not exceed max_scale ({self.max_scale})")
        if any(a <= 0 or a > 100 for a in self.aspect_ratios):
            raise ValueError("every aspect ratio must be > 0 and <= 100")
        return self


class BoxCoderSpec(BaseModel):
    """Center-size box coder scales (TFLite_Detection_PostProcess's y/x/h/w_scale)."""

    model_config = Strict
    y_scale: StrictFloat = Field(10.0, gt=0.0, le=1000.0)
    x_scale: StrictFloat = Field(10.0, gt=0.0, le=1000.0)
    h_scale: StrictFloat = Field(5.0, gt=0.0, le=1000.0)
    w_scale: StrictFloat = Field(5.0, gt=0.0, le=1000.0)


class PostprocessSpec(BaseModel):
    """Decoding and NMS, as TFLite_Detection_PostProcess runs them (see detection.py).

    ``use_regular_nms: false`` (the op's default) is class-agnostic NMS on each box's best class
    score; ``true`` is per-class NMS keeping ``detections_per_class`` per class.
    """

    model_config = Strict
    score_conversion: Literal["softmax", "sigmoid"] = "softmax"
    score_threshold: StrictFloat = Field(0.3, ge=0.0, le=1.0)
    iou_threshold: StrictFloat = Field(0.6, gt=0.0, le=1.0)
    max_detections: StrictInt = Field(10, ge=1, le=1000)
    use_regular_nms: bool = False
    detections_per_class: StrictInt = Field(100, ge=1, le=1000)


class DetectionSection(BaseModel):
    """SSDLite head options (``task: object-detection``), defaults as in SSD / the TF OD API."""

    model_config = Strict
    extra_layers: list[StrictInt] | None = Field(None, max_length=8,
                                           description="extra layer depths; default 512, 256, 256, 128 "
                                           "until a map is 1x1")
    reduced_tail: bool = True
    anchors: AnchorSpec = AnchorSpec()
    box_coder: BoxCoderSpec = BoxCoderSpec()
    postprocess: PostprocessSpec = PostprocessSpec()

    @field_validator("extra_layers")
    @classmethod
    def _extras(cls, v):
        if v is not None and any(d < 2 or d > MAX_CHANNELS for d in v):
            raise ValueError(f"every extra layer depth must be 2..{MAX_CHANNELS}")
        return v

    def options(self):
        from .ssdlite import DetectionOptions

        a, c, p = self.anchors, self.box_coder, self.postprocess
        return DetectionOptions(
            None if self.extra_layers is None else tuple(self.extra_layers), self.reduced_tail,
            a.min_scale, a.max_scale, tuple(a.aspect_ratios), a.interpolated_scale_aspect_ratio,
            a.reduce_boxes_in_lowest_layer, (c.y_scale, c.x_scale, c.h_scale, c.w_scale),
            p.score_conversion, p.score_threshold, p.iou_threshold, p.max_detections, p.use_regular_nms,
            p.detections_per_class,
        )
