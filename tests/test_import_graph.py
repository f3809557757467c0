"""No import cycle anywhere in ``fastinfer``.

The graph is built from the source, not from ``sys.modules``: every ``import``
and ``from ... import`` of every module, at module level and inside functions
alike (a lazy import inside a function is how a cycle hides: it runs later, but
it runs). Importing ``a.b.c`` from outside ``a.b`` also runs ``a/b/__init__.py``,
so that package is an edge too; a module's own enclosing packages are not (they
are already being imported when it runs). Compiled ``.pyx`` modules count with
their Python-level imports.
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import fastinfer

ROOT = Path(fastinfer.__file__).resolve().parent
_PYX_IMPORT = re.compile(r"^\s*(?:from\s+(\.*[\w.]*)\s+import\s+([\w\s,()]+)|import\s+([\w.]+))", re.M)


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by the name of its ``__init__``)."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")) + sorted(ROOT.rglob("*.pyx")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _resolve(importer: str, modules: dict[str, Path], level: int, module: str | None) -> str:
    """The absolute name a (possibly relative) ``from`` clause names."""
    if level == 0:
        return module or ""
    package = importer if _is_package(importer, modules) else importer.rpartition(".")[0]
    for _ in range(level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{module}" if module else package


def _raw_imports(path: Path, importer: str, modules: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """(module named, names imported from it) for every import statement of the file."""
    out: list[tuple[str, list[str]]] = []
    text = path.read_text()
    if path.suffix == ".pyx":
        for m in _PYX_IMPORT.finditer(text):
            if m.group(3):
                out.append((m.group(3), []))
            else:
                dots = len(m.group(1)) - len(m.group(1).lstrip("."))
                names = [n.strip() for n in m.group(2).replace("(", "").replace(")", "").split(",")]
                out.append((_resolve(importer, modules, dots, m.group(1).lstrip(".") or None),
                            [n.split()[0] for n in names if n]))
        return out
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((_resolve(importer, modules, node.level, node.module), [a.name for a in node.names]))
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the fastinfer modules importing it runs."""
    modules = module_files()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for importer, path in modules.items():
        own_packages = {importer.rsplit(".", i)[0] for i in range(importer.count(".") + 1)}
        for target, names in _raw_imports(path, importer, modules):
            if target.split(".")[0] != "fastinfer":
                continue
            targets = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules] or [target]
            for t in targets:
                # the module itself and every package on the way to it that is not already running
                pieces = t.split(".")
                for i in range(1, len(pieces) + 1):
                    step = ".".join(pieces[:i])
                    if step in modules and step not in own_packages:
                        graph[importer].add(step)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (or a self-import), Tarjan."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycle():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_graph_sees_function_level_and_relative_imports(tmp_path, monkeypatch):
    """The checker itself: a cycle closed only by a lazy import inside a function is found."""
    pkg = tmp_path / "fastinfer"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .a import thing\n")
    (pkg / "sub" / "a.py").write_text("def thing():\n    from ..b import other\n    return other\n")
    (pkg / "b.py").write_text("from .sub.a import thing\nother = 1\n")
    (pkg / "c.py").write_text("from . import b\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", pkg)
    graph = import_graph()
    assert graph["fastinfer.c"] == {"fastinfer.b"}
    assert graph["fastinfer.b"] == {"fastinfer.sub", "fastinfer.sub.a"}
    assert cycles(graph) == [["fastinfer.b", "fastinfer.sub", "fastinfer.sub.a"]]
