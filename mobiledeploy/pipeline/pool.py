"""Conversion workers grouped by what they import, ``--jobs`` of them at a time.

Every conversion process used to pay its imports again (TensorFlow ~5 s, coremltools more, since it
pulls in TensorFlow and torch) and rebuild the same reference models. Here a worker is a
long-lived process (``worker.py --serve``) that converts one target after another: the targets of
one framework family (``Backend.family``, else its first ``requires`` name; Core ML shares the
TensorFlow targets' family, since coremltools imports TensorFlow) go to the worker that already
imported it and built its reference models. A worker still runs in its own process (a native crash fails
the target it was converting, and the build starts a fresh worker for the rest), dies with the
build (``lifeline.py``) and writes to temporary names only; the build installs each artifact.

Which worker converts what does not change any artifact's bytes (tests compare a grouped build
with one-target-at-a-time builds); it only orders the work: longest first (``Backend.convert_seconds``
estimates), a worker's own family first, and a second worker for a family only when it would
finish a job (paying the family's imports and shared exports first, ``START_SECONDS``) before the
family's worker could get to it (its current job's remaining estimate plus the longer jobs queued
before this one). Measured: a free worker that took the demo's last TFLite target imported
TensorFlow and redid the SavedModel export (10 s for a 2 s conversion) and ended the build later.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..backends.registry import backend_class
from .lifeline import PARENT_ENV

START_SECONDS = 8.0  # about what a worker pays before its first conversion of a family (imports, exports)
DEFAULT_SECONDS = 10.0  # a conversion whose backend gives no estimate


def family(backend: str) -> str:
    """What a backend's conversions import first: targets of one family share a worker."""
    cls = backend_class(backend)
    return cls.family or (cls.requires[0] if cls.requires else cls.name or backend)


def estimate(target) -> float:
    """Rough seconds of one conversion (orders the work only; never a cache input)."""
    cls = backend_class(target.backend)
    return float(getattr(cls, "convert_seconds", {}).get(target.precision, DEFAULT_SECONDS))


@dataclass
class Job:
    """One conversion: ``key`` is the caller's handle, ``req`` the worker request."""

    key: object
    target: object  # ResolvedTarget
    req: dict
    family: str = ""
    seconds: float = 0.0  # estimate

    def __post_init__(self):
        self.family = self.family or family(self.target.backend)
        self.seconds = self.seconds or estimate(self.target)


@dataclass
class _Worker:
    proc: subprocess.Popen
    log: object
    families: set = field(default_factory=set)
    job: Job | None = None
    started: float = 0.0
    done: int = 0


@dataclass
class Done:
    """A finished job: ``result`` is the worker's result dict, or None when the process died
    (``returncode`` then says how)."""

    job: Job
    result: dict | None
    returncode: int | None
    seconds: float
    worker: int  # pid of the worker that ran it
    position: int  # how many jobs that worker had finished before this one


def worker_env(jobs: int) -> dict:
    """The environment of a build's helper processes: quiet, dying with this process, and one
    OpenMP thread each when several share the cores (``--jobs`` > 1)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore", PARENT_ENV: str(os.getpid())}
    if jobs > 1:
        env.setdefault("OMP_NUM_THREADS", "1")
    return env


class Pool:
    """Runs jobs on at most ``jobs`` workers; ``on_done`` is called in the caller's thread."""

    def __init__(self, jobs: int, log_dir: Path, env: dict | None = None):
        self.jobs = max(1, jobs)
        self.log_dir = Path(log_dir)
        self.env = {**worker_env(self.jobs), **(env or {})}
        self.workers: list[_Worker] = []
        self.started_workers = 0

    # -- scheduling -------------------------------------------------------------------------
    def _pick(self, w: _Worker | None, pending: list[Job], now: float) -> Job | None:
        """The job an idle (or new, ``w`` None) worker takes next, or None: let it wait."""
        if not pending:
            return None
        longest = sorted(pending, key=lambda j: -j.seconds)
        if w is not None:
            own = [j for j in longest if j.family in w.families]
            if own:
                return own[0]
        others = [o for o in self.workers if o is not w]
        served = {f: o for o in others for f in o.families}
        free = [j for j in longest if j.family not in served]
        if free:
            return free[0]
        for i, j in enumerate(longest):  # every family has a worker: help where it pays
            o = served[j.family]
            busy = (max(0.0, o.started + o.job.seconds - now) if o.job else 0.0)
            ahead = sum(k.seconds for k in longest[:i] if k.family in o.families)  # o takes these first
            if START_SECONDS + j.seconds < busy + ahead:
                return j
        return None

    def _spawn(self) -> _Worker:
        self.started_workers += 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"worker-{self.started_workers}.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "mobiledeploy.pipeline.worker", "--serve"],
                                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                text=True)
        w = _Worker(proc, log)
        self.workers.append(w)
        return w

    def _send(self, w: _Worker, job: Job, now: float) -> bool:
        w.job, w.started = job, now
        w.families.add(job.family)
        Path(job.req["result"]).unlink(missing_ok=True)
        try:
            w.proc.stdin.write(json.dumps(job.req) + "\n")
            w.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return False  # the worker died: seen as a crash of this job below
        return True

    def _close(self, w: _Worker) -> None:
        if w.proc.stdin and not w.proc.stdin.closed:
            try:
                w.proc.stdin.close()  # end of input: the worker exits
            except OSError:
                pass

    # -- the loop ----------------------------------------------------------------------------
    def run(self, jobs: list[Job], on_start: Callable[[Job], None], on_done: Callable[[Done], None]) -> None:
        pending = list(jobs)
        finished = False
        try:
            while pending or any(w.job for w in self.workers):
                now = time.monotonic()
                for w in list(self.workers):  # idle workers first: their imports are paid
                    if w.job is None and (job := self._pick(w, pending, now)):
                        pending.remove(job)
                        on_start(job)
                        self._send(w, job, now)
                while pending and len(self.workers) < self.jobs:
                    job = self._pick(None, pending, now)
                    if job is None:
                        break
                    pending.remove(job)
                    on_start(job)
                    self._send(self._spawn(), job, now)
                if not pending:
                    for w in self.workers:
                        if w.job is None:
                            self._close(w)
                time.sleep(0.05)
                for w in list(self.workers):
                    self._reap(w, on_done)
            finished = True
        finally:
            for w in self.workers:
                if not finished and w.job is not None:
                    w.proc.kill()  # interrupted: nobody will install what it is converting
                self._close(w)
            for w in self.workers:
                try:
                    w.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    w.proc.kill()
                    w.proc.wait()
                w.log.close()

    def _reap(self, w: _Worker, on_done: Callable[[Done], None]) -> None:
        job = w.job
        code = w.proc.poll()
        if job is not None:
            res_path = Path(job.req["result"])
            if res_path.exists():
                res = json.loads(res_path.read_text())
                res_path.unlink(missing_ok=True)
                w.job = None
                w.done += 1
                on_done(Done(job, res, None, time.monotonic() - w.started, w.proc.pid, w.done - 1))
            elif code is not None:  # died during the job: this target fails, not the others
                w.job = None
                on_done(Done(job, None, code, time.monotonic() - w.started, w.proc.pid, w.done))
        if w.job is None and w.proc.poll() is not None:
            self._close(w)
            w.proc.wait()
            w.log.close()
            self.workers.remove(w)
