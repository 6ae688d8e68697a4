"""Guards against hostile or careless input: bounded YAML, confined paths, clipped messages.

Every function here turns an abuse into a one-line ``UserError``/``DefinitionError`` before any
work is done: a YAML alias bomb or a 10 000-deep nesting is refused while parsing, a path that
leaves the folder it must stay in is refused before it is read, and no message quotes more than
a bounded slice of what the user gave.
"""

from __future__ import annotations

import errno
import math
import os
from pathlib import Path
from typing import Any

from .errors import DefinitionError, UserError

# YAML bounds: a definition is a few kB with no anchors; these leave a hundredfold margin
MAX_YAML_BYTES = 1 << 20
MAX_YAML_DEPTH = 64
MAX_YAML_ALIASES = 256
MAX_YAML_NODES = 200_000  # after expanding aliases (what a consumer walking the data would see)
# list files and image folders: far beyond any validation or calibration set
MAX_LIST_BYTES = 16 << 20
MAX_FOLDER_ENTRIES = 200_000
MAX_LABELS = 100_000
MAX_LABEL_CHARS = 256


def clip(value: Any, limit: int = 80) -> str:
    """``repr``-free, bounded text for a message: at most ``limit`` characters, one line."""
    s = value if isinstance(value, str) else repr(value)
    s = s.replace("\r", "\\r").replace("\n", "\\n")
    s = s.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates stay printable
    return s if len(s) <= limit else s[: limit - 1] + "…"


# --------------------------------------------------------------------------- YAML


def _bounded_loader(src: str):
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        """SafeLoader that refuses depth, alias counts and duplicate keys beyond the bounds."""

        _depth = 0
        _aliases = 0

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                self._aliases += 1
                if self._aliases > MAX_YAML_ALIASES:
                    mark = self.peek_event().start_mark
                    raise DefinitionError(src, f"line {mark.line + 1}",
                                          f"more than {MAX_YAML_ALIASES} YAML aliases (*name); "
                                          "write the values out")
                return super().compose_node(parent, index)
            self._depth += 1
            try:
                if self._depth > MAX_YAML_DEPTH:
                    mark = self.peek_event().start_mark
                    raise DefinitionError(src, f"line {mark.line + 1}",
                                          f"YAML nested deeper than {MAX_YAML_DEPTH} levels")
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                seen: dict[Any, int] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    try:
                        key = self.construct_object(key_node, deep=True)
                        hash(key)
                    except TypeError:
                        continue  # SafeLoader itself reports unhashable keys
                    if key in seen:
                        raise DefinitionError(
                            src, f"line {key_node.start_mark.line + 1}",
                            f"duplicate key {clip(key, 40)!s} (first on line {seen[key]}); "
                            "keep one")
                    seen[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep=deep)

    return BoundedLoader


def _expanded_size(obj: Any, memo: dict[int, int], limit: int) -> int:
    """Node count with aliases expanded (shared objects counted each time they are reached)."""
    key = id(obj)
    if key in memo:
        return memo[key]
    if isinstance(obj, dict):
        memo[key] = limit + 1  # a cycle (recursive alias) counts as unbounded
        n = 1 + sum(_expanded_size(k, memo, limit) + _expanded_size(v, memo, limit)
                    for k, v in obj.items())
    elif isinstance(obj, list):
        memo[key] = limit + 1
        n = 1 + sum(_expanded_size(v, memo, limit) for v in obj)
    else:
        n = 1
    n = min(n, limit + 1)
    memo[key] = n
    return n


