"""Bundle files: atomic writes and renames, content hashes, the output-folder lock."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
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
    first renamed away; a kill between the two renames leaves no folder (rebuilt next time),
    never a half-written one under the final name.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    if tmp.is_dir():
        if final.exists():
            trash = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
            final.rename(trash)
            shutil.rmtree(trash, ignore_errors=True)
        tmp.rename(final)
    else:
        os.replace(tmp, final)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: Path, obj) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def clean_stale(out_dir: Path) -> None:
    """Remove what a killed build may have left: temporaries and half-swapped folders."""
    shutil.rmtree(Path(out_dir) / STATE_DIR / "tmp", ignore_errors=True)
    for p in Path(out_dir).rglob(".*.old-*"):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    for p in Path(out_dir).rglob(".*.tmp-*"):
        p.unlink(missing_ok=True)


@contextlib.contextmanager
def bundle_lock(out_dir: Path, wait: float = 0.0):
    """Exclusive lock on OUT for a build; a second build waits ``wait`` seconds, then refuses."""
    import fcntl

    state = Path(out_dir) / STATE_DIR
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
