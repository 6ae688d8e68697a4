"""`mobiledeploy bench BUNDLE_DIR`: host latency, size and peak memory of every artifact."""

from __future__ import annotations

import click


@click.command(name="bench")
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the results as JSON here.")
@click.option("--runs", type=click.IntRange(1), default=300, show_default=True,
              help="Timed invocations per artifact (after a warm-up).")
@click.option("--threads", type=click.IntRange(1, 256), default=2, show_default=True,
              help="Threads of every engine (LiteRT num_threads, ExecuTorch pool, torch, TF).")
@click.option("--target", "targets", multiple=True, help="Only this target (repeatable).")
@click.option("--no-references", is_flag=True, help="Skip the eager PyTorch and Keras rows.")
@click.option("--no-amx", is_flag=True,
              help="Deny the engines Intel AMX (x86-64 Linux): int8 then runs on the AVX512-VNNI/AVX2 "
                   "kernels of CPUs without AMX, closer to what phones and most hosts run.")
@click.option("--quiet", "-q", is_flag=True, help="No table (with --json).")
def command(bundle, json_path, runs, threads, targets, no_references, no_amx, quiet):
    """Benchmark every artifact of BUNDLE on this host, each engine in its own process."""
    import json
    from pathlib import Path

    from ..bench import bench_bundle, print_table

    say = (lambda m: None) if quiet else (lambda m: click.echo(m, err=True))
    from ..errors import ValidationFailed
    from ..trust import reading

    with reading(Path(bundle)):  # a build cannot swap an artifact while it is timed
        report = bench_bundle(Path(bundle), runs=runs, threads=threads, references=not no_references,
                              targets=tuple(targets), no_amx=no_amx, say=say)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report, indent=2) + "\n")
    if not quiet:
        print_table(report)
    rows = report["results"]
    if rows and all(r["status"] == "failed" for r in rows):
        raise ValidationFailed("bench: every row failed: " + "; ".join(
            f"{r['target']}: {r.get('reason', '')}" for r in rows[:3]))
    if not rows:
        raise ValidationFailed("bench: nothing was measured (no artifacts, references off)")
