"""The target contract: one backend, one module, one class that carries everything about it.

A backend class says what it needs (``requires``, ``extra``, ``distributions``), which precisions
it builds with which typed options (``options``) and default limits (``tolerances``), whether its
output is byte-stable, how ``bench`` runs it (``bench``), which Android runtime can load it
(``app_runtime``), and how its runner taps intermediates for localisation (``Runner.intermediates``).
Its framework is imported lazily, inside ``convert``/``load``/``bench``. The registry maps a name to
"module:Class" and nothing else; ``targets/*.yaml`` profiles pick a backend and a precision.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..images import InputBatch
from ..tolerance import Tolerance

# The definition and a resolved target are what every hook receives; they are named here, not
# imported: definition and targets import this module's registry (no cycle, not even for types).
ModelDefinition = Any  # definition.ModelDefinition
ResolvedTarget = Any  # targets.ResolvedTarget


class Lowering(str, Enum):
    """One name for one idea on every int8 backend: how h-swish and the SE gate reach int8.

    ``hswish``: built from ops the int8 kernels and accelerators take (TFLite/Edge TPU: ADD+RELU6
    and MUL with the 1/6 folded into the next weights; ExecuTorch: XNNPACK's int8 h-swish and the
    SE gate folded into its conv). ``none``: the stock converter's graph.
    """

    hswish = "hswish"
    none = "none"


class TFLiteLowering(str, Enum):
    """TFLite / Edge TPU lowerings: ``Lowering``'s two, plus ``hswish+bilinear``, which also builds
    a segmentation head's half-pixel bilinear resizes from ops the Edge TPU compiler maps
    (``tasks/segmentation/upsample.py``: nearest 2x resizes, fixed 2x2 depthwise averages, slices and
    concatenations; the same function). Tasks without a resize build what ``hswish`` builds."""

    hswish = "hswish"
    none = "none"
    hswish_bilinear = "hswish+bilinear"


class NoOptions(BaseModel):
    """A precision without options."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Int8Options(BaseModel):
    """What every int8 target takes: real calibration images and the h-swish lowering."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    lowering: Lowering = Lowering.hswish
    calibration_samples: int = Field(100, ge=1, le=100_000)


@dataclass(frozen=True)
class GraphVariant:
    """Which function-preserving variant of the reference graph an artifact is built from.

    Decided once from the resolved options (``Backend.graph``), passed to the model builders and
    recorded with the artifact, so that localisation reads it instead of guessing.
    """

    hswish: str = "fused"  # "fused" (one h-swish op) or "lowered" (ADD+RELU6, MUL; 1/6 folded)
    # "builtin" (RESIZE_BILINEAR) or "lowered" (upsample.py); only segmentation heads resize
    resize: str = "builtin"

    def as_dict(self) -> dict[str, str]:
        return {"hswish": self.hswish, "resize": self.resize}

    def for_definition(self, definition) -> GraphVariant:
        """The variant as built for ``definition``: a model without resizes has no resize variant
        (so targets differing only in it share one Keras model and export)."""
        if self.resize != "builtin" and definition.architecture_spec().segmentation is None:
            return GraphVariant(hswish=self.hswish)
        return self

    @classmethod
    def from_dict(cls, data: dict | None) -> GraphVariant:
        return cls(**(data or {}))


@dataclass
class ConvertContext:
    """What a conversion may use. Models are built lazily and shared between targets."""

    definition: ModelDefinition
    workdir: Path
    calibration: InputBatch  # real images, never noise
    _torch_model: Any = None
    # values shared by every target converted with this context (and its ``replace`` copies)
    _shared: dict = field(default_factory=dict)

    def torch_model(self):
        """The PyTorch reference (eval mode, canonical weights loaded)."""
        if self._torch_model is None:
            from ..architectures.reference import build_torch_reference

            self._torch_model = build_torch_reference(self.definition)
        return self._torch_model

    def keras_model(self, graph: GraphVariant, batch_size: int | None = 1):
        """The Keras reference built from the same spec and weights, as graph variant ``graph``
        (each variant is built once per context)."""
        from ..architectures.reference import build_keras_reference

        graph = graph.for_definition(self.definition)
        return self.memo(("keras", graph, batch_size), lambda: build_keras_reference(
            self.definition, batch_size=batch_size, **graph.as_dict()))

    def memo(self, key, make: Callable[[], Any]):
        """``make()``, computed once per ``key`` for every target converted with this context:
        what several targets would otherwise each rebuild (an export, a calibrated program).
        The key must name everything the value depends on besides the definition."""
        if key not in self._shared:
            self._shared[key] = make()
        return self._shared[key]

    def scratch(self) -> Path:
        """A folder for shared intermediate files, living as long as the context (beside the
        targets' work folders, so a build's clean-up removes it if the worker is killed)."""
        import tempfile

        return self.memo("scratch", lambda: Path(tempfile.mkdtemp(prefix="shared-", dir=Path(self.workdir).parent)))

    def close(self) -> None:
        """Remove the scratch folder; shared values are dropped."""
        import shutil

        d = self._shared.get("scratch")
        self._shared.clear()
        if d is not None:
            shutil.rmtree(d, ignore_errors=True)


# (name, layer names it carries, value NCHW float32): one intermediate value of a runtime
Tap = tuple[str, set, np.ndarray]
OUTPUT = "<output>"  # in a Tap's layer set: the value is a graph output (its name is the converter's)


class Runner(ABC):
    """A loaded artifact that maps an InputBatch to its output (N, ...) float32.

    The output keeps the runtime's shape and ``layout`` says its channel order: ``"nchw"``
    (channels first, as the PyTorch reference) or ``"nhwc"`` (channels last, as TensorFlow).
    The task (``tasks.get_task(...).canonical``) turns it into the canonical output; backends
    never need to know what the outputs mean.
    """

    executor: str = "unknown"
    layout: str = "nchw"

    @abstractmethod
    def run(self, batch: InputBatch) -> np.ndarray: ...

    def intermediates(self, batch: InputBatch) -> list[Tap]:  # pragma: no cover
        """Intermediate values for localisation, in execution order; empty when the runtime
        cannot tell. Layer-name sets let localisation match values to reference modules by name;
        empty sets make it match by shape and agreement."""
        return []


class SkipRun(Exception):
    """Raised by ``Backend.load`` when the artifact cannot run on this host (reason in str)."""


@dataclass
class ClientContext:
    """What a task judges a client's answer with: the validation's images, the reference's
    outputs and metrics, the truth, the definition, and the runner's ``finish(row, ref, out,
    batch, ref_metrics, task, truth)``."""

    batch: Any
    ref: np.ndarray
    ref_metrics: dict
    truth: Any
    definition: Any
    finish: Callable


class Backend(ABC):
    """One backend. Registered by ``name`` in ``backends.registry`` (or named "module:Class")."""

    name: ClassVar[str] = ""
    #: import names this backend needs, checked before any work
    requires: ClassVar[tuple[str, ...]] = ()
    #: the pyproject extra that installs them
    extra: ClassVar[str] = ""
    #: distributions whose versions shape the artifact (part of every cache key)
    distributions: ClassVar[tuple[str, ...]] = ()
    #: precision -> the typed options model of that precision (its defaults are the defaults)
    options: ClassVar[dict[str, type[BaseModel]]] = {}
    #: precision -> default limits; a profile and the definition may override key by key
    tolerances: ClassVar[dict[str, Tolerance]] = {}
    #: equal inputs give equal bytes (else the manifest records a content hash)
    byte_stable: ClassVar[bool] = True
    #: the Android app runtime that loads this backend's artifacts, or None
    app_runtime: ClassVar[str | None] = None
    #: the tasks (``tasks.TASKS`` names) whose graphs this backend converts; None: every task
    tasks: ClassVar[tuple[str, ...] | None] = None
    #: what ``bench`` calls the device the host latency is measured on
    bench_device: ClassVar[str] = "CPU"
    #: the reference twin the artifact is converted from: when the Keras twin disagrees with
    #: PyTorch, artifacts built from it are not judged
    built_from: ClassVar[str] = "pytorch"
    #: precision -> rough CPU seconds of one conversion of the demo in a worker that has already
    #: imported its framework (pipeline/pool.py); only orders the build's work (longest first) and
    #: decides when a second worker helps, never part of a key
    convert_seconds: ClassVar[dict[str, float]] = {}
    #: the conversion workers' family: targets that import the same frameworks share a worker
    #: ("" = the first ``requires`` name)
    family: ClassVar[str] = ""

    def client_rows(self, bundle: Path, art: dict, task, ctx: ClientContext, make_row) -> list[dict]:
        """Rows of the real clients that load this backend's artifact ``art`` (e.g. MediaPipe Tasks
        on a .tflite), each named ``<client>:<target>`` and judged by the task
        (``Task.<client>_judge``); none by default."""
        return []

    def client_toolchain(self) -> dict[str, str]:
        """Versions of the clients whose rows ``client_rows`` adds ("none" when absent): a client
        installed or removed changes the validation's rows, so it is in the validation's key."""
        return {}

    def toolchain(self) -> dict[str, str]:
        """Versions of the libraries that shape the artifact (part of the cache key)."""
        from .._dist import version

        return {d: v for d in self.distributions if (v := version(d))}

    def graph(self, target: ResolvedTarget) -> GraphVariant:
        """The reference graph variant this target converts (default: the fused graph)."""
        return GraphVariant()

    @classmethod
    def check_options(cls, options: BaseModel, task: str | None) -> None:
        """Refuse options that do not apply to the definition's ``task`` (a ValueError whose
        message is ``"option NAME: why and the fix"``); by default every option applies."""
        return None

    @abstractmethod
    def convert(self, ctx: ConvertContext, target: ResolvedTarget, out: Path) -> dict[str, Any]:
        """Write the artifact to ``out`` (a temporary path; the caller renames it).

        Returns facts for the manifest (e.g. delegated ops, quantization parameters).
        """

    @abstractmethod
    def load(self, path: Path, target: ResolvedTarget, definition: ModelDefinition) -> Runner:
        """Load a built artifact for running; raise SkipRun when this host cannot run it."""

    def bench_skip_reason(self) -> str | None:
        """Why ``bench`` cannot time this backend's artifacts on this host, or None."""
        return None

    def bench(self, path: Path, x: np.ndarray, *, runs: int, warmup: int, threads: int,
              loaded: Callable[[], None]) -> dict[str, Any]:  # pragma: no cover - per backend
        """Time one artifact on input ``x`` (1, C, H, W) in this (child) process.

        Calls ``loaded()`` once the runtime is imported, before the model is loaded (so the
        model's own memory can be told apart). Returns ``{"latency_ms": {...}, "executor": str}``.
        """
        raise NotImplementedError(f"{self.name}: no host benchmark")

    def bench_facts(self, path: Path) -> dict[str, Any]:
        """Facts ``bench`` adds to the row after timing and memory (e.g. XNNPACK partitions)."""
        return {}
