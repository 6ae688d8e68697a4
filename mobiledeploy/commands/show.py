"""`mobiledeploy show MODEL.yaml`: the network as the MobileNetV3 paper's stage table."""

from __future__ import annotations

import json

import click


@click.command(name="show")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def command(model: str, as_json: bool) -> None:
    """The network as a table (stage, operator, exp, out, SE, NL, stride, MACs, params)."""
    from dataclasses import asdict

    from ..architectures.stats import stage_table
    from ..definition import load_definition

    d = load_definition(model, check_files=False)
    spec = d.architecture_spec()
    rows = stage_table(spec)
    macs, params = sum(r.macs for r in rows), sum(r.params for r in rows)
    if as_json:
        click.echo(json.dumps({"name": d.name, "architecture": spec.name, "macs": macs,
                               "params": params, "rows": [asdict(r) for r in rows]}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    a = d.architecture
    title = (f"{d.name}: {a.preset or 'custom'} x{a.width_multiplier:g} @ "
             f"{d.input.height}x{d.input.width}, {spec.num_classes} classes")
    if (spec.padding, spec.channel_rounding) != ("symmetric", "torchvision"):
        title += f" ({spec.padding} padding, {spec.channel_rounding} rounding)"
    t = Table(title=title)
    for col in ("input", "operator", "exp", "out", "SE", "NL", "s", "MACs", "params"):
        t.add_column(col, justify="right" if col in ("exp", "out", "s", "MACs", "params") else "left")
    for r in rows:
        t.add_row(r.input, r.operator, "" if r.exp is None else str(r.exp), str(r.out),
                  "✓" if r.se else "", r.nl, str(r.stride), f"{r.macs:,}", f"{r.params:,}")
    t.add_section()
    t.add_row("total", "", "", "", "", "", "", f"{macs / 1e6:.1f}M", f"{params / 1e6:.3f}M")
    Console(width=120).print(t)
