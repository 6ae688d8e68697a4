"""Hostile files a definition names: labels, list files, images, weights, paths out of the folder.

Each case: `build` exits 2 with one bounded line before writing anything.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from tests.hostile.helpers import build_refused, cli, mini_data, refused, snapshot, write


def first_image(folder: Path) -> Path:
    return sorted(p for p in folder.rglob("*.jpg"))[0]


# ---------------------------------------------------------------- labels


def test_labels_is_a_folder(mini, tmp_path):
    (mini.parent / "labels.txt").unlink()
    (mini.parent / "labels.txt").mkdir()
    build_refused(mini, tmp_path, match="labels: .*is a folder")


def test_labels_symlink_loop(mini, tmp_path):
    (mini.parent / "labels.txt").unlink()
    os.symlink("labels.txt", mini.parent / "labels.txt")
    build_refused(mini, tmp_path, match="labels")


def test_labels_not_utf8(mini, tmp_path):
    (mini.parent / "labels.txt").write_bytes(b"circle\nsqu\xe9re\ntriangle\n")
    build_refused(mini, tmp_path, match="labels: .*not UTF-8")


def test_a_300_character_label(mini, tmp_path):
    (mini.parent / "labels.txt").write_text("circle\n" + "x" * 300 + "\n")
    line = build_refused(mini, tmp_path, match="longer than")
    assert "x" * 100 not in line


# ---------------------------------------------------------------- paths leaving the folder


@pytest.mark.parametrize("field,value", [
    ("labels", "../outside/labels.txt"),
    ("labels", "/etc/passwd"),
    ("weights", "../outside/w.safetensors"),
    ("calibration", {"source": "../outside"}),
    ("validation", {"source": "/"}),
    ("calibration", {"source": "/"}),
])
def test_paths_are_confined_to_the_definition_folder(mini, tmp_path, field, value):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "labels.txt").write_text("a\nb\n")
    (outside / "w.safetensors").write_bytes(b"x")
    data = mini_data()
    data[field] = value
    build_refused(write(mini.parent, data, "out.yaml"), tmp_path,
                  match="leaves the definition's folder|allow_outside_paths")


def test_root_as_image_source_is_refused_even_with_the_opt_in(mini, tmp_path):
    data = mini_data()
    data["calibration"] = {"source": "/"}
    data["allow_outside_paths"] = True
    build_refused(write(mini.parent, data, "root.yaml"), tmp_path, match="whole filesystem")


def test_the_opt_in_allows_outside_files(mini, tmp_path):
    outside = tmp_path / "shared"
    outside.mkdir()
    (mini.parent / "labels.txt").rename(outside / "labels.txt")
    data = mini_data()
    data["labels"] = str(outside / "labels.txt")
    refused(cli("show", write(mini.parent, data, "no.yaml")), match="allow_outside_paths")
    data["allow_outside_paths"] = True
    r = cli("show", write(mini.parent, data, "yes.yaml"))
    assert r.exit_code == 0, r.output


def test_symlinked_image_folder_leading_outside(mini, tmp_path):
    outside = tmp_path / "elsewhere"
    (outside / "circle").mkdir(parents=True)
    img = first_image(mini.parent / "validation")
    (outside / "circle" / "x.jpg").write_bytes(img.read_bytes())
    os.symlink(outside, mini.parent / "linked")
    data = mini_data()
    data["validation"] = {"source": "linked"}
    build_refused(write(mini.parent, data, "link.yaml"), tmp_path, match="leaves the definition's folder")


def test_weights_folder_says_folder_not_missing(mini, tmp_path):
    (mini.parent / "w.safetensors").mkdir()
    data = mini_data()
    data["weights"] = "w.safetensors"
    line = build_refused(write(mini.parent, data, "wdir.yaml"), tmp_path, match="is a folder")
    assert "not found" not in line


# ---------------------------------------------------------------- list files


def list_definition(mini: Path, lines: list[str], *, raw: bytes | None = None) -> Path:
    lst = mini.parent / "val.txt"
    if raw is not None:
        lst.write_bytes(raw)
    else:
        lst.write_text("".join(x + "\n" for x in lines))
    data = mini_data()
    data["validation"] = {"source": "val.txt"}
    return write(mini.parent, data, "list.yaml")


def test_list_entry_that_is_not_an_image(mini, tmp_path):
    p = list_definition(mini, ["../../../../../../../../etc/passwd square"])
    build_refused(p, tmp_path, match="not an image")


def test_list_entry_leaving_the_folder(mini, tmp_path):
    img = first_image(mini.parent / "validation")
    (tmp_path / "secret.jpg").write_bytes(img.read_bytes())
    p = list_definition(mini, ["../secret.jpg square"])
    build_refused(p, tmp_path, match="leaves the definition's folder")


def test_list_entry_absolute_path(mini, tmp_path):
    img = first_image(mini.parent / "validation")
    (tmp_path / "abs.jpg").write_bytes(img.read_bytes())
    p = list_definition(mini, [f"{tmp_path / 'abs.jpg'} square"])
    build_refused(p, tmp_path, match="leaves the definition's folder")


def test_list_file_not_utf8(mini, tmp_path):
    p = list_definition(mini, [], raw=b"validation/circle/a.jpg caf\xe9\n")
    build_refused(p, tmp_path, match="not UTF-8")


def test_list_label_not_in_labels(mini, tmp_path):
    img = first_image(mini.parent / "validation").relative_to(mini.parent)
    p = list_definition(mini, [f"{img} " + "no_such_label" * 50])
    line = build_refused(p, tmp_path, match="not in the labels file")
    assert "no_such_label" * 10 not in line


def test_labels_are_data_never_folders(mini, tmp_path):
    # a label that looks like a path round-trips through the bundle's list file as a string
    from mobiledeploy.images import list_images, write_image_list

    labels = ["../../../escape", "/abs/x", "two words", "7"]
    img = first_image(mini.parent / "validation")
    items = [(img, 0), (img, 1), (img, 2), (img, 3), (img, None)]
    bundle_model = tmp_path / "bundle" / "model"
    bundle_model.mkdir(parents=True)
    before = snapshot(tmp_path)
    name = write_image_list(bundle_model, "validation", labels, items)
    new = set(snapshot(tmp_path)) - set(before)
    assert all(p.startswith("bundle/model/") for p in new), new
    assert sorted(p.name for p in (bundle_model / "validation").iterdir()) == [
        f"{i:05d}.jpg" for i in range(5)]
    back = list_images(bundle_model / name, labels, root=bundle_model)
    assert [lab for _, lab in back] == [0, 1, 2, 3, None]


# ---------------------------------------------------------------- images


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height (no pixel data): what a decompression bomb looks like."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("split", ["validation", "calibration"])
def test_decompression_bomb_image(mini, tmp_path, split):
    png_header_only(mini.parent / split / "circle" / "bomb.png", 20000, 20000)
    build_refused(mini, tmp_path, match="megapixels|decode")


@pytest.mark.parametrize("content", [b"not an image at all", b"\x89PNG\r\n\x1a\n\x00\x00"])
def test_corrupt_calibration_image_is_found_before_any_conversion(mini, tmp_path, content):
    (mini.parent / "calibration" / "circle" / "broken.png").write_bytes(content)
    build_refused(mini, tmp_path, match="cannot decode image")


# ---------------------------------------------------------------- weights


def tiny_state(mini: Path) -> dict[str, np.ndarray]:
    from mobiledeploy.architectures.reference import expected_shapes
    from mobiledeploy.definition import load_definition

    spec = load_definition(mini).architecture_spec()
    rng = np.random.default_rng(0)
    return {k: rng.normal(size=s).astype(np.float32) for k, s in expected_shapes(spec).items()}


@pytest.mark.parametrize("fault", ["float16", "int8", "float64", "nan", "inf"])
def test_bad_weights_are_refused_up_front_naming_the_tensor(mini, tmp_path, fault):
    from safetensors.numpy import save_file

    state = tiny_state(mini)
    name = "blocks.1.dw.conv.weight"
    if fault in ("nan", "inf"):
        state[name].flat[3] = np.nan if fault == "nan" else np.inf
    else:
        state[name] = state[name].astype(fault)
    save_file(state, str(mini.parent / "w.safetensors"))
    data = mini_data()
    data["weights"] = "w.safetensors"
    build_refused(write(mini.parent, data, "w.yaml"), tmp_path, match=f"tensor '{name}'")


def test_good_weights_pass_the_up_front_check(mini):
    from safetensors.numpy import save_file

    from mobiledeploy.architectures.reference import check_weights_file
    from mobiledeploy.definition import load_definition

    save_file(tiny_state(mini), str(mini.parent / "w.safetensors"))
    data = mini_data()
    data["weights"] = "w.safetensors"
    check_weights_file(load_definition(write(mini.parent, data, "w.yaml")))  # no error
