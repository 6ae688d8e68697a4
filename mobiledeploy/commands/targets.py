"""`mobiledeploy targets`: every target, its backend, and whether it can build here."""

from __future__ import annotations

import json

import click


@click.command(name="targets")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def command(as_json: bool) -> None:
    """Every target: backend, precision, whether its dependencies are installed, what it needs."""
    from ..backends.registry import missing
    from ..targets import all_targets

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
    Console(width=160).print(table)
