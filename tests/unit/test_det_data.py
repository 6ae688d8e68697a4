"""Detection scenes and the boxes file a definition names."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mobiledeploy.demo.shapes import CLASSES
from mobiledeploy.demo.shapes_det import det_rng, generate_det_split, render_det_scene
from mobiledeploy.errors import DefinitionError
from mobiledeploy.tasks.detection.boxes import read_boxes, write_boxes
from tests.conftest import ROOT

DET_EXAMPLE = ROOT / "examples" / "shapes_det"


def test_scenes_are_seeded_and_boxes_are_tight_and_normalised():
    a_img, a_boxes, a_labels = render_det_scene(det_rng(5, 3), 96)
    b_img, b_boxes, b_labels = render_det_scene(det_rng(5, 3), 96)
    assert np.array_equal(np.asarray(a_img), np.asarray(b_img)) and np.array_equal(a_boxes, b_boxes)
    counts = []
    for i in range(20):
        _img, boxes, labels = render_det_scene(det_rng(1, i), 96)
        counts.append(len(boxes))
        assert ((0 <= boxes) & (boxes <= 1)).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert ((0 <= labels) & (labels < len(CLASSES))).all()
        # whole pixels: every coordinate is k / 96
        assert np.allclose(boxes * 96, np.round(boxes * 96), atol=1e-4)
    assert 1 <= min(counts) and max(counts) <= 4 and len(set(counts)) >= 3


def test_a_split_round_trips_through_the_boxes_file(tmp_path):
    path = generate_det_split(tmp_path, n=3, seed=9, size=64)
    table = read_boxes(path, CLASSES)
    assert sorted(table) == ["0000.jpg", "0001.jpg", "0002.jpg"]
    _img, boxes, labels = render_det_scene(det_rng(9, 1), 64)
    np.testing.assert_allclose(table["0001.jpg"][0], boxes, atol=1e-6)
    np.testing.assert_array_equal(table["0001.jpg"][1], labels)


@pytest.mark.parametrize("entry, message", [
    ([{"label": "blob", "box": [0, 0, 0.5, 0.5]}], "not in the labels file"),
    ([{"label": "circle", "box": [0.5, 0, 0.4, 0.5]}], "ymin, xmin, ymax, xmax"),
    ([{"label": "circle", "box": [0, 0, 1.5, 0.5]}], "normalised"),
    ([{"label": "circle"}], "must be"),
])
def test_bad_boxes_are_one_line_errors(tmp_path, entry, message):
    path = write_boxes(tmp_path / "boxes.json", {"a.jpg": entry})
    with pytest.raises(DefinitionError, match=message) as exc:
        read_boxes(path, CLASSES, "m.yaml: validation")
    assert "boxes" in str(exc.value) and "\n" not in str(exc.value)


def test_not_a_boxes_file(tmp_path):
    p = tmp_path / "boxes.json"
    p.write_text(json.dumps({"images": {}}))
    with pytest.raises(DefinitionError, match="format"):
        read_boxes(p, CLASSES)


def test_the_example_boxes_follow_the_selected_images():
    from mobiledeploy.definition import load_definition
    from mobiledeploy.images import select_images
    from mobiledeploy.tasks.detection.boxes import load_boxes

    d = load_definition(DET_EXAMPLE / "shapes_det.yaml", check_files=False)
    files = [str(p) for p, _ in select_images(d, "validation")]
    gts = load_boxes(d, "validation", files)
    assert len(gts) == len(files) == 200
    assert sum(len(c) for _b, c in gts) > 300  # several objects per scene
    cal = [str(p) for p, _ in select_images(d, "calibration")]
    assert len(load_boxes(d, "calibration", cal)) == 100


def test_an_image_without_an_entry_is_an_error(tmp_path):
    import shutil

    from mobiledeploy.definition import load_definition
    from mobiledeploy.tasks.detection.boxes import load_boxes

    shutil.copytree(DET_EXAMPLE / "validation", tmp_path / "validation")
    shutil.copy(DET_EXAMPLE / "labels.txt", tmp_path)
    shutil.copy(DET_EXAMPLE / "shapes_det.yaml", tmp_path)
    d = load_definition(tmp_path / "shapes_det.yaml", check_files=False)
    extra = tmp_path / "validation" / "images" / "9999.jpg"
    shutil.copy(tmp_path / "validation" / "images" / "0000.jpg", extra)
    with pytest.raises(DefinitionError, match="no entry for 9999.jpg"):
        load_boxes(d, "validation", [str(extra)])
