"""The demo training script runs end to end (tiny budget) and writes loadable canonical weights."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import EXAMPLE

pytest.importorskip("torch")


@pytest.mark.slow
def test_train_script_writes_weights_the_definition_loads(tmp_path):
    from mobiledeploy.architectures.reference import build_torch_reference
    from mobiledeploy.definition import load_definition
    from mobiledeploy.demo.train import main

    out = tmp_path / "shapes"
    shutil.copytree(EXAMPLE, out, ignore=shutil.ignore_patterns("*.safetensors", "training.json"))
    main(["--out", str(out), "--train-images", "192", "--epochs", "1", "--batch", "32", "--threads", "1"])
    summary = json.loads((out / "training.json").read_text())
    assert summary["train_images"] == 192 and 0.0 <= summary["val_top1"] <= 1.0
    d = load_definition(out / "shapes.yaml")  # the weights file now exists and matches
    model = build_torch_reference(d)
    assert sum(p.numel() for p in model.parameters()) > 1e6
