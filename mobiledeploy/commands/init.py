"""`mobiledeploy init DIR`: the shipped demo definition and every file it names."""

from __future__ import annotations

import click


@click.command(name="init")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="Overwrite files that already exist in DIR.")
def command(directory: str, force: bool) -> None:
    """Copy the shipped demo definition (weights, labels, calibration and validation images)
    into DIRECTORY so that `mobiledeploy build DIRECTORY/shapes.yaml` works from there."""
    import shutil
    from pathlib import Path

    from ..errors import UserError
    from ..resources import resource_dir

    src = resource_dir("examples") / "shapes"
    dest = Path(directory)
    if dest.exists() and not dest.is_dir():
        raise UserError(f"{dest}: exists and is not a directory; choose another DIR")
    files = [p for p in sorted(src.rglob("*")) if p.is_file() and "__pycache__" not in p.parts]
    clash = [dest / p.relative_to(src) for p in files if (dest / p.relative_to(src)).exists()]
    if clash and not force:
        raise UserError(f"{clash[0]}: already exists; use --force to overwrite or choose an empty DIR")
    tmp = dest.parent / f".{dest.name}.init-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for p in files:
        out = tmp / p.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, out)
    dest.mkdir(parents=True, exist_ok=True)
    for p in sorted(tmp.rglob("*")):
        if p.is_file():
            out = dest / p.relative_to(tmp)
            out.parent.mkdir(parents=True, exist_ok=True)
            p.replace(out)
    shutil.rmtree(tmp, ignore_errors=True)
    yaml_files = sorted(dest.glob("*.yaml"))
    click.echo(f"wrote {len(files)} files to {dest}")
    if yaml_files:
        click.echo(f"next: mobiledeploy build {yaml_files[0]} -o {dest / 'dist'}")
