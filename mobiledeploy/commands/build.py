"""`mobiledeploy build MODEL.yaml -o OUT`: the whole bundle."""

from __future__ import annotations

import click


@click.command(name="build")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Bundle folder.")
@click.option("--target", "targets", multiple=True, help="Build only this target (repeatable).")
@click.option("--jobs", "-j", default=1, show_default=True, type=click.IntRange(1, 16),
              help="Conversions in parallel, each in its own process.")
@click.option("--no-cache", is_flag=True, help="Rebuild every step even when its inputs are unchanged.")
@click.option("--explain", is_flag=True, help="Say why each step ran or was skipped.")
@click.option("--samples", type=click.IntRange(1), default=None, help="Cap the validation images.")
@click.option("--no-validate", is_flag=True, help="Skip validation (the manifest says so).")
@click.option("--no-app", is_flag=True, help="Do not generate the Android app.")
@click.option("--wait", default=0.0, type=click.FloatRange(0), show_default=True,
              help="Seconds to wait for another build holding the bundle's lock.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output (CI).")
@click.option("--force", is_flag=True,
              help="Build into an existing folder that is not a bundle (files of the same names are replaced).")
def command(model, out, targets, jobs, no_cache, explain, samples, no_validate, no_app, wait, quiet, force):
    """Build the bundle: artifacts, validation, Android app, manifest (written last)."""
    from pathlib import Path

    from ..errors import ValidationFailed
    from ..pipeline.run import BuildOptions, build
    from ..validate.runner import failure_summary

    res = build(model, BuildOptions(out=Path(out), targets=tuple(targets), jobs=jobs, cache=not no_cache,
                                    quiet=quiet, wait=wait, validate=not no_validate,
                                    app=not no_app, samples=samples, force=force))
    if explain:
        for step, what, why in res.explain:
            click.echo(f"{step:32s} {what:8s} {why}")
    if res.validation and not quiet:
        _print_summary(res.validation)
    if not quiet:
        click.echo(f"bundle: {Path(out) / 'manifest.json'}")
        if res.validation:
            click.echo(f"report: {Path(out) / 'report' / 'index.html'}")
        if (Path(out) / "android").is_dir():
            click.echo(f"android app: {Path(out) / 'android'}")
    if res.failed and not res.validation:
        raise ValidationFailed("; ".join(f"{k}: {v}" for k, v in res.failed.items()))
    if res.validation and res.validation["status"] != "pass":  # fail, or nothing judged
        raise ValidationFailed(failure_summary(res.validation))


def _print_summary(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..tasks import get_task

    summary = get_task(report.get("task")).summary
    t = Table(title=f"validation on {report['samples']} real images: {report['status'].upper()}")
    for col in ("target", "status", *(h for _, h in summary), "reason"):
        t.add_column(col)
    for r in report["results"]:
        m = r["metrics"]

        def f(k, fmt="{:.4g}", m=m):
            v = m.get(k)
            return "" if v is None else fmt.format(v)

        color = {"pass": "green", "fail": "red", "skipped": "yellow"}[r["status"]]
        cells = [f(k, {"max_abs": "{:.2e}", "snr_db": "{:.1f}"}.get(k, "{:.3f}")) for k, _ in summary]
        t.add_row(r["target"], f"[{color}]{r['status']}[/]", *cells, r["reason"][:70])
    Console(stderr=True, width=140).print(t)
