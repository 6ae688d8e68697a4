"""Property-based hostile inputs (hypothesis): whatever text or structure arrives, the guards
answer with data or one DefinitionError, never another exception, never an unbounded message,
never a path outside the folder."""

from __future__ import annotations

import string
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mobiledeploy.errors import DefinitionError  # noqa: E402
from mobiledeploy.safety import clip, load_yaml_bounded  # noqa: E402

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# any text, lone surrogates included (what a YAML "\ud800" escape produces)
TEXT = st.text(alphabet=st.characters(codec=None), max_size=400)


@FAST
@given(s=TEXT, limit=st.integers(2, 200))
def test_clip_is_bounded_one_line_and_encodable(s, limit):
    out = clip(s, limit)
    assert len(out) <= limit and "\n" not in out and "\r" not in out
    out.encode("utf-8")  # printable in any terminal line


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | TEXT,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(string.ascii_letters, max_size=8),
                                                                inner, max_size=6),
    max_leaves=40)


@FAST
@given(doc=yaml_values)
def test_bounded_yaml_reads_what_safe_load_reads_or_refuses_in_one_line(tmp_path, doc):
    try:
        text = yaml.safe_dump(doc, allow_unicode=True)
    except (yaml.YAMLError, UnicodeEncodeError):
        return  # not representable as YAML: nothing to load
    p = tmp_path / "d.yaml"
    try:
        p.write_text(text, encoding="utf-8")
    except UnicodeEncodeError:
        return
    try:
        got = load_yaml_bounded(p)
    except DefinitionError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 600
        return
    # the same data PyYAML's SafeLoader gives (compared as dumped text: NaN != NaN)
    assert yaml.safe_dump(got, allow_unicode=True) == yaml.safe_dump(yaml.safe_load(text), allow_unicode=True)


@FAST
@given(junk=st.binary(max_size=300))
def test_arbitrary_bytes_as_a_definition_are_one_line_errors(tmp_path, junk):
    from mobiledeploy.definition import load_definition

    p = tmp_path / "junk.yaml"
    p.write_bytes(junk)
    with pytest.raises(DefinitionError) as info:
        load_definition(p)
    assert "\n" not in str(info.value) and len(str(info.value)) < 700


label_text = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")),
                     min_size=1, max_size=40).map(str.strip).filter(lambda s: s and not s.startswith("#"))


@FAST
@given(labels=st.lists(label_text, min_size=2, max_size=6, unique=True))
def test_labels_round_trip_through_the_bundle_list_and_stay_data(tmp_path, labels):
    from mobiledeploy.images import list_images, write_image_list
    from tests.conftest import EXAMPLE

    img = sorted((EXAMPLE / "validation").rglob("*.jpg"))[0]
    folder = Path(tmp_path) / f"m{abs(hash(tuple(labels)))}"
    folder.mkdir()
    items = [(img, i) for i in range(len(labels))] + [(img, None)]
    name = write_image_list(folder, "validation", labels, items)
    created = {p.relative_to(folder).as_posix() for p in folder.rglob("*")}
    assert created == {"validation", name} | {f"validation/{i:05d}.jpg" for i in range(len(items))}
    back = list_images(folder / name, labels, root=folder)
    assert [lab for _, lab in back] == [lab for _, lab in items]


@FAST
@given(name=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=50))
def test_any_accepted_app_name_gives_well_formed_strings_xml(name):
    from pydantic import ValidationError

    from mobiledeploy.app import android_string, template_dir
    from mobiledeploy.definition import AndroidSpec

    try:
        spec = AndroidSpec(app_name=name)
    except ValidationError:
        return  # refused up front, one line (the definition tests cover the message)
    from types import SimpleNamespace

    from mobiledeploy.app import _environment

    template = _environment(template_dir()).get_template("app/src/main/res/values/strings.xml.j2")
    for seg, det in ((False, False), (True, False), (False, True)):  # classifier, segmenter, detector
        xml = template.render(app_name=spec.app_name, ctx=SimpleNamespace(segmentation=seg, detection=det))
        root = ET.fromstring(xml.encode("utf-8"))
        el = next(e for e in root if e.get("name") == "app_name")
        assert el.get("formatted") == "false"  # a % is text, not a format specifier
        assert el.text == android_string(spec.app_name)
