"""File digests remembered by (path, size, mtime_ns, ctime_ns, inode), so a no-op rebuild does
not hash every input and output again.

The record lives in the bundle's state folder (``.mobiledeploy/digests.json``). A file whose
size, modification time, status-change time or inode differs is hashed again: an edit, a copy
over it, ``touch`` or a rename onto it all change one of them (ctime cannot be set by users). As
in git's "racy" rule, a digest taken less than ``RACY_NS`` after the file's last change is not
trusted later: a second write within the filesystem's timestamp granularity could keep the same
times and size.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path

from .bundle import sha256_file, write_json_atomic

RACY_NS = 2_000_000_000  # 2 s: far above any filesystem's timestamp granularity
MEMO_MAX = 5000  # entries kept per memo (the newest)
_VERSION = 1


class FileDigests:
    """sha256 of files and folders (as ``bundle.sha256_path``), remembered across builds."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path else None
        self.entries: dict[str, list] = {}
        self.extra: dict[str, dict] = {}  # other per-content memos (e.g. a source file's imports)
        self.dirty = False
        self.locked = False  # set by a build that holds the bundle's lock: only then is it saved
        if self.path is not None:
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                if isinstance(data, dict) and data.get("version") == _VERSION:
                    self.entries = {k: v for k, v in data.get("files", {}).items()
                                    if isinstance(v, list) and len(v) == 6}
                    self.extra = {k: v for k, v in data.get("extra", {}).items() if isinstance(v, dict)}
            except (OSError, ValueError):
                pass  # missing or damaged: start empty (everything is hashed)

    def file(self, path: Path) -> str:
        p = os.path.abspath(path)
        st = os.stat(p)
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        rec = self.entries.get(p)
        if rec is not None and rec[:4] == stamp and rec[4] - max(st.st_mtime_ns, st.st_ctime_ns) >= RACY_NS:
            return rec[5]
        hashed_at = time.time_ns()
        sha = sha256_file(Path(p))
        self.entries[p] = [*stamp, hashed_at, sha]
        self.dirty = True
        return sha

    def path_sha(self, path: Path) -> str:
        """A file's sha256, or for a folder (.mlpackage) the hash of its sorted (name, hash) list."""
        path = Path(path)
        if path.is_file():
            return self.file(path)
        h = hashlib.sha256()
        for p in sorted(path.rglob("*")):
            if p.is_file():
                h.update(p.relative_to(path).as_posix().encode() + b"\0" + self.file(p).encode() + b"\n")
        return h.hexdigest()

    def memo(self, kind: str) -> dict:
        """A persisted dict for values derived from file contents (keyed by content digests);
        a caller that adds to it calls ``touch``."""
        return self.extra.setdefault(kind, {})

    def touch(self) -> None:
        self.dirty = True

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        live = {k: v for k, v in self.entries.items() if os.path.exists(k)}
        extra = {kind: dict(list(memo.items())[-MEMO_MAX:]) for kind, memo in self.extra.items()}
        write_json_atomic(self.path, {"version": _VERSION, "files": live, "extra": extra})
        self.dirty = False


_ACTIVE: FileDigests = FileDigests(None)


@contextlib.contextmanager
def using(digests: FileDigests):
    """Within the block, ``file_sha``/``path_sha`` use (and add to) ``digests``; the caller saves
    it (a build does, once the bundle's lock is its own)."""
    global _ACTIVE
    prev, _ACTIVE = _ACTIVE, digests
    try:
        yield digests
    finally:
        _ACTIVE = prev


def probed(path: Path, probe, tag: str = "") -> None:
    """Run ``probe(path)`` (raises on a bad file) unless these exact contents passed it before
    (with the same Pillow and ``tag``: a decoder's verdict is its version's and its limits')."""
    from ._deps import version

    memo = _ACTIVE.memo(f"decodes:{version('pillow')}:{tag}")
    try:
        sha = _ACTIVE.file(path)
    except OSError:  # unreadable: the probe says so in its own words
        return probe(path)
    if memo.get(sha):
        return
    probe(path)
    memo[sha] = True
    _ACTIVE.touch()


def file_sha(path: Path) -> str:
    return _ACTIVE.file(path)


def path_sha(path: Path) -> str:
    return _ACTIVE.path_sha(path)


def active() -> FileDigests:
    return _ACTIVE
