"""A NumPy executor for Core ML ML Programs: runs an .mlpackage op by op without Core ML.

Used on hosts where Core ML's ``predict`` is unavailable (Linux) so that Core ML artifacts are
still validated numerically, fp16 rounding and overflow included. Importing this package does not
import coremltools; loading a program does.
"""

from .nms import nms  # noqa: F401  (importing nms registers non_maximum_suppression with ops.op)
from .ops import OPS, UnsupportedMILOp
from .program import MILProgram, execute

__all__ = ["MILProgram", "execute", "UnsupportedMILOp", "OPS", "content_sha256"]


def content_sha256(mlpackage_path) -> str:
    """A sha256 over the MIL program text and weight values (stable across conversions); for a
    pipeline, over each model (``pipeline.PipelineProgram.content_sha256``)."""
    from .program import _load_spec

    if _load_spec(mlpackage_path).WhichOneof("Type") == "pipeline":
        from .pipeline import PipelineProgram

        return PipelineProgram(mlpackage_path).content_sha256()
    return MILProgram(mlpackage_path).content_sha256()
