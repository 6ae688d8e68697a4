"""What a command may believe of a bundle it did not just build: nothing the manifest says is
used before it is checked.

Every path the manifest names must stay inside the bundle; every hash it records (artifacts,
their extra files such as ``edgetpu.json``, the reference weights, the whole ``model/`` folder
with the resolved definition, labels and copied validation images) must match before use. The
readers (``validate``, ``app``, ``bench``) hold the bundle's lock while they read, so a build
cannot swap files under them.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from .bundle import STATE_DIR, sha256_path
from .errors import UserError
from .safety import clip


def inside(bundle: Path, rel: Any, what: str) -> Path:
    """``bundle / rel`` resolved, refused unless it stays inside the bundle (symlinks followed)."""
    if not isinstance(rel, str) or not rel or "\0" in rel:
        raise UserError(f"{bundle / 'manifest.json'}: {what} path {clip(rel, 60)} is not a relative path; "
                        "rerun mobiledeploy build")
    root = Path(bundle).resolve()
    try:
        p = (root / rel).resolve()
    except (OSError, RuntimeError):
        p = None
    if p is None or Path(rel).is_absolute() or not p.is_relative_to(root) or p == root:
        raise UserError(f"{bundle / 'manifest.json'}: {what} path {clip(rel, 80)} leaves the bundle; "
                        "the manifest was edited: rerun mobiledeploy build")
    return p


def check_manifest_shape(bundle: Path, manifest: dict) -> None:
    """The keys every reader relies on are there, with the right types (exit 2 otherwise)."""
    where = bundle / "manifest.json"
    ref = manifest.get("reference")
    if not isinstance(ref, dict) or not isinstance(ref.get("weights"), str) \
            or not isinstance(ref.get("weights_sha256"), str):
        raise UserError(f"{where}: no 'reference' (weights and their sha256); rerun mobiledeploy build")
    for i, art in enumerate(manifest.get("artifacts", [])):
        if not isinstance(art, dict) or not all(isinstance(art.get(k), str) for k in ("target", "path", "sha256")):
            raise UserError(f"{where}: artifacts[{i}] needs target, path and sha256; rerun mobiledeploy build")
        for j, extra in enumerate(art.get("extra_files", []) or []):
            if not isinstance(extra, dict) or not isinstance(extra.get("path"), str) \
                    or not isinstance(extra.get("sha256"), str):
                raise UserError(f"{where}: artifacts[{i}].extra_files[{j}] needs path and sha256; "
                                "rerun mobiledeploy build")


def check_paths(bundle: Path, manifest: dict) -> None:
    """Every artifact and extra-file path stays inside the bundle (before any heavy work)."""
    check_manifest_shape(bundle, manifest)
    for art in manifest.get("artifacts", []):
        inside(bundle, art["path"], f"{art['target']} artifact")
        for extra in art.get("extra_files", []) or []:
            inside(bundle, extra["path"], f"{art['target']} extra file")


def verify_reference(bundle: Path, manifest: dict) -> None:
    """The reference weights and the ``model/`` folder are what the build wrote.

    A changed reference would otherwise be blamed on every artifact; it is a broken bundle (exit 2).
    """
    check_manifest_shape(bundle, manifest)
    ref = manifest["reference"]
    weights = inside(bundle, ref["weights"], "reference weights")
    if not weights.is_file():
        raise UserError(f"{weights}: reference weights missing; rerun mobiledeploy build")
    actual = sha256_path(weights)
    if actual != ref["weights_sha256"]:
        raise UserError(f"{weights}: reference weights changed since the build (sha256 {actual[:12]}… != "
                        f"manifest {ref['weights_sha256'][:12]}…); rerun mobiledeploy build")
    model_sha = ref.get("model_sha256")
    if isinstance(model_sha, str):
        model = inside(bundle, "model", "model folder")
        actual = sha256_path(model)
        if actual != model_sha:
            raise UserError(f"{model}: changed since the build (definition, labels or validation images; "
                            f"sha256 {actual[:12]}… != manifest {model_sha[:12]}…); rerun mobiledeploy build")


def artifact_problem(bundle: Path, art: dict) -> str | None:
    """Why an artifact cannot be trusted (missing, changed, an extra file changed), or None.

    A path leaving the bundle is a UserError (the manifest was edited), not a row.
    """
    path = inside(bundle, art["path"], f"{art['target']} artifact")
    if not path.exists():
        return f"artifact missing: {art['path']}"
    actual = sha256_path(path)
    if actual != art["sha256"]:
        return (f"artifact changed since build: {art['path']} sha256 {actual[:12]}… "
                f"!= manifest {art['sha256'][:12]}…")
    for extra in art.get("extra_files", []) or []:
        p = inside(bundle, extra["path"], f"{art['target']} extra file")
        if not p.exists():
            return f"{extra['path']} missing"
        if sha256_path(p) != extra["sha256"]:
            return f"{extra['path']} changed since build"
    return None


def verify_bundle(bundle: Path, manifest: dict, targets: set[str] | None = None) -> None:
    """Reference, model folder and every (selected) artifact as built; else one UserError."""
    verify_reference(bundle, manifest)
    for art in manifest.get("artifacts", []):
        if targets is not None and art["target"] not in targets:
            continue
        why = artifact_problem(bundle, art)
        if why:
            raise UserError(f"{bundle}: {why}; rerun mobiledeploy build")


def writable(bundle: Path) -> bool:
    """Whether this process may write the bundle (a read-only bundle can still be read)."""
    state = Path(bundle) / STATE_DIR
    return os.access(bundle, os.W_OK) and (not state.exists() or os.access(state, os.W_OK))


@contextlib.contextmanager
def reading(bundle: Path, *, write: bool = False):
    """Hold the bundle while a command reads it: a build cannot swap files underneath.

    ``write`` (the command also writes into the bundle, e.g. ``validate``'s report) takes the
    build's exclusive lock; otherwise a shared lock on the same file, so readers run together
    and a build waits for them. A read-only bundle with no lock file is read unlocked (nothing
    can build into it).
    """
    import fcntl

    from .bundle import bundle_lock

    bundle = Path(bundle)
    state = bundle / STATE_DIR
    if state.exists() and not state.is_dir():
        raise UserError(f"{state}: is not a folder (mobiledeploy keeps its state there); remove it")
    if write and writable(bundle):
        with bundle_lock(bundle):
            yield
        return
    lock = state / "lock"
    try:
        f = open(lock)  # noqa: SIM115 (held for the block)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{bundle}: a mobiledeploy build is writing this bundle; wait for it to "
                            "finish") from None
        yield
    finally:
        f.close()
