"""The modules of one registered name's folder, found by file (nothing is imported).

A registered backend or task owns its folder (``backends/<name>/``, ``tasks/<name>/``). The
registries load its class by name, so no import reaches it, and a folder may hold code no import
reaches at all (a script run in another interpreter, such as ``backends/tflite/mediapipe_runner.py``).
Build keys hash what the registries return from here (``pipeline/keys.py``).
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path


def folder_modules(module: str, registry: str) -> tuple[str, ...]:
    """``module`` and, when it lives in a subpackage ``registry.<name>``, every module under that
    subpackage's folder (subfolders included), by dotted name, sorted.

    A module directly in ``registry`` or outside it (a plugin's "package.module") is itself only:
    its folder is not owned by one name.
    """
    if not module.startswith(registry + "."):
        return (module,)
    rest = module[len(registry) + 1:].split(".")
    if len(rest) < 2 and not _is_package(module):
        return (module,)
    return tuple(sorted({module, *package_modules(f"{registry}.{rest[0]}")}))


def _is_package(name: str) -> bool:
    mod = sys.modules.get(name)
    if mod is not None:
        return hasattr(mod, "__path__")
    spec = importlib.util.find_spec(name)
    return spec is not None and spec.submodule_search_locations is not None


@functools.cache
def package_modules(package: str) -> tuple[str, ...]:
    """Every module file under ``package``'s folder(s); ``_data`` folders hold no code."""
    mod = sys.modules.get(package)
    paths = list(getattr(mod, "__path__", None) or [])
    if not paths:
        spec = importlib.util.find_spec(package)
        paths = list(spec.submodule_search_locations or []) if spec else []
    found = set()
    for root in map(Path, paths):
        for p in root.rglob("*.py"):
            parts = p.relative_to(root).with_suffix("").parts
            if "_data" in parts or "__pycache__" in parts:
                continue
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            found.add(".".join((package, *parts)))
    return tuple(sorted(found))
