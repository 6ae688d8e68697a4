"""The detection training script: SSD matching and loss by hand, and a tiny end-to-end run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.conftest import ROOT

torch = pytest.importorskip("torch")
DET_EXAMPLE = ROOT / "examples" / "shapes_det"


def test_ssd_matching_by_hand():
    from mobiledeploy.demo.train_det import corners, match

    anchors = np.array([[0.25, 0.25, 0.5, 0.5],    # [0, 0, 0.5, 0.5]: IoU 1 with the box
                        [0.3, 0.25, 0.5, 0.5],     # shifted 0.05: IoU 0.45*0.5 / (0.5 - 0.225) = 0.818
                        [0.75, 0.75, 0.5, 0.5],    # far away
                        [0.75, 0.75, 0.3, 0.3]], np.float32)
    boxes = np.array([[0, 0, 0.5, 0.5], [0.62, 0.62, 0.7, 0.7]], np.float32)  # the second is tiny
    cls, loc = match(anchors, corners(anchors), boxes, np.array([3, 5]), (10, 10, 5, 5))
    # anchors 0, 1 match box 0 (class 3 -> target 4); the tiny box 1 (IoU < 0.5 everywhere)
    # still claims its best anchor, 3 (IoU 0.0064 / 0.09); anchor 2 is background
    assert cls.tolist() == [4, 4, 0, 6]
    np.testing.assert_allclose(loc[0], [0, 0, 0, 0], atol=1e-6)
    # anchor 1: ty = (0.25 - 0.3) / 0.5 * 10 = -1
    np.testing.assert_allclose(loc[1], [-1.0, 0, 0, 0], atol=1e-6)
    assert (loc[2] == 0).all()


def test_hard_negative_mining_keeps_three_negatives_per_positive():
    from mobiledeploy.demo.train_det import ssd_loss

    n = 10
    logits = torch.zeros(1, n, 3)
    logits[0, :, 1] = torch.arange(n, dtype=torch.float32)  # anchor k: the hardest negatives are last
    cls_t = torch.zeros(1, n, dtype=torch.int64)
    cls_t[0, 0] = 2
    loc_t = torch.zeros(1, n, 4)
    box = torch.zeros(1, n, 4)
    box[0, 0] = torch.tensor([1.0, 0.0, 0.0, 3.0])
    cls_loss, loc_loss = ssd_loss(logits, box, cls_t, loc_t)
    ce = torch.nn.functional.cross_entropy(logits[0], torch.zeros(n, dtype=torch.int64), reduction="none")
    pos_ce = torch.nn.functional.cross_entropy(logits[0, :1], cls_t[0, :1])
    # one positive: its CE plus the three hardest negatives (anchors 9, 8, 7), over 1 positive
    assert cls_loss.item() == pytest.approx((pos_ce + ce[7:].sum()).item(), rel=1e-5)
    # smooth L1 (beta 1): 0.5 * 1^2 + (3 - 0.5) = 3.0
    assert loc_loss.item() == pytest.approx(3.0)


@pytest.mark.slow
def test_train_det_writes_weights_the_definition_loads(tmp_path):
    from mobiledeploy.architectures.reference import build_torch_reference
    from mobiledeploy.definition import load_definition
    from mobiledeploy.demo.train_det import main

    out = tmp_path / "det"
    shutil.copytree(DET_EXAMPLE, out, ignore=shutil.ignore_patterns("*.safetensors", "training.json"))
    main(["--out", str(out), "--train-images", "48", "--epochs", "1", "--batch", "16", "--val-limit", "12"])
    summary = json.loads((out / "training.json").read_text())
    assert summary["train_images"] == 48 and summary["threads"] == 1 and summary["val_images"] == 12
    assert 0.0 <= summary["val_map50"] <= 1.0 and summary["init_tensors"] > 100
    d = load_definition(out / "shapes_det.yaml")
    model = build_torch_reference(d)
    assert sum(p.numel() for p in model.parameters()) == summary["params"]