def load_yaml_bounded(path: Path, src: str | None = None) -> Any:
    """Parse a YAML file with bounded size, depth and alias expansion; duplicate keys refused."""
    import yaml

    src = src or str(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DefinitionError(src, "", f"cannot read ({exc.strerror})") from None
    if size > MAX_YAML_BYTES:
        raise DefinitionError(src, "", f"{size} bytes; a definition is at most "
                                       f"{MAX_YAML_BYTES // 1024} kB")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DefinitionError(src, "", "not UTF-8 text") from None
    except OSError as exc:
        raise DefinitionError(src, "", f"cannot read ({exc.strerror})") from None
    try:
        data = yaml.load(text, Loader=_bounded_loader(src))  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        raise DefinitionError(src, where, f"not valid YAML ({clip(getattr(exc, 'problem', exc), 100)})") \
            from None
    except RecursionError:
        raise DefinitionError(src, "", f"YAML nested deeper than {MAX_YAML_DEPTH} levels") from None
    if _expanded_size(data, {}, MAX_YAML_NODES) > MAX_YAML_NODES:
        raise DefinitionError(src, "", f"YAML expands to more than {MAX_YAML_NODES} values "
                                       "(aliases of aliases?); write the values out")
    return data


# --------------------------------------------------------------------------- paths


def confine(path: Path, root: Path | None, src: str, field: str, hint: str = "") -> Path:
    """``path`` resolved (symlinks followed), refused unless it lies inside ``root``.

    ``root`` None means the definition opted out (``allow_outside_paths: true``).
    """
    try:
        resolved = Path(path).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise DefinitionError(src, field, f"cannot resolve {clip(str(path))} ({exc})") from None
    if root is None:
        return resolved
    root = Path(root).resolve()
    if resolved != root and not resolved.is_relative_to(root):
        raise DefinitionError(
            src, field,
            f"{clip(str(path))} leaves the definition's folder {clip(str(root))}; move the file "
            "inside it or set allow_outside_paths: true" + (f" ({hint})" if hint else ""))
    return resolved


def read_text_file(path: Path, src: str, field: str, *, limit: int = MAX_LIST_BYTES) -> str:
    """A small UTF-8 text file (labels, list file): every failure one DefinitionError line."""
    try:
        if path.is_dir():
            raise DefinitionError(src, field, f"{clip(str(path))} is a folder; give a text file")
        size = path.stat().st_size
        if size > limit:
            raise DefinitionError(src, field, f"{clip(str(path))} is {size} bytes; at most {limit}")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DefinitionError(src, field, f"file not found: {clip(str(path))}") from None
    except UnicodeDecodeError as exc:
        raise DefinitionError(src, field, f"{clip(str(path))} is not UTF-8 text "
                                          f"(byte {exc.start})") from None
    except OSError as exc:
        raise DefinitionError(src, field, f"cannot read {clip(str(path))} "
                                          f"({exc.strerror or type(exc).__name__})") from None


def walk_files(root: Path, src: str, field: str) -> list[Path]:
    """Every file under ``root`` (symlinked folders not followed), at most MAX_FOLDER_ENTRIES."""
    out: list[Path] = []
    seen = 0

    def fail(exc: OSError) -> None:
        raise DefinitionError(src, field, f"cannot read {clip(exc.filename or str(root))} "
                                          f"({exc.strerror})")

    for dirpath, dirnames, filenames in os.walk(root, onerror=fail, followlinks=False):
        dirnames.sort()
        seen += len(dirnames) + len(filenames)
        if seen > MAX_FOLDER_ENTRIES:
            raise DefinitionError(src, field, f"{clip(str(root))} holds more than "
                                              f"{MAX_FOLDER_ENTRIES} entries; point at the image folder")
        out.extend(Path(dirpath) / f for f in sorted(filenames))
    return sorted(out)


# --------------------------------------------------------------------------- numbers


def finite(values, src: str, field: str) -> None:
    """Refuse NaN or infinity in derived numbers (e.g. a std so small the scale overflows)."""
    for v in values:
        if not math.isfinite(float(v)):
            raise DefinitionError(src, field, "gives a non-finite preprocessing scale or bias; "
                                              "use moderate values")


# --------------------------------------------------------------------------- OS errors

# errors that come from the user's files or machine, not from a bug in mobiledeploy
USER_ERRNOS = {
    errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOENT,
    errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOTEMPTY, errno.ELOOP, errno.ENAMETOOLONG,
    errno.EMFILE, errno.ENFILE, errno.EFBIG, errno.EXDEV, errno.EBUSY, errno.ETXTBSY, errno.EIO,
}
_ADVICE = {
    errno.ENOSPC: "free some space or choose another output folder",
    errno.EDQUOT: "free some space or choose another output folder",
    errno.EROFS: "the filesystem is read-only; choose a writable folder",
    errno.EACCES: "check the permissions or choose another folder",
    errno.EPERM: "check the permissions or choose another folder",
    errno.ELOOP: "a symlink points to itself; fix or remove it",
    errno.ENAMETOOLONG: "use a shorter name",
}


def os_error_line(exc: OSError) -> str:
    """One line for an OSError from the user's environment: the file, the reason, the fix."""
    where = exc.filename if exc.filename is not None else ""
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    reason = exc.strerror or type(exc).__name__
    advice = _ADVICE.get(exc.errno or -1, "")
    return (f"{clip(str(where), 160)}: " if where else "") + reason + (f"; {advice}" if advice else "")


def user_os_error(exc: BaseException) -> UserError | None:
    """A UserError for an environment OSError (permissions, read-only, disk full...), else None."""
    if isinstance(exc, OSError) and exc.errno in USER_ERRNOS:
        return UserError(os_error_line(exc))
    return None
