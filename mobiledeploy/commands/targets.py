"""`mobiledeploy targets`: every target, its backend, and whether it can build here."""

from __future__ import annotations

import json

import click


@click.command(name="targets")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def command(as_json: bool) -> None:
    """Every target: backend, precision, whether its dependencies are installed, what it needs."""
    from ..backends.registry import missing
    from ..capabilities import capability_table
    from ..targets import all_targets

    cells = capability_table()
    rows = []
    for t in all_targets().values():
        cls = t.backend_class()
        miss = missing(t.backend)
        resolved = t.resolve()
        rows.append({
            "target": t.name, "backend": t.backend, "precision": t.precision,
            "installed": not miss, "missing": miss,
            "needs": f"pip install 'mobiledeploy[{cls.extra}]'", "artifact": t.artifact,
            "description": t.description, "options": resolved.options_dict(),
            "tolerance": resolved.tolerance.set_values(), "byte_stable": cls.byte_stable,
            "app_runtime": cls.app_runtime,
            "tasks": [c.task for c in cells if c.target == t.name and c.builds],
            "app_tasks": [c.task for c in cells if c.target == t.name and c.app_runtime],
        })
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="mobiledeploy targets")
    for col in ("target", "backend", "precision", "installed here", "needs", "what"):
        table.add_column(col)
    for r in rows:
        ok = "[green]yes[/]" if r["installed"] else f"[red]no[/] (missing {', '.join(r['missing'])})"
        table.add_row(r["target"], r["backend"], r["precision"], ok, escape(r["needs"]), r["description"])
    console = Console(width=160)
    console.print(table)
    # what builds what: tasks x targets, each cell saying whether the target builds the task and
    # which app runtime runs that artifact in the generated app
    caps = Table(title="tasks x targets (app: the app runtime that runs the artifact; - : no app)")
    caps.add_column("task", no_wrap=True)
    names = [r["target"] for r in rows]
    for n in names:
        caps.add_column(n, overflow="fold")
    for task in dict.fromkeys(c.task for c in cells):
        by = {c.target: c for c in cells if c.task == task}
        caps.add_row(task, *[("[green]yes[/] " + (f"app: {by[n].app_runtime}" if by[n].app_runtime else "-"))
                             if by[n].builds else "[red]no[/]" for n in names])
    console.print(caps)
