"""The package's import graph, read with `ast`: no cycle, no arrow up into the command line
(`medmix.cli`, `medmix.commands`) from the library beneath it, and imports inside functions
only where they keep a heavy dependency off a light module's import."""

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


# Why an import may wait inside a function: the package costs start-up time (or a GPU/cluster
# side effect) that a light module — the CLI, a config, a reader — must not pay on import.
HEAVY = {
    "torch": "1-2 s import; CUDA initialisation", "ray": "~1 s import; cluster connection",
    "mlflow": "~1.5 s import", "transformers": "~2 s import", "timm": "imports torch + torchvision",
    "pyarrow": "~0.3 s import, native libraries", "sklearn": "~0.5 s import", "scipy": "~0.3 s import",
    "matplotlib": "~0.5 s import, font cache", "pysam": "optional dependency (genomics)",
    "pydicom": "optional codecs", "nibabel": "optional dependency (volumes)",
    "tokenizers": "native library", "optuna": "~0.5 s import", "safetensors": "imports torch bindings",
    "PIL": "native library", "fastapi": "pydantic models at import", "httpx": "~0.2 s import",
    "skimage": "~0.5 s import", "sacrebleu": "optional metric", "rouge_score": "imports nltk",
    "gguf": "numpy-heavy reader", "tqdm": "terminal probing", "pandas": "~0.5 s import",
    "numpy": "~0.1 s import, kept off the CLI", "yaml": "only cluster files", "starlette": "serve only",
    "pydantic": "serve only", "uvicorn": "serve only", "prometheus_client": "metrics readers only",
    "peft": "imports transformers' modeling (~4 s with torch)",
}


def _module_level(tree: ast.Module) -> tuple[set[str], set[str]]:
    """(medmix modules, third-party top-level packages) a module imports at module level."""
    med: set[str] = set()
    third: set[str] = set()

    def walk(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and _is_type_checking(node):
                continue
            if isinstance(node, (ast.If, ast.Try)):
                walk(node.body + node.orelse + [s for h in getattr(node, "handlers", []) for s in h.body])
            elif isinstance(node, ast.Import):
                for a in node.names:
                    (med if a.name.startswith("medmix") else third).add(a.name)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                if node.module.startswith("medmix"):
                    med.add(node.module)
                    med.update(f"{node.module}.{a.name}" for a in node.names)
                else:
                    third.add(node.module)
    walk(tree.body)
    return med, {m.split(".")[0] for m in third}


def heavy_closure() -> tuple[dict[str, Path], dict[str, set[str]]]:
    """Each module -> the HEAVY packages importing it loads (through module-level imports)."""
    paths = {_module_name(p): p for p in ROOT.rglob("*.py")}
    edges, third = {}, {}
    for name, path in paths.items():
        med, tops = _module_level(ast.parse(path.read_text()))
        parents = {".".join(name.split(".")[:i]) for i in range(2, len(name.split(".")))}
        edges[name] = {m for m in med | parents if m in paths and m != name}
        third[name] = tops & set(HEAVY)
    memo: dict[str, set[str]] = {}

    def heavy(name: str) -> set[str]:
        if name not in memo:
            memo[name] = set()
            memo[name] = set(third[name]).union(*(heavy(d) for d in edges[name]))
        return memo[name]
    return paths, {name: heavy(name) for name in paths}


def test_imports_inside_functions_only_defer_heavy_dependencies():
    """A function-level import must keep something HEAVY off its module's import (or say why
    in a comment on its line); everything else belongs at the top of the module."""
    paths, heavy = heavy_closure()
    needless = []
    for name, path in sorted(paths.items()):
        lines = path.read_text().splitlines()
        for fn in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if not isinstance(node, (ast.Import, ast.ImportFrom)) or "#" in lines[node.lineno - 1]:
                    continue
                targets = ([a.name for a in node.names] if isinstance(node, ast.Import)
                           else [node.module or ""])
                for target in targets:
                    if target.startswith("medmix"):
                        deferred = heavy.get(target, set()) - heavy[name]
                    else:
                        top = target.split(".")[0]
                        deferred = {top} if top in HEAVY and (top not in heavy[name] or "." in target) else set()
                    if not deferred:
                        needless.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} {target}")
    assert not needless, "imports inside functions that defer nothing heavy:\n" + "\n".join(needless)
