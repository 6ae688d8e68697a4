"""A real metadata client as a validation row: the MediaPipe Tasks vision task of the bundle's
task (ImageClassifier, ImageSegmenter, ObjectDetector) on each .tflite.

MediaPipe takes the preprocessing (one mean/std, colour space) and the labels from the model's
metadata alone, so a row ``mediapipe:<target>`` checks what the metadata says, not only what the
graph computes: a wrong mean/std in the metadata fails here. MediaPipe's dependencies do not fit
beside TensorFlow, so it runs in its own virtual environment (``make mediapipe-venv``) through
``mobiledeploy/mediapipe_runner.py``; rows appear when that environment is found.

Nothing here is task-specific: the task says which MediaPipe task consumes its files and with
which options (``Task.mediapipe_client``), the runner answers its results generically, and the
task judges them (``Task.mediapipe_judge``) with a ``ClientContext``.
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
RUNNER = Path(__file__).resolve().parent / "mediapipe_runner.py"


def mediapipe_python() -> Path | None:
    """The MediaPipe environment's python: $MOBILEDEPLOY_MEDIAPIPE_PYTHON (``none`` turns MediaPipe
    off), else a .venv-mediapipe in the working directory or beside the mobiledeploy sources; None
    when there is none."""
    env = os.environ.get(ENV)
    if env is not None:  # "" or "none" turns the rows off; a path that is not there fails the rows
        return None if env.strip().lower() in ("", "none") else Path(env)
    for root in (Path.cwd(), Path(__file__).resolve().parents[3]):
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


class _Server:
    """One MediaPipe process answering requests (``mediapipe_runner.py --serve``): its imports
    (~0.85 s of CPU) are paid once per validation, not once per artifact. It ends when this
    process closes its input or dies; one that died mid-request fails that request only (the
    next request starts a fresh one)."""

    def __init__(self, python: Path):
        import collections
        import queue
        import threading

        env = {**os.environ, "GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.proc = subprocess.Popen([str(python), str(RUNNER), "--serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: queue.Queue = queue.Queue()
        self.timed_out = False
        self.stderr: collections.deque = collections.deque(maxlen=20)

        def pump(stream, put):
            for line in stream:
                put(line)
            put(None)

        threading.Thread(target=pump, args=(self.proc.stdout, self.lines.put), daemon=True).start()
        threading.Thread(target=pump, args=(self.proc.stderr, lambda ln: ln and self.stderr.append(ln)),
                         daemon=True).start()

    def ask(self, req: dict, timeout: float) -> dict | None:
        """The answer to ``req``, or None when the process is gone (or did not answer in time)."""
        import queue
        import time

        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            return None
        end = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                self.timed_out = True
                self.close(kill=True)
                return None
            if line is None:
                return None
            if line.startswith("{"):
                return json.loads(line)

    def why_gone(self) -> str:
        if self.timed_out:
            return "MediaPipe runner did not answer in time (stopped)"
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        tail = "".join(self.stderr).strip().splitlines() or ["no output"]
        return f"MediaPipe runner exited {code}: {tail[-1]}"

    def close(self, kill: bool = False) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        if kill:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_SERVERS: dict[str, _Server] = {}


def _server(python: Path) -> _Server:
    import atexit

    key = str(python)
    srv = _SERVERS.get(key)
    if srv is None or srv.proc.poll() is not None:
        if not _SERVERS:
            atexit.register(close_mediapipe)
        srv = _SERVERS[key] = _Server(python)
    return srv


def close_mediapipe() -> None:
    """End the MediaPipe processes this process started."""
    for srv in _SERVERS.values():
        srv.close()
    _SERVERS.clear()


def _arrays(value):
    """The runner's answer with its arrays ({"__ndarray__": path}) read back."""
    if isinstance(value, dict):
        if "__ndarray__" in value:
            return np.load(value["__ndarray__"], allow_pickle=False)
        if "__list__" in value:
            return np.asarray(value["__list__"])
        return {k: _arrays(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_arrays(v) for v in value]
    return value


def run_mediapipe(model: Path, pixels: np.ndarray | None = None, *, metadata: bool = False,
                  python: Path | None = None, timeout: int = 600, client: dict | None = None) -> dict:
    """Run the MediaPipe runner on ``model``: ``pixels`` (N, H, W, 3 RGB uint8) through the task
    ``client`` names ({"task", "method", "options"}; None: the ImageClassifier's scores), or read
    its metadata with MediaPipe's schema. Returns the runner's JSON, arrays read back
    ({"error": ...} on failure)."""
    python = python or mediapipe_python()
    if python is None:
        return {"error": f"no MediaPipe environment (set {ENV} or run `make mediapipe-venv`)"}
    with tempfile.TemporaryDirectory(prefix="mobiledeploy-mp-") as tmp:
        req: dict = {"model": str(model)}
        if metadata:
            req["metadata"] = True
        else:
            npy = Path(tmp) / "pixels.npy"
            np.save(npy, np.ascontiguousarray(pixels, dtype=np.uint8))
            req["pixels"] = str(npy)
            if client is not None:
                req.update(task=client["task"], method=client["method"], options=client.get("options") or {},
                           arrays=tmp)
        try:
            srv = _server(python)
        except OSError as exc:
            return {"error": f"{python}: {exc}"}
        out = srv.ask(req, timeout)
        if out is not None and "error" not in out:
            out = _arrays(out)  # while the arrays' folder exists
    if out is None:
        _SERVERS.pop(str(python), None)
        return {"error": srv.why_gone()}
    return out


from ..base import ClientContext  # noqa: E402  (defined with the backend contract)


def mediapipe_row(bundle: Path, art: dict, task, ctx: ClientContext, make_row) -> dict | None:
    """The ``mediapipe:<target>`` row of one artifact, or None (not a .tflite, its own row fails
    already, no MediaPipe task for this task, or no MediaPipe environment)."""
    import time

    from ...bundle import sha256_path
    from ...errors import UserError
    from ...targets import ResolvedTarget

    python = mediapipe_python()
    client = task.mediapipe_client(ctx.definition)
    if python is None or client is None:
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
        out = run_mediapipe(path, ctx.batch.pixels, python=python, client=client)
        if "error" in out:
            row["reason"] = f"MediaPipe {client['task']} on {art['path']}: {out['error']}"
        else:
            row["executor"] = out["executor"]
            row = task.mediapipe_judge(row, out, ctx)
    row["seconds"] = round(time.monotonic() - t0, 3)
    return row
