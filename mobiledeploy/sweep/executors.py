"""Where the sweep's steps run: Ray tasks (a local instance, or a cluster by address) or local
worker processes. Both rerun a step whose worker died (finished steps are in the store already),
at most ``retries`` times; a step's own failure is a result, never retried."""

from __future__ import annotations

import os

WORKER_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore", "RAY_USAGE_STATS_ENABLED": "0",
              "OMP_NUM_THREADS": "1"}


def _died(req: dict, why: str) -> dict:
    return {"key": req["key"], "what": req["what"], "error": why}


class LocalExecutor:
    """A pool of long-lived worker processes (the frameworks are imported once per worker); a
    killed worker breaks the pool, which is rebuilt and the unfinished steps resubmitted."""

    name = "local"

    def __init__(self, jobs: int, retries: int):
        self.jobs = max(1, jobs)
        self.retries = retries
        self.deaths = 0
        self._pool = None

    def describe(self) -> str:
        return f"{self.jobs} local worker process(es)"

    def _new_pool(self):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"))

    def run(self, reqs: list[dict], done, stats: dict) -> None:
        from concurrent.futures import as_completed
        from concurrent.futures.process import BrokenProcessPool

        from .steps import run_task

        for k, v in WORKER_ENV.items():
            os.environ.setdefault(k, v)
        pending = {r["key"]: r for r in reqs}
        while pending:
            if self._pool is None:  # kept across phases: each worker imports the frameworks once
                self._pool = self._new_pool()
            broken = False
            futs = {self._pool.submit(run_task, r): k for k, r in pending.items()}
            for f in as_completed(futs):
                k = futs[f]
                try:
                    res = f.result()
                except BrokenProcessPool:
                    broken = True
                    continue
                res.setdefault("what", pending[k]["what"])
                pending.pop(k)
                done(res)
            if broken:  # a worker died: the finished steps are stored, the rest rerun in a new pool
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
                self.deaths += 1
                stats["worker_deaths"] += 1
                if self.deaths > self.retries:
                    for r in list(pending.values()):
                        done(_died(r, f"worker process died {self.deaths} times; giving up"))
                    pending.clear()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _orphan_watch(period: float = 0.5) -> None:
    """Exit this worker process as soon as its raylet (the parent) is gone: its node is lost to
    the cluster, which reruns the step elsewhere; a worker left running would go on writing to the
    shared store as if nothing happened (its converter process follows: lifeline.py)."""
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(period)
            if os.getppid() != parent:
                os._exit(70)

    if not getattr(_orphan_watch, "started", False):  # once per worker process
        _orphan_watch.started = True
        threading.Thread(target=watch, name="mobiledeploy-orphan-watch", daemon=True).start()


def run_ray_task(req: dict) -> dict:
    """A step in a Ray worker (see ``steps.run_task``), stopped with its node."""
    from .steps import run_task

    _orphan_watch()
    return run_task(req)


class RayExecutor:
    """Steps as Ray tasks: Ray reruns a task whose worker died (``max_retries``)."""

    name = "ray"

    def __init__(self, address: str | None, jobs: int, retries: int):
        for k, v in WORKER_ENV.items():
            os.environ.setdefault(k, v)
        import ray

        self.started = False
        if not ray.is_initialized():
            kw = {} if address else {"num_cpus": max(1, jobs), "object_store_memory": 80 * 1024 * 1024}
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False,
                     **kw)
            self.started = True
        self.address = address or "local instance"
        self.retries = retries

    def describe(self) -> str:
        import ray

        return f"Ray ({self.address}, {int(ray.cluster_resources().get('CPU', 0))} CPU)"

    def run(self, reqs: list[dict], done, stats: dict) -> None:
        import ray
        from ray.exceptions import RayError

        task = ray.remote(num_cpus=1, max_retries=self.retries, retry_exceptions=False)(run_ray_task)
        refs = {task.remote(r): r for r in reqs}
        try:
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1)
                for ref in ready:
                    req = refs.pop(ref)
                    try:
                        res = ray.get(ref)
                    except RayError as exc:  # the worker died more than max_retries times
                        stats["worker_deaths"] += 1
                        res = _died(req, f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
                    res.setdefault("what", req["what"])
                    done(res)
        finally:  # the sweep stops (the store went away, an interrupt): no step left running
            for ref in refs:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # already finished or its node is gone
                    pass

    def close(self) -> None:
        if self.started:
            import ray

            ray.shutdown()
