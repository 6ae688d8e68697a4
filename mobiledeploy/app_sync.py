"""Regenerate ``android_app/`` and ``android_app_seg/`` (the shipped examples' apps, no model
binaries) or check them.

    python -m mobiledeploy.app_sync [--check] [--out DIR]

The copies in git are rendered from ``examples/shapes/shapes.yaml`` (the classifier) and
``examples/shapes_seg/shapes_seg.yaml`` (the segmentation app: mask overlay and legend) alone, no
bundle: the app reads its model's quantization at run time, so no built model is needed.
``--out`` names the classifier's folder (the segmentation copy is checked beside the default).
"""

from __future__ import annotations

import argparse
import filecmp
import fnmatch
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "shapes" / "shapes.yaml"
APP_DIR = REPO / "android_app"
SEG_EXAMPLE = REPO / "examples" / "shapes_seg" / "shapes_seg.yaml"
SEG_APP_DIR = REPO / "android_app_seg"
# present after `mobiledeploy app BUNDLE -o android_app` or a local Gradle build: not drift
IGNORED = ("app/src/main/assets/*.tflite", "app/src/main/assets/*.pte",
           "app/src/androidTest/assets/golden/*", "gradle/wrapper/gradle-wrapper.jar",
           ".gradle/*", "build/*", "app/build/*", "local.properties", ".idea/*", "*.iml")


def render(out: Path, definition_path: Path = EXAMPLE) -> Path:
    """Render the example's app into ``out`` without model binaries."""
    from .app import context_from_definition, render_android_app
    from .definition import load_definition

    d = load_definition(definition_path, check_files=False)
    return render_android_app(context_from_definition(d), out, copy_models=False)


def differences(expected: Path, actual: Path) -> list[str]:
    """Relative paths that differ, are missing from ``actual`` or are extra in it."""
    def files(root: Path) -> set[str]:
        return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}

    exp, act = files(expected), files(actual) if actual.is_dir() else set()
    extra = {f for f in act - exp if not any(fnmatch.fnmatch(f, pat) for pat in IGNORED)}
    changed = {f for f in exp & act if not filecmp.cmp(expected / f, actual / f, shallow=False)}
    return sorted([f"missing: {f}" for f in exp - act] + [f"extra: {f}" for f in extra]
                  + [f"differs: {f}" for f in changed])


def main(argv: list[str] | None = None) -> int:
    """Regenerate (default) or ``--check``; exit 1 when the committed copy is out of date."""
    ap = argparse.ArgumentParser(prog="python -m mobiledeploy.app_sync", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail when android_app/ differs")
    ap.add_argument("--out", type=Path, default=APP_DIR)
    args = ap.parse_args(argv)
    pairs = [(EXAMPLE, args.out)] + ([(SEG_EXAMPLE, SEG_APP_DIR)] if args.out == APP_DIR and SEG_EXAMPLE.is_file()
                                     else [])
    if not args.check:
        for example, out in pairs:
            render(out, example)
            print(f"wrote {out}")
        return 0
    diffs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (example, out) in enumerate(pairs):
            fresh = render(Path(tmp) / f"app{i}", example)
            diffs += [f"{out.name}: {d}" if i else d for d in differences(fresh, out)]
    for d in diffs:
        print(d)
    if diffs:
        print(f"{', '.join(str(o) for _, o in pairs)} out of date: run  python -m mobiledeploy.app_sync",
              file=sys.stderr)
        return 1
    print(f"{', '.join(str(o) for _, o in pairs)} up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
