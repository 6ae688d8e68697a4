"""`mobiledeploy sweep` refuses bad sweep files: one line naming the field, exit 2, nothing written.
And the Pareto front, with the arithmetic written out."""

from __future__ import annotations

import pytest

from tests.conftest import run_cli, tiny_data, write_definition

BAD = [
    ("base: nope.yaml\n", "base: nope.yaml not found"),
    ("base: tiny.yaml\naxes: {width: [0.5, 9.0]}\n", "axes (variant v02: width=9.0): architecture.width_multiplier"),
    ("base: tiny.yaml\naxes: {architecture.colour: [1]}\n", "architecture.colour: unknown key"),
    ("base: tiny.yaml\naxes: {resolution: [32, big]}\n", "axes.resolution: resolution is one integer"),
    ("base: tiny.yaml\ntargets: [tflite-int8]\naxes: {lowering: [hswish, fast]}\n",
     "target_options.tflite-int8.lowering: 'fast' is not allowed"),
    ("base: tiny.yaml\naxis: {}\n", "axis: unknown key; allowed: base"),
    ("base: tiny.yaml\ntargets: [tflite-int9]\n", "targets[0]: unknown target 'tflite-int9'"),
    ("base: tiny.yaml\ntrain: {images: 5}\n", "train.images: Input should be greater than or equal to 10"),
    ("base: shapes.yaml\naxes: {width: [0.5]}\n", "weights: tensor 'stem.conv.weight' has shape"),
    ('base: tiny.yaml\naxes: {"width,weights": [[0.5]]}\n', "axes.width,weights[0]: a linked axis takes lists of 2"),
    ("base: tiny.yaml\naxes: {width: []}\n", "axes.width: an axis needs at least one value"),
    ("base: tiny.yaml\naxes: {base_dir: [/etc]}\n", "base_dir is not a definition field"),
    # an axis value is a path of the definition: confined to its folder like the file's own
    ("base: tiny.yaml\naxes: {weights: [/etc/passwd]}\n", "weights: /etc/passwd leaves the definition's folder"),
    ("base: tiny.yaml\naxes: {labels: [../../../etc/passwd]}\n", "labels=../../../etc/passwd): labels: "),
    # two axes on one field: the later would silently overwrite the earlier
    ("base: tiny.yaml\naxes: {width: [0.5], architecture.width_multiplier: [1.0]}\n",
     "architecture.width_multiplier sets architecture.width_multiplier, which width of axis 'width' sets too"),
    ("base: tiny.yaml\naxes: {resolution: [32], input: [{height: 40, width: 40}]}\n",
     "axes.input: input sets input, which resolution of axis 'resolution' sets too"),
    ('base: tiny.yaml\naxes: {"seed, seed": [[1, 2]]}\n', "seed of the same axis sets too"),
    ("base: tiny.yaml\ntargets: [tflite-int8]\naxes: {lowering: [none], target_options.tflite-int8.lowering: "
     "[hswish]}\n", "which lowering of axis 'lowering' sets too"),
]


@pytest.mark.parametrize("text,expected", BAD, ids=[b[1][:30] for b in BAD])
def test_bad_sweep_file_names_the_field(example_copy, text, expected):
    from mobiledeploy.errors import DefinitionError
    from mobiledeploy.sweep.spec import load_sweep

    write_definition(example_copy, tiny_data(), "tiny.yaml")
    (example_copy / "bad.yaml").write_text(text)
    with pytest.raises(DefinitionError) as exc:
        load_sweep(example_copy / "bad.yaml")
    msg = str(exc.value)
    assert "\n" not in msg and expected in msg and "bad.yaml" in msg, msg


def test_bad_sweep_file_is_one_line_exit_2_nothing_written(example_copy, tmp_path):
    write_definition(example_copy, tiny_data(), "tiny.yaml")
    (example_copy / "bad.yaml").write_text(BAD[1][0])
    out = tmp_path / "out"
    r = run_cli("sweep", str(example_copy / "bad.yaml"), "-o", str(out), "--no-ray", "--cache", str(tmp_path / "c"))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and BAD[1][1] in lines[0], r.stderr
    assert not out.exists() and not (tmp_path / "c").exists()


