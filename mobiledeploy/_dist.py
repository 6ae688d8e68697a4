"""What is installed here, read without importing it (imports nothing of the project)."""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util


def available(module: str) -> bool:
    """True when ``module`` can be found, without importing it."""
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
