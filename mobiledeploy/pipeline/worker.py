"""Conversions in worker processes, so a native converter crash fails one target only.

    python -m mobiledeploy.pipeline.worker --serve          conversions read from stdin, one per line

A request names the definition, the target profile, the temporary output path, the log file and
where to write the result (facts for the manifest, or the error). A serving worker is long-lived:
it imports each framework once and keeps one ``ConvertContext`` per definition, so the targets it
converts share the reference models (each Keras graph variant built once), the calibration batch
and the imports. It runs one request at a time; the build sends the next one only after the
result of the last is written, so a crash loses the current target only (the build starts a new
worker for the rest).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

# (definition path, definition bytes' sha256) -> ConvertContext shared by this process's targets
_CONTEXTS: dict[tuple[str, str], object] = {}


def _context(req: dict):
    import hashlib

    from ..backends.base import ConvertContext
    from ..definition import load_definition
    from ..images import load_batch

    path = req["definition"]
    key = (path, hashlib.sha256(Path(path).read_bytes()).hexdigest())
    base = _CONTEXTS.get(key)
    if base is None:
        d = load_definition(path, check_files=False)
        base = ConvertContext(definition=d, workdir=Path(req["workdir"]), calibration=load_batch(d, "calibration"))
        close_contexts()  # one definition per build: an old one is never needed again
        _CONTEXTS[key] = base
    return base


def close_contexts() -> None:
    for ctx in _CONTEXTS.values():
        ctx.close()
    _CONTEXTS.clear()


def convert_one(req: dict) -> dict:
    from ..backends.registry import get_backend
    from ..targets import ResolvedTarget

    base = _context(req)
    target = ResolvedTarget.from_record(req["target"])
    backend = get_backend(target.backend)
    ctx = replace(base, workdir=Path(req["workdir"]))  # shares the Keras models' dict
    try:
        return backend.convert(ctx, target, Path(req["out"]))
    finally:
        if base._torch_model is None:  # built lazily by this target: the next ones reuse it
            base._torch_model = ctx._torch_model


def _twin(twin: dict | None) -> float | None:
    """The Keras twin's outputs for the build's validation (``validate.runner.keras_twin_outputs``),
    when the request asks and no worker wrote them yet: this worker has TensorFlow imported.
    Returns the seconds it took (the build records them apart from the conversion's)."""
    if not twin or Path(twin["path"]).exists():
        return None
    t0 = time.monotonic()
    try:
        from ..validate.runner import keras_twin_outputs

        keras_twin_outputs(Path(twin["bundle"]), twin["reference"], twin["samples"], Path(twin["path"]))
        print(f"keras twin outputs for validation in {time.monotonic() - t0:.1f} s", flush=True)
    except Exception as exc:  # the validation computes them itself then
        print(f"keras twin outputs not written: {type(exc).__name__}: {exc}", flush=True)
    return round(time.monotonic() - t0, 3)


def _run(req: dict) -> int:
    """One request: the result (or error) written atomically to ``req["result"]``."""
    result_path = Path(req["result"])
    if os.environ.get("MOBILEDEPLOY_FAULT_CRASH") == req["target"]["target"]:
        # fault injection for tests: a real native crash of this converter process
        import signal

        os.kill(os.getpid(), signal.SIGSEGV)
    twin_seconds = _twin(req.get("twin"))
    t0, c0 = time.monotonic(), time.process_time()
    try:
        facts = convert_one(req)
        result = {"ok": True, "facts": facts}
        code = 0
    except Exception as exc:  # reported to the parent; the build goes on with other targets
        from ..errors import MobileDeployError

        user = isinstance(exc, MobileDeployError) and exc.exit_code == 2
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        result = {"ok": False, "user_error": user, "error": f"{type(exc).__name__}: {msg}",
                  "traceback": traceback.format_exc()}
        code = 2 if user else 3
    result["seconds"] = round(time.monotonic() - t0, 3)
    result["cpu_seconds"] = round(time.process_time() - c0, 3)
    if twin_seconds is not None:
        result["twin_seconds"] = twin_seconds
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, default=str))
    tmp.replace(result_path)
    return code


def _to_log(path: str | None) -> None:
    """Point this process's stdout and stderr (native libraries' too) at one target's log."""
    if not path:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def serve(stream) -> int:
    """Convert the requests read from ``stream`` (JSON lines) until it closes."""
    for line in stream:
        if not line.strip():
            continue
        req = json.loads(line)
        _to_log(req.get("log"))
        _run(req)
        sys.stdout.flush()
        sys.stderr.flush()
    return 0


def main() -> int:
    import warnings

    from .lifeline import die_with_parent

    die_with_parent()  # a killed build takes its converters with it
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore")
    if sys.argv[1:] != ["--serve"]:
        print("usage: python -m mobiledeploy.pipeline.worker --serve (requests on stdin)", file=sys.stderr)
        return 2
    serve(sys.stdin)
    close_contexts()
    os._exit(0)  # every result is written: skip the frameworks' slow interpreter teardown


if __name__ == "__main__":
    sys.exit(main())
