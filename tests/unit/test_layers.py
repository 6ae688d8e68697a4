"""The package's import structure: no cycles, and one-way doors between layers.

Imports are read from the source (function-level imports included, ``if TYPE_CHECKING`` blocks
excluded), the same reader the build uses for its source digests.
"""

from __future__ import annotations

from mobiledeploy.pipeline.sources import all_modules, imports


def _graph() -> dict[str, set[str]]:
    mods = all_modules()
    # a module's own package __init__ is not an edge: Python runs it first anyway
    return {m: {i for i in imports(m) if i in mods and not m.startswith(i + ".")} for m in mods}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_package_has_no_import_cycle():
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_planted_cycle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert _cycle(g) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


# lower layers never import upper ones: the doors open one way
LOWER = ("mobiledeploy.errors", "mobiledeploy.tolerance", "mobiledeploy.images", "mobiledeploy.bundle",
         "mobiledeploy.resources", "mobiledeploy._deps", "mobiledeploy.architectures")
UPPER = ("mobiledeploy.backends", "mobiledeploy.validate", "mobiledeploy.pipeline", "mobiledeploy.app",
         "mobiledeploy.bench", "mobiledeploy.sweep", "mobiledeploy.commands", "mobiledeploy.cli")


def test_lower_layers_import_nothing_above_them():
    g = _graph()
    bad = [(m, i) for m in g if m.startswith(LOWER) for i in g[m] if i.startswith(UPPER)]
    assert bad == []


def test_backends_never_import_validation_or_the_pipeline():
    g = _graph()
    bad = [(m, i) for m in g if m.startswith("mobiledeploy.backends")
           for i in g[m] if i.startswith(("mobiledeploy.validate", "mobiledeploy.pipeline", "mobiledeploy.app"))]
    assert bad == []
