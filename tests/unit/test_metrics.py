"""Comparators and judge(), each against arithmetic written out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mobiledeploy.tolerance import Tolerance, failures, judge
from mobiledeploy.validate import metrics as M


def a(rows):
    return np.asarray(rows, dtype=np.float32)


def test_max_and_mean_abs():
    ref, out = a([[1, 2], [3, 4]]), a([[1, 2.5], [2, 4]])
    # |ref - out| = [[0, 0.5], [1, 0]]
    assert M.max_abs(ref, out) == 1.0
    assert M.mean_abs(ref, out) == pytest.approx((0 + 0.5 + 1 + 0) / 4)


def test_snr_db():
    # signal 3^2 + 4^2 = 25, noise (4 - 5)^2 = 1
    assert M.snr_db(a([[3, 4]]), a([[3, 5]])) == pytest.approx(10 * math.log10(25 / 1))
    # signal 1 + 4 + 9 + 16 = 30, noise 0.5^2 + 0.5^2 = 0.5
    assert M.snr_db(a([[1, 2], [3, 4]]), a([[1.5, 2], [3, 3.5]])) == pytest.approx(10 * math.log10(30 / 0.5))
    assert M.snr_db(a([[3, 4]]), a([[3, 4]])) == math.inf
    assert M.snr_db(a([[0, 0]]), a([[0, 1]])) == -math.inf


def test_cosine_is_the_mean_over_samples():
    # sample 0: (1,0)·(2,0) / (1*2) = 1 ; sample 1: (1,0)·(0,1) = 0 -> mean 0.5
    assert M.cosine(a([[1, 0], [1, 0]]), a([[2, 0], [0, 1]])) == pytest.approx(0.5)
    # (1,1)·(1,-1) = 0 ; (3,4)·(-3,-4) / 25 = -1 -> mean -0.5
    assert M.cosine(a([[1, 1], [3, 4]]), a([[1, -1], [-3, -4]])) == pytest.approx(-0.5)
    # two zero vectors are the same vector; zero against non-zero is not
    assert M.cosine(a([[0, 0]]), a([[0, 0]])) == 1.0
    assert M.cosine(a([[0, 0]]), a([[1, 0]])) == 0.0


def test_top1_and_top5_agreement():
    ref = a([[0, 1], [1, 0], [0, 1]])  # argmax 1, 0, 1
    out = a([[0, 1], [0, 1], [0, 1]])  # argmax 1, 1, 1 -> 2 of 3 agree
    assert M.top1_agreement(ref, out) == pytest.approx(2 / 3)
    ref6 = a([[0, 0, 0, 0, 0, 9], [9, 0, 0, 0, 0, 0]])  # reference classes 5 and 0
    # candidate order of sample 0: 0,1,2,3,4 then 5 (class 5 is 6th: outside the top 5)
    # sample 1: class 0 scores 3rd -> inside the top 5; 1 of 2
    out6 = a([[6, 5, 4, 3, 2, 1], [4, 6, 5, 3, 2, 1]])
    assert M.top5_agreement(ref6, out6) == 0.5


def test_top1_accuracy_ignores_unlabelled():
    out = a([[0, 1], [1, 0], [0, 1]])  # predictions 1, 0, 1
    assert M.top1_accuracy(out, [1, None, 0]) == 0.5  # 1 right of 2 labelled
    assert M.top1_accuracy(out, [None, None, None]) is None


def test_compare_table():
    ref, out = a([[3, 4]]), a([[3, 5]])
    m = M.compare(ref, out, [0])  # both pick class 1; the label says 0
    assert m["max_abs"] == 1.0 and m["top1_agreement"] == 1.0 and m["top1_accuracy"] == 0.0
    assert m["snr_db"] == pytest.approx(10 * math.log10(25))
    assert "top5_agreement" not in m  # 2 classes: a top-5 says nothing
    with pytest.raises(ValueError, match="shape"):
        M.compare(ref, a([[3, 4, 5]]), [1])


def _judge(metrics, tol):
    return failures(judge(metrics, tol))


def test_judge_records_one_verdict_per_measured_limit():
    checks = judge({"max_abs": 2e-4, "top1_agreement": 1.0}, Tolerance(max_abs=1e-4, min_top1_agreement=1.0,
                                                                        max_accuracy_drop=0.0))
    assert [(c["key"], c["value"], c["limit"], c["ok"]) for c in checks] == [
        ("max_abs", 2e-4, 1e-4, False), ("min_top1_agreement", 1.0, 1.0, True)]


def test_layers_override_key_by_key():
    base = Tolerance(max_abs=1e-4, min_snr_db=12.0)
    assert base.over({"min_snr_db": 20.0}, None, Tolerance(max_abs=1e-3)).set_values() == {
        "max_abs": 1e-3, "min_snr_db": 20.0}
    with pytest.raises(ValueError):
        Tolerance(min_snr_db=float("nan"))


def test_judge_names_metric_value_and_limit():
    metrics = {"max_abs": 2e-4, "snr_db": 11.5, "top1_agreement": 1.0, "accuracy_drop": 0.0}
    tol = {"max_abs": 1e-4, "min_snr_db": 12.0, "min_top1_agreement": 1.0, "max_accuracy_drop": None}
    assert _judge(metrics, tol) == [
        "max_abs 2.000e-04 > 1.000e-04 (max_abs)",
        "snr_db 11.5 < 12 (min_snr_db)",
    ]


def test_judge_boundaries_nan_and_missing():
    # equal to the limit holds
    assert _judge({"top1_agreement": 0.95, "cosine": 0.999}, {"min_top1_agreement": 0.95,
                                                               "min_cosine": 0.999}) == []
    # NaN never holds, whichever way the comparison goes
    assert _judge({"cosine": float("nan")}, {"min_cosine": 0.99}) == ["cosine nan < 0.99 (min_cosine)"]
    assert _judge({"max_abs": float("nan")}, {"max_abs": 1.0}) == ["max_abs nan > 1 (max_abs)"]
    # no labels -> no accuracy_drop -> nothing to judge
    assert _judge({"max_abs": 0.0}, {"max_accuracy_drop": 0.0}) == []
    # an unknown key is a mistake, not a limit that silently never applies
    with pytest.raises(ValueError, match="speed"):
        _judge({"max_abs": 0.0}, {"speed": 3})
    # -inf SNR (a zero reference) is below any limit
    assert _judge({"snr_db": -math.inf}, {"min_snr_db": 12.0}) == ["snr_db -inf < 12 (min_snr_db)"]
