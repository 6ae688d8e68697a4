"""`mobiledeploy sweep SWEEP.yaml -o OUT`: variants x targets built, validated and benchmarked."""

from __future__ import annotations

import click


@click.command(name="sweep")
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False),
              help="Folder for the table (sweep.json), report (index.html), plots and artifacts.")
@click.option("--cache", default=None,
              help="Artifact store shared between sweeps and machines: a folder or an fsspec URL "
                   "(s3://..., file://...). Default: $MOBILEDEPLOY_CACHE or ~/.cache/mobiledeploy/sweep.")
@click.option("--address", default=None, help="A Ray cluster to run on (default: a local Ray instance).")
@click.option("--no-ray", is_flag=True, help="Run the steps in local processes, without Ray.")
@click.option("--jobs", "-j", default=2, show_default=True, type=click.IntRange(1, 64),
              help="Workers of the local Ray instance or local processes.")
@click.option("--retries", default=3, show_default=True, type=click.IntRange(0, 20),
              help="Reruns of a step whose worker died.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
def command(sweep_file, out, cache, address, no_ray, jobs, retries, quiet):
    """Build, validate and benchmark every variant of SWEEP_FILE on every target; the Pareto front
    (quality vs measured latency) per target in OUT/index.html and OUT/sweep.json."""
    from pathlib import Path

    from ..errors import UserError
    from ..sweep.report import table_lines
    from ..sweep.run import SweepOptions, run_sweep

    if no_ray and address:
        raise UserError("--no-ray and --address: choose one")
    result = run_sweep(sweep_file, SweepOptions(out=Path(out), cache=cache, address=address,
                                                executor="local" if no_ray else "auto", jobs=jobs,
                                                retries=retries, quiet=quiet))
    if not quiet:
        for line in table_lines(result):
            click.echo(line)
