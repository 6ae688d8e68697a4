"""Conversion workers grouped by framework family (pipeline/pool.py): a worker that converted
other targets before gives the same bytes as a fresh process converting one target alone, and a
crash fails the target being converted, not the ones after it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXAMPLE, TINY_ARCH

pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")
pytestmark = pytest.mark.slow

# one family: the worker builds the lowered Keras graph once for both int8 targets and the
# fused graph once for both float targets, and imports TensorFlow once
GROUP = ("tflite-int8", "edgetpu", "tflite-fp32", "tflite-fp16")


def _definition(tmp: Path) -> Path:
    data = yaml.safe_load((EXAMPLE / "shapes.yaml").read_text())
    data["input"]["height"] = data["input"]["width"] = 32
    data["architecture"] = TINY_ARCH
    data.pop("weights", None)
    for key in ("labels",):
        data[key] = str((EXAMPLE / data[key]).resolve())
    data["calibration"] = {"source": str((EXAMPLE / data["calibration"]["source"]).resolve()), "max_images": 8}
    data["validation"] = {"source": str((EXAMPLE / data["validation"]["source"]).resolve()), "max_images": 4}
    data.setdefault("allow_outside_paths", True)
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _jobs(tmp: Path, definition: Path, names, tag: str):
    from mobiledeploy.definition import load_definition
    from mobiledeploy.pipeline.pool import Job
    from mobiledeploy.targets import resolve_targets

    d = load_definition(definition)
    jobs = []
    for t in resolve_targets(d, names):
        work = tmp / tag / t.name
        work.mkdir(parents=True)
        out = work / Path(t.artifact_path(d.name)).name
        jobs.append(Job(t.name, t, {"definition": str(definition), "target": t.record(), "out": str(out),
                                    "workdir": str(work), "result": str(work / "result.json"),
                                    "log": str(work / "log.txt")}))
    return jobs


def _run(tmp: Path, jobs, env=None) -> dict:
    from mobiledeploy.pipeline.pool import Pool

    order, done = [], {}

    def finished(d):
        done[d.job.key] = d
        order.append(d.job.key)

    Pool(1, tmp / "logs", env=env).run(jobs, lambda j: None, finished)
    return {"order": order, "done": done}


def _sha(job) -> str:
    p = Path(job.req["out"])
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pool")
    definition = _definition(tmp)
    return tmp, definition, _run(tmp, _jobs(tmp, definition, GROUP, "grouped"))


def test_one_worker_converts_a_family_in_order_longest_first(grouped):
    _, _, run = grouped
    # longest first by the warm estimates: tflite-int8 7 s, tflite-fp32 6 s, then the targets that
    # reuse their exports: edgetpu 4 s (tflite-int8's lowered graph), tflite-fp16 3 s (fp32's)
    order = ["tflite-int8", "tflite-fp32", "edgetpu", "tflite-fp16"]
    assert run["order"] == order
    workers = {d.worker for d in run["done"].values()}
    assert len(workers) == 1, "one family, one worker"
    assert [run["done"][k].position for k in order] == [0, 1, 2, 3]
    for d in run["done"].values():
        assert d.result["ok"], d.result
        assert d.result["cpu_seconds"] > 0


def test_a_crash_fails_the_current_target_only_and_a_fresh_worker_gives_the_same_bytes(tmp_path, grouped):
    _, definition, run = grouped
    jobs = _jobs(tmp_path, definition, ["tflite-int8", "tflite-fp16"], "crash")
    crash = _run(tmp_path, jobs, env={"MOBILEDEPLOY_FAULT_CRASH": "tflite-int8"})
    crashed, after = crash["done"]["tflite-int8"], crash["done"]["tflite-fp16"]
    assert crash["order"] == ["tflite-int8", "tflite-fp16"]
    assert crashed.result is None and crashed.returncode == -11  # SIGSEGV
    assert after.result["ok"], after.result
    assert after.worker != crashed.worker and after.position == 0, "the rest goes to a fresh worker"
    assert Path(after.job.req["log"]).is_file()
    # tflite-fp16 came fourth in the grouped worker (after the fused graph served tflite-fp32)
    assert _sha(after.job) == _sha(run["done"]["tflite-fp16"].job), "grouped bytes differ from a fresh process"


def test_grouped_edgetpu_is_byte_identical_to_alone(tmp_path, grouped):
    _, definition, run = grouped
    # after tflite-int8 in the grouped worker: it reused the lowered Keras graph tflite-int8 was built from
    alone = _run(tmp_path, _jobs(tmp_path, definition, ["edgetpu"], "alone"))
    d = alone["done"]["edgetpu"]
    assert d.result["ok"] and d.position == 0
    assert _sha(d.job) == _sha(run["done"]["edgetpu"].job), "grouped bytes differ from a fresh process"
    public = [{k: v for k, v in r.result["facts"].items() if not k.startswith("_")} for r in (d, run["done"]["edgetpu"])]
    assert public[0] == public[1]
