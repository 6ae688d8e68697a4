"""`mobiledeploy app BUNDLE_DIR -o DIR`: the Android camera app for a built bundle."""

from __future__ import annotations

import click


def _runtime(ctx, param, value):
    """An app runtime some registered backend names (checked before anything is read)."""
    if value is None:
        return value
    from ..capabilities import app_runtimes

    if value not in app_runtimes():
        raise click.BadParameter(f"'{value}' is not an app runtime; allowed: {', '.join(app_runtimes())}")
    return value


@click.command(name="app")
@click.argument("bundle_dir", type=click.Path(file_okay=False))
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False),
              help="Directory for the Gradle project (its generated files are replaced; others are kept).")
@click.option("--runtime", default=None, metavar="RUNTIME", callback=_runtime,
              help="On-device runtime, one the registered backends name (litert for TFLite, executorch for "
                   ".pte; see mobiledeploy targets); default: the definition's android.runtime.")
@click.option("--no-models", is_flag=True,
              help="Leave the model and golden images out (for a copy kept in git).")
@click.option("--force", is_flag=True,
              help="Write into an existing folder mobiledeploy did not generate (its other files are kept).")
def command(bundle_dir: str, output: str, runtime: str | None, no_models: bool, force: bool) -> None:
    """Generate the Android camera app (CameraX + LiteRT or ExecuTorch) from BUNDLE_DIR."""
    from pathlib import Path

    from ..app import check_output_dir, context_from_bundle, render_android_app
    from ..trust import reading

    check_output_dir(output, force)  # before reading the bundle: a refusal is immediate
    with reading(Path(bundle_dir)):  # a build cannot swap the model while it is copied
        ctx = context_from_bundle(bundle_dir, runtime=runtime)
        out = render_android_app(ctx, output, copy_models=not no_models, force=force)
    what = "without models" if no_models else f"with {ctx.model_asset}, {len(ctx.golden)} golden images"
    click.echo(f"wrote {out} ({ctx.runtime}, {ctx.model_target}, {what})")
    click.echo(f"next: cd {out} && gradle wrapper --gradle-version {ctx.versions['gradle']} "
               "&& ./gradlew assembleDebug")
