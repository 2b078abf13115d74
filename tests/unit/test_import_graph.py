"""The package's import graph, read with `ast`: no module-level cycle, and no arrow up into
the command line (`medmix.cli`, `medmix.commands`) from the library beneath it."""

from __future__ import annotations

import ast
from pathlib import Path

import medmix

ROOT = Path(medmix.__file__).parent
TOP = ("medmix.cli", "medmix.commands")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module, module: str, is_package: bool) -> tuple[set[str], set[str]]:
    """(module-level medmix imports, imports anywhere incl. functions); TYPE_CHECKING skipped."""
    top: set[str] = set()
    anywhere: set[str] = set()

    def targets(node: ast.Import | ast.ImportFrom) -> set[str]:
        if isinstance(node, ast.Import):
            return {a.name for a in node.names}
        base = node.module or ""
        if node.level:
            pkg = module.split(".") if is_package else module.split(".")[:-1]
            pkg = pkg[:len(pkg) - node.level + 1]
            base = ".".join(pkg + ([base] if base else []))
        # `from medmix.data import store` imports the submodule medmix.data.store
        return {base} | {f"{base}.{a.name}" for a in node.names}

    def walk(body: list[ast.stmt], at_top: bool) -> None:
        for node in body:
            if isinstance(node, ast.If) and _is_type_checking(node):
                continue
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found = {t for t in targets(node) if t == "medmix" or t.startswith("medmix.")}
                anywhere.update(found)
                if at_top:
                    top.update(found)
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    nested = at_top and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                              ast.ClassDef, ast.Lambda))
                    walk([child], nested)

    walk(tree.body, True)
    return top, anywhere


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    top: dict[str, set[str]] = {}
    anywhere: dict[str, set[str]] = {}
    for name, path in modules.items():
        t, a = _imports(ast.parse(path.read_text(), str(path)), name, path.name == "__init__.py")
        top[name] = {m for m in t if m in modules and m != name}
        anywhere[name] = {m for m in a if m in modules and m != name}
    return top, anywhere


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if state.get(nxt) is None and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if state.get(node) is None and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_reader_sees_imports_and_cycles():
    tree = ast.parse("import medmix.a\nfrom . import b\nif TYPE_CHECKING:\n    import medmix.c\n"
                     "def f():\n    from medmix.d import x\n")
    top, anywhere = _imports(tree, "medmix.pkg.mod", False)
    assert top == {"medmix.a", "medmix.pkg", "medmix.pkg.b"}
    assert anywhere == top | {"medmix.d", "medmix.d.x"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_level_import_cycle():
    top, _ = import_graph()
    cycle = find_cycle(top)
    assert cycle is None, "module-level import cycle: " + " -> ".join(cycle or [])


def test_the_library_never_imports_the_command_line():
    _, anywhere = import_graph()
    upward = sorted(f"{src} -> {dst}" for src, dsts in anywhere.items() for dst in dsts
                    if dst.startswith(TOP) and not src.startswith(TOP))
    assert not upward, "imports from the library up into cli/commands: " + ", ".join(upward)


def test_no_import_cycle_even_through_imports_inside_functions():
    """A deferred import hides a cycle from Python but not from a reader: none is allowed."""
    _, anywhere = import_graph()
    cycle = find_cycle(anywhere)
    assert cycle is None, "import cycle (counting imports inside functions): " + " -> ".join(cycle or [])
