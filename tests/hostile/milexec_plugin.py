"""A pytest plugin that runs coremltools' own MIL op tests against mobiledeploy's MIL executor.

coremltools compares a converted model with each test's expected outputs only on macOS (Core ML's
``predict``). Loaded with ``-p tests.hostile.milexec_plugin``, its comparison runs everywhere: the
saved .mlpackage goes through ``mobiledeploy.backends.coreml.milexec`` instead. A program the executor refuses
(UnsupportedMILOp) or a neural-network model (not an ML Program) is a skip, never a pass.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest


def _predict(mlmodel, input_key_values, state=None):
    from mobiledeploy.backends.coreml.milexec import MILProgram
    from mobiledeploy.backends.coreml.milexec.ops import UnsupportedMILOp

    if state is not None:
        pytest.skip("milexec: stateful models are not supported")
    spec = mlmodel.get_spec()
    if spec.WhichOneof("Type") != "mlProgram":
        pytest.skip("milexec: not an ML Program")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.mlpackage"
        mlmodel.save(str(path))
        try:
            prog = MILProgram(path)
            feeds = {k: v for k, v in input_key_values.items()}
            out = prog.run(feeds)
        except UnsupportedMILOp as exc:
            pytest.skip(f"milexec refuses: {exc}")
    names = [o.name for o in spec.description.output]
    return {n: (np.asarray(v) if not isinstance(v, dict) else v) for n, v in zip(names, out.values(), strict=False)}


def pytest_configure(config):
    from coremltools.converters.mil import testing_utils

    testing_utils._IS_MACOS = True  # compare outputs here too
    testing_utils.run_core_ml_predict = _predict
    testing_utils.coremltoolsutils._macos_version = lambda: (15, 0)
