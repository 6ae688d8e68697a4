"""Where the shipped data lives: ``targets/``, ``templates/``, ``examples/``.

In a source checkout (editable install) they sit next to the package; a wheel carries them in
``mobiledeploy/_data/``.
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """The folder of shipped resources called ``name`` (targets, templates, examples)."""
    for cand in (_PKG / "_data" / name, _PKG.parent / name):
        if cand.is_dir():
            return cand
    from .errors import InternalError

    raise InternalError(f"shipped folder '{name}' not found next to the package; reinstall mobiledeploy")
