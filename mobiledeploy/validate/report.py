"""report/index.html: one self-contained page (inline CSS and SVG plots, no scripts, no server).

The page is rendered by one Jinja2 environment (StrictUndefined, autoescape) from a view built
here out of ``validation.json`` and the manifest; the plots are SVG drawn in Python so the report
needs nothing from the internet and no plotting library.
"""

from __future__ import annotations

import math
from html import escape as _esc

from markupsafe import Markup

from ..tolerance import LIMITS
from ..tolerance import fmt as _fmt
from .rows import REFERENCE_ROW

COLORS = {"pass": "#1a7f37", "fail": "#cf222e", "skipped": "#6e7781"}
FONT = 'font-family="system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif" font-size="12"'
# metric name -> what it is, for the table's tooltips and order
METRIC_ORDER = ("max_abs", "mean_abs", "cosine", "snr_db", "gain", "gain_error", "layer_gain_step",
                "top1_agreement", "top5_agreement", "top1_accuracy", "accuracy_drop", "pixel_agreement",
                "miou_vs_reference", "miou", "pixel_accuracy", "miou_drop", "box_recall", "box_precision",
                "matched_iou",
                "score_max_abs", "map50", "map50_drop", "decoder_recall", "detections")


def fmt(v) -> str:
    """A metric value for people: 4 significant digits, ∞ for a perfect SNR, — for none."""
    if v is None:
        return "—"
    if isinstance(v, float) and math.isinf(v):
        return "∞" if v > 0 else "−∞"
    if isinstance(v, float) and math.isnan(v):
        return "NaN"
    s = f"{v:.4g}" if isinstance(v, float) and (v == 0 or 1e-3 <= abs(v) < 1e4) else _fmt(v)
    # 4 digits print a cosine of 0.99999 as "1": never round a non-integer to an integer
    if isinstance(v, float) and abs(v) < 2 and float(s) == round(float(s)) and float(s) != v:
        s = f"{v:.7g}"
    return s


def human_bytes(n: int | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def metric_rows(row: dict) -> list[dict]:
    """Every metric of a row with its limit (if any) and the verdict judged at validation.

    The verdicts are the row's ``checks`` (computed once, by ``tolerance.judge``); a limit whose
    metric was not measured is shown without a verdict.
    """
    checks = {c["metric"]: c for c in row.get("checks") or []}
    limits: dict[str, tuple[str, float, str]] = {}
    for key, limit in (row.get("tolerance") or {}).items():
        if limit is not None and key in LIMITS:
            metric, kind = LIMITS[key]
            limits[metric] = (key, limit, kind)
    metrics = row.get("metrics") or {}
    names = [m for m in METRIC_ORDER if m in metrics or m in limits]
    names += [m for m in metrics if m not in names]
    out = []
    for m in names:
        v = metrics.get(m)
        key, limit, kind = limits.get(m, (None, None, None))
        check = checks.get(m)
        out.append({"name": m, "value": fmt(v), "limit": "" if limit is None else
                    f"{'≤' if kind == 'max' else '≥'} {fmt(limit)}", "key": key or "",
                    "state": "" if check is None else ("ok" if check["ok"] else "bad")})
    return out


SUMMARY = ("max_abs", "snr_db", "top1_agreement", "top1_accuracy")


def summary_cells(row: dict, keys: tuple[str, ...] = SUMMARY) -> list[dict]:
    """The summary table's metric cells of a row, in ``keys`` order (the task's summary)."""
    by_name = {m["name"]: m for m in metric_rows(row)}
    return [by_name.get(k, {"name": k, "value": "—", "state": ""}) for k in keys]


# ------------------------------------------------------------------ SVG plots
def _text(x, y, s, anchor="start", color="#24292f", extra="") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="{color}" {extra}>'
            f"{_esc(str(s))}</text>")


def _svg(width: int, height: int, body: list[str], title: str) -> Markup:
    return Markup(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
                  f'viewBox="0 0 {width} {height}" role="img" {FONT}><title>{_esc(title)}</title>'
                  + "".join(body) + "</svg>")


