"""Bundle files: atomic writes and renames, content hashes, the output-folder lock."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path

from .errors import UserError

STATE_DIR = ".mobiledeploy"  # cache records, logs and temporary files inside OUT


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_path(path: Path) -> str:
    """A file's sha256, or for a folder (.mlpackage) the hash of its sorted (name, hash) list."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(path).as_posix().encode() + b"\0" + sha256_file(p).encode() + b"\n")
    return h.hexdigest()


def size_of(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def tmp_path(out_dir: Path, final: Path) -> Path:
    """A unique temporary name inside OUT's state folder (same filesystem: rename is atomic)."""
    d = Path(out_dir) / STATE_DIR / "tmp"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{uuid.uuid4().hex[:12]}-{final.name}"


def install(tmp: Path, final: Path) -> None:
    """Move a finished temporary file or folder to its final name.

    Files are replaced atomically. A folder cannot be swapped atomically, so the old one is
    first moved into the state folder's ``tmp/`` (beside ``tmp``, the same filesystem); a kill
    between the two renames leaves no folder (rebuilt next time), never a half-written one under
    the final name, and nothing of ours outside the state folder.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    if tmp.is_dir():
        if final.exists():
            trash = tmp.parent / f"old-{uuid.uuid4().hex[:8]}-{final.name}"
            final.rename(trash)
            shutil.rmtree(trash, ignore_errors=True)
        tmp.rename(final)
    else:
        os.replace(tmp, final)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # disk full, interrupted: no partial file left behind
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


# the names write_bytes_atomic gives its temporaries: ".NAME.tmp-" and 8 hex digits
_OUR_TMP = re.compile(r"^\..+\.tmp-[0-9a-f]{8}$")
# the folders a build writes besides the artifacts' own (a temporary of ours can only be left there)
FIXED_DIRS = ("model", "report", "android")


def bundle_dirs(artifact_paths) -> tuple[str, ...]:
    """Every folder a build writes files into: the fixed ones and the folder of each artifact path
    template (``TargetProfile.artifact``; a new target's folder is cleaned like the others)."""
    dirs = dict.fromkeys(FIXED_DIRS)
    for path in artifact_paths:
        if "/" in path:
            dirs.setdefault(path.split("/", 1)[0])
    return tuple(dirs)


def clean_stale(out_dir: Path, artifact_paths=()) -> None:
    """Remove what a killed build may have left, and only that: the state folder's ``tmp/``
    and atomic-write temporaries (exact name pattern) at the top of OUT and its bundle folders.

    A user's files elsewhere in OUT (even one called ``.x.tmp-1``) are never touched.
    """
    out_dir = Path(out_dir)
    shutil.rmtree(out_dir / STATE_DIR / "tmp", ignore_errors=True)
    for folder in (out_dir, *(out_dir / d for d in bundle_dirs(artifact_paths))):
        if not folder.is_dir() or folder.is_symlink():
            continue
        for p in folder.iterdir():
            if _OUR_TMP.match(p.name) and p.is_file() and not p.is_symlink():
                p.unlink(missing_ok=True)


def is_bundle(out_dir: Path) -> bool:
    """OUT holds a bundle (or a build's state): a build may write there without --force."""
    out_dir = Path(out_dir)
    return (out_dir / STATE_DIR).is_dir() or (out_dir / "manifest.json").is_file()


def check_output_folder(out_dir: Path, force: bool = False) -> None:
    """An existing non-empty folder that is not a bundle is refused unless ``force``."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a directory; choose another -o")
    if out_dir.is_dir() and not is_bundle(out_dir) and any(out_dir.iterdir()) and not force:
        raise UserError(f"{out_dir}: exists and is not a mobiledeploy bundle; choose a new or empty "
                        "folder, or pass --force to build into it (files of the same names are replaced)")


@contextlib.contextmanager
def bundle_lock(out_dir: Path, wait: float = 0.0):
    """Exclusive lock on OUT for a build; a second build waits ``wait`` seconds, then refuses."""
    import fcntl

    state = Path(out_dir) / STATE_DIR
    if state.exists() and not state.is_dir():
        raise UserError(f"{state}: is not a folder (mobiledeploy keeps its state there); remove it")
    state.mkdir(parents=True, exist_ok=True)
    path = state / "lock"
    f = open(path, "a+")
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                f.seek(0)
                holder = f.read().strip() or "another process"
                f.close()
                raise UserError(
                    f"{out_dir}: another mobiledeploy build ({holder}) is writing this bundle; "
                    "wait for it to finish, pass --wait SECONDS, or choose another -o"
                ) from None
            time.sleep(0.2)
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}")
    f.flush()
    try:
        yield
    finally:
        f.seek(0)
        f.truncate()
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        f.close()


def load_manifest(bundle: Path) -> dict:
    """A built bundle's manifest.json, or a one-line UserError saying what to do."""
    import json

    bundle = Path(bundle)
    path = bundle / "manifest.json"
    if not bundle.is_dir():
        raise UserError(f"{bundle}: bundle directory not found; give the -o folder of a mobiledeploy build")
    if not path.is_file():
        raise UserError(f"{path}: missing: the bundle is incomplete (an interrupted build?); "
                        "rerun mobiledeploy build")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc}); rerun mobiledeploy build") from None
    if not isinstance(data, dict) or not isinstance(data.get("artifacts"), list):
        raise UserError(f"{path}: no 'artifacts' list; rerun mobiledeploy build")
    return data
