"""How vaelab's modules import each other: one way (no cycles), and without the book's figure and widget libraries
until a chapter asks for them (`import vaelab` and the command line start without matplotlib and ipywidgets)."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import vaelab

PACKAGE = Path(vaelab.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def import_graph() -> dict[str, set[str]]:
    """Each vaelab module -> the vaelab modules it imports, at the top or inside a function (both run)."""
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                    base = f"{base}.{node.module}" if node.module else base
                else:
                    base = node.module
                if not (base == "vaelab" or base.startswith("vaelab.")):
                    continue
                for alias in node.names:  # `from . import data` imports a module; `from .nn import X`, a package
                    edges.add(f"{base}.{alias.name}" if is_module(f"{base}.{alias.name}") else base)
            elif isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name == "vaelab" or a.name.startswith("vaelab.")}
        graph[name] = edges - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, path = {}, []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_is_read_from_the_sources():
    graph = import_graph()
    assert "vaelab.runtime" in graph["vaelab.chapter"] and "vaelab.runtime" in graph["vaelab.train"]
    assert "vaelab.data" in graph["vaelab.metrics.classifier"]  # `from .. import data`: the module, not the package
    assert "vaelab.nn" in graph["vaelab.vae"]  # `from .nn import ResFcBlock`: the package
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_vaelab_imports_run_one_way():
    cycle = find_cycle(import_graph())
    assert cycle is None, "vaelab's modules import each other in a circle: " + " -> ".join(cycle)


def test_import_vaelab_and_the_command_line_need_no_figure_or_widget_libraries():
    loaded = "print(sorted({m.split('.')[0] for m in sys.modules} & {'matplotlib', 'ipywidgets'}))"
    code = f"import sys, vaelab, vaelab.__main__\n{loaded}\nimport vaelab.chapter\n{loaded}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    at_start, with_a_chapter = result.stdout.splitlines()
    assert at_start == "[]", f"`import vaelab` imported {at_start}"
    assert with_a_chapter == "['ipywidgets', 'matplotlib']"  # a chapter does need them: the check can see them