def test_sweep_help_imports_neither_ray_nor_plotting():
    import subprocess
    import sys

    code = ("import sys\nfrom mobiledeploy.cli import main\ntry:\n    main(['sweep', '--help'], prog_name='m')\n"
            "except SystemExit:\n    pass\n"
            "print(sorted(m for m in ('tensorflow', 'torch', 'ray', 'matplotlib', 'fsspec') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "--address" in out.stdout and "--no-ray" in out.stdout, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


def test_pareto_front_arithmetic():
    from mobiledeploy.sweep.report import pareto

    rows = [{"latency_ms": 1.0, "accuracy": 0.90},   # front: fastest
            {"latency_ms": 2.0, "accuracy": 0.95},   # front: more accurate than anything faster
            {"latency_ms": 2.5, "accuracy": 0.94},   # beaten by row 1 (faster and more accurate)
            {"latency_ms": 3.0, "accuracy": 0.95},   # beaten by row 1 (same accuracy, slower)
            {"latency_ms": 4.0, "accuracy": 0.99},   # front: the most accurate
            {"latency_ms": None, "accuracy": 1.0},   # not measured: not a point
            {"latency_ms": 0.5, "accuracy": None, "agreement": 0.5}]  # agreement stands in: front
    assert pareto(rows) == {0, 1, 4, 6}


def test_a_cache_url_of_no_known_protocol_is_one_line_exit_2(example_copy, tmp_path):
    write_definition(example_copy, tiny_data(), "tiny.yaml")
    (example_copy / "s.yaml").write_text("base: tiny.yaml\ntargets: [tflite-fp32]\n")
    out = tmp_path / "out"
    r = run_cli("sweep", str(example_copy / "s.yaml"), "-o", str(out), "--no-ray", "--cache", "nosuchproto://x")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--cache nosuchproto://x" in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert not out.exists()


def test_fronts_rank_passing_rows_only_and_draw_failing_ones_apart(tmp_path):
    """A failing row that is faster and more accurate than every passing one is not on the front
    (the README's table once starred such a row); the front is of the passing rows; the plot is
    drawn with the failing row apart."""
    from mobiledeploy.sweep.report import render_html, write_report

    def row(v, lat, acc, status):
        return {"variant": v, "label": v, "values": {}, "target": "tflite-int8", "status": status, "reason": "",
                "accuracy": acc, "agreement": acc, "accuracy_metric": "top1_accuracy",
                "agreement_metric": "top1_agreement", "snr_db": 20.0, "latency_ms": lat, "latency_p90_ms": lat,
                "bytes": 1000, "edgetpu_cpu_ops": None, "macs": 1, "artifact": None, "keys": {},
                "node": "n1", "steps": [{"step": "build", "node": "n1", "seconds": 1.0, "start": 100.0, "ran": True}]}

    rows = [row("v01", 1.0, 0.99, "fail"), row("v02", 2.0, 0.90, "pass"), row("v03", 3.0, 0.95, "pass"),
            row("v04", 4.0, 0.93, "pass"), row("v05", None, None, "error")]
    result = {"name": "s", "variants": rows, "executor": "local", "cache": "c", "rows": rows,
              "stats": {"conversions": 0, "cached": 0}}
    write_report(tmp_path, result, store=None, say=print)
    assert [r["pareto"] for r in rows] == [False, True, True, False, False]
    assert result["fronts"] == {"tflite-int8": ["v02", "v03"]}
    assert (tmp_path / "plots" / "tflite-int8.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "plots" / "timeline.png").read_bytes()[:4] == b"\x89PNG"
    html = render_html(result)
    assert "v01</td><td>fail" in html and "v01 ★" not in html and "v02 ★" in html
