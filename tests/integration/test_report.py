"""report/index.html: content, escaping, strictness, and that a real browser draws it."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from mobiledeploy.validate.report import render_html


def _row(target, status, per_sample=None, **kw):
    rng = np.random.default_rng(len(target))
    per = per_sample if per_sample is not None else list(10 ** rng.uniform(-7, -5, 20))
    row = {"target": target, "status": status, "executor": "test executor", "tolerance": {},
           "metrics": {}, "reason": "", "seconds": 0.5}
    if status != "skipped":
        row["per_sample_max_abs"] = per
    row.update(kw)
    return row


def sample_report(status="fail"):
    fail = _row("tflite-int8", "fail", metrics={"snr_db": 4.2, "top1_agreement": 0.41, "max_abs": 3.1,
                                                 "top1_accuracy": 0.4},
                tolerance={"min_snr_db": 12.0, "min_top1_agreement": 0.95},
                reason="snr_db 4.2 < 12 (min_snr_db); top1_agreement 0.41 < 0.95 (min_top1_agreement)",
                localization={"first_divergent_layer": "blocks.3.dw", "metric": "snr_db", "value": 3.5,
                              "threshold_db": 12.0, "largest_drop": None, "matched_layers": 3,
                              "samples": 4, "executor": "litert",
                              "layers": [{"layer": "stem", "shape": [16, 56, 56], "snr_db": 33.0,
                                          "matched": "m/stem_act/Mul"},
                                         {"layer": "blocks.3.dw", "shape": [96, 7, 7], "snr_db": 3.5,
                                          "matched": "m/blocks_3_dw_act/Mul", "scale": 6.0},
                                         {"layer": "head", "shape": [10], "snr_db": 2.0,
                                          "matched": "out"}]})
    rows = [
        _row("reference-pytorch", "pass", per_sample=[], metrics={"top1_accuracy": 0.9}),
        _row("tflite-fp32", "pass", metrics={"max_abs": 2e-6, "snr_db": 110.0, "top1_agreement": 1.0},
             tolerance={"max_abs": 1e-4, "min_top1_agreement": 1.0}),
        _row("coreml-fp16", "skipped", reason="coremltools is not installed: pip install 'mobiledeploy[coreml]'"),
    ]
    if status == "fail":
        rows.append(fail)
    return {"name": "shapes", "reference": "pytorch", "samples": 20, "labelled": 20, "status": status,
            "mobiledeploy_version": "0.0.0", "results": rows}


MANIFEST = {"name": "shapes", "reference": {"seeded_weights": False},
            "artifacts": [{"target": "tflite-fp32", "path": "tflite/shapes_fp32.tflite", "bytes": 6_000_000},
                          {"target": "tflite-int8", "path": "tflite/shapes_int8.tflite", "bytes": 1_700_000},
                          {"target": "coreml-fp16", "path": "coreml/shapes_fp16.mlpackage", "bytes": 3_100_000}]}


def test_report_names_failures_skips_and_localisation():
    html = render_html(sample_report(), MANIFEST)
    assert re.search(r'class="banner fail">\s*<span class="big">FAIL', html)
    # the failing limit, its value, the reason and the first divergent layer are all on the page
    assert "min_snr_db" in html and "≥ 12" in html and "4.2" in html
    assert "First divergent layer: <code>blocks.3.dw</code>" in html
    # skipped is shown as skipped with its reason, never with a pass badge
    card = html.split('id="t-coreml-fp16"')[1].split("</section>")[0]
    assert 'badge skipped' in card and "badge pass" not in card
    assert "Skipped, not judged" in card and "pip install" in card
    # plots are inline SVG: error boxes, agreement bars, sizes, per-layer SNR
    assert html.count("<svg") == 4
    assert "1.6 MB" in html  # 1_700_000 bytes
    assert not re.search(r'(src|href)="https?:', html) and "<script" not in html


def test_report_pass_banner_and_seeded_note():
    html = render_html(sample_report("pass"), {**MANIFEST, "reference": {"seeded_weights": True}})
    assert re.search(r'class="banner pass">\s*<span class="big">PASS', html)
    assert "seeded initialisation" in html
    assert "1 skipped" in html


def test_report_escapes_and_is_strict():
    rep = sample_report()
    rep["results"][-1]["reason"] = "<script>alert(1)</script>"
    html = render_html(rep, MANIFEST)
    assert "<script>" not in html and "&lt;script&gt;" in html
    from jinja2 import UndefinedError

    del rep["samples"]
    with pytest.raises((KeyError, UndefinedError)):
        render_html(rep, MANIFEST)


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def screenshot(html_path: Path, png: Path, height: int = 2000) -> None:
    """Headless Chromium, no network, no profile: what a reviewer sees opening the file."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        "--no-first-run", f"--user-data-dir={profile}", f"--screenshot={png}",
                        f"--window-size=1280,{height}", html_path.resolve().as_uri()],
                       capture_output=True, timeout=120, check=False)


@pytest.mark.slow
@pytest.mark.parametrize("status", ["fail", "pass"])
def test_report_renders_in_headless_chromium(tmp_path, status):
    from tests.conftest import need_tool

    need_tool("chromium", "chromium-browser", "google-chrome", install="apt-get install chromium")
    pytest.importorskip("PIL")
    from PIL import Image

    page = tmp_path / "index.html"
    page.write_text(render_html(sample_report(status), MANIFEST), encoding="utf-8")
    png = tmp_path / "shot.png"
    screenshot(page, png)
    assert png.is_file() and png.stat().st_size > 10_000
    im = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert im.shape[:2] == (2000, 1280)
    assert im.std() > 20, "the screenshot is blank"
    # the banner is drawn in its status colour near the top of the page
    want = np.array({"fail": (0xCF, 0x22, 0x2E), "pass": (0x1A, 0x7F, 0x37)}[status])
    banner = im[20:90, 60:1200].reshape(-1, 3)
    assert (np.abs(banner - want).sum(1) < 12).mean() > 0.5
    # text and plots below the banner: many dark pixels, not just background
    body = im[200:1400]
    assert ((body.sum(-1) < 300).mean()) > 0.005


def test_numbers_are_never_rounded_into_a_lie():
    from mobiledeploy.validate.report import fmt

    # .4g would print the fp32 cosine limit 0.99999 as "1", hiding why 0.99998 fails
    assert fmt(0.99999) == "0.99999" and fmt(0.99998) == "0.99998"
    assert fmt(123.96224) == "124" and fmt(1e-4) == "1.000e-04" and fmt(12.0) == "12"
    assert fmt(float("inf")) == "∞" and fmt(float("-inf")) == "−∞" and fmt(None) == "—"
