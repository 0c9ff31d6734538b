"""The chapters as a Colab or plain-Jupyter reader gets them (book/colab/, written by book/_ext/colab_notebooks.py):
current with the chapters, plain Markdown, no solutions, every quoted value glued by a cell above it; the
converter's pieces on small made-up books; and chapter 1's notebook executed as a student runs it."""
import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
from IPython.display import Markdown

import vaelab.chapter

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("colab_notebooks", ROOT / "book" / "_ext" / "colab_notebooks.py")
colab = importlib.util.module_from_spec(_spec)
sys.modules["colab_notebooks"] = colab  # dataclasses look their module up by name
_spec.loader.exec_module(colab)

CHAPTERS = colab.chapters()
MYST_RESIDUE = re.compile(r":::|\{glue|\{cite|\{numref|\{(eq|ref|doc|math)\}`|\{bdg-|```\{|^\([\w.:-]+\)=|"
                          r"\$\$[ \t]*\([\w.:-]+\)|:label:|:class:|:format:|\{\{\s*[A-Za-z_]\w*\s*(:[^{}]*)?\}\}", re.M)


def colab_notebook(chapter: Path) -> nbformat.NotebookNode:
    return nbformat.read(ROOT / "book" / "colab" / chapter.name, as_version=4)


def what_the_student_reads(notebook) -> list[str]:
    """The Markdown cells and the templates of the display cells (the code cells' own text excluded)."""
    texts = []
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            texts.append(cell.source)
        elif (template := colab.read_template(cell.source)) is not None:
            texts.append(template)
    return texts


def solution_lines(chapter: Path) -> set[str]:
    """Lines of the chapter's solutions long enough to be theirs alone, and found nowhere else in the chapter."""
    source = nbformat.read(chapter, as_version=4)
    markdown = [cell.source for cell in source.cells if cell.cell_type == "markdown"]
    solutions = [d.body for text in markdown for d in colab.walk_directives(text) if d.name == "solution"]
    rest = "\n".join(cell.source for cell in source.cells)
    for body in solutions:
        rest = rest.replace(body, "")
    return {line.strip() for body in solutions for line in body.split("\n")
            if len(line.strip()) >= 25 and line.strip() not in rest}


# ------------------------------------------------------------------------------------ the committed notebooks


