"""Hostile definitions: YAML abuse, non-finite and absurd numbers, duplicated keys.

Each case: `build` exits 2 with one bounded line, writes nothing, and is quick.
"""

from __future__ import annotations

import time

import pytest

from tests.hostile.helpers import build_refused, mini_data, write


def _yaml(mini_path, text: str):
    p = mini_path.parent / "bad.yaml"
    p.write_text(text)
    return p


def test_alias_bomb_fails_fast_with_one_short_line(mini, tmp_path):
    rows = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        rows.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    base = mini.read_text()
    text = "\n".join(rows) + "\n" + base.replace("labels: labels.txt", "labels: *a8")
    t0 = time.monotonic()
    line = build_refused(_yaml(mini, text), tmp_path, match="aliases|expands")
    assert time.monotonic() - t0 < 5
    assert "lol" not in line


def test_alias_expansion_below_the_alias_count_is_still_bounded(mini, tmp_path):
    # 9 anchors, each 30 aliases deep: few aliases, 30**9 values once expanded
    rows = ["a0: &a0 [x]"] + [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 25) + "]" for i in range(1, 10)]
    rows = rows[:1] + [r.replace(",".join(["*a0"] * 25), ",".join(["*a0"] * 25)) for r in rows[1:]]
    text = "\n".join(rows) + "\n" + mini.read_text().replace("labels: labels.txt", "labels: *a9")
    build_refused(_yaml(mini, text), tmp_path, match="aliases|expands")


def test_recursive_alias_is_refused(mini, tmp_path):
    text = "loop: &l [*l]\n" + mini.read_text()
    build_refused(_yaml(mini, text), tmp_path)


@pytest.mark.parametrize("opener,closer", [("[", "]"), ("{a: ", "}")])
def test_deep_nesting_is_one_line_not_a_recursion_error(mini, tmp_path, opener, closer):
    depth = 5000
    text = mini.read_text() + "deep: " + opener * depth + "1" + closer * depth + "\n"
    build_refused(_yaml(mini, text), tmp_path, match="nested deeper")


def test_huge_file_is_refused_before_parsing(mini, tmp_path):
    text = mini.read_text() + "#" + "x" * (2 << 20) + "\n"
    build_refused(_yaml(mini, text), tmp_path, match="kB")


@pytest.mark.parametrize("old,new,where", [
    ("name: mini\n", "name: other\nname: mini\n", "name"),
    ("  height: 32\n", "  height: 32\n  height: 64\n", "height"),
])
def test_duplicate_keys_are_an_error_not_last_wins(mini, tmp_path, old, new, where):
    build_refused(_yaml(mini, mini.read_text().replace(old, new, 1)), tmp_path,
                  match=f"duplicate key {where}")


def test_non_utf8_definition(mini, tmp_path):
    p = mini.parent / "latin1.yaml"
    p.write_bytes(mini.read_bytes() + "# caf\xe9\n".encode("latin-1"))
    build_refused(p, tmp_path, match="UTF-8")


@pytest.mark.parametrize("path,value,match", [
    (("input", "std"), [0.25, ".nan", 0.25], "finite"),
    (("input", "mean"), [".inf", 0.5, 0.5], "finite"),
    (("input", "pixel_range"), [0.0, ".inf"], "finite"),
    (("input", "pixel_range"), ["-.inf", 1.0], "finite"),
    (("input", "std"), [1e-320, 0.25, 0.25], "non-finite or absurd"),
    (("input", "pixel_range"), [0.0, 1e308], "non-finite or absurd"),
    (("architecture", "head", "dropout"), ".nan", "finite"),
    (("seed",), 2**70, "less than or equal"),
    (("seed",), -1, "greater than or equal"),
    (("calibration", "max_images"), -3, "greater than or equal"),
])
def test_bad_numbers_are_refused_up_front(mini, tmp_path, path, value, match):
    import yaml

    data = mini_data()
    node = data
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    text = yaml.safe_dump(data, sort_keys=False).replace("'.nan'", ".nan").replace(
        "'.inf'", ".inf").replace("'-.inf'", "-.inf")
    build_refused(_yaml(mini, text), tmp_path, match=match)


def test_width_multiplier_nan_says_finite_not_le_4(mini, tmp_path):
    data = mini_data()
    data["architecture"] = {"preset": "mobilenet_v3_small", "width_multiplier": "__NAN__"}
    import yaml

    text = yaml.safe_dump(data, sort_keys=False).replace("'__NAN__'", ".nan").replace("__NAN__", ".nan")
    assert "width_multiplier: .nan" in text  # a YAML float NaN, not the string "NAN"
    line = build_refused(_yaml(mini, text), tmp_path, match="finite")
    assert "<= 4" not in line


def test_tolerance_nan_is_refused(mini, tmp_path):
    data = mini_data()
    data["tolerances"] = {"tflite-fp32": {"max_abs": "NAN"}}
    import yaml

    text = yaml.safe_dump(data, sort_keys=False).replace("'NAN'", ".nan")
    build_refused(_yaml(mini, text), tmp_path, match="finite")


@pytest.mark.parametrize("target,option,value", [
    ("tflite-int8", "calibration_samples", -5),
    ("executorch-xnnpack-int8", "calibration_samples", 0),
    ("tflite-int8", "calibration_samples", 10**30),
])
def test_target_option_counts_are_checked(mini, tmp_path, target, option, value):
    data = mini_data()
    data["target_options"] = {target: {option: value}}
    build_refused(write(mini.parent, data, "opt.yaml"), tmp_path, match=option)


@pytest.mark.parametrize("row", [[3, 10**9, 16, False, "relu", 1], [3, 16000, 16000, False, "relu", 1]])
def test_absurd_expansion_without_weights_is_refused_before_allocating(mini, tmp_path, row):
    data = mini_data()
    data["architecture"] = {**data["architecture"], "blocks": [row] * 4}
    t0 = time.monotonic()
    build_refused(write(mini.parent, data, "big.yaml"), tmp_path, match="less than or equal|parameters")
    assert time.monotonic() - t0 < 10


def test_unbounded_value_is_never_echoed(mini, tmp_path):
    data = mini_data()
    data["name"] = "A" * 100_000
    line = build_refused(write(mini.parent, data, "long.yaml"), tmp_path)
    assert "A" * 200 not in line


def test_huge_list_value_is_never_echoed(mini, tmp_path):
    data = mini_data()
    data["labels"] = ["x" * 50] * 5000
    line = build_refused(write(mini.parent, data, "list.yaml"), tmp_path)
    assert len(line) < 400


@pytest.mark.parametrize("app", [
    {"app_name": "bell\x07name"},
    {"app_name": "\ud800 lone"},
    {"application_id": "com." + "a" * 300 + ".x"},
])
def test_unsafe_app_strings_are_refused_in_the_definition(mini, tmp_path, app):
    data = mini_data()
    data["android"] = app
    p = mini.parent / "app.yaml"
    import yaml

    # a YAML escape is how a lone surrogate gets into a definition
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=False)
    p.write_text(text)
    build_refused(p, tmp_path, match="app_name|application id|application_id")


def test_a_good_mini_definition_passes_the_checks(mini):
    # the control: the same folder without the abuse is accepted
    from mobiledeploy.definition import load_definition

    d = load_definition(mini)
    assert d.num_classes == 10 and not d.allow_outside_paths
