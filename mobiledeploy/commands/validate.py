"""`mobiledeploy validate BUNDLE_DIR`: integrity, then the same real inputs through everything."""

from __future__ import annotations

import click


@click.command(name="validate")
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--samples", type=click.IntRange(1), default=None, help="Cap the validation images.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the report JSON here.")
@click.option("--quiet", "-q", is_flag=True)
def command(bundle, samples, json_path, quiet):
    """Re-run validation on a built bundle (sha256 of every artifact checked first)."""
    from pathlib import Path

    from ..errors import ValidationFailed
    from ..trust import reading, writable
    from ..validate.runner import failure_summary, validate_bundle
    from .build import _print_summary

    write = writable(Path(bundle))  # a read-only bundle is validated without writing its report
    with reading(Path(bundle), write=write):
        report = validate_bundle(Path(bundle), samples=samples, write=write, app=True,
                                 json_path=Path(json_path) if json_path else None,
                                 say=(lambda m: None) if quiet else (lambda m: click.echo(m, err=True)))
    if not quiet:
        _print_summary(report)
        if write:
            click.echo(f"report: {Path(bundle) / 'report' / 'index.html'}")
    if report["status"] != "pass":  # fail, or nothing judged
        raise ValidationFailed(failure_summary(report))
