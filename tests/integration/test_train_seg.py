"""The segmentation training script runs end to end (tiny budget) and writes loadable weights."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import ROOT

pytest.importorskip("torch")
SEG_EXAMPLE = ROOT / "examples" / "shapes_seg"


@pytest.mark.slow
def test_train_seg_writes_weights_the_definition_loads(tmp_path):
    from mobiledeploy.architectures.reference import build_torch_reference
    from mobiledeploy.definition import load_definition
    from mobiledeploy.demo.train_seg import main

    out = tmp_path / "seg"
    shutil.copytree(SEG_EXAMPLE, out, ignore=shutil.ignore_patterns("*.safetensors", "training.json"))
    main(["--out", str(out), "--train-images", "48", "--epochs", "1", "--batch", "16", "--val-limit", "12"])
    summary = json.loads((out / "training.json").read_text())
    assert summary["train_images"] == 48 and summary["threads"] == 1
    assert 0.0 <= summary["val_miou"] <= 1.0 and 0.0 <= summary["val_pixel_accuracy"] <= 1.0
    assert summary["val_images"] == 12
    assert set(summary["val_iou_per_class"]) == set(load_definition(out / "shapes_seg.yaml").labels_list())
    d = load_definition(out / "shapes_seg.yaml")  # the weights file now exists and matches
    model = build_torch_reference(d)
    assert sum(p.numel() for p in model.parameters()) == summary["params"]
