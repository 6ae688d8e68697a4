"""AMX permission on x86-64 Linux: what LiteRT's XNNPACK asks for, and denying it (seccomp).

Each case runs in its own interpreter: the filter lasts for the life of a process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mobiledeploy import amx

pytestmark = pytest.mark.skipif(not amx.supported(), reason="AMX permissions exist on x86-64 Linux only")

_PROBE = """
import json, sys
from mobiledeploy import amx
deny = sys.argv[1] == "deny"
if deny:
    amx.deny()
before = amx.state()
from ai_edge_litert.interpreter import Interpreter  # XNNPACK initialises with the first interpreter
import numpy as np, tensorflow as tf
m = tf.keras.Sequential([tf.keras.Input((8, 8, 16), batch_size=1), tf.keras.layers.Conv2D(16, 1)])
it = Interpreter(model_content=tf.lite.TFLiteConverter.from_keras_model(m).convert(), num_threads=1)
it.allocate_tensors()
it.invoke()
print(json.dumps({"before": before, "after": amx.state(), "granted": amx.granted()}))
"""


def _probe(mode: str) -> dict:
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("tensorflow")
    r = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_filter_program_is_well_formed():
    code = amx._filter()
    assert len(code) % 8 == 0 and len(code) // 8 == 8  # struct sock_filter is 8 bytes


@pytest.mark.slow
def test_litert_is_granted_amx_unless_denied():
    allowed, denied = _probe("allow"), _probe("deny")
    if not amx.cpu_has_amx():
        assert allowed["after"] == denied["after"] == "n/a"
        return
    # XNNPACK asks for the tiles when LiteRT starts: granted by default ...
    assert allowed["before"] == "not requested"
    assert allowed["after"] == "granted" and allowed["granted"] is True
    # ... and refused (EPERM) under the filter, while the interpreter still runs
    assert denied["before"] == denied["after"] == "denied"
    assert denied["granted"] is False


def test_deny_in_a_child_does_not_touch_this_process():
    r = subprocess.run([sys.executable, "-c", "from mobiledeploy import amx; amx.deny(); print(amx.state())"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ("denied" if amx.cpu_has_amx() else "n/a")
    assert amx.state() != "denied"
