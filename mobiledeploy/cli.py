"""The Click root group. Errors become exit codes here and only here.

Every command lives in ``mobiledeploy/commands/<name>.py`` and exposes ``command``; modules are
imported lazily so that ``--help`` never imports TensorFlow, PyTorch, coremltools or ExecuTorch.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback

import click

from . import __version__

COMMANDS = {
    "init": "Copy the shipped demo definition and its files into DIR.",
    "show": "The network as a stage table with MACs and params.",
    "targets": "Every target, its backend, precision and whether it can build here.",
    "build": "Build the whole bundle: artifacts, validation, Android app, manifest.",
    "validate": "Re-run validation on a built bundle.",
    "inspect": "Ops, tensors and quantization of a .tflite file (--edgetpu: Edge TPU mapping).",
    "app": "Generate the Android camera app from a bundle.",
    "bench": "Host latency and size of every artifact in a bundle.",
    "import": "A definition, canonical weights and labels from a keras.applications or torchvision checkpoint.",
    "sweep": "Variants x targets on Ray (or local processes): accuracy vs latency, the Pareto front.",
}
# command name -> module name where the name is a Python keyword
MODULES = {"import": "import_"}


MAX_MESSAGE = 600  # characters of one error line


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when invoked (or listed in help)."""

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        return importlib.import_module(f"mobiledeploy.commands.{MODULES.get(name, name)}").command

    def format_commands(self, ctx, formatter):
        # short help from the table above: listing must not import command modules
        rows = [(name, COMMANDS[name]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx):
        import warnings

        # a warning is one line on stderr, like an error (not Python's file:line + source line)
        saved = warnings.formatwarning
        warnings.formatwarning = lambda message, category, *a, **k: f"warning: {message}\n"
        try:
            return self._invoke(ctx)
        finally:
            warnings.formatwarning = saved

    def _invoke(self, ctx):
        from .errors import MobileDeployError

        try:
            return super().invoke(ctx)
        except MobileDeployError as exc:
            if os.environ.get("MOBILEDEPLOY_DEBUG"):
                traceback.print_exc()
            from .safety import clip

            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            msg = clip(msg, MAX_MESSAGE)  # never echo unbounded input back
            label = "error" if exc.exit_code != 1 else "validation failed"
            click.echo(f"{label}: {msg}", err=True)
            sys.exit(exc.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # a bug: exit 3, traceback only on request
            from .safety import clip, user_os_error

            user = user_os_error(exc)
            if user is not None:  # permissions, read-only, disk full: the user's machine, exit 2
                click.echo(f"error: {clip(str(user), MAX_MESSAGE)}", err=True)
                sys.exit(2)
            if os.environ.get("MOBILEDEPLOY_DEBUG"):
                traceback.print_exc()
            click.echo(
                f"internal error: {type(exc).__name__}: "
                f"{clip(str(exc).splitlines()[0], MAX_MESSAGE) if str(exc).strip() else ''}"
                " (set MOBILEDEPLOY_DEBUG=1 for the traceback)",
                err=True,
            )
            sys.exit(3)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mobiledeploy")
def main() -> None:
    """mobiledeploy: one MobileNetV3-family definition -> TFLite, Edge TPU, Core ML,
    ExecuTorch and an Android app, each validated against the same reference."""



def run() -> None:
    """Entry point: Click's own usage errors exit 2 already; keep that."""
    main(prog_name="mobiledeploy")
