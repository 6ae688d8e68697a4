"""The shipped apps' Android-free Kotlin core compiled with kotlinc and its JVM unit tests run
with JUnit 4 (preprocessing against Pillow/NumPy, dequantization, top-k and labels, mask argmax
and colours, the SSD decoder and NMS against the host decoder). Compiles are cached by digest."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT, need_kotlin

pytestmark = pytest.mark.slow  # a cold kotlinc compile takes 15-40 s per app on 2 cores

CACHE = ROOT / ".tools" / "jvm-cache"


@pytest.mark.parametrize("app", ["android_app", "android_app_seg", "android_app_det"])
def test_shipped_app_core_unit_tests_pass_on_the_jvm(app):
    need_kotlin()
    from mobiledeploy.app.jvm import core_sources, run_unit_tests

    project = ROOT / app
    core = core_sources(project)
    # the core is plain Kotlin: nothing Android (or any runtime's AAR) may creep in
    for name, text in core.items():
        assert not re.search(rb"^import (android|androidx|org\.tensorflow|org\.pytorch)\.", text, re.M), name
    res = run_unit_tests(project, CACHE)
    assert res["ok"], res["output"][-3000:]
    expected = {"android_app": 7, "android_app_seg": 9, "android_app_det": 12}[app]
    assert res["tests"] == expected and res["failures"] == 0
