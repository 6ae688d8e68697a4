"""`mobiledeploy inspect FILE.tflite [--edgetpu] [--json]`: ops, tensors, quantization,
XNNPACK partitions and, with --edgetpu, the predicted Edge TPU mapping with advice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click


def _io(sg, indices: list[int]) -> list[dict[str, Any]]:
    return [sg.tensors[i].to_dict() for i in indices]


def _op_detail(options: dict[str, Any]) -> str:
    keys = ("fused_activation_function", "stride_h", "padding", "filter_height",
            "depth_multiplier", "keep_dims", "axis", "new_shape")
    short = {"fused_activation_function": "act", "stride_h": "stride", "filter_height": "pool"}
    parts = []
    for k in keys:
        v = options.get(k)
        if v in (None, "NONE") or (k == "depth_multiplier" and v == 1):
            continue
        if k == "stride_h":
            v = f"{v}x{options.get('stride_w', v)}"
        elif k == "filter_height":
            v = f"{v}x{options.get('filter_width', v)}"
        parts.append(f"{short.get(k, k)}={v}")
    return " ".join(parts)


def build_report(path: str, edgetpu: bool) -> dict[str, Any]:
    """The JSON ``inspect`` prints: model facts, ops, I/O, XNNPACK and optional Edge TPU keys."""
    from ..backends.tflite.reader import read_tflite, xnnpack_partitions

    model = read_tflite(path)
    sg = model.main
    ops = []
    for op in sg.operators:
        outs = [sg.tensors[o] for o in op.outputs if o >= 0]
        kernel = None
        if op.op in ("CONV_2D", "DEPTHWISE_CONV_2D") and len(op.inputs) > 1:
            kernel = sg.tensors[op.inputs[1]].shape[1:3]
        ops.append({"index": op.index, "op": op.op, "custom": op.custom, "version": op.version,
                    "options": op.options, "kernel": kernel,
                    "output_shape": outs[0].shape if outs else None,
                    "output_dtype": outs[0].dtype if outs else None})
    report: dict[str, Any] = {
        "model": path, "bytes": model.bytes, "schema_version": model.version,
        "subgraphs": len(model.subgraphs), "ops_total": len(ops),
        "tensors_total": len(sg.tensors),
        "constant_tensors": sum(1 for t in sg.tensors if t.is_constant),
        "inputs": _io(sg, sg.inputs), "outputs": _io(sg, sg.outputs),
        "op_counts": model.op_counts(), "ops": ops,
        "xnnpack": xnnpack_partitions(path, model),
    }
    if edgetpu:
        from ..backends.edgetpu import analyze

        et = analyze(path)
        for row, mapping in zip(ops, et.pop("ops"), strict=True):
            row["edgetpu"] = {k: mapping[k] for k in ("status", "mapped", "reason")}
            row["macs"] = mapping.get("macs", 0)
        et.pop("model")
        report.update(et)
    return report


def _fmt_q(t: dict[str, Any]) -> str:
    q = t["quantization"]
    if not q:
        return "-"
    scale = "/".join(f"{s:.4g}" for s in q["scale"])
    return f"scale={scale} zp={q['zero_point'][0]}" + (" per-channel" if q["per_channel"] else "")


def _print(report: dict[str, Any], edgetpu: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=120)
    con.print(f"[bold]{report['model']}[/]  {report['bytes']:,} bytes, schema v"
              f"{report['schema_version']}, {report['subgraphs']} subgraph(s), "
              f"{report['ops_total']} ops, {report['tensors_total']} tensors "
              f"({report['constant_tensors']} constant)")
    io = Table(title="inputs / outputs")
    for col in ("", "name", "shape", "dtype", "quantization"):
        io.add_column(col)
    for kind in ("inputs", "outputs"):
        for t in report[kind]:
            io.add_row(kind[:-1], t["name"], str(t["shape"]), t["dtype"], _fmt_q(t))
    con.print(io)
    t = Table(title="operators")
    cols = ["#", "op", "kernel", "details", "output", "dtype"] + (["Edge TPU"] if edgetpu else [])
    for col in cols:
        t.add_column(col, justify="right" if col == "#" else "left")
    for op in report["ops"]:
        row = [str(op["index"]), op["op"], "x".join(map(str, op["kernel"] or [])),
               _op_detail(op["options"]), str(op["output_shape"]), op["output_dtype"] or ""]
        if edgetpu:
            e = op["edgetpu"]
            row.append("[green]TPU[/]" if e["mapped"] else f"[red]CPU[/] {e['status']}")
        t.add_row(*row)
    con.print(t)
    x = report["xnnpack"]
    if x.get("available"):
        left = ", ".join(f"#{o['index']} {o['op']}" for o in x["undelegated_ops"]) or "none"
        con.print(f"XNNPACK ({x['runtime']}): {x['partitions']} partition(s), "
                  f"{x['delegated_ops']} ops delegated; on built-in kernels: {left}")
    else:
        con.print(f"XNNPACK: not measured ({x['reason']})")
    if edgetpu:
        from ..backends.edgetpu import format_log

        con.print()
        con.print(format_log(report), markup=False, highlight=False)
        for w in report.get("warnings", []):
            con.print(f"warning: {w}", markup=False)
        share = report.get("cpu_share")
        if share and report["first_cpu_op"]:
            con.print(f"CPU share: {share['ops']:.0%} of ops, {share['macs']:.0%} of MACs "
                      f"(from op #{report['first_cpu_op']['index']} "
                      f"{report['first_cpu_op']['op']})", markup=False)
        for a in report.get("advice", []):
            con.print(f"[{a['severity']}] {a['message']}\n    fix: {a['fix']}", markup=False)


@click.command(name="inspect")
@click.argument("file", metavar="FILE.tflite")
@click.option("--edgetpu", is_flag=True, help="Predict the Edge TPU compiler's op mapping.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def command(file: str, edgetpu: bool, as_json: bool) -> None:
    """Ops, tensors and quantization of a .tflite file (--edgetpu: Edge TPU mapping)."""
    from ..errors import UserError

    if not Path(file).is_file():
        raise UserError(f"{file}: no such file; pass the path of a .tflite model")
    report = build_report(file, edgetpu)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=_jsonable))
    else:
        _print(report, edgetpu)


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)
