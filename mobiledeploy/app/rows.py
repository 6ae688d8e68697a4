"""``app:<target>`` validation rows: the bundle's own app code, run on the JVM, judged.

The app's Android-free Kotlin core (``OUT/android/app/src/main/java/**/core``) is compiled as
found (an edited app is judged as edited; cached by the sources' digest under
``OUT/.mobiledeploy/jvm``) with a small driver (``templates/jvm/AppDriver.kt.j2``), one JVM
process per validation. Each validation image's decoded RGB pixels, at the image's own size, go
in as ARGB ints (what ``Bitmap.getPixels`` hands the app); the core's input bytes run through the
artifact in its Python runtime; the raw outputs go back to the core's post-processing; and what
the app would show is compared, stage by stage:

- pre-processing: ``pre_max_diff``, the core's input against the host's tensor for that artifact
  (dequantized, in model units), within one 8-bit level plus one quantization step;
- post-processing, on the same raw outputs: the core's dequantized values (``post_dequant_max_abs``),
  labels, masks, colours and boxes against the host's reading of them (exact);
- end to end, against what ``validate`` computed for the artifact on the host's tensor: top-1
  label agreement, mask pixel agreement, box recall/precision, with the artifact's own limits.
"""

from __future__ import annotations

import struct
import subprocess
import time
from pathlib import Path

import numpy as np

ROW_PREFIX = "app:"
DRIVER = "AppDriver.kt.j2"


class _Read:
    """Little-endian values from a driver's answer, in order."""

    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def more(self) -> bool:
        return self.at < len(self.data)

    def arr(self, dtype: str, n: int) -> np.ndarray:
        a = np.frombuffer(self.data, dtype, n, self.at)
        self.at += a.nbytes
        return a

    def int(self) -> int:
        return int(self.arr("<i4", 1)[0])

    def float(self) -> float:
        return float(self.arr("<f4", 1)[0])

    def text(self) -> str:
        n = self.int()
        s = self.data[self.at:self.at + n].decode("utf-8")
        self.at += n
        return s


