"""The sweep's result: per-target table, Pareto front (quality up, measured latency down), plots
(matplotlib, Agg, imported lazily), HTML and JSON. Every figure is a step record's value."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path


def quality_keys(task: str) -> tuple[str, str]:
    """(quality against labels, agreement with the reference): the validation row's metric keys
    the task ranks by (``Task.quality_keys``)."""
    from ..tasks import get_task

    return get_task(task).quality_keys


def _quality(row: dict) -> float | None:
    return row["accuracy"] if row.get("accuracy") is not None else row.get("agreement")


def pareto(rows: list[dict]) -> set[int]:
    """Indices of the rows no other row beats: latency <= and quality >=, one of them strictly."""
    pts = [(i, r["latency_ms"], _quality(r)) for i, r in enumerate(rows)
           if r.get("latency_ms") is not None and _quality(r) is not None]
    front = set()
    for i, lat, q in pts:
        if not any((l2 <= lat and q2 >= q) and (l2 < lat or q2 > q) for j, l2, q2 in pts if j != i):
            front.add(i)
    return front


def write_report(out: Path, result: dict, store, say) -> None:
    """OUT/sweep.json, OUT/index.html, OUT/plots/<target>.png, OUT/artifacts/<variant>/... ."""
    out.mkdir(parents=True, exist_ok=True)
    rows = result["rows"]
    targets = list(dict.fromkeys(r["target"] for r in rows))
    result["fronts"] = {}
    for t in targets:
        idx = [i for i, r in enumerate(rows) if r["target"] == t]
        front = pareto([rows[i] for i in idx])
        for k, i in enumerate(idx):
            rows[i]["pareto"] = k in front
        result["fronts"][t] = [rows[idx[k]]["variant"] for k in sorted(front, key=lambda k: rows[idx[k]]["latency_ms"])]
    # the artifacts themselves, from the store (what a user ships from the front)
    for r in rows:
        if r.get("artifact") and r["keys"].get("build"):
            dest = out / "artifacts" / r["variant"]
            if not (dest / r["artifact"]).exists():
                store.fetch(r["keys"]["build"], dest, members=r["artifact"])
            r["artifact_file"] = f"artifacts/{r['variant']}/{r['artifact']}"
    plots = {}
    try:
        plots = {t: plot_target(out / "plots", t, [r for r in rows if r["target"] == t]) for t in targets}
    except ImportError:
        say("[yellow]matplotlib is not installed: no plots (pip install 'mobiledeploy[sweep]')[/]")
    result["plots"] = {t: p for t, p in plots.items() if p}
    if len(targets) > 1 and result["plots"]:
        result["plots"]["all"] = plot_overview(out / "plots", rows)
    _write(out / "index.html", render_html(result))
    _write(out / "sweep.json", json.dumps(result, indent=1, default=str))  # last: the sweep is whole


def _write(path: Path, text: str) -> None:
    from ..bundle import write_bytes_atomic

    write_bytes_atomic(path, text.encode("utf-8"))


def plot_target(folder: Path, target: str, rows: list[dict]) -> str | None:
    """One PNG per target: quality and agreement vs measured latency, quality vs size, and (when
    the artifact has an Edge TPU analysis) quality vs the ops left to the CPU."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [r for r in rows if r.get("latency_ms") is not None]
    if not pts:
        return None
    panels = [("latency_ms", "median latency (ms, measured)", "accuracy"),
              ("latency_ms", "median latency (ms, measured)", "agreement"),
              ("bytes", "size (MB)", "accuracy")]
    if any(r.get("edgetpu_cpu_ops") is not None for r in pts):
        panels.append(("edgetpu_cpu_ops", "ops left to the CPU (Edge TPU analysis)", "accuracy"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (xk, xlabel, yk) in zip(axes[0], panels, strict=False):
        data = [(r[xk] / 1e6 if xk == "bytes" else r[xk], r[yk], r) for r in pts
                if r.get(xk) is not None and r.get(yk) is not None]
        if not data:
            ax.set_visible(False)
            continue
        for x, y, r in data:
            ax.scatter([x], [y], s=42, zorder=3, c="#d62728" if r.get("pareto") else "#7f7f7f",
                       marker="*" if r.get("pareto") else "o")
            ax.annotate(r["variant"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if xk == "latency_ms" and yk == "accuracy" or (xk == "latency_ms" and yk == "agreement"
                                                          and all(r.get("accuracy") is None for r in pts)):
            front = sorted((x, y) for x, y, r in data if r.get("pareto"))
            if len(front) > 1:
                ax.step([p[0] for p in front], [p[1] for p in front], where="post", c="#d62728", lw=1, zorder=2)
        metric = pts[0]["accuracy_metric"] if yk == "accuracy" else pts[0]["agreement_metric"]
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(metric, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{target}: {len(pts)} variant(s), Pareto front (red stars)", fontsize=9)
    fig.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{target}.png"
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)
    return f"plots/{target}.png"


def plot_overview(folder: Path, rows: list[dict]) -> str | None:
    """Every target on one chart: quality vs measured latency, each target's front drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    markers = "os^Dv<>p"
    for n, t in enumerate(dict.fromkeys(r["target"] for r in rows)):
        pts = [(r["latency_ms"], _quality(r), r) for r in rows
               if r["target"] == t and r.get("latency_ms") is not None and _quality(r) is not None]
        if not pts:
            continue
        color = f"C{n}"
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], c=color, marker=markers[n % len(markers)], s=36,
                   alpha=0.45, label=t)
        front = sorted((x, y) for x, y, r in pts if r.get("pareto"))
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", c=color, lw=1.2)
        ax.scatter([p[0] for p in front], [p[1] for p in front], c=color, marker=markers[n % len(markers)], s=40)
        names: dict[tuple, list[str]] = {}
        for x, y, r in pts:  # variants that built the same artifact share a point
            names.setdefault((x, y), []).append(r["variant"])
        for (x, y), ids in names.items():
            ax.annotate(",".join(ids), (x, y), textcoords="offset points", xytext=(4, 3 - 9 * n), fontsize=6,
                        color=color)
    ax.set_xlabel("median latency, ms (measured: LiteRT / ExecuTorch on this CPU)", fontsize=8)
    ax.set_ylabel(rows[0]["accuracy_metric"] if rows[0].get("accuracy") is not None else rows[0]["agreement_metric"],
                  fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("every variant x target; lines: the Pareto front per target", fontsize=9)
    fig.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "all.png"
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)
    return "plots/all.png"


def _fmt(v, fmt: str) -> str:
    return "" if v is None else fmt.format(v)


def table_lines(result: dict) -> list[str]:
    """The plain-text table (progress output and the README)."""
    lines = []
    head = f"{'variant':8s} {'target':24s} {'status':7s} {'acc':>6s} {'agree':>6s} {'ms':>7s} {'MB':>6s} front  axes"
    for t in dict.fromkeys(r["target"] for r in result["rows"]):
        lines.append(head)
        for r in [r for r in result["rows"] if r["target"] == t]:
            lines.append(f"{r['variant']:8s} {t:24s} {r['status']:7s} {_fmt(r['accuracy'], '{:.3f}'):>6s} "
                         f"{_fmt(r['agreement'], '{:.3f}'):>6s} {_fmt(r['latency_ms'], '{:.3f}'):>7s} "
                         f"{_fmt(r['bytes'] and r['bytes'] / 1e6, '{:.2f}'):>6s} "
                         f"{'*' if r.get('pareto') else ' ':5s}  {r['label']}")
    return lines


def render_html(result: dict) -> str:
    e = html.escape
    parts = [f"<!doctype html><meta charset='utf-8'><title>sweep {e(result['name'])}</title>",
             "<style>body{font:14px sans-serif;margin:2em}td,th{padding:2px 8px;text-align:right}"
             "td:first-child,td:nth-child(2),td:last-child{text-align:left}tr.front{background:#fde8e8}</style>",
             f"<h1>sweep {e(result['name'])}</h1>",
             f"<p>{len(result['variants'])} variant(s); executor {e(result['executor'])}; cache "
             f"{e(result['cache'])}; {result['stats']['conversions']} conversion(s) this run, "
             f"{result['stats']['cached']} step(s) from the cache. Latency: median of the bench step "
             "on this machine. Highlighted rows: the Pareto front (no other variant is both faster and "
             "more accurate).</p>"]
    if result.get("plots", {}).get("all"):
        parts.append(f"<img src='{e(result['plots']['all'])}' alt='every target'>")
    for t in dict.fromkeys(r["target"] for r in result["rows"]):
        rows = [r for r in result["rows"] if r["target"] == t]
        parts.append(f"<h2>{e(t)}</h2>")
        if result.get("plots", {}).get(t):
            parts.append(f"<img src='{e(result['plots'][t])}' alt='{e(t)}'>")
        m = rows[0]
        parts.append("<table><tr><th>variant</th><th>status</th>"
                     f"<th>{e(m['accuracy_metric'])}</th><th>{e(m['agreement_metric'])}</th><th>SNR dB</th>"
                     "<th>median ms</th><th>p90 ms</th><th>MB</th><th>Edge TPU CPU ops</th><th>MACs</th>"
                     "<th>axes</th></tr>")
        for r in rows:
            parts.append(
                f"<tr class='{'front' if r.get('pareto') else ''}'><td>{e(r['variant'])}"
                f"{' ★' if r.get('pareto') else ''}</td><td>{e(r['status'])}</td>"
                f"<td>{_fmt(r['accuracy'], '{:.3f}')}</td><td>{_fmt(r['agreement'], '{:.3f}')}</td>"
                f"<td>{_fmt(r['snr_db'], '{:.1f}')}</td><td>{_fmt(r['latency_ms'], '{:.3f}')}</td>"
                f"<td>{_fmt(r['latency_p90_ms'], '{:.3f}')}</td>"
                f"<td>{_fmt(r['bytes'] and r['bytes'] / 1e6, '{:.2f}')}</td>"
                f"<td>{_fmt(r['edgetpu_cpu_ops'], '{}')}</td><td>{_fmt(r['macs'], '{:,}')}</td>"
                f"<td>{e(r['label'])}</td></tr>")
        parts.append("</table>")
    return "\n".join(parts) + "\n"
