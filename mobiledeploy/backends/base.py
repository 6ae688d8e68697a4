"""The target contract: a backend knows its requirements, converts, loads and runs its artifact.

One backend, one module (``tflite.py``, ``coreml.py``, ``executorch.py``, ``edgetpu.py``); each
imports its framework lazily inside ``convert``/``load``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ..definition import ModelDefinition
    from ..targets import TargetProfile


@dataclass
class InputBatch:
    """The same real inputs for every backend, decoded and preprocessed once.

    ``pixels`` is what a camera gives (resized, RGB, uint8, NHWC); ``x`` is the normalised
    float tensor the reference models take (NCHW, channels in the definition's colour order).
    """

    pixels: np.ndarray  # (N, H, W, C) uint8, RGB order, already resized
    x: np.ndarray  # (N, C, H, W) float32, normalised, definition's colour order
    labels: list[int | None] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def nhwc(self) -> np.ndarray:
        """The normalised input in NHWC layout (Keras / TFLite)."""
        return np.ascontiguousarray(self.x.transpose(0, 2, 3, 1))

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, n: int) -> InputBatch:
        return InputBatch(self.pixels[:n], self.x[:n], self.labels[:n], self.files[:n])


@dataclass
class ConvertContext:
    """What a conversion may use. Models are built lazily and shared between targets."""

    definition: ModelDefinition
    workdir: Path
    calibration: InputBatch  # real images, never noise
    _torch_model: Any = None
    _keras_models: dict = field(default_factory=dict)

    def torch_model(self):
        """The PyTorch reference (eval mode, canonical weights loaded)."""
        if self._torch_model is None:
            from ..architectures.reference import build_torch_reference

            self._torch_model = build_torch_reference(self.definition)
        return self._torch_model

    def keras_model(self, **options):
        """The Keras reference built from the same spec and weights.

        ``options`` select graph variants (e.g. ``hswish="lowered"``); each variant is cached.
        """
        from ..architectures.reference import build_keras_reference

        key = tuple(sorted(options.items()))
        if key not in self._keras_models:
            self._keras_models[key] = build_keras_reference(self.definition, **options)
        return self._keras_models[key]


class Runner(ABC):
    """A loaded artifact that maps an InputBatch to logits (N, num_classes) float32."""

    executor: str = "unknown"

    @abstractmethod
    def run(self, batch: InputBatch) -> np.ndarray: ...

    def intermediates(self, batch: InputBatch) -> dict[str, np.ndarray]:  # pragma: no cover
        """Named intermediate values for localisation; empty when the runtime cannot tell."""
        return {}


class SkipRun(Exception):
    """Raised by ``Backend.load`` when the artifact cannot run on this host (reason in str)."""


class Backend(ABC):
    """One backend. Registered by ``name`` in ``backends.registry``."""

    name: str = ""
    #: import names this backend needs, checked before any work
    requires: tuple[str, ...] = ()
    #: the extra that installs them
    extra: str = ""

    def toolchain(self) -> dict[str, str]:
        """Versions of the libraries that shape the artifact (part of the cache key)."""
        from .._deps import version

        out = {}
        for dist in self.distributions():
            v = version(dist)
            if v:
                out[dist] = v
        return out

    def distributions(self) -> tuple[str, ...]:
        return ()

    @abstractmethod
    def convert(self, ctx: ConvertContext, target: TargetProfile, out: Path) -> dict[str, Any]:
        """Write the artifact to ``out`` (a temporary path; the caller renames it).

        Returns facts for the manifest (e.g. delegated ops, quantization parameters).
        """

    @abstractmethod
    def load(self, path: Path, target: TargetProfile, definition: ModelDefinition) -> Runner:
        """Load a built artifact for running; raise SkipRun when this host cannot run it."""
