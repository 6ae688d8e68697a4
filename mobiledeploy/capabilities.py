"""What builds what: task x target x app runtime, computed from the registries.

Nothing here lists a task, a backend or a runtime: tasks say which app runtimes serve them
(``Task.app_runtimes``), backends which tasks they convert (``Backend.tasks``) and which app runtime
loads their artifacts (``Backend.app_runtime``), and target profiles which backend they use. The
table is what ``mobiledeploy targets`` prints and what every refusal quotes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UserError


@dataclass(frozen=True)
class Capability:
    """One cell: can ``target`` build ``task``, and which app runtime (if any) runs it in the app."""

    task: str
    target: str
    builds: bool
    app_runtime: str | None


def capability_table() -> list[Capability]:
    """Every (task, target) pair of the registries, in registration order."""
    from .targets import all_targets
    from .tasks import all_tasks

    cells = []
    for task in all_tasks():
        for t in all_targets().values():
            builds, runtime = t.builds(task.name), t.backend_class().app_runtime
            serves = task.app_runtimes is None or runtime in task.app_runtimes
            rt = runtime if builds and runtime and serves else None
            cells.append(Capability(task.name, t.name, builds, rt))
    return cells


def app_runtimes() -> list[str]:
    """Every app runtime some registered backend's artifacts run on, in registration order."""
    from .targets import all_targets

    seen: dict[str, None] = {}
    for t in all_targets().values():
        rt = t.backend_class().app_runtime
        if rt:
            seen.setdefault(rt)
    return list(seen)


def summary(task: str) -> str:
    """One line: what ``task`` builds on and which app runtimes serve it."""
    cells = [c for c in capability_table() if c.task == task]
    builds = [c.target for c in cells if c.builds]
    runtimes: dict[str, list[str]] = {}
    for c in cells:
        if c.app_runtime:
            runtimes.setdefault(c.app_runtime, []).append(c.target)
    app = "; ".join(f"{rt} ({', '.join(ts)})" for rt, ts in runtimes.items()) or "none"
    return f"{task}: builds on {', '.join(builds) or 'no target'}; app runtimes: {app}"


def check_app(task: str, runtime: str | None = None) -> None:
    """A one-line UserError when no app (or not ``runtime``'s) serves ``task``, quoting the table."""
    served = {c.app_runtime for c in capability_table() if c.task == task and c.app_runtime}
    if not served or (runtime is not None and runtime not in served):
        what = f"the {runtime} app" if runtime else "the Android app"
        raise UserError(f"{what} does not serve {task} models ({summary(task)}; see mobiledeploy targets)")


def serves_app(task: str) -> bool:
    """Whether some app runtime serves ``task``."""
    return any(c.task == task and c.app_runtime for c in capability_table())
