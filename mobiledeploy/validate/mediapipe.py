"""A real metadata client as a validation row: MediaPipe Tasks' ImageClassifier on each .tflite.

MediaPipe takes the preprocessing (one mean/std, colour space) and the labels from the model's
metadata alone, so a row ``mediapipe:<target>`` checks what the metadata says, not only what the
graph computes: a wrong mean/std in the metadata fails here. MediaPipe's dependencies do not fit
beside TensorFlow, so it runs in its own virtual environment (``make mediapipe-venv``) through
``mobiledeploy/mediapipe_runner.py``; rows appear when that environment is found.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

ENV = "MOBILEDEPLOY_MEDIAPIPE_PYTHON"
VENV = ".venv-mediapipe"
ROW_PREFIX = "mediapipe:"
RUNNER = Path(__file__).resolve().parents[1] / "mediapipe_runner.py"


def mediapipe_python() -> Path | None:
    """The MediaPipe environment's python: $MOBILEDEPLOY_MEDIAPIPE_PYTHON (``none`` turns MediaPipe
    off), else a .venv-mediapipe in the working directory or beside the mobiledeploy sources; None
    when there is none."""
    env = os.environ.get(ENV)
    if env is not None:  # "" or "none" turns the rows off; a path that is not there fails the rows
        return None if env.strip().lower() in ("", "none") else Path(env)
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        cand = root / VENV / "bin" / "python"
        if cand.is_file():
            return cand
    return None


def mediapipe_version() -> str:
    """What a cached validation must key on: the MediaPipe version of the environment validation
    would use ("none" without one), read from its installed metadata (no process started)."""
    python = mediapipe_python()
    if python is None:
        return "none"
    venv = Path(python).parent.parent
    found = sorted(venv.glob("lib/python*/site-packages/mediapipe-*.dist-info"))
    return found[-1].name.removesuffix(".dist-info").removeprefix("mediapipe-") if found else f"at {python}"


def run_mediapipe(model: Path, pixels: np.ndarray | None = None, *, metadata: bool = False,
                  python: Path | None = None, timeout: int = 600) -> dict:
    """Run the MediaPipe runner on ``model``: classify ``pixels`` (N, H, W, 3 RGB uint8) or read its
    metadata with MediaPipe's schema. Returns the runner's JSON ({"error": ...} on failure)."""
    python = python or mediapipe_python()
    if python is None:
        return {"error": f"no MediaPipe environment (set {ENV} or run `make mediapipe-venv`)"}
    with tempfile.TemporaryDirectory(prefix="mobiledeploy-mp-") as tmp:
        args = [str(python), str(RUNNER), str(model)]
        if metadata:
            args.append("--metadata")
        else:
            npy = Path(tmp) / "pixels.npy"
            np.save(npy, np.ascontiguousarray(pixels, dtype=np.uint8))
            args += ["--pixels", str(npy)]
        env = {**os.environ, "GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "2"}
        try:
            res = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return {"error": f"{python}: {exc}"}
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = (res.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"MediaPipe runner exited {res.returncode}: {tail}"}
    return json.loads(lines[-1])


def mediapipe_row(bundle: Path, art: dict, batch, ref, ref_acc, finish, make_row) -> dict | None:
    """The ``mediapipe:<target>`` row of one artifact, or None (not a .tflite, its own row fails
    already, or no MediaPipe environment)."""
    import time

    from ..bundle import sha256_path
    from ..errors import UserError
    from ..targets import ResolvedTarget

    python = mediapipe_python()
    if python is None:
        return None
    path = bundle / art["path"]
    if path.suffix != ".tflite" or not path.is_file() or sha256_path(path) != art["sha256"]:
        return None  # the artifact's own row already fails for a missing or changed file
    try:
        target = ResolvedTarget.from_record(art)  # judged with the limits the artifact was built with
    except UserError:
        return None  # the artifact's own row names the problem
    t0 = time.monotonic()
    row = make_row(ROW_PREFIX + art["target"], "fail", tolerance=target.tolerance.set_values(),
                   path=art["path"])
    dtype = ((art.get("facts") or {}).get("input") or {}).get("dtype")
    if dtype == "int8":
        row.update(status="skipped", reason="MediaPipe feeds uint8 or float32 inputs; this artifact "
                   "takes int8 (target option io_dtype: uint8 makes one MediaPipe can feed)")
    else:
        out = run_mediapipe(path, batch.pixels, python=python)
        if "error" in out:
            row["reason"] = f"MediaPipe ImageClassifier on {art['path']}: {out['error']}"
        else:
            row["executor"] = out["executor"]
            scores = np.asarray([r["scores"] for r in out["results"]], np.float32)
            if scores.shape != ref.shape:
                row["reason"] = (f"MediaPipe gave scores {list(scores.shape)}, the reference "
                                 f"{list(ref.shape)} ({art['path']})")
            else:
                row = finish(row, ref, scores, batch, ref_acc)
                row["top1"] = [int(r["top1"]) for r in out["results"]]
    row["seconds"] = round(time.monotonic() - t0, 3)
    return row
