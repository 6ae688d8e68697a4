"""The twin reference models of a definition, loaded with the same canonical weights."""

from __future__ import annotations

import warnings

import numpy as np


class SeededWeightsWarning(UserWarning):
    """The definition names no weights: a seeded deterministic initialisation is used."""


def canonical_state(definition) -> dict[str, np.ndarray]:
    """The canonical weights of a definition: its safetensors file, or a seeded init."""
    from .torch_builder import build_torch_model
    from .weights import read_weights, state_dict_numpy

    if definition.weights:
        return read_weights(definition.path(definition.weights))
    warnings.warn(
        f"{definition.source_path}: no 'weights' given; using a seeded initialisation "
        f"(seed {definition.seed}): outputs are near-constant and validation proves little",
        SeededWeightsWarning,
        stacklevel=2,
    )
    return state_dict_numpy(build_torch_model(definition.architecture_spec(), seed=definition.seed))


def build_torch_reference(definition, state: dict[str, np.ndarray] | None = None):
    """The PyTorch reference in eval mode with the canonical weights."""
    from .torch_builder import build_torch_model
    from .weights import load_torch_weights

    spec = definition.architecture_spec()
    model = build_torch_model(spec, seed=definition.seed)
    load_torch_weights(model, state if state is not None else canonical_state(definition),
                       source=f"{definition.source_path}: weights")
    return model


def build_keras_reference(definition, state: dict[str, np.ndarray] | None = None, **options):
    """The Keras reference built from the same spec, with the same weights transposed."""
    from .keras_builder import build_keras_model
    from .weights import check_state, load_keras_weights, state_dict_numpy
    from .torch_builder import build_torch_model

    spec = definition.architecture_spec()
    state = state if state is not None else canonical_state(definition)
    expected = {k: v.shape for k, v in state_dict_numpy(build_torch_model(spec)).items()}
    check_state(state, expected, f"{definition.source_path}: weights")
    model = build_keras_model(spec, **options)
    load_keras_weights(model, state, spec)
    return model
