"""Hostile label files for the dense tasks: masks (segmentation) and boxes (detection) are checked
with the definition, before anything is written: exit 2, one line naming the field, nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import EXAMPLE
from tests.hostile.helpers import build_refused

SEG = EXAMPLE.parent / "shapes_seg"
DET = EXAMPLE.parent / "shapes_det"


def _seg(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the segmentation example with 4 validation images and their masks; no calibration
    masks. Returns (definition, the first validation image's mask)."""
    root = tmp_path / "seg"
    images = sorted((SEG / "validation" / "images").iterdir())[:4]
    for sub in ("images", "masks"):
        (root / "validation" / sub).mkdir(parents=True)
    for p in images:
        shutil.copy(p, root / "validation" / "images" / p.name)
        shutil.copy(SEG / "validation" / "masks" / (p.stem + ".png"), root / "validation" / "masks" / (p.stem + ".png"))
    shutil.copy(SEG / "labels.txt", root / "labels.txt")
    data = yaml.safe_load((SEG / "shapes_seg.yaml").read_text())
    data.pop("weights")
    data["calibration"] = {"source": "validation/images"}
    data["validation"] = {"source": "validation/images", "masks": "validation/masks"}
    (root / "seg.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return root / "seg.yaml", root / "validation" / "masks" / (images[0].stem + ".png")


def _save(path: Path, ids: np.ndarray, mode: str = "L") -> None:
    from PIL import Image

    Image.fromarray(ids.astype(np.uint8)).convert(mode).save(path, format="PNG")


@pytest.mark.parametrize("case, match", [
    ("missing", r"validation: masks: mask not found"),
    ("class-out-of-range", r"validation: masks: .* holds class id 40"),
    ("rgb", r"validation: masks: .* is a RGB image"),
    ("other-size", r"validation: masks: .* is 7x300, its image 128x128"),
    ("not-a-png", r"cannot decode mask"),
])
def test_a_bad_mask_is_refused_before_anything_is_written(case, match, tmp_path):
    if not (SEG / "validation" / "masks").is_dir():
        pytest.skip("the segmentation example is not present")
    definition, mask = _seg(tmp_path)
    if case == "missing":
        mask.unlink()
    elif case == "class-out-of-range":
        _save(mask, np.full((128, 128), 40))
    elif case == "rgb":
        _save(mask, np.zeros((128, 128)), "RGB")
    elif case == "other-size":
        _save(mask, np.zeros((300, 7)))
    else:
        mask.write_bytes(b"not a png at all")
    build_refused(definition, tmp_path, match=match)


def _det(tmp_path: Path, boxes) -> Path:
    """The detection example's definition with its validation boxes file replaced by ``boxes``."""
    root = tmp_path / "det"
    data = yaml.safe_load((DET / "shapes_det.yaml").read_text())
    images = sorted(p for p in (DET / data["validation"]["source"]).iterdir())[:3]
    (root / "images").mkdir(parents=True)
    for p in images:
        shutil.copy(p, root / "images" / p.name)
    shutil.copy(DET / "labels.txt", root / "labels.txt")
    data.pop("weights", None)
    data["calibration"] = {"source": "images"}
    data["validation"] = {"source": "images", "boxes": "boxes.json"}
    (root / "boxes.json").write_text(boxes if isinstance(boxes, str) else json.dumps(boxes))
    (root / "det.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return root / "det.yaml"


GOOD = {"format": "mobiledeploy-boxes-1", "images": {}}


@pytest.mark.parametrize("case, match", [
    ("label-is-a-list", r"validation: boxes: .* label \['circle'\] is not in the labels file"),
    ("huge-integer", r"not a readable boxes JSON file"),
    ("inverted-box", r"validation: boxes: .* must be \[ymin, xmin, ymax, xmax\]"),
    ("image-without-entry", r"validation: boxes: .* has no entry for"),
])
def test_a_bad_boxes_file_is_refused_before_anything_is_written(case, match, tmp_path):
    if not (DET / "validation" / "boxes.json").is_file():
        pytest.skip("the detection example is not present")
    images = sorted((DET / "validation" / "images").iterdir())[:3]
    entries = {p.name: [{"label": "circle", "box": [0.1, 0.1, 0.5, 0.5]}] for p in images}
    if case == "label-is-a-list":
        entries[images[0].name] = [{"label": ["circle"], "box": [0.1, 0.1, 0.5, 0.5]}]
    elif case == "inverted-box":
        entries[images[0].name] = [{"label": "circle", "box": [0.5, 0.1, 0.1, 0.5]}]
    elif case == "image-without-entry":
        del entries[images[-1].name]
    boxes = {**GOOD, "images": entries}
    text = json.dumps(boxes) if case != "huge-integer" else json.dumps(boxes)[:-2] + ', "n": ' + "9" * 5000 + "}}"
    build_refused(_det(tmp_path, text), tmp_path, match=match)


def test_labels_listed_outside_the_list_files_folder_are_refused(tmp_path):
    """A list file may name images elsewhere; their masks (found by relative path) cannot be."""
    if not (SEG / "validation" / "masks").is_dir():
        pytest.skip("the segmentation example is not present")
    definition, _ = _seg(tmp_path)
    root = definition.parent
    (root / "lists").mkdir()
    names = sorted(p.name for p in (root / "validation" / "images").iterdir())
    (root / "lists" / "val.txt").write_text("".join(f"../validation/images/{n}\n" for n in names))
    data = yaml.safe_load(definition.read_text())
    data["validation"]["source"] = "lists/val.txt"
    definition.write_text(yaml.safe_dump(data, sort_keys=False))
    build_refused(definition, tmp_path, match=r"validation: masks: .* lies outside .*: masks are found by the image.s path relative")