def test_the_colab_notebooks_are_current():
    assert CHAPTERS and len(list((ROOT / "book" / "colab").glob("*.ipynb"))) == len(CHAPTERS)
    outdated = [str(path.relative_to(ROOT)) for path in colab.stale()]
    assert not outdated, f"stale Colab notebooks {outdated}: regenerate them with `{colab.REGENERATE}` and commit"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_a_colab_notebook_holds_plain_markdown_and_no_outputs(chapter):
    notebook = colab_notebook(chapter)
    for text in what_the_student_reads(notebook):
        residue = MYST_RESIDUE.search(colab.PLACEHOLDER.sub("", text))
        where = text[max(0, residue.start() - 80):residue.end() + 40] if residue else ""
        assert residue is None, f"{chapter.name}: MyST left in {where!r}"
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    first = notebook.cells[0].source
    assert first.startswith("# ") and f"book/colab/{chapter.name}" in first, "the title and the Colab link"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_a_colab_notebook_has_no_solution_but_says_where_each_is(chapter):
    lines = solution_lines(chapter)
    assert lines, f"{chapter.name}: no solution text to look for"
    everything = "\n".join(cell.source for cell in colab_notebook(chapter).cells)
    shown = sorted(line for line in lines if line in everything)
    assert not shown, f"{chapter.name}: solution text in the Colab notebook: {shown[:3]}"
    n_solutions = sum(d.name == "solution" for cell in nbformat.read(chapter, as_version=4).cells
                      if cell.cell_type == "markdown" for d in colab.walk_directives(cell.source))
    assert everything.count("is in [the rendered book]") == n_solutions


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_every_quoted_value_is_glued_by_a_cell_above_its_text(chapter):
    notebook = colab_notebook(chapter)
    code = [(i, cell.source) for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"]
    sites = colab.glue_sites(code)
    quoted = 0
    for position, cell in enumerate(notebook.cells):
        template = colab.read_template(cell.source) if cell.cell_type == "code" else None
        if template is None:
            continue
        assert cell.source.startswith("# @title\n") and cell.metadata["cellView"] == "form"
        assert cell.metadata["jupyter"]["source_hidden"] is True
        names = colab.glued_names(template)
        assert names, f"{chapter.name}: a display cell that quotes no value"
        for name in names:
            at = colab.glued_at(name, sites)
            assert at is not None, f"{chapter.name}: {{{{{name}}}}} is glued by no cell of the chapter"
            assert at < position, f"{chapter.name}: {{{{{name}}}}} is shown in cell {position}, glued in cell {at}"
            quoted += 1
    source_roles = 0  # the values the book's text quotes, its solutions left out
    for cell in nbformat.read(chapter, as_version=4).cells:
        if cell.cell_type == "markdown":
            text = cell.source
            for solution in (d for d in colab.walk_directives(cell.source) if d.name == "solution"):
                text = text.replace(solution.body, "")
            source_roles += len(re.findall(r"\{glue(?::\w+)?\}`|```\{glue", text))
    assert quoted >= source_roles, f"{chapter.name}: the book quotes {source_roles} values, this notebook {quoted}"


# ------------------------------------------------------------------------------------- the converter's pieces


def test_citations_read_as_the_book_prints_them(tmp_path):
    citations = colab.Citations()
    assert citations.parenthetical(["kingma2014auto", "rezende2014stochastic"]) == \
        "[Kingma and Welling, 2014, Rezende *et al.*, 2014]"
    assert citations.textual(["rivera2024howto"]) == "Rivera [2024]"
    bib = tmp_path / "refs.bib"
    bib.write_text('@article{s, author = {Sch{\\"o}lkopf, Bernhard and van den Oord, A{\\"a}ron}, year = {2020}}')
    assert colab.Citations(bib).textual(["s"]) == "Schölkopf and van den Oord [2020]"
    with pytest.raises(colab.ConversionError, match="nope"):
        citations.parenthetical(["nope"])


def small_book(tmp_path: Path, chapters: dict[str, list[tuple[str, str, dict]]]) -> Path:
    """A book in tmp_path: an intro with one numbered equation, then the given chapters' cells."""
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "intro.md").write_text("# Intro\n\n$$\na = b\n$$ (eq-intro)\n")
    entries = "".join(f"  - file: book/{name}\n" for name in chapters)
    (tmp_path / "_toc.yml").write_text(f"format: jb-book\nroot: book/intro\nchapters:\n{entries}")
    (tmp_path / "_config.yml").write_text("repository:\n  url: https://example.org/book\n"
                                          "bibtex_bibfiles: [book/references.bib]\n")
    (tmp_path / "book" / "references.bib").write_text("@article{k, author = {Kay, Al}, year = {2001}}")
    for name, cells in chapters.items():
        made = []
        for kind, source, metadata in cells:
            cell = nbformat.v4.new_markdown_cell(source) if kind == "markdown" else nbformat.v4.new_code_cell(source)
            cell.metadata = metadata
            made.append(cell)
        nbformat.write(nbformat.v4.new_notebook(cells=made), tmp_path / "book" / f"{name}.ipynb")
    return tmp_path


def convert(root: Path, name: str) -> nbformat.NotebookNode:
    return colab.Chapter(root / "book" / f"{name}.ipynb", colab.converter_for(root)).notebook()


def readable(notebook) -> str:
    return "\n".join(colab.read_template(c.source) or c.source if c.cell_type == "code" else c.source
                     for c in notebook.cells)


FIGURE = {"mystnb": {"figure": {"name": "fig-b1", "caption": "Bee, after {eq}`eq-b`."}}}


