"""A Core ML pipeline run model by model: ML Programs through ``MILProgram``, Core ML's
NonMaximumSuppression model through ``nms.nms_model``. Features pass between models by name, as
Core ML passes them; every feature any model made is returned (the pipeline's outputs and the
inner ones, e.g. a detector's raw heads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .nms import nms_model
from .ops import UnsupportedMILOp
from .program import MILProgram, _load_spec


class PipelineProgram:
    """A loaded .mlpackage whose root model is a pipeline (or a lone ML Program)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        spec = _load_spec(self.path)
        kind = spec.WhichOneof("Type")
        subs = list(spec.pipeline.models) if kind == "pipeline" else [spec]
        self.models: list[tuple[str, Any]] = []
        for sub in subs:
            t = sub.WhichOneof("Type")
            if t == "mlProgram":
                self.models.append((t, MILProgram(self.path, spec=sub)))
            elif t == "nonMaximumSuppression":
                self.models.append((t, sub))
            else:
                raise UnsupportedMILOp(f"unsupported pipeline model {t} (milexec runs ML Programs and NMS)")
        self.input_names = [i.name for i in spec.description.input]
        self.output_names = [o.name for o in spec.description.output]
        self.programs = [m for t, m in self.models if t == "mlProgram"]

    @property
    def ops(self):
        """Every op of every ML Program in the pipeline."""
        return [op for p in self.programs for op in p.ops]

    def run_image(self, feeds: dict[str, Any]) -> dict[str, np.ndarray]:
        """One sample through every model; every feature, by name."""
        env: dict[str, Any] = dict(feeds)
        for kind, model in self.models:
            if kind == "mlProgram":
                env.update(model.run({k: env[k] for k in model.input_names}))
                continue
            nms = model.nonMaximumSuppression
            upper = [r.upperBound for r in model.description.output[0].type.multiArrayType.shapeRange.sizeRanges]
            shape = list(model.description.output[0].type.multiArrayType.shape)
            limit = upper[0] if upper and upper[0] > 0 else (shape[0] if shape else None)
            conf, coords = env[nms.confidenceInputFeatureName], env[nms.coordinatesInputFeatureName]
            conf = np.asarray(conf).reshape(-1, np.asarray(conf).shape[-1])
            kept_conf, kept_coords = nms_model(
                conf, np.asarray(coords).reshape(-1, 4), iou_threshold=nms.iouThreshold,
                confidence_threshold=nms.confidenceThreshold,
                max_boxes=int(limit) if limit else len(conf), per_class=bool(nms.pickTop.perClass))
            env[nms.confidenceOutputFeatureName] = kept_conf
            env[nms.coordinatesOutputFeatureName] = kept_coords
        return env

    def content_sha256(self) -> str:
        """sha256 over every model: ML Programs by their program and weight values, the others by
        their serialised specification (an NMS threshold is part of what is hashed)."""
        import hashlib

        h = hashlib.sha256()
        for kind, model in self.models:
            h.update(kind.encode())
            h.update(model.content_sha256().encode() if kind == "mlProgram"
                     else model.SerializeToString(deterministic=True))
        return h.hexdigest()
