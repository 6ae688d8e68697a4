"""What an int8 conversion's key reads of the calibration images: their pixels (and names,
labels), not their labelled truth; validation's key keeps the truth (pipeline/keys.py)."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import ROOT


@pytest.mark.parametrize("example,truth", [("shapes_seg", "calibration/masks/0000.png"),
                                           ("shapes_det", "calibration/boxes.json")])
def test_calibration_truth_is_not_in_the_int8_key(tmp_path, example, truth):
    from mobiledeploy.definition import load_definition
    from mobiledeploy.digests import FileDigests, using
    from mobiledeploy.pipeline.keys import images_digest

    folder = tmp_path / example
    shutil.copytree(ROOT / "examples" / example, folder)
    defn = folder / f"{example}.yaml"

    def keys():
        with using(FileDigests(None)):  # nothing remembered between the edits
            d = load_definition(defn)
            return images_digest(d, "calibration", truth=False), images_digest(d, "calibration")

    pixels, judged = keys()
    t = folder / truth
    t.write_bytes(t.read_bytes() + b" " if t.suffix == ".json" else _other_png(t))
    pixels2, judged2 = keys()
    assert pixels2 == pixels, "an edited calibration mask or box must not rebuild int8 artifacts"
    assert judged2 != judged, "the truth is still read where it is judged"
    img = sorted((folder / "calibration" / "images").iterdir())[0]
    img.write_bytes(img.read_bytes() + b"\0")
    assert keys()[0] != pixels, "a changed calibration image changes the int8 key"


def _other_png(path) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    a = np.asarray(Image.open(path)).copy()
    a[0, 0] = (int(a[0, 0].flat[0]) + 1) % 2 if a.ndim == 2 else a[0, 0]
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()