def test_figures_equations_and_exercises_are_numbered_through_the_book_in_toc_order(tmp_path):
    root = small_book(tmp_path, {
        "01_a": [("markdown", "# A\n\n$$\nx\n$$ (eq-a)\n\n```{exercise}\n:label: ex-a\nDo.\n```", {}),
                 ("code", "plot()", {"mystnb": {"figure": {"name": "fig-a", "caption": "Ay."}}})],
        "02_b": [("markdown", "# B\n\n$$\ny\n$$ (eq-b)\n\nSee {numref}`fig-b1`, {numref}`fig-a`, {eq}`eq-b`, "
                  "{eq}`eq-a`, {ref}`ex-b`, {numref}`Figure %s <fig-b1>` and {cite:t}`k`.\n\n"
                  ":::{exercise} Coding: the thing\n:label: ex-b\nCode it.\n:::", {}),
                 ("code", "plot()", FIGURE)],
    })
    text = readable(convert(root, "02_b"))
    assert "See Fig. 2, Fig. 1, (3), (2), Exercise 2 (Coding: the thing), Figure 2 and Kay [2001]." in text
    assert "$$\ny\n\\tag{3}\n$$" in text and "(eq-b)" not in text
    assert "**Exercise 2 (coding): the thing**\n\nCode it." in text
    assert "**Fig. 2.** Bee, after (3)." in text  # the caption follows the figure's cell
    assert "**Exercise 1**\n\nDo." in readable(convert(root, "01_a"))


def test_a_solution_is_replaced_by_where_to_find_it(tmp_path):
    root = small_book(tmp_path, {"01_a": [(
        "markdown", "```{exercise}\n:label: ex-a\nProve it.\n```\n\n````{solution} ex-a\n:class: dropdown\n"
        "The secret argument.\n\n```python\nsecret_code()\n```\n````\n\nAfter.", {})]})
    text = readable(convert(root, "01_a"))
    assert "secret" not in text and "dropdown" not in text
    assert "*The solution to Exercise 1 is in [the rendered book](https://example.org/book#read-it), not in this " \
           "notebook.*\n\nAfter." in text


def test_text_quoting_values_becomes_a_hidden_display_cell_after_the_cells_that_glue_them(tmp_path):
    header = (":::{admonition} Run this chapter\n:class: tip\n{bdg-link-primary}`Open <https://x.org/a.ipynb>`\n"
              "&nbsp; This page ran in {glue:text}`chapter_run_time` on {glue:text}`chapter_machine`. Quick mode "
              "is small.\n:::")
    root = small_book(tmp_path, {"01_a": [
        ("markdown", f"# A\n\n{header}\n\nPlain words.", {}),
        ("code", 'glue("early", 3.14159)', {}),
        ("markdown", "## Values\n\nEarly {glue:text}`early:.2f`.\n\nLate {glue:text}`late:,` here.", {}),
        ("code", 'glue("late", 12345)', {}),
        ("markdown", "The end.", {}),
        ("code", "chapter.end()", {"tags": ["remove-cell"]}),
    ]})
    cells = convert(root, "01_a").cells
    texts = [colab.read_template(c.source) if c.cell_type == "code" else c.source for c in cells]
    assert texts[0] == "# A\n\n> **Run this chapter**\n>\n> [Open](https://x.org/a.ipynb)\n> &nbsp; Quick mode is " \
                       "small.\n\nPlain words."
    assert texts[2:] == ["## Values", "Early {{early:.2f}}.", None, "Late {{late:,}} here.", "The end.", None,
                         colab.CHAPTER_END_TEMPLATE]
    end = cells[-2]  # bookkeeping that the book hides: folded the same way, and still run
    assert end.source == "# @title\nchapter.end()" and end.metadata["cellView"] == "form"
    display = cells[3]
    assert display.source.startswith("# @title\n") and display.metadata == {
        "cellView": "form", "jupyter": {"source_hidden": True}, "tags": ["hide-input"]}


