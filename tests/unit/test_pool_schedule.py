"""How the build orders conversions on its workers (pipeline/pool.py), and how make bench reads
a build record's critical path: plain data, no process started."""

from __future__ import annotations

from types import SimpleNamespace

from mobiledeploy.benchsuite import critical_path
from mobiledeploy.pipeline.pool import START_SECONDS, Job, Pool, _Worker, family


def _job(name: str, backend: str, precision: str, seconds: float | None = None) -> Job:
    t = SimpleNamespace(name=name, backend=backend, precision=precision)
    return Job(name, t, {}, **({"seconds": seconds} if seconds else {}))


DEMO = [_job("tflite-fp32", "tflite", "fp32"), _job("tflite-int8", "tflite", "int8"),
        _job("edgetpu", "edgetpu", "int8"), _job("coreml-fp32", "coreml", "fp32"),
        _job("executorch-xnnpack", "executorch", "fp32"), _job("executorch-xnnpack-int8", "executorch", "int8")]


def _worker(*families: str, job: Job | None = None, started: float = 0.0) -> _Worker:
    return _Worker(proc=None, log=None, families=set(families), job=job, started=started)


def test_families_follow_what_a_backend_imports_first():
    assert family("tflite") == family("edgetpu") == "tensorflow"
    assert family("executorch") == "executorch"
    assert family("coreml") == "tensorflow"  # coremltools imports TensorFlow: one worker pays it


def test_the_longest_conversion_starts_first_and_a_second_worker_takes_another_family():
    pool = Pool(2, log_dir=".")
    first = pool._pick(None, DEMO, now=0.0)
    assert first.key == "executorch-xnnpack-int8"
    pool.workers = [_worker("executorch", job=first)]
    rest = [j for j in DEMO if j is not first]
    second = pool._pick(None, rest, now=0.0)
    assert second.family != "executorch", "a fresh worker must not pay ExecuTorch's imports again"
    assert second.key == "tflite-int8"  # the longest of the families nobody serves


def test_an_idle_worker_keeps_to_its_family():
    pool = Pool(2, log_dir=".")
    tf = _worker("tensorflow")
    pool.workers = [tf, _worker("executorch", job=DEMO[-1], started=0.0)]
    pending = [DEMO[0], DEMO[3], DEMO[4]]  # tflite-fp32 (10 s) vs coreml (12 s), executorch fp32 (19 s)
    assert pool._pick(tf, pending, now=1.0).key == "tflite-fp32"


def test_a_second_worker_for_a_family_only_when_its_worker_stays_busy():
    pool = Pool(2, log_dir=".")
    busy = _job("executorch-xnnpack-int8", "executorch", "int8", seconds=38.0)
    pool.workers = [_worker("executorch", job=busy, started=0.0)]
    pending = [_job("executorch-xnnpack", "executorch", "fp32")]
    assert pool._pick(None, pending, now=1.0) is not None  # 37 s of work left there: help
    assert pool._pick(None, pending, now=38.0 - START_SECONDS / 2) is None  # it is nearly free: wait


def test_no_help_that_costs_more_than_waiting():
    """The demo's end: the TensorFlow worker converts edgetpu with tflite-fp32 and -fp16 queued; a
    free ExecuTorch worker would import TensorFlow and redo the export for fp16 (measured 10 s
    for a 2 s conversion): it helps only when the queue before the job is longer than that."""
    pool = Pool(2, log_dir=".")
    edgetpu = _job("edgetpu", "edgetpu", "int8")
    tf = _worker("tensorflow", job=edgetpu, started=0.0)
    et = _worker("executorch")
    pool.workers = [tf, et]
    queued = [_job("tflite-fp32", "tflite", "fp32"), _job("tflite-fp16", "tflite", "fp16")]
    assert pool._pick(et, queued, now=1.0) is None
    longer = [*queued, *(_job(f"tflite-{i}", "tflite", "fp32", seconds=6.0) for i in range(3))]
    helped = pool._pick(et, longer, now=1.0)
    assert helped is not None and helped.family == "tensorflow"  # a long queue: help


def test_critical_path_follows_the_worker_that_ended_last():
    rec = {"steps": [
        {"step": "model", "status": "ran", "seconds": 0.5},
        {"step": "convert:a", "status": "ran", "seconds": 10.0, "start": 1.0, "end": 11.0, "worker": 1},
        {"step": "convert:b", "status": "ran", "seconds": 30.0, "start": 1.0, "end": 31.0, "worker": 2},
        {"step": "convert:c", "status": "ran", "seconds": 5.0, "start": 11.0, "end": 16.0, "worker": 1},
        {"step": "convert:d", "status": "ran", "seconds": 4.0, "start": 31.0, "end": 35.0, "worker": 2},
        {"step": "validate", "status": "ran", "seconds": 8.0},
        {"step": "app", "status": "skipped", "seconds": 0.0},
    ]}
    cp = critical_path(rec)
    assert [s["step"] for s in cp["steps"]] == ["model", "convert:b", "convert:d", "validate"]
    assert cp["seconds"] == 42.5
