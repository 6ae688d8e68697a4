"""Lazy imports of heavy optional libraries (TensorFlow, PyTorch, coremltools, ExecuTorch).

Nothing on the CLI's start-up path may import them; code that needs one calls ``require``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
from types import ModuleType

# import name -> (extra that installs it, distribution name for version lookup)
KNOWN: dict[str, tuple[str, str]] = {
    "torch": ("torch", "torch"),
    "tensorflow": ("tflite", "tensorflow-cpu"),
    "keras": ("tflite", "keras"),
    "ai_edge_litert": ("tflite", "ai-edge-litert"),
    "coremltools": ("coreml", "coremltools"),
    "executorch": ("executorch", "executorch"),
    "PIL": ("core", "pillow"),
    "ray": ("sweep", "ray"),
    "fsspec": ("sweep", "fsspec"),
    "matplotlib": ("sweep", "matplotlib"),
}


def require(module: str, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise a MissingDependencyError naming the extra to install."""
    from .errors import MissingDependencyError

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on environment
        top = module.split(".")[0]
        raise MissingDependencyError(top, KNOWN.get(top, ("all", top))[0], purpose) from exc


def available(module: str) -> bool:
    """True when ``module`` can be found, without importing it."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@functools.cache
def version(dist: str) -> str | None:
    """Installed version of a distribution, or None."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