def test_a_value_that_no_cell_glues_or_an_unknown_role_is_refused(tmp_path):
    root = small_book(tmp_path, {"01_a": [("markdown", "Quoted {glue:text}`nowhere`.", {})],
                                 "02_b": [("markdown", "A {abbr}`role`.", {})]})
    with pytest.raises(colab.ConversionError, match="nowhere"):
        convert(root, "01_a")
    with pytest.raises(colab.ConversionError, match="abbr"):
        convert(root, "02_b")


def test_fill_writes_values_as_the_book_does_and_refuses_a_missing_one(monkeypatch):
    monkeypatch.setattr(vaelab.chapter, "glued", {})
    vaelab.chapter.glue("n", 60000)
    vaelab.chapter.glue("x", 0.123456)
    vaelab.chapter.glue("word", "falls")
    vaelab.chapter.glue("math", Markdown("$16\\times8$"))
    vaelab.chapter.glue("scalar", np.float64(0.5))
    filled = vaelab.chapter.fill("{{n:,}} {{x:.2f}} {{x:.1%}} {{x}} {{word}} {{math}} {{scalar:.3f}} {{ n }}")
    assert filled == "60,000 0.12 12.3% 0.123456 falls $16\\times8$ 0.500 60000"
    with pytest.raises(LookupError, match="not glued yet: later, other"):
        vaelab.chapter.fill("{{n}} {{later}} {{other}} {{later}}")
    with pytest.raises(ValueError, match="'word'"):
        vaelab.chapter.fill("{{word:.2f}}")


def test_chapter_end_glues_what_the_last_display_cell_quotes(monkeypatch):
    monkeypatch.setattr(vaelab.chapter, "glued", {})
    vaelab.chapter.Chapter("quick").end()
    assert set(colab.glued_names(colab.CHAPTER_END_TEMPLATE)) == set(colab.CHAPTER_END_GLUES) <= \
        set(vaelab.chapter.glued)


# ------------------------------------------------------------------------------- chapter 1, run as a student


def test_chapter_1_executed_shows_its_values_and_its_self_checks(tmp_path):
    from nbclient import NotebookClient

    notebook = colab_notebook(CHAPTERS[0])
    environment = {"VAELAB_COMPUTE": "quick", "VAELAB_RUNS": str(tmp_path / "runs")}
    saved = {key: os.environ.get(key) for key in environment}
    os.environ.update(environment)
    try:
        NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}}) \
            .execute()
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    shown = []
    for cell in notebook.cells:
        if cell.cell_type == "code" and colab.read_template(cell.source) is not None:
            [output] = [o for o in cell.outputs if o.output_type == "display_data"]
            shown.append(output.data["text/markdown"])
    assert shown, "chapter 1 displays no text"
    for text in shown:
        assert MYST_RESIDUE.search(text) is None, text
    assert re.fullmatch(r"This run of the chapter took [\d.]+ (seconds|minutes) on .+, in quick mode\. "
                        r"In the gpu budget it takes .+\.", shown[-1].strip()), shown[-1]
    printed = json.dumps([o for c in notebook.cells if c.cell_type == "code" for o in c.outputs])
    assert printed.count("not done yet") == 2, "each coding exercise's self-check ran on its stub"


def test_names_glued_from_a_dict_of_keywords_are_found():
    cell = "for name, value in dict(alpha=1, beta_two=2.5).items():\n    glue(name, value)\n"
    sites = colab.glue_sites([(3, cell)])
    assert colab.glued_at("alpha", sites) == 3 and colab.glued_at("beta_two", sites) == 3
    assert colab.glued_at("gamma", sites) is None


def test_numpy_and_torch_scalars_are_glued_as_python_numbers():
    import torch
    vaelab.chapter.glue("a_numpy_scalar", np.float64(0.25))
    vaelab.chapter.glue("a_tensor_scalar", torch.tensor(3))
    assert type(vaelab.chapter.glued["a_numpy_scalar"]) is float and vaelab.chapter.glued["a_tensor_scalar"] == 3
    assert vaelab.chapter.fill("{{a_numpy_scalar:.2f}}") == "0.25"
