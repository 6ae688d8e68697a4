"""Sweeps past one machine, on this machine: an S3-protocol store (moto's server on 127.0.0.1,
s3fs as fsspec's S3, endpoint and credentials by the standard AWS_* variables) and a Ray cluster
of two nodes (a head and a worker node: separate raylet processes, one CPU each, each with its own
work folder), started and stopped here.

- the store's writes are atomic in the object-store sense and two workers committing one step
  leave one valid entry;
- wrong credentials: one line, exit 2, before any step;
- the endpoint stopped mid-sweep: one line naming the store, exit 2; a rerun after it returns
  runs only what was missing;
- the sweep on the 2-node cluster: steps on both nodes (rows say which, and how long), the base
  folder out of the workers' reach (they read it from the store), the worker node's raylet
  SIGKILLed with a build in flight: that step reruns on the head, finished ones are kept, the
  table (artifact sha256 included) equals the run without Ray;
- a fresh cluster and a fresh local folder against the same store: 0 builds.

Cheap on purpose: a tiny seeded network at 32 px, 2 variants x (tflite-fp32, executorch-xnnpack).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXAMPLE, run_cli, tiny_data, write_definition


def _need(module: str):
    """Import ``module``, or skip; under CI (``CI=true``) a missing one fails (collection error),
    never a silent skip: `pip install -e '.[all,dev]'` brings every one."""
    import importlib

    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return importlib.import_module(module)
    return pytest.importorskip(module)


for _m in ("tensorflow", "ai_edge_litert", "executorch", "s3fs", "moto.server"):
    _need(_m)
ray = _need("ray")
boto3 = _need("boto3")
pytestmark = pytest.mark.slow

SWEEP = {"base": "tiny.yaml", "targets": ["tflite-fp32", "executorch-xnnpack"], "axes": {"seed": [1, 2]},
         "bench": {"runs": 5, "threads": 1}, "samples": 8}
# what does not depend on timing or placement: the table two runs must agree on
SAME = ("variant", "target", "status", "accuracy", "agreement", "snr_db", "bytes", "artifact_sha256", "macs")
BUCKET = "sweeps"
MB = 1024 * 1024
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3:
    """moto's S3 server in this process (its data outlives a stop/start: the endpoint "returns"),
    with IAM authentication on: one user whose key may use S3, anything else refused."""

    def __init__(self):
        from moto.server import ThreadedMotoServer

        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._cls = ThreadedMotoServer
        self.server = None
        self.start()

    def start(self) -> None:
        self.server = self._cls(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def client(self, **creds):
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=creds.get("key", self.key), aws_secret_access_key=creds.get("secret", self.secret))

    def setup_auth(self) -> None:
        import moto.settings
        from moto.core.authorization import ActionAuthenticatorMixin

        kw = {"endpoint_url": self.endpoint, "region_name": "us-east-1", "aws_access_key_id": "bootstrap",
              "aws_secret_access_key": "bootstrap"}
        iam = boto3.client("iam", **kw)
        iam.create_user(UserName="sweeper")
        key = iam.create_access_key(UserName="sweeper")["AccessKey"]
        iam.put_user_policy(UserName="sweeper", PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        boto3.client("s3", **kw).create_bucket(Bucket=BUCKET)
        self.key, self.secret = key["AccessKeyId"], key["SecretAccessKey"]
        self._auth_before = moto.settings.INITIAL_NO_AUTH_ACTION_COUNT
        moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # from now on every request is checked
        ActionAuthenticatorMixin.request_count = 0

    def teardown_auth(self) -> None:
        import moto.settings

        moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = self._auth_before

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.key,
                "AWS_SECRET_ACCESS_KEY": self.secret, "AWS_DEFAULT_REGION": "us-east-1"}

    def keys(self, prefix: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return [o["Key"] for p in pages for o in p.get("Contents", [])]


@pytest.fixture(scope="module")
def s3():
    server = S3()
    server.setup_auth()
    before = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())  # the standard variables: the driver, and the nodes started below
    t0 = time.monotonic()
    yield server
    print(f"s3 module: {time.monotonic() - t0:.1f}s")
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.teardown_auth()
    server.stop()


@pytest.fixture(scope="module")
def project(tmp_path_factory, s3) -> Path:
    root = tmp_path_factory.mktemp("cluster")
    dest = root / "shapes"
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("__pycache__", "*.safetensors"))
    write_definition(dest, tiny_data(validation_images=8), "tiny.yaml")
    (dest / "sweep.yaml").write_text(yaml.safe_dump(SWEEP, sort_keys=False))
    return dest


def _table(result) -> list[dict]:
    return [{k: r[k] for k in SAME} for r in result["rows"]]


def _secret_free(s3: S3, *texts: str) -> None:
    for text in texts:
        assert s3.secret not in text and s3.key not in text


class Cluster:
    """A head and a worker node (``ray.cluster_utils.Cluster``: separate raylets), one CPU each,
    each node's steps working in a folder of its own (MOBILEDEPLOY_SWEEP_WORK). Ray's own session
    folder is a short path of its own (a Unix socket path has at most 107 bytes)."""

    def __init__(self, root: Path):
        import tempfile

        from ray.cluster_utils import Cluster as RayCluster

        self.work = {"head": root / "head", "worker": root / "worker"}
        self.temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
        Path(self.temp, "ray").mkdir()  # Ray's own folder under RAY_TMPDIR
        saved = {k: os.environ.get(k) for k in ("MOBILEDEPLOY_SWEEP_WORK", "RAY_TMPDIR")}
        try:
            os.environ["RAY_TMPDIR"] = self.temp  # Ray's address file too: not /tmp/ray, shared
            self._node_env("head")
            self.cluster = RayCluster(initialize_head=True, connect=False, head_node_args={
                "num_cpus": 1, "object_store_memory": 80 * MB, "include_dashboard": False, "temp_dir": f"{self.temp}/ray",
                # a dead node is declared so within ~3 s (default: ~30 s)
                "_system_config": {"health_check_initial_delay_ms": 0, "health_check_period_ms": 1000,
                                   "health_check_failure_threshold": 3}})
            self._node_env("worker")
            self.worker = self.cluster.add_node(num_cpus=1, object_store_memory=80 * MB)
            self.cluster.wait_for_nodes()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        self.address = self.cluster.address
        self.ids = {"head": "ray:" + self.cluster.head_node.node_id[:12], "worker": "ray:" + self.worker.node_id[:12]}

    def _node_env(self, name: str) -> None:
        self.work[name].mkdir(parents=True, exist_ok=True)
        os.environ["MOBILEDEPLOY_SWEEP_WORK"] = str(self.work[name])  # the raylet's workers inherit it

    def raylet_pid(self) -> int:
        from ray._private import ray_constants

        return self.worker.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid

    def shutdown(self) -> None:
        if ray.is_initialized():
            ray.shutdown()
        try:
            self.cluster.shutdown()
        except Exception as exc:  # a node killed by a test is gone already
            print(f"cluster shutdown: {type(exc).__name__}: {exc}")
        shutil.rmtree(self.temp, ignore_errors=True)


class NodeKiller:
    """SIGKILLs the worker node's raylet once that node has finished a build and is converting
    another (seen by the store's leases, which name the node)."""

    def __init__(self, cluster: Cluster, store):
        self.cluster, self.store = cluster, store
        self.finished: list[dict] = []
        self.killed: dict = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def on_progress(self, ev) -> None:
        if ev["phase"] == "build":
            self.finished.append({"key": ev["key"], "node": (ev["result"].get("build") or {}).get("node")})

    def _watch(self) -> None:
        worker = self.cluster.ids["worker"]
        while not self._stop.is_set() and not self.killed:
            if any(f["node"] == worker for f in self.finished):
                for key, info in self.store.leases().items():
                    if (info.get("node") == worker and info["kind"] == "build" and info["stage"] == "build"
                            and time.time() - info["started"] > 1.5):
                        os.kill(self.cluster.raylet_pid(), signal.SIGKILL)
                        self.killed = {**info, "key": key, "at": time.time(),
                                       "finished": [f["key"] for f in self.finished]}
                        break
            time.sleep(0.3)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def test_two_workers_committing_one_step_leave_one_valid_entry(s3, tmp_path):
    """Four threads commit the same key with different contents while readers fetch it: every
    read is a whole entry (its record and archive agree), and one entry stands at the end, its
    archive the only one left."""
    from mobiledeploy.sweep.store import Store

    url = f"s3://{BUCKET}/race"
    key = "cd" * 32
    errors: list[str] = []

    def writer(n: int) -> None:
        store = Store(url)
        out = tmp_path / f"w{n}"
        out.mkdir()
        (out / "a.bin").write_bytes(bytes([n]) * 300_000)
        store.commit(key, {"writer": n}, out)

    def reader() -> None:
        store = Store(url)
        for i in range(15):
            rec = store.record(key)
            if rec is None:
                continue
            got = store.fetch(key, tmp_path / f"r{threading.get_ident()}-{i}")
            data = (got / "a.bin").read_bytes()
            if len(data) != 300_000 or set(data) != {data[0]}:
                errors.append(f"half an object: {len(data)} bytes")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)] + [
        threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    store = Store(url)
    rec = store.record(key)
    data = (store.fetch(key, tmp_path / "final") / "a.bin").read_bytes()
    assert data == bytes([rec["writer"]]) * 300_000  # the record and its archive agree
    keys = s3.keys("race/")
    assert [k for k in keys if k.endswith(".json")] == [f"race/steps/cd/{key}.json"]
    assert not [k for k in keys if ".tmp-" in k], keys  # no temporary object left
    # the losers removed their archives unless they lost the race after checking (then harmless)
    assert f"race/{rec['archive']}" in keys


def test_wrong_credentials_one_line_before_any_step(s3, project, tmp_path):
    for env in ({"AWS_SECRET_ACCESS_KEY": "not-the-secret"}, {"AWS_ACCESS_KEY_ID": "AKIANOBODY"}):
        t0 = time.monotonic()
        r = run_cli("sweep", str(project / "sweep.yaml"), "-o", str(tmp_path / "out"), "--no-ray",
                    "--cache", f"s3://{BUCKET}/creds", env={**env, "MOBILEDEPLOY_SWEEP_WORK": str(tmp_path / "w")})
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and f"cache s3://{BUCKET}/creds" in lines[0] and "AWS_ACCESS_KEY_ID" in lines[0], r.stderr
        _secret_free(s3, r.stderr, r.stdout)
        print(f"wrong credentials refused in {time.monotonic() - t0:.1f}s")
    assert s3.keys("creds/") == []  # nothing written: no input pack, no lease, no step
    assert not (tmp_path / "out").exists() and not (tmp_path / "w").exists()


@pytest.fixture(scope="module")
def local_run(s3, project, tmp_path_factory):
    """The sweep without Ray against the S3 store, its endpoint stopped when the first build has
    finished; then again once it is back. Returns both attempts' outcomes."""
    from mobiledeploy.sweep.run import SweepOptions, run_sweep
    from mobiledeploy.sweep.store import StoreError

    root = tmp_path_factory.mktemp("local")
    url = f"s3://{BUCKET}/local"
    os.environ["MOBILEDEPLOY_SWEEP_WORK"] = str(root / "work")
    stopped: dict = {}

    def on_progress(ev):
        if ev["phase"] == "build" and not stopped:
            s3.stop()
            stopped.update(at=time.monotonic(), key=ev["key"])

    t0 = time.monotonic()
    try:
        with pytest.raises(StoreError) as exc:
            run_sweep(project / "sweep.yaml", SweepOptions(out=root / "out", cache=url, executor="local", jobs=1,
                                                           quiet=True, on_progress=on_progress))
        failed_after = time.monotonic() - stopped["at"]
        half_written = (root / "out" / "sweep.json").exists()
        s3.start()  # the endpoint returns, with what was committed before it went away
        committed = {k.rsplit("/", 1)[1].removesuffix(".json") for k in s3.keys("local/steps/") if k.endswith(".json")}
        t1 = time.monotonic()
        result = run_sweep(project / "sweep.yaml", SweepOptions(out=root / "out", cache=url, executor="local",
                                                                jobs=2, quiet=True))
    finally:
        os.environ.pop("MOBILEDEPLOY_SWEEP_WORK", None)
    print(f"local: stopped-endpoint run {t1 - t0:.1f}s (failed {failed_after:.1f}s after the stop), "
          f"rerun {time.monotonic() - t1:.1f}s")
    return {"error": str(exc.value), "failed_after": failed_after, "committed": committed, "stopped": stopped,
            "half_written": half_written, "result": result, "out": root / "out"}


def test_endpoint_stopped_mid_sweep_then_a_rerun_finishes_what_was_missing(local_run, s3):
    err = local_run["error"]
    assert "\n" not in err and err.startswith(f"cache s3://{BUCKET}/local: cannot ") and "Connect" in err, err
    assert local_run["failed_after"] < 60  # bounded: botocore's 3 attempts per call, no endless retry
    assert not local_run["half_written"]  # no table of a sweep that did not finish
    rows = local_run["result"]["rows"]
    builds = {r["keys"]["build"] for r in rows}
    kept = builds & local_run["committed"]
    assert local_run["stopped"]["key"] in kept  # the build finished before the stop was kept
    s = local_run["result"]["stats"]
    # 4 build steps in all: the rerun ran exactly those not committed before the stop
    assert s["build_ran"] == 4 - len(kept) and 1 <= s["build_ran"] <= 3 and s["errors"] == 0, s
    assert {r["keys"]["build"] for r in rows if r["steps"][0]["ran"]} == builds - kept
    assert all(r["status"] == "pass" for r in rows), rows


@pytest.fixture(scope="module")
def cluster_run(s3, project, tmp_path_factory, local_run):
    """The sweep on a 2-node cluster, the worker node's raylet SIGKILLed mid-build; the base
    folder is moved away once the driver has packed it into the store (workers never read it)."""
    import mobiledeploy.sweep.run as sweep_run
    from mobiledeploy.sweep.run import SweepOptions, run_sweep
    from mobiledeploy.sweep.store import Store

    root = tmp_path_factory.mktemp("ray")
    t0 = time.monotonic()
    cluster = Cluster(root)
    started = time.monotonic() - t0
    hidden = project.with_name("shapes-hidden")
    real_plan = sweep_run._plan

    def plan_then_hide(sweep, store):
        plan = real_plan(sweep, store)
        project.rename(hidden)  # from here on only the store has the base folder's files
        return plan

    url = f"s3://{BUCKET}/ray"
    sweep_run._plan = plan_then_hide
    try:
        with NodeKiller(cluster, Store(url)) as killer:
            result = run_sweep(project / "sweep.yaml", SweepOptions(out=root / "out", cache=url, address=cluster.address,
                                                                    quiet=True, on_progress=killer.on_progress))
    finally:
        sweep_run._plan = real_plan
        if hidden.exists():
            hidden.rename(project)
        cluster.shutdown()
    print(f"ray: cluster up in {started:.1f}s, sweep + shutdown {time.monotonic() - t0 - started:.1f}s, "
          f"killed {killer.killed.get('what')}")
    return {"result": result, "killed": killer.killed, "cluster": cluster, "out": root / "out"}


def test_two_node_sweep_survives_a_killed_node(cluster_run, local_run, s3):
    result, killed, cluster = cluster_run["result"], cluster_run["killed"], cluster_run["cluster"]
    rows = result["rows"]
    assert killed, "the worker node never ran a second build"
    assert result["executor"] == "ray" and result["stats"]["errors"] == 0
    assert all(r["status"] == "pass" for r in rows), rows
    # the killed step reran on the survivor (the head); the worker node's finished steps were kept
    by_build = {r["keys"]["build"]: r for r in rows}
    assert by_build[killed["key"]]["node"] == cluster.ids["head"]
    assert by_build[killed["key"]]["steps"][0]["ran"] is True
    from mobiledeploy.sweep.store import Store

    assert Store(f"s3://{BUCKET}/ray").leases() == {}  # the killed step's lease was released by its rerun
    kept = [by_build[k] for k in killed["finished"] if by_build[k]["node"] == cluster.ids["worker"]]
    assert kept, "no finished step of the killed node was kept"
    assert {r["node"] for r in rows} == set(cluster.ids.values())  # steps ran on both nodes
    for r in rows:  # where and how long, per step
        assert [s["step"] for s in r["steps"]] == ["build", "bench"] and all(s["seconds"] > 0 for s in r["steps"])
    # one conversion per build step, none lost or repeated but the killed one's
    assert result["stats"]["build_ran"] == 4
    # the same table as the run without Ray (same artifacts' sha256)
    assert _table(result) == _table(local_run["result"])
    # each node worked in its own folder, with the base folder's files from the store
    for name in ("head", "worker"):
        assert list((cluster.work[name] / "inputs").glob("*/labels.txt")), name
    out = cluster_run["out"]
    assert (out / "plots" / "timeline.png").read_bytes()[:4] == b"\x89PNG"
    html = (out / "index.html").read_text()
    assert "steps per node" in html and cluster.ids["worker"] in html
    _secret_free(s3, (out / "sweep.json").read_text(), html)


def test_a_fresh_cluster_and_folder_run_nothing(cluster_run, project, s3, tmp_path):
    """Another "machine": a new 2-node cluster and a new output folder, the same S3 store: the
    CLI runs 0 builds and 0 benchmarks, and prints nothing secret."""
    cluster = Cluster(tmp_path / "nodes")
    try:
        t0 = time.monotonic()
        r = run_cli("sweep", str(project / "sweep.yaml"), "-o", str(tmp_path / "out"), "--cache",
                    f"s3://{BUCKET}/ray", "--address", cluster.address, cwd=tmp_path)
        print(f"second machine: {time.monotonic() - t0:.1f}s")
    finally:
        cluster.shutdown()
    assert r.returncode == 0, r.stderr[-3000:]
    again = json.loads((tmp_path / "out" / "sweep.json").read_text())
    s = again["stats"]
    assert (s["build_ran"], s["bench_ran"], s["conversions"]) == (0, 0, 0) and s["cached"] == 4, s
    assert _table(again) == _table(cluster_run["result"])
    assert [r_["artifact_sha256"] for r_ in again["rows"]] == [r_["artifact_sha256"] for r_ in cluster_run["result"]["rows"]]
    _secret_free(s3, r.stdout, r.stderr, (tmp_path / "out" / "sweep.json").read_text(),
                 (tmp_path / "out" / "index.html").read_text())
    # nor in the store: records, leases, input packs
    client = s3.client()
    for key in s3.keys("ray/"):
        if key.endswith(".json"):
            _secret_free(s3, client.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode())
