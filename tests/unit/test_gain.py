"""The gain checks: noise costs SNR but not gain; a scale fault moves the gain at its layer."""

from __future__ import annotations

import math

import numpy as np

from mobiledeploy.tolerance import Tolerance, failures, judge
from mobiledeploy.validate.localize import largest_gain_step
from mobiledeploy.validate.metrics import compare, gain, gain_error


def test_unbiased_noise_keeps_the_gain_and_a_scale_moves_it():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(200, 10)).astype(np.float32)
    noisy = ref + rng.normal(scale=0.05, size=ref.shape).astype(np.float32)  # ~26 dB, like int8
    m = compare(ref, noisy, [None] * len(ref))
    assert 24 < m["snr_db"] < 28 and m["gain_error"] < 0.01
    scaled = ref * np.float32(1.05)
    assert abs(gain(ref, scaled) - 1.05) < 1e-6
    assert abs(gain_error(ref, scaled) - 0.05) < 1e-6
    assert gain_error(ref, -ref) == 2.0  # a sign flip is the largest error


def test_gain_of_degenerate_outputs():
    zero = np.zeros((4, 3), np.float32)
    assert gain(zero, zero) == 1.0
    assert math.isinf(gain(zero, np.ones_like(zero)))
    nan = np.full((4, 3), np.nan, np.float32)
    assert math.isnan(gain(np.ones_like(nan), nan))
    # NaN never passes a limit
    assert failures(judge({"gain_error": float("nan")}, Tolerance(max_gain_error=0.04)))


def test_largest_gain_step_names_the_layer_where_the_gain_jumps():
    layers = [{"layer": "stem", "gain": 1.0}, {"layer": "blocks.0.dw", "gain": 0.99},
              {"layer": "blocks.1.dw", "gain": None}, {"layer": "blocks.2.dw", "gain": 1.0395},
              {"layer": "blocks.2.project", "gain": 1.04}]
    step = largest_gain_step(layers)
    assert step["layer"] == "blocks.2.dw" and step["from_layer"] == "blocks.0.dw"
    assert abs(step["step"] - 0.05) < 1e-4
    assert largest_gain_step(layers[:1]) is None
    broken = largest_gain_step([{"layer": "a", "gain": 1.0}, {"layer": "b", "gain": float("nan")}])
    assert broken["layer"] == "b" and math.isinf(broken["step"])
    checks = judge({"layer_gain_step": step["step"]}, Tolerance(max_layer_gain_step=0.03))
    assert failures(checks) == ["layer_gain_step 0.05 > 0.03 (max_layer_gain_step)"]
