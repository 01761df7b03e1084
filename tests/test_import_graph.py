"""No import cycles in mistudio/: the graph of module-level imports is a DAG, both between modules
and between the top-level parts (`mistudio.coord`, `mistudio.limits`, `mistudio.queue`...).

Module level means what runs when a module is imported: statements at the top, inside `if` and
`try`/`except`, but not inside functions, and not under `if TYPE_CHECKING:`. Function-level imports
hide cycles, so they are kept only where they keep a heavy dependency off a light path, each with a
one-line reason (checked for the files listed in REASONED below).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mistudio"

# Cycles tolerated (each a set of top-level parts or modules), each with its reason. Modules: none.
KNOWN: list[set[str]] = [
    # Parts only, by design: tasks/ modules register with the queue's registry (queue/tasks.py, which
    # imports no task), and the queue's worker loads them through the mistudio.tasks package. No module
    # of the two imports itself back.
    {"mistudio.queue", "mistudio.tasks"},
]


def _modules() -> dict[str, Path]:
    """Dotted name -> file, for every module and package of mistudio/."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_level_imports(body: list[ast.stmt]):
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _module_level_imports(node.body)
            yield from _module_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *[h.body for h in node.handlers]):
                yield from _module_level_imports(block)
        elif isinstance(node, (ast.With, ast.For, ast.While)):
            yield from _module_level_imports(node.body)


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The module that `import name` runs last (mistudio.a.b.Thing -> mistudio.a.b)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _targets(node: ast.Import | ast.ImportFrom, importer: str, modules: dict[str, Path]) -> set[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:  # relative: from the importer's package, up level - 1
            package = importer if modules[importer].name == "__init__.py" else importer.rpartition(".")[0]
            base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [node.module or ""])
            base = base.rstrip(".")
        else:
            base = node.module or ""
        # `from pkg import submodule` imports the submodule; `from mod import name`, the module
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
    return {owner for name in names if name.startswith("mistudio") and (owner := _owner(name, modules))}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        graph[name] = set().union(*[_targets(n, name, modules) for n in _module_level_imports(tree.body)]) - {name}
    return graph


def part_of(module: str) -> str:
    """mistudio.queue.storage -> mistudio.queue; mistudio.limits -> mistudio.limits."""
    return ".".join(module.split(".")[:2])


def part_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    parts: dict[str, set[str]] = {}
    for module, targets in graph.items():
        parts.setdefault(part_of(module), set()).update(part_of(t) for t in targets if part_of(t) != part_of(module))
    return parts


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> b -> ... -> a) per strongly connected component of more than one node."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(_a_cycle_in(set(component), graph))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def _a_cycle_in(component: set[str], graph: dict[str, set[str]]) -> list[str]:
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:  # breadth first, inside the component, back to start
        node = frontier.pop(0)
        for nxt in sorted(graph[node] & component):
            if nxt == start:
                return paths[node] + [start]
            if nxt not in paths:
                paths[nxt] = paths[node] + [nxt]
                frontier.append(nxt)
    raise AssertionError("not a cycle")


def _unknown(found: list[list[str]]) -> list[str]:
    return [" -> ".join(cycle) for cycle in found if not any(set(cycle) <= known for known in KNOWN)]


def test_the_cycle_finder_finds_a_cycle_and_names_its_path():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert part_graph({"mistudio.x.one": {"mistudio.y"}, "mistudio.y": {"mistudio.x.two"}, "mistudio.x.two": set()}) \
        == {"mistudio.x": {"mistudio.y"}, "mistudio.y": {"mistudio.x"}}


def test_the_walker_sees_module_level_imports_only(tmp_path):
    tree = ast.parse(
        "import mistudio.a\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import mistudio.hidden\n"
        "try:\n    from mistudio import b\nexcept ImportError:\n    from mistudio.c import thing\n"
        "def f():\n    import mistudio.lazy_one\n")
    seen = [getattr(n, "module", None) or n.names[0].name for n in _module_level_imports(tree.body)]
    assert seen == ["mistudio.a", "typing", "mistudio", "mistudio.c"]
    modules = {"mistudio": Path("mistudio/__init__.py"), "mistudio.b": Path("mistudio/b.py"),
               "mistudio.c": Path("mistudio/c.py"), "mistudio.pkg": Path("mistudio/pkg/__init__.py"),
               "mistudio.pkg.mod": Path("mistudio/pkg/mod.py")}
    node = ast.parse("from mistudio import b, other_name").body[0]
    assert _targets(node, "mistudio.c", modules) == {"mistudio.b", "mistudio"}
    node = ast.parse("from .mod import x").body[0]
    assert _targets(node, "mistudio.pkg", modules) == {"mistudio.pkg.mod"}
    node = ast.parse("from ..c import x").body[0]
    assert _targets(node, "mistudio.pkg.mod", modules) == {"mistudio.c"}


@pytest.mark.parametrize("level", ["modules", "parts"])
def test_mistudio_has_no_import_cycle(level):
    graph = import_graph()
    assert "mistudio.queue.storage" in graph and "mistudio.redis.keys" in graph["mistudio.queue.storage"]
    if level == "parts":
        graph = part_graph(graph)
    unknown = _unknown(cycles(graph))
    assert not unknown, "import cycle(s):\n  " + "\n  ".join(unknown)


# --- function-level imports carry their reason --------------------------------------------------

# Every file: a function-level import of a mistudio module says why it is not at module level.
REASONED = ["mistudio"]


def _function_level_imports(path: Path):
    lines = path.read_text().splitlines()
    tree = ast.parse("\n".join(lines), str(path))
    for func in ast.walk(tree):
        if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(func):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    above = node.lineno - 2  # the first line above this import and the imports stacked on it
                    while above >= 0 and lines[above].lstrip().startswith(("import ", "from ")):
                        above -= 1
                    yield node, lines[node.lineno - 1], lines[above] if above >= 0 else ""


def test_function_level_imports_of_mistudio_modules_say_why():
    """Each one is there to keep something heavy (torch, transformers...) off a light path, and says so
    on its line or above its block of imports (`# why: ...`); otherwise it belongs at module level."""
    bare = []
    for entry in REASONED:
        path = ROOT / entry
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.exists() else []:
            for node, line, above in _function_level_imports(file):
                module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                if (module or "").startswith("mistudio") and "#" not in line and not above.strip().startswith("#"):
                    bare.append(f"{file.relative_to(ROOT)}:{node.lineno}: {line.strip()}")
    assert not bare, "function-level imports without a reason (move them to module level):\n  " + "\n  ".join(bare)
