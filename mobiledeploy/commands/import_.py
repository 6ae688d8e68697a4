"""`mobiledeploy import SOURCE -o DIR`: a definition, canonical weights and labels from a checkpoint."""

from __future__ import annotations

import click


@click.command(name="import")
@click.argument("source", type=click.Path(dir_okay=False))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for the definition, weights and labels.")
@click.option("--labels", "labels_file", type=click.Path(dir_okay=False),
              help="Class names, one per line, in the classifier's order (default: class_0, class_1, ...).")
@click.option("--images", "images_dir", type=click.Path(file_okay=False),
              help="Real images for calibration and validation: class sub-folders named as the labels, "
                   "or images at the top.")
@click.option("--name", help="Definition name (default: from the file name).")
@click.option("--size", type=click.IntRange(32, 1024),
              help="Input size when the source does not fix one (default 224).")
@click.option("--force", is_flag=True, help="Overwrite files that already exist in DIR.")
def command(source: str, out_dir: str, labels_file: str | None, images_dir: str | None, name: str | None,
            size: int | None, force: bool) -> None:
    """Import a keras.applications MobileNetV3 model file (.keras, .h5) or a torchvision
    MobileNetV3 state dict (.pth, .safetensors): infers preset, width, conventions, classes and
    preprocessing, and writes DIR/NAME.yaml, DIR/NAME.safetensors and DIR/labels.txt."""
    from pathlib import Path

    from .._quiet import native_quiet
    from ..importers import plan_import, write_import

    with native_quiet():  # TensorFlow's and PyTorch's loaders print from C++
        plan = plan_import(Path(source), Path(out_dir), labels_file=labels_file, images_dir=images_dir,
                           name=name, size=size, force=force)
    write_import(plan)
    imp = plan.imported
    src = imp.source
    click.echo(f"{src.path.name}: {src.description} {imp.preset} width {imp.width:g}, "
               f"{imp.num_classes} classes, {imp.resolution[0]}x{imp.resolution[1]}, "
               f"padding {src.conventions['padding']}, channel rounding {src.conventions['channel_rounding']}")
    if plan.check:
        c = plan.check
        click.echo(f"function check: max |reference - source| = {c['max_abs']:.2g} on {c['inputs']} inputs "
                   f"(logits up to {c['logit_scale']:.3g}), top-1 agreement {c['top1_agreement']:.2f}")
    for note in plan.notes:
        click.echo(f"note: {note}")
    images = [p for p in plan.written if p.parent.name != plan.out.name]
    for p in plan.written:
        if p not in images:
            click.echo(f"wrote {p}")
    if images:
        click.echo(f"wrote {len(images)} image(s) under {plan.out / 'images'}")
    click.echo(f"next: mobiledeploy build {plan.definition_path} -o {plan.out / 'dist'}")