def error_plot(rows: list[dict], width: int = 1000) -> Markup | None:
    """Per target: box plot of per-sample max |ref - out| of the logits on a log scale."""
    data = [(r, sorted(v for v in r["per_sample_max_abs"] if math.isfinite(v)))
            for r in rows if r.get("per_sample_max_abs")]
    data = [(r, v) for r, v in data if v]
    if not data:
        return None
    pos = [x for _, v in data for x in v if x > 0]
    limits = [r["tolerance"]["max_abs"] for r, _ in data if r["tolerance"].get("max_abs")]
    lo = math.floor(math.log10(min(pos + limits))) if pos or limits else -12
    hi = math.ceil(math.log10(max(pos + limits))) if pos or limits else 0
    hi = max(hi, lo + 1)
    left, right, rowh, top = 170, 20, 28, 24
    plot_w = width - left - right
    height = top + rowh * len(data) + 40

    def X(v: float) -> float:
        v = max(v, 10.0 ** lo)
        return left + (math.log10(v) - lo) / (hi - lo) * plot_w

    body = []
    for e in range(lo, hi + 1):
        x = X(10.0 ** e)
        body.append(f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{height - 34}" stroke="#d0d7de"/>')
        body.append(_text(x, height - 20, f"1e{e}", "middle", "#57606a"))
    body.append(_text(left + plot_w / 2, height - 4, "per-sample max |reference − artifact| of the "
                      "logits (log scale; 0 drawn at the left edge)", "middle", "#57606a"))
    for i, (r, v) in enumerate(data):
        y = top + i * rowh + rowh / 2
        q = [v[0], v[len(v) // 4], v[len(v) // 2], v[(3 * len(v)) // 4], v[-1]]
        c = COLORS[r["status"]]
        body.append(_text(left - 10, y + 4, r["target"], "end"))
        body.append(f'<line x1="{X(q[0]):.1f}" y1="{y:.1f}" x2="{X(q[4]):.1f}" y2="{y:.1f}" stroke="{c}"/>')
        for end in (q[0], q[4]):
            body.append(f'<line x1="{X(end):.1f}" y1="{y - 6:.1f}" x2="{X(end):.1f}" y2="{y + 6:.1f}" stroke="{c}"/>')
        body.append(f'<rect x="{X(q[1]):.1f}" y="{y - 8:.1f}" width="{max(X(q[3]) - X(q[1]), 1.5):.1f}" '
                    f'height="16" fill="{c}" fill-opacity="0.25" stroke="{c}"/>')
        body.append(f'<line x1="{X(q[2]):.1f}" y1="{y - 8:.1f}" x2="{X(q[2]):.1f}" y2="{y + 8:.1f}" '
                    f'stroke="{c}" stroke-width="2.5"/>')
        lim = r["tolerance"].get("max_abs")
        if lim:
            body.append(f'<path d="M{X(lim):.1f},{y - 11:.1f} l-4,-5 h8 z" fill="#24292f">'
                        f"<title>max_abs limit {fmt(lim)}</title></path>")
    body.append(_text(width - right, 12, "▼ max_abs limit", "end", "#24292f"))
    return _svg(width, height, body, "error distribution per target")


def accuracy_plot(rows: list[dict], width: int = 1000) -> Markup | None:
    """Per target: top-1 agreement with the reference and top-1 accuracy on the labels."""
    data = [r for r in rows if r["status"] != "skipped" and (
        r["metrics"].get("top1_agreement") is not None or r["metrics"].get("top1_accuracy") is not None)]
    if not data:
        return None
    left, right, top, rowh = 170, 70, 26, 34
    plot_w = width - left - right
    height = top + rowh * len(data) + 30
    series = (("top1_agreement", "#0969da", "agreement with the reference"),
              ("top1_accuracy", "#8250df", "accuracy on the labels"))
    body = []
    for t in range(0, 11, 2):
        x = left + plot_w * t / 10
        body.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{height - 26}" stroke="#d0d7de"/>')
        body.append(_text(x, height - 12, f"{t / 10:.1f}", "middle", "#57606a"))
    lx = left
    for _, col, label in series:
        body.append(f'<rect x="{lx}" y="6" width="10" height="10" fill="{col}"/>')
        body.append(_text(lx + 14, 15, label))
        lx += 14 + 7 * len(label) + 24
    for i, r in enumerate(data):
        y0 = top + i * rowh
        body.append(_text(left - 10, y0 + rowh / 2 + 3, r["target"], "end", COLORS[r["status"]]))
        for j, (key, col, _) in enumerate(series):
            v = r["metrics"].get(key)
            if v is None:
                continue
            y = y0 + 3 + j * 13
            body.append(f'<rect x="{left}" y="{y}" width="{max(plot_w * v, 1):.1f}" height="11" fill="{col}"/>')
            body.append(_text(left + plot_w * v + 4, y + 10, f"{v:.3f}", "start", "#24292f"))
    return _svg(width, height, body, "top-1 agreement and accuracy per target")


def size_plot(artifacts: list[dict], width: int = 1000) -> Markup | None:
    """Bytes of every artifact in the manifest."""
    data = [(a["target"], a.get("bytes")) for a in artifacts if a.get("bytes")]
    if not data:
        return None
    left, right, top, rowh = 170, 90, 8, 22
    plot_w = width - left - right
    big = max(b for _, b in data)
    height = top + rowh * len(data) + 8
    body = []
    for i, (name, b) in enumerate(data):
        y = top + i * rowh
        w = max(plot_w * b / big, 1)
        body.append(_text(left - 10, y + 14, name, "end"))
        body.append(f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="15" fill="#57606a" fill-opacity="0.7"/>')
        body.append(_text(left + w + 6, y + 15, human_bytes(b)))
    return _svg(width, height, body, "artifact sizes")


def layers_plot(loc: dict, width: int = 1000) -> Markup | None:
    """SNR of every matched layer against the reference, the threshold and the first divergence."""
    layers = [x for x in loc.get("layers", []) if x.get("snr_db") is not None]
    if not layers:
        return None
    vals = [min(max(x["snr_db"], -20.0), 140.0) for x in layers]
    thr = loc.get("threshold_db")
    ymax = max(vals + [thr or 0]) + 10
    ymin = min(min(vals), 0.0)
    left, right, top, bottom = 50, 10, 14, 110
    plot_h = 170
    height = top + plot_h + bottom
    step = (width - left - right) / len(layers)

    def Y(v: float) -> float:
        return top + (ymax - v) / (ymax - ymin) * plot_h

    body = []
    for t in range(int(math.ceil(ymin / 20) * 20), int(ymax) + 1, 20):
        body.append(f'<line x1="{left}" y1="{Y(t):.1f}" x2="{width - right}" y2="{Y(t):.1f}" stroke="#d0d7de"/>')
        body.append(_text(left - 6, Y(t) + 4, f"{t}", "end", "#57606a"))
    body.append(_text(12, top + plot_h / 2, "SNR dB", "middle", "#57606a",
                      f'transform="rotate(-90 12 {top + plot_h / 2:.1f})"'))
    first = loc.get("first_divergent_layer")
    for i, (x, v) in enumerate(zip(layers, vals, strict=True)):
        cx = left + step * (i + 0.5)
        bad = thr is not None and x["snr_db"] < thr
        col = COLORS["fail"] if bad else "#0969da"
        body.append(f'<rect x="{cx - step * 0.35:.1f}" y="{min(Y(v), Y(0)):.1f}" width="{step * 0.7:.1f}" '
                    f'height="{abs(Y(0) - Y(v)):.1f}" fill="{col}" fill-opacity="{0.95 if x["layer"] == first else 0.55}">'
                    f'<title>{_esc(x["layer"])}: {fmt(x["snr_db"])} dB</title></rect>')
        body.append(_text(cx + 3, top + plot_h + 8, x["layer"], "end",
                          COLORS["fail"] if x["layer"] == first else "#57606a",
                          f'font-size="10" transform="rotate(-60 {cx + 3:.1f} {top + plot_h + 8:.1f})"'
                          + (' font-weight="bold"' if x["layer"] == first else "")))
    if thr is not None:
        body.append(f'<line x1="{left}" y1="{Y(thr):.1f}" x2="{width - right}" y2="{Y(thr):.1f}" '
                    f'stroke="{COLORS["fail"]}" stroke-dasharray="5,4"/>')
        body.append(_text(width - right - 4, Y(thr) - 4, f"threshold {fmt(thr)} dB", "end", COLORS["fail"]))
    return _svg(width, height, body, "per-layer SNR against the reference")


# ------------------------------------------------------------------ page
def build_view(report: dict, manifest: dict) -> dict:
    """Everything the template shows, derived from the report and the manifest."""
    from ..tasks import get_task

    task = get_task(report.get("task"))
    keys = tuple(k for k, _ in task.summary)
    arts = {a["target"]: a for a in manifest.get("artifacts", [])}
    rows = []
    for r in report["results"]:
        art = arts.get(r["target"], {})
        loc = r.get("localization")
        rows.append({
            "target": r["target"], "status": r["status"], "executor": r.get("executor") or "",
            "reason": r.get("reason") or "", "layer_check": r.get("layer_check") or "",
            "path": r.get("path") or art.get("path", ""),
            "bytes": human_bytes(art.get("bytes")) if art else "", "seconds": r.get("seconds"),
            "metrics": metric_rows(r), "cells": summary_cells(r, keys), "localization": loc,
            "loc_plot": layers_plot(loc) if loc else None,
            "loc_value": fmt(loc.get("value")) if loc else "",
        })
    ref = manifest.get("reference") or {}
    return {
        "task": task.name,
        "summary_headings": [h for _, h in task.summary],
        "task_section": task.report_section(report, manifest),
        "name": report["name"], "status": report["status"], "samples": report["samples"],
        "labelled": report.get("labelled"), "reference": report["reference"],
        "counts": {s: sum(r["status"] == s for r in report["results"] if r["target"] != REFERENCE_ROW)
                   for s in ("pass", "fail", "skipped")},
        "version": report.get("mobiledeploy_version", ""),
        "seeded": bool(ref.get("seeded_weights")),
        "rows": rows,
        "plots": {"errors": error_plot(report["results"]), "accuracy": accuracy_plot(report["results"]),
                  "sizes": size_plot(manifest.get("artifacts", []))},
    }


def render_html(report: dict, manifest: dict) -> str:
    """The report page as a string (one Jinja2 environment, StrictUndefined, autoescape)."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    from ..resources import resource_dir

    env = Environment(loader=FileSystemLoader(str(resource_dir("templates") / "report")),
                      undefined=StrictUndefined, autoescape=select_autoescape(["html", "j2"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = fmt
    return env.get_template("index.html.j2").render(v=build_view(report, manifest))
