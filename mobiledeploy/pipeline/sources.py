"""A digest of the project's own source files that a build step runs.

The version string alone would let a changed converter module reuse stale artifacts. A step's
key holds the digest of the files of every ``mobiledeploy`` module its entry modules import,
transitively, imports inside functions included (the code base imports heavy pieces lazily).
Modules loaded by name at run time (a backend's or a task's, with their folders) are entry modules
of the steps that run them, as the registries list them (``keys.py``). An entry module outside the
package (a plugin backend's "package.module") is hashed too, by its file; its imports are followed
into this package only.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import sys
from pathlib import Path

_PKG = Path(__file__).resolve().parents[1]
_ROOT = "mobiledeploy"


def all_modules() -> list[str]:
    """Every module of the package, by dotted name."""
    from .._modules import package_modules

    return list(package_modules(_ROOT))


def module_file(name: str) -> Path | None:
    """The file of a ``mobiledeploy`` module (package ``__init__`` or ``.py``), or None."""
    if name != _ROOT and not name.startswith(_ROOT + "."):
        return None
    rel = Path(*name.split(".")[1:]) if name != _ROOT else Path()
    for cand in (_PKG / rel / "__init__.py", (_PKG / rel).with_suffix(".py")):
        if cand.is_file():
            return cand
    return None


def _runtime_nodes(tree: ast.AST):
    """Every node, except the bodies of ``if TYPE_CHECKING:`` (never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def imports(name: str) -> set[str]:
    """The ``mobiledeploy`` modules a module imports when it runs, at any nesting level
    (function-level imports included; ``if TYPE_CHECKING:`` blocks excluded)."""
    path = module_file(name)
    return _imports(path, name) if path else set()


@functools.cache
def _imports(path: Path, name: str) -> frozenset[str]:
    """Parsed once per file content: the build remembers the result with its file digests
    (``digests.py``), so a no-op rebuild parses no source file."""
    from ..digests import active

    memo = active().memo("imports:1")  # bump when the parser changes
    try:
        key = f"{name}:{active().file(path)}"
    except OSError:
        key = None
    if key and isinstance(memo.get(key), list):
        return frozenset(m for m in memo[key] if module_file(m) is not None)
    found = _parse_imports(path, name)
    if key:
        memo[key] = sorted(m for m in found if m == _ROOT or m.startswith(_ROOT + "."))
        active().touch()
    return frozenset(m for m in found if module_file(m) is not None)


def _parse_imports(path: Path, name: str) -> set[str]:
    tree = ast.parse(path.read_bytes(), str(path))
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)  # "from . import x" names modules
    return found


def _plugin_file(name: str) -> Path | None:
    """The source file of an imported module outside the package (a plugin the registry loaded)."""
    file = getattr(sys.modules.get(name), "__file__", None)
    return Path(file).resolve() if file and file.endswith(".py") else None


@functools.cache
def closure(*entry: str) -> tuple[Path, ...]:
    """Every source file the entry modules reach through imports, sorted."""
    seen: dict[str, Path] = {}
    todo = list(entry)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = module_file(name) or (_plugin_file(name) if name in entry else None)
        if path is None:
            continue
        seen[name] = path
        todo.extend(_imports(path, name))
        parent = name.rpartition(".")[0]
        if parent:
            todo.append(parent)  # a package's __init__ runs before its modules
    return tuple(sorted(set(seen.values())))


@functools.cache
def source_digest(*entry: str) -> str:
    """sha256 over (relative path, content) of the closure of ``entry``."""
    from ..digests import file_sha

    h = hashlib.sha256()
    for p in closure(*entry):
        # by path inside the package (a moved checkout keeps its keys); a plugin's file by its name
        rel = p.relative_to(_PKG).as_posix() if p.is_relative_to(_PKG) else f"plugin:{p.name}"
        h.update(rel.encode() + b"\0" + bytes.fromhex(file_sha(p)))
    return h.hexdigest()
