"""Validation beside the conversions: each artifact is judged as soon as it is installed.

    python -m mobiledeploy.pipeline.early          messages read from stdin, one JSON per line

The build starts this process when it will convert something and validate (``--jobs`` >= 2). Its
first message names the bundle, the manifest's reference section and the sample count: it
prepares the reference side at once (PyTorch outputs, the Keras twin's row), which needs no
artifact. When a TensorFlow target is converted, the first message also names ``twin``: the file
where that conversion's worker writes the Keras twin's outputs (``keras_twin_outputs``) before it
converts, so this process does not import TensorFlow for them (it does if the file is missing);
artifacts built from the twin wait for that file. Then ``{"artifact": record}`` per installed
artifact: its row is judged and kept. Last,
``{"finish": manifest}``: rows whose record is not exactly the manifest's are judged again, the
report is written (``validate.runner.Validation``, the code ``validate`` runs) and the outcome
goes to the result file. If the validation step turns out up to date, the build kills it instead.

It writes nothing in the bundle but the report at ``finish`` (atomically, like ``validate``); it
dies with the build. Anything that goes wrong here makes the build validate in-process instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path


class EarlyValidation:
    """The build's handle on the validation process."""

    def __init__(self, out: Path, reference: dict, samples: int | None, log_dir: Path, env: dict,
                 twin: Path | None = None):
        from ..bundle import STATE_DIR

        self.result = Path(out) / STATE_DIR / "tmp" / f"early-validation-{os.getpid()}.json"
        self.result.parent.mkdir(parents=True, exist_ok=True)
        self.result.unlink(missing_ok=True)
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        self.log = open(Path(log_dir) / "validate-early.log", "w")  # noqa: SIM115 - closed in _end
        self.proc = subprocess.Popen([sys.executable, "-m", "mobiledeploy.pipeline.early"],
                                     stdin=subprocess.PIPE, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=env, text=True)
        self.sent: list[str] = []
        self.twin = twin
        self._send({"start": {"bundle": str(out), "reference": reference, "samples": samples,
                              "result": str(self.result), "twin": str(twin) if twin else None}})

    def _send(self, msg: dict) -> bool:
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            return False
        return True

    def artifact(self, art: dict) -> None:
        """An installed artifact, with its manifest record: judge it now."""
        if self._send({"artifact": art}):
            self.sent.append(art["target"])

    def finish(self, manifest: dict, timeout: float = 3600) -> dict | None:
        """The report for ``manifest`` (written into the bundle), or None if this process failed
        (the caller validates in-process then)."""
        try:
            if not self._send({"finish": manifest}):
                return None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return None
            if not self.result.is_file():
                return None
            res = json.loads(self.result.read_text())
            return res.get("report") if res.get("ok") else None
        finally:
            self._end()

    def cancel(self) -> None:
        """Not needed (the validation step is up to date): stop it, nothing written."""
        self._end()

    def _end(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.log.close()
        self.result.unlink(missing_ok=True)
        if self.twin is not None:
            Path(self.twin).unlink(missing_ok=True)


def serve(stream) -> int:
    from ..validate.runner import Validation

    v = result = None
    rows: dict[str, tuple[dict, dict, list]] = {}  # target -> (record judged, row, client rows)
    waiting: list[dict] = []  # artifacts not judged yet
    for line in stream:
        if not line.strip():
            continue
        msg = json.loads(line)
        try:
            if "start" in msg:
                start = msg["start"]
                result = Path(start["result"])
                twin = Path(start["twin"]) if start.get("twin") else None
                v = Validation(Path(start["bundle"]), start["reference"], samples=start["samples"], twin=twin)
                if twin is None:
                    v.keras_row  # noqa: B018 - no worker computes the twin's outputs: now, beside them
            elif "artifact" in msg:
                waiting.append(msg["artifact"])
            for art in list(waiting):  # an artifact built from the Keras twin waits for its outputs
                if not v.waits_for_twin(art):
                    waiting.remove(art)
                    rows[art["target"]] = (art, v.artifact_row(art), v.client_rows(art))
            if "finish" in msg:
                manifest = msg["finish"]
                final, clients = [], []
                for art in manifest["artifacts"]:
                    judged, row, client = rows.get(art["target"], (None, None, None))
                    if judged != art:
                        row, client = v.artifact_row(art), v.client_rows(art)
                    final.append(row)
                    clients += client
                report = v.finish(manifest, final, client_rows=clients)
                _write(result, {"ok": True, "report": report})
                return 0
        except Exception as exc:  # the build validates in-process instead, and reports it there
            if result is not None:
                _write(result, {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                                "traceback": traceback.format_exc()})
            return 3
    return 0


def _write(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, default=str))
    tmp.replace(path)


def main() -> int:
    import warnings

    from .lifeline import die_with_parent

    die_with_parent()  # a killed build takes it along
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore")
    if os.environ.get("MOBILEDEPLOY_FAULT_CRASH") == "early-validation":
        import signal  # fault injection for tests: a native crash of this process

        os.kill(os.getpid(), signal.SIGSEGV)
    t0 = time.monotonic()
    code = serve(sys.stdin)
    heavy = [m for m in ("tensorflow", "coremltools", "executorch.exir") if m in sys.modules]
    print(f"early validation ended ({code}) after {time.monotonic() - t0:.1f} s "
          f"({time.process_time():.1f} s CPU; imported: {', '.join(heavy) or 'no converter'})", flush=True)
    os._exit(code)  # skip the frameworks' slow interpreter teardown


if __name__ == "__main__":
    sys.exit(main())
