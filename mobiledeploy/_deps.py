"""Lazy imports of heavy optional libraries (TensorFlow, PyTorch, coremltools, ExecuTorch).

Nothing on the CLI's start-up path may import them; code that needs one calls ``require``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ._dist import available, version  # noqa: F401  (re-exported: where most callers look)


def extra_for(module: str) -> str:
    """The pyproject extra that installs import name ``module``, read from this package's own
    metadata (its ``Requires-Dist ...; extra == "X"`` lines), so no table here repeats pyproject;
    "all" when no extra names it (or the metadata cannot be read)."""
    import re

    try:
        reqs = importlib.metadata.requires("mobiledeploy") or []
    except importlib.metadata.PackageNotFoundError:
        return "all"
    try:  # installed: the distribution that provides the import name
        dists = importlib.metadata.packages_distributions().get(module, [])
    except Exception:  # noqa: BLE001 - a broken environment still gets a message
        dists = []
    want = {d.lower().replace("_", "-") for d in dists}
    norm = module.lower().replace("_", "-")
    found = []
    for req in reqs:
        m = re.match(r"\s*([A-Za-z0-9_.-]+)[^;]*(?:;.*extra\s*==\s*[\"']([^\"']+)[\"'])?", req)
        if not m:
            continue
        # a requirement without an extra is the core install
        dist, extra = m.group(1).lower().replace("_", "-"), m.group(2) or "core"
        # not installed: its distribution's name starts with the import name (tensorflow-cpu)
        if dist in want or (not want and (dist == norm or dist.startswith(norm + "-"))):
            found.append(extra)
    # the extra named as the import (torch), else the first other than "all" (which the build
    # backend spells out) that has it
    return norm if norm in found else next((e for e in found if e != "all"), "all")


def require(module: str, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise a MissingDependencyError naming the extra to install."""
    from .errors import MissingDependencyError

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on environment
        top = module.split(".")[0]
        raise MissingDependencyError(top, extra_for(top), purpose) from exc