class Driver:
    """The compiled core + driver in one JVM process; ``ask`` sends one command."""

    def __init__(self, cmd: list[str], workdir: Path):
        self.workdir = workdir
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.n = 0

    def ask(self, command: str, payload: bytes, *args) -> bytes:
        self.n += 1
        src, dst = self.workdir / f"req{self.n}.bin", self.workdir / f"ans{self.n}.bin"
        src.write_bytes(payload)
        try:
            self.proc.stdin.write(" ".join([command, str(src), str(dst), *map(str, args)]) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline().strip()
        except (BrokenPipeError, OSError):
            line = ""
        if line != "ok":
            why = line.removeprefix("error ") if line else (self.proc.stderr.read() or "exited").strip()[-300:]
            raise RuntimeError(f"the app core ({command}): {why}")
        data = dst.read_bytes()
        src.unlink()
        dst.unlink()
        return data

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


# --------------------------------------------------------------------------- the project


def find_core(project: Path) -> tuple[str, dict[str, str]] | None:
    """(package, ModelConfig constants) of a generated project's core, or None when it has none."""
    import re

    configs = sorted((Path(project) / "app/src/main/java").rglob("core/ModelConfig.kt"))
    if not configs:
        return None
    text = configs[0].read_text(encoding="utf-8")
    pkg = re.search(r"^package\s+([\w.]+)", text, re.M)
    consts = dict(re.findall(r'const val (\w+): \w+ = ("(?:[^"\\]|\\.)*"|[\w.+-]+)', text))
    consts = {k: v.strip('"') for k, v in consts.items()}
    return (pkg.group(1).removesuffix(".core") if pkg else ""), consts


def _driver_source(package: str, sources: dict[str, bytes]) -> bytes:
    import jinja2

    from ..resources import resource_dir

    text = (resource_dir("templates") / "jvm" / DRIVER).read_text(encoding="utf-8")
    names = {Path(n).name for n in sources}
    return jinja2.Template(text, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True).render(
        package=package, segmentation="Masks.kt" in names, detection="Detections.kt" in names).encode()


def _argb(path: str) -> tuple[int, int, np.ndarray]:
    """An image decoded to RGB at its own size, as ARGB int32 (opaque), row-major."""
    from PIL import Image

    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"), np.uint32)
    argb = (0xFF << 24) | (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    return rgb.shape[1], rgb.shape[0], argb.astype(np.uint32).view("<i4").reshape(-1)


# --------------------------------------------------------------------------- runtimes


def _tflite_runtime(path: Path, detector: bool):
    from ..backends.tflite.backend import make_interpreter

    interp = make_interpreter(path)
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    sig = None
    if detector:
        sig = next(iter(interp._get_full_signature_list().values()))["outputs"]
    return interp, inp, out, sig


def _row_limits(target, precision: str) -> dict[str, float]:
    """The end-to-end limits: the artifact's own where it sets them, else exact for float
    artifacts and 0.95 for quantized ones."""
    tol = target.tolerance.set_values()
    default = 1.0 if precision == "fp32" else 0.95
    return {k: tol.get(k, default) for k in ("min_top1_agreement", "min_pixel_agreement",
                                             "min_box_recall", "min_box_precision")}


def _host_dets(boxes, classes, scores):
    from ..tasks.detection.decode import Detections

    return Detections(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes, np.int64),
                      np.asarray(scores, np.float32))


def _read_dets(r: _Read, labels: list[str]):
    """The driver's detections per image, and whether every label text is the label file's."""
    out, names_ok = [], True
    while r.more():
        k = r.int()
        boxes, classes, scores = [], [], []
        for _ in range(k):
            boxes.append(r.arr("<f4", 4).copy())
            classes.append(r.int())
            scores.append(r.float())
            name = r.text()
            names_ok &= 0 <= classes[-1] < len(labels) and name == labels[classes[-1]]
        out.append(_host_dets(boxes, classes, scores))
    return out, names_ok


def _both_ways(a, b) -> tuple[float | None, float | None]:
    from ..tasks.detection.metrics import box_recall

    return box_recall(a, b, empty=None), box_recall(b, a, empty=None)


def _check(checks: list, stage: str, metric: str, value, limit: float, kind: str) -> None:
    if value is None:
        return
    ok = bool(value == value and (value <= limit if kind == "max" else value >= limit))
    checks.append({"key": f"{kind}_{metric}", "metric": metric, "value": value, "limit": limit,
                   "kind": kind, "ok": ok, "stage": stage})


def judge_target(drv: Driver, project: Path, art: dict, target, v, consts: dict, frames: bytes) -> dict:
    """Metrics and checks of one artifact through the app core (see the module doc)."""
    kind, batch, d = v.task.output_kind, v.batch, v.d
    path = v.bundle / art["path"]
    labels = d.labels_list()
    app_labels = str(project / "app/src/main/assets/labels.txt")
    n_img = len(batch)
    h, w = d.input.height, d.input.width
    pte = path.suffix == ".pte"
    detector = kind == "heads"
    checks: list[dict] = []
    m: dict = {}
    # ---- pre: the core's input bytes against the host's tensor for this artifact
    if pte:
        # the artifact's own backend module, through the registry (loaded by name: the conversions'
        # keys stay free of it; the validation's key holds every judged backend's folder)
        import importlib

        from ..backends.registry import backend_class

        _program, method = importlib.import_module(backend_class(art["backend"]).__module__)._load_method(path)
        in_dtype, qs, qz = "float32", 0.0, 0
        host_in = np.ascontiguousarray(batch.x, np.float32)  # NCHW: what PteRunner feeds
        executor = "ExecuTorch runtime"
    else:
        from ..backends.tflite.backend import dequantize, quantize
        from ..backends.tflite.metadata import artifact_input, read_model_metadata

        interp, inp, out, sig = _tflite_runtime(path, detector)
        in_dtype = np.dtype(inp["dtype"]).name
        qs, qz = (float(inp["quantization"][0]), int(inp["quantization"][1])) if in_dtype != "float32" else (0.0, 0)
        host_in = quantize(artifact_input(read_model_metadata(path)[0], batch), inp)
        executor = "LiteRT"
    core_in = np.frombuffer(drv.ask("pre", frames, in_dtype, repr(qs), qz), np.dtype(in_dtype).newbyteorder("<"))
    core_in = core_in.reshape(host_in.shape)

    def deq(x):
        x = np.asarray(x)
        return x.astype(np.float32) if in_dtype == "float32" else (x.astype(np.float32) - qz) * np.float32(qs)

    m["pre_max_diff"] = float(np.abs(deq(core_in) - deq(host_in)).max())
    scale = float(np.max(np.abs(np.asarray(d.input.normalise_affine()[0]))))
    _check(checks, "pre", "pre_max_diff", m["pre_max_diff"], scale + qs + 1e-5, "max")

    # ---- run the artifact on the core's bytes and on the host's
    def run(x1):
        if pte:
            import torch

            return [np.asarray(y.detach().numpy()) for y in method.execute([torch.from_numpy(np.array(x1))])]
        interp.set_tensor(inp["index"], x1)
        interp.invoke()
        if detector:
            return {k: interp.get_tensor(j) for k, j in sig.items()}
        return [interp.get_tensor(out["index"])]

    core_raw = [run(core_in[i:i + 1]) for i in range(n_img)]
    host_raw = [run(host_in[i:i + 1]) for i in range(n_img)]
    lim = _row_limits(target, target.precision)
    if kind == "scores":
        o_dtype = "float32" if pte else np.dtype(out["dtype"]).name
        oq = (0.0, 0) if pte or o_dtype == "float32" else (float(out["quantization"][0]), int(out["quantization"][1]))
        n = int(np.asarray(core_raw[0][0]).size)
        ans = _Read(drv.ask("cls", b"".join(np.ascontiguousarray(r[0]).tobytes() for r in core_raw),
                            app_labels, o_dtype, repr(oq[0]), oq[1], n))
        app_vals, app_label = [], []
        while ans.more():
            app_vals.append(ans.arr("<f4", n).copy())
            ans.int()
            ans.float()
            app_label.append(ans.text())
        hd = (lambda y: np.asarray(y, np.float32).reshape(-1)) if (pte or o_dtype == "float32") else \
            (lambda y: dequantize(np.asarray(y), out).reshape(-1))
        host_core = [hd(r[0]) for r in core_raw]
        host_host = [hd(r[0]) for r in host_raw]
        m["post_dequant_max_abs"] = float(max(np.abs(a - b).max() for a, b in zip(app_vals, host_core, strict=True)))
        m["post_label_agreement"] = float(np.mean([a == labels[int(np.argmax(y))]
                                                   for a, y in zip(app_label, host_core, strict=True)]))
        m["top1_agreement"] = float(np.mean([a == labels[int(np.argmax(y))]
                                             for a, y in zip(app_label, host_host, strict=True)]))
        _check(checks, "post", "post_dequant_max_abs", m["post_dequant_max_abs"], 1e-6, "max")
        _check(checks, "post", "post_label_agreement", m["post_label_agreement"], 1.0, "min")
        _check(checks, "end-to-end", "top1_agreement", m["top1_agreement"], lim["min_top1_agreement"], "min")
    elif kind == "dense":
        from ..tasks.segmentation.masks import palette

        o_dtype = "float32" if pte else np.dtype(out["dtype"]).name
        oq = (0.0, 0) if pte or o_dtype == "float32" else (float(out["quantization"][0]), int(out["quantization"][1]))
        n = int(np.asarray(core_raw[0][0]).size)
        ans = _Read(drv.ask("seg", b"".join(np.ascontiguousarray(r[0]).tobytes() for r in core_raw),
                            o_dtype, repr(oq[0]), oq[1], n))
        app_vals, app_mask, app_col = [], [], []
        while ans.more():
            app_vals.append(ans.arr("<f4", n).copy())
            app_mask.append(ans.arr("<i4", h * w).reshape(h, w).copy())
            app_col.append(ans.arr("<i4", h * w).reshape(h, w).copy())
        ncls = len(labels)

        def host_mask(y):
            y = np.asarray(y, np.float32) if (pte or o_dtype == "float32") else dequantize(np.asarray(y), out)
            return y.reshape(ncls, h, w).argmax(0) if pte else y.reshape(h, w, ncls).argmax(-1)

        pal = np.asarray([0 if k == 0 else (0xFF << 24) | (int(r) << 16) | (int(g) << 8) | int(b)
                          for k, (r, g, b) in enumerate(palette(ncls).tolist())], np.uint32).view("<i4")
        hd = (lambda y: np.asarray(y, np.float32).reshape(-1)) if (pte or o_dtype == "float32") else \
            (lambda y: dequantize(np.asarray(y), out).reshape(-1))
        core_masks = [host_mask(r[0]) for r in core_raw]
        host_masks = [host_mask(r[0]) for r in host_raw]
        m["post_dequant_max_abs"] = float(max(np.abs(a - hd(r[0])).max() for a, r in zip(app_vals, core_raw, strict=True)))
        m["post_pixel_agreement"] = float(np.mean([np.mean(a == b) for a, b in zip(app_mask, core_masks, strict=True)]))
        m["post_colour_agreement"] = float(np.mean([np.mean(cc == pal[b]) for cc, b in zip(app_col, core_masks, strict=True)]))
        m["pixel_agreement"] = float(np.mean([np.mean(a == b) for a, b in zip(app_mask, host_masks, strict=True)]))
        _check(checks, "post", "post_dequant_max_abs", m["post_dequant_max_abs"], 1e-6, "max")
        _check(checks, "post", "post_pixel_agreement", m["post_pixel_agreement"], 1.0, "min")
        _check(checks, "post", "post_colour_agreement", m["post_colour_agreement"], 1.0, "min")
        _check(checks, "end-to-end", "pixel_agreement", m["pixel_agreement"], lim["min_pixel_agreement"], "min")
    else:  # "heads": SSD class logits and box encodings
        mx = int(consts.get("MAX_DETECTIONS", "10"))
        if pte:
            from ..tasks.detection.decode import postprocess

            truth = v.truth
            payload = b"".join(np.ascontiguousarray(r[0], "<f4").tobytes() + np.ascontiguousarray(r[1], "<f4").tobytes()
                               for r in core_raw)
            anchors = project / "app/src/main/assets" / consts.get("ANCHORS_ASSET", "anchors.bin")
            app_dets, names_ok = _read_dets(_Read(drv.ask("det-raw", payload, app_labels, anchors)), labels)

            def decode(r):
                return postprocess(np.asarray(r[0], np.float32), np.asarray(r[1], np.float32), truth.anchors, truth.spec)[0]
        else:
            payload = b"".join(b"".join(np.ascontiguousarray(r[k], "<f4").reshape(-1)[:4 * mx if k == "detection_boxes" else mx]
                                        .tobytes() for k in ("detection_boxes", "detection_classes", "detection_scores"))
                               + np.ascontiguousarray(r["num_detections"], "<f4").reshape(-1)[:1].tobytes() for r in core_raw)
            app_dets, names_ok = _read_dets(_Read(drv.ask("det-op", payload, app_labels, mx)), labels)

            def decode(r):
                k = int(np.asarray(r["num_detections"]).ravel()[0])
                return _host_dets(r["detection_boxes"][0, :k], r["detection_classes"][0, :k], r["detection_scores"][0, :k])
        core_dets = [decode(r) for r in core_raw]
        host_dets = [decode(r) for r in host_raw]
        pr, pp = _both_ways(core_dets, app_dets)
        m["post_box_recall"], m["post_box_precision"] = pr, pp
        m["post_label_agreement"] = 1.0 if names_ok else 0.0
        m["box_recall"], m["box_precision"] = _both_ways(host_dets, app_dets)
        m["detections"] = float(sum(len(x) for x in app_dets))
        _check(checks, "post", "post_box_recall", pr, 1.0, "min")
        _check(checks, "post", "post_box_precision", pp, 1.0, "min")
        _check(checks, "post", "post_label_agreement", m["post_label_agreement"], 1.0, "min")
        _check(checks, "end-to-end", "box_recall", m["box_recall"], lim["min_box_recall"], "min")
        _check(checks, "end-to-end", "box_precision", m["box_precision"], lim["min_box_precision"], "min")
    return {"metrics": m, "checks": checks, "runtime": executor}


def app_rows(v, manifest: dict) -> list[dict]:
    """The ``app:<target>`` rows of a validation ``v`` (``validate/runner.Validation``): one per
    artifact the bundle's app loads (its runtime's targets); none when the bundle has no app."""
    import tempfile

    from ..errors import UserError
    from ..targets import ResolvedTarget
    from ..tolerance import LIMITS
    from ..trust import artifact_problem
    from ..validate.rows import row as make_row
    from . import model_targets
    from .jvm import ToolchainMissing, compile_kotlin, compiler_version, core_sources, java_command, toolchain

    project = v.bundle / "android"
    # what the app shows per task output: scores (top-k), dense (masks), heads (boxes)
    if v.task.output_kind not in ("scores", "dense", "heads"):
        return []
    found = find_core(project) if project.is_dir() else None
    if found is None:
        return []
    package, consts = found
    runtime = consts.get("RUNTIME", "litert")
    try:
        wanted = set(model_targets(runtime))
    except UserError:
        return []
    arts = [a for a in manifest["artifacts"] if a["target"] in wanted]
    rows = [make_row(ROW_PREFIX + a["target"], "fail", path="android") for a in arts]
    if not arts:
        return []
    t0 = time.monotonic()
    try:
        kc, _jv, _std = toolchain()
    except ToolchainMissing as exc:
        for r in rows:
            r.update(status="skipped", reason=f"the app core cannot run here: {exc}", seconds=0.0)
        return rows
    sources = core_sources(project)
    cache = v.bundle / ".mobiledeploy" / "jvm" if v.write else Path(tempfile.gettempdir()) / "mobiledeploy-jvm"
    try:
        jar, cached, secs = compile_kotlin({**sources, "AppDriver.kt": _driver_source(package, sources)}, cache)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        for r in rows:
            r.update(reason=f"the app core does not compile: {str(exc)[:400]}", stage="compile",
                     seconds=round(time.monotonic() - t0, 3))
        return rows
    frames = b"".join(struct.pack("<ii", w, h) + a.tobytes() for w, h, a in map(_argb, v.batch.files))
    with tempfile.TemporaryDirectory(prefix="mobiledeploy-app-") as tmp:
        drv = Driver(java_command(jar, f"{package}.core.AppDriverKt"), Path(tmp))
        try:
            for r, art in zip(rows, arts, strict=True):
                t1 = time.monotonic()
                r["compile_seconds"], r["compile_cached"] = secs, cached
                problem = artifact_problem(v.bundle, art)
                if problem:
                    r["reason"] = problem
                    continue
                try:
                    target = ResolvedTarget.from_record(art)
                    got = judge_target(drv, project, art, target, v, consts, frames)
                except Exception as exc:  # a runtime or core error fails this row, naming it
                    r["reason"] = f"the app core on {art['path']}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                    r["seconds"] = round(time.monotonic() - t1, 3)
                    continue
                r["executor"] = f"app core on the JVM (kotlinc {compiler_version(kc)}) + {got['runtime']}"
                r["metrics"], r["checks"] = got["metrics"], got["checks"]
                # every stage's limit in "limits"; the task's own keys also as the row's tolerance
                r["limits"] = {c["key"]: c["limit"] for c in got["checks"]}
                r["tolerance"] = {k: x for k, x in r["limits"].items() if k in LIMITS}
                bad = [c for c in got["checks"] if not c["ok"]]
                r["status"] = "fail" if bad else "pass"
                r["stage"] = bad[0]["stage"] if bad else ""
                stages = {"pre": "pre-processing", "post": "post-processing", "end-to-end": "end to end"}
                r["reason"] = "; ".join(
                    f"{stages[c['stage']]}: {c['metric']} {c['value']:.6g} {'>' if c['kind'] == 'max' else '<'} "
                    f"{c['limit']:.6g}" for c in bad)
                r["seconds"] = round(time.monotonic() - t1, 3)
        finally:
            drv.close()
    return rows
