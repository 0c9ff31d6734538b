"""A chapter must run where only `pip install vaelab` and a kernel are installed (Colab, a student's laptop):
every module it imports comes from the standard library, from the kernel (IPython), or from a distribution that
vaelab's install brings, directly or through its dependencies. The book tooling (myst_nb, jupyter_book) is not
among them."""
import ast
import json
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"
CHAPTERS = sorted(BOOK.glob("[0-9][0-9]_*.ipynb"))
KERNEL = {"IPython", "ipykernel"}  # what any Jupyter kernel provides


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def installed_with_vaelab() -> set[str]:
    """vaelab and every distribution its install pulls in (the transitive closure of its requirements)."""
    seen, todo = set(), ["vaelab"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [_name(r) for r in requires if "extra ==" not in r]
    return seen


def imported_modules(chapter: Path) -> set[str]:
    modules = set()
    for cell in json.loads(chapter.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        # IPython magics (%pip ...) are not Python: each becomes a `pass` at its indentation
        source = re.sub(r"^(\s*)[%!].*$", r"\1pass", "".join(cell["source"]), flags=re.M)
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules.add(node.module.split(".")[0])
    return modules


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapters_import_only_what_installing_vaelab_provides(chapter):
    allowed = installed_with_vaelab()
    distributions = metadata.packages_distributions()
    missing = []
    for module in sorted(imported_modules(chapter)):
        if module in sys.stdlib_module_names or module in KERNEL:
            continue
        providers = {_name(d) for d in distributions.get(module, [])}
        if not providers & allowed:
            missing.append(f"{module} (from {', '.join(sorted(providers)) or 'nothing installed'})")
    assert not missing, f"{chapter.name} imports what `pip install vaelab` does not bring: {', '.join(missing)}"


def test_the_book_tooling_is_not_part_of_vaelabs_install():
    allowed = installed_with_vaelab()
    assert "torch" in allowed and "scikit-learn" in allowed
    assert "myst-nb" not in allowed and "jupyter-book" not in allowed
