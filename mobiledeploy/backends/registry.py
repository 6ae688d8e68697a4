"""Backends by name. Modules are imported only when a backend is used."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from .._deps import available
from ..errors import InternalError, MissingDependencyError, UserError


@dataclass(frozen=True)
class BackendEntry:
    name: str
    module: str
    cls: str
    requires: tuple[str, ...]  # import names
    extra: str

    def missing(self) -> list[str]:
        return [m for m in self.requires if not available(m)]

    def check(self) -> None:
        """Raise MissingDependencyError naming the extra when a requirement is absent."""
        miss = self.missing()
        if miss:
            raise MissingDependencyError(miss[0], self.extra, f"needed by the {self.name} backend")


_REGISTRY: dict[str, BackendEntry] = {}


def register(entry: BackendEntry) -> None:
    if entry.name in _REGISTRY:
        raise InternalError(f"backend '{entry.name}' registered twice")
    _REGISTRY[entry.name] = entry


for _e in (
    BackendEntry("tflite", "mobiledeploy.backends.tflite", "TFLiteBackend",
                 ("tensorflow", "ai_edge_litert", "torch"), "tflite"),
    BackendEntry("edgetpu", "mobiledeploy.backends.edgetpu", "EdgeTPUBackend",
                 ("tensorflow", "ai_edge_litert", "torch"), "tflite"),
    BackendEntry("coreml", "mobiledeploy.backends.coreml", "CoreMLBackend",
                 ("coremltools", "torch"), "coreml"),
    BackendEntry("executorch", "mobiledeploy.backends.executorch", "ExecuTorchBackend",
                 ("executorch", "torch"), "executorch"),
):
    register(_e)


def entry(name: str) -> BackendEntry:
    if name not in _REGISTRY:
        raise UserError(f"unknown backend '{name}'; allowed: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def get_backend(name: str):
    """An instance of the named backend (its framework still imported lazily)."""
    e = entry(name)
    e.check()
    mod = importlib.import_module(e.module)
    return getattr(mod, e.cls)()
