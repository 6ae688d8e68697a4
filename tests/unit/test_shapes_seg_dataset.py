"""Segmentation scenes: seeded pixels and masks, the split layout, and the masks loader."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from mobiledeploy.demo import shapes
from mobiledeploy.errors import DefinitionError, UserError
from mobiledeploy.tasks.segmentation.masks import IGNORE, load_masks, mask_path, read_mask
from tests.conftest import ROOT

SEG_EXAMPLE = ROOT / "examples" / "shapes_seg"


def test_scene_is_seeded_and_masks_hold_class_ids():
    a_img, a_ids = shapes.render_scene(shapes.scene_rng(5, 3), 64)
    b_img, b_ids = shapes.render_scene(shapes.scene_rng(5, 3), 64)
    c_img, _ = shapes.render_scene(shapes.scene_rng(5, 4), 64)
    assert np.array_equal(np.asarray(a_img), np.asarray(b_img)) and np.array_equal(a_ids, b_ids)
    assert not np.array_equal(np.asarray(a_img), np.asarray(c_img))
    assert a_ids.dtype == np.uint8 and a_ids.shape == (64, 64)
    assert a_ids.max() <= len(shapes.CLASSES) and (a_ids == 0).any() and (a_ids > 0).any()


def test_scenes_hold_one_to_three_symbols_and_every_class_appears():
    counts, seen = [], set()
    for i, (_img, ids) in enumerate(shapes.iterate_scenes(60, 9, 64)):
        present = set(np.unique(ids).tolist()) - {0}
        assert present, f"scene {i} has no symbol"
        counts.append(len(present))
        seen |= present
    assert max(counts) <= 3 and min(counts) >= 1 and len(set(counts)) > 1
    assert seen == set(range(1, len(shapes.CLASSES) + 1))


def test_symbols_stand_out_where_the_mask_says():
    """The mask is where the image changes: symbol pixels differ from the background around them."""
    gaps = []
    for img, ids in shapes.iterate_scenes(20, 4, 96):
        luma = np.asarray(img, np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        for c in set(np.unique(ids).tolist()) - {0}:
            inside = ids == c
            if inside.sum() < 50:
                continue
            gaps.append(abs(np.median(luma[inside]) - np.median(luma[ids == 0])))
    assert np.median(gaps) > 40  # of 255


def test_seg_split_layout_is_byte_identical_and_palette_png(tmp_path):
    def digests(root: Path) -> dict[str, str]:
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    pairs = shapes.generate_seg_split(tmp_path / "a", n=6, seed=3, size=48, fmt="mixed")
    shapes.generate_seg_split(tmp_path / "b", n=6, seed=3, size=48, fmt="mixed")
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    assert [p.name for p, _ in pairs] == ["0000.jpg", "0001.jpg", "0002.jpg", "0003.jpg", "0004.jpg", "0005.jpg"]
    img, m = pairs[2]
    assert m == tmp_path / "a" / "masks" / "0002.png"
    with Image.open(m) as im:
        assert im.mode == "P"
        ids = np.asarray(im)
    _, expected = shapes.render_scene(shapes.scene_rng(3, 2), 48)
    assert np.array_equal(ids, expected)
    assert mask_path(img, tmp_path / "a" / "images", tmp_path / "a" / "masks") == m


def test_shipped_seg_example_matches_the_generator(tmp_path):
    for split, n in (("calibration", 3), ("validation", 3)):
        ref = shapes.generate_seg_split(tmp_path / split, n=n, seed=shapes.SEG_SPLIT_SEEDS[split], size=128,
                                        fmt="mixed")
        for img, m in ref:
            shipped = SEG_EXAMPLE / split
            assert (shipped / "images" / img.name).read_bytes() == img.read_bytes()
            assert (shipped / "masks" / m.name).read_bytes() == m.read_bytes()
    labels = (SEG_EXAMPLE / "labels.txt").read_text().split()
    assert labels == shapes.SEG_CLASSES and labels[0] == "background"


def test_read_mask_resizes_nearest_and_checks_ids(tmp_path):
    ids = np.zeros((4, 4), np.uint8)
    ids[:2, 2:] = 3
    ids[3, 3] = IGNORE
    p = tmp_path / "m.png"
    Image.fromarray(ids, mode="L").save(p)
    big = read_mask(p, 8, 8, num_classes=4)
    # nearest: every id stays an id that was there (bilinear would invent 1s and 2s at the edge)
    assert set(np.unique(big).tolist()) == {0, 3, IGNORE}
    assert big[:4, 4:].min() == 3 and big[7, 7] == IGNORE
    with pytest.raises(DefinitionError, match="class id 3, but the labels file has 3 classes"):
        read_mask(p, 4, 4, num_classes=3)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DefinitionError, match="palette or greyscale"):
        read_mask(tmp_path / "rgb.png", 4, 4, 3)
    with pytest.raises(DefinitionError, match="mask not found"):
        read_mask(tmp_path / "none.png", 4, 4, 3)


def test_load_masks_follows_the_definition(tmp_path):
    from mobiledeploy.definition import load_definition
    from mobiledeploy.images import select_images

    for name in ("labels.txt", "validation", "calibration"):
        src = SEG_EXAMPLE / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    data = yaml.safe_load((SEG_EXAMPLE / "shapes_seg.yaml").read_text())
    data.pop("weights")
    data["validation"]["max_images"] = 5
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(data))
    d = load_definition(tmp_path / "m.yaml")
    files = [str(p) for p, _ in select_images(d, "validation")]
    masks = load_masks(d, "validation", files)
    assert masks.shape == (5, 128, 128) and masks.dtype == np.uint8
    with Image.open(tmp_path / "validation" / "masks" / Path(files[1]).with_suffix(".png").name) as im:
        assert np.array_equal(masks[1], np.asarray(im))
    (tmp_path / "validation" / "masks" / Path(files[0]).with_suffix(".png").name).unlink()
    with pytest.raises(DefinitionError, match="mask not found"):
        load_masks(d, "validation", files)
    # a masks folder outside the definition's folder (a hostile bundle's definition) is refused
    # before anything is read, as every other path a definition names
    outside = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    shutil.copytree(tmp_path / "validation" / "masks", outside)
    d2 = d.model_copy(update={"validation": d.validation.model_copy(update={"masks": f"../{outside.name}"})})
    with pytest.raises(UserError, match="validation.masks"):
        load_masks(d2, "validation", files)
