"""Backends by name: a name maps to "module:Class" and nothing else.

Everything else about a backend (requirements, extra, options, tolerances, bench, app runtime)
is on its class. A target profile may also name a backend outside this package directly as
"package.module:Class" (a plugin): nothing here needs editing to add one.
"""

from __future__ import annotations

import functools
import importlib

from ..errors import InternalError, MissingDependencyError, UserError

BACKENDS: dict[str, str] = {}


def register(name: str, ref: str) -> None:
    """Add a backend; a name registered twice is a bug."""
    if name in BACKENDS:
        raise InternalError(f"backend '{name}' registered twice")
    if ":" not in ref:
        raise InternalError(f"backend '{name}': '{ref}' is not 'module:Class'")
    BACKENDS[name] = ref


register("tflite", "mobiledeploy.backends.tflite.backend:TFLiteBackend")
register("edgetpu", "mobiledeploy.backends.edgetpu.backend:EdgeTPUBackend")
register("coreml", "mobiledeploy.backends.coreml.backend:CoreMLBackend")
register("executorch", "mobiledeploy.backends.executorch.backend:ExecuTorchBackend")


@functools.cache
def backend_class(name: str):
    """The class of a registered backend name or of a "module:Class" reference.

    Importing a backend module imports no framework (they are imported inside its methods).
    """
    ref = BACKENDS.get(name) or (name if ":" in name else None)
    if ref is None:
        raise UserError(f"unknown backend '{name}'; allowed: {', '.join(BACKENDS)} or 'package.module:Class'")
    module, _, cls = ref.partition(":")
    try:
        found = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"backend '{name}': cannot import {ref} ({exc})") from None
    from .base import Backend

    if not (isinstance(found, type) and issubclass(found, Backend)):
        raise UserError(f"backend '{name}': {ref} is not a mobiledeploy Backend class")
    return found


def backend_modules(name: str) -> tuple[str, ...]:
    """The modules a backend name loads: its class's module with the whole folder it lives in
    (``backends/<name>/``, scripts run in another interpreter included, such as
    ``tflite/mediapipe_runner.py``), and the same for every backend class it extends (the Edge
    TPU backend is a TFLite one). Build keys hash them (``pipeline/keys.py``): the class is
    loaded by name, so no import reaches these modules."""
    from .._modules import folder_modules
    from .base import Backend

    found: dict[str, None] = {}
    for klass in backend_class(name).__mro__:
        if isinstance(klass, type) and issubclass(klass, Backend) and klass is not Backend:
            found.update(dict.fromkeys(folder_modules(klass.__module__, __package__)))
    return tuple(found)


def missing(name: str) -> list[str]:
    """The backend's required import names that are not installed here."""
    from .._dist import available

    return [m for m in backend_class(name).requires if not available(m)]


def check(name: str) -> None:
    """Raise MissingDependencyError naming the extra when a requirement is absent."""
    miss = missing(name)
    if miss:
        raise MissingDependencyError(miss[0], backend_class(name).extra, f"needed by the {name} backend")


def get_backend(name: str):
    """An instance of the named backend (its framework still imported lazily)."""
    check(name)
    return backend_class(name)()
