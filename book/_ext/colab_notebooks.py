"""The chapters as a reader of Colab or plain Jupyter gets them: book/colab/NN_name.ipynb, generated from the MyST
notebooks of the book.

Colab and Jupyter render Markdown, not MyST. For each chapter of `_toc.yml` this writes a notebook in which
- admonitions and exercises are plain Markdown, and solutions are left out (one line says where they are);
- figure, equation and exercise references carry the numbers the book gives them (Jupyter Book numbers each kind
  through the whole book, in toc order), numbered equations carry a `\\tag`, and a caption follows each figure;
- citations are author-year text from book/references.bib, as the book prints them;
- Markdown that quotes glued values becomes a code cell with a hidden input that displays it with the values
  this run glued (`vaelab.chapter.show_markdown`); text whose values a later cell glues moves just after that
  cell, and the header's run time, which `chapter.end()` glues last, becomes the chapter's last words.

    python book/_ext/colab_notebooks.py            # (re)write book/colab/
    python book/_ext/colab_notebooks.py --check    # exit 1, naming them, if the committed notebooks are stale
"""
from __future__ import annotations

import argparse
import ast
import copy
import functools
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import yaml
from markdown_it import MarkdownIt
from mdit_py_plugins.dollarmath import dollarmath_plugin
from pybtex.database import parse_file
from pybtex.richtext import Text

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "book" / "colab"
REGENERATE = "python book/_ext/colab_notebooks.py"

# What the book's pages print (Sphinx's numfig_format and math_eqref_format defaults; sphinx-exercise's title).
FIGURE_FORMAT = "Fig. {number}"
EQUATION_FORMAT = "({number})"
EXERCISE_FORMAT = "Exercise {number}"
# Names glued by vaelab.chapter's Chapter.end(), the chapter's last cell, which no cell of the chapter glues.
CHAPTER_END_GLUES = ("chapter_run_time", "chapter_machine", "chapter_mode", "chapter_gpu_estimate")
CHAPTER_END_TEMPLATE = ("This run of the chapter took {{chapter_run_time}} on {{chapter_machine}}, in {{chapter_mode}} "
                        "mode. In the gpu budget it takes {{chapter_gpu_estimate}}.")
ADMONITIONS = {"admonition", "note", "tip", "hint", "important", "warning", "caution", "attention", "danger",
               "error", "seealso"}
# A value in a template: {{name}} or {{name:format_spec}} (vaelab.chapter.fill reads the same syntax).
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_]\w*)\s*(?::([^{}]*?))?\s*\}\}")
ROLE_OR_CODE = re.compile(r"(?P<role>\{[a-z][\w:+-]*\})?(?P<ticks>`+)(?P<body>.+?)(?<!`)(?P=ticks)(?!`)", re.S)
FENCE_OPEN = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|:{3,}|~{3,})\s*(?P<info>.*)$")
DIRECTIVE = re.compile(r"^\{(?P<name>[\w:-]+)\}\s*(?P<argument>.*)$")
TARGET = re.compile(r"^\((?P<label>[^()\s]+)\)=\s*$")
LABELLED_MATH = re.compile(r"\$\$(?P<math>.+?)\$\$[ \t]*\((?P<label>[^()\s]+)\)", re.S)
STRING_LITERAL = re.compile(r"[\"']([A-Za-z_]\w*)[\"']")
CHAPTER_END_CALL = re.compile(r"\bchapter\.end\(\)")


class ConversionError(ValueError):
    """A chapter's source holds something this converter cannot turn into plain Markdown."""


# ------------------------------------------------------------------------------------------------ the book's toc


def toc_documents(root: Path = ROOT) -> list[Path]:
    """The book's documents in the order Jupyter Book numbers them: the root, then each toc entry."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    names = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                names.append(entry["file"])
            walk(entry.get("sections"))
            for part in entry.get("parts", []):
                walk(part.get("chapters"))

    walk(toc.get("chapters"))
    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    documents = []
    for name in names:
        for suffix in (".ipynb", ".md"):
            if (root / f"{name}{suffix}").exists():
                documents.append(root / f"{name}{suffix}")
                break
        else:
            raise ConversionError(f"_toc.yml names {name}, which is neither a notebook nor a Markdown file")
    return documents


def chapters(root: Path = ROOT) -> list[Path]:
    """The chapter notebooks of the toc (those that get a Colab notebook)."""
    return [path for path in toc_documents(root) if path.suffix == ".ipynb"]


def document_cells(path: Path) -> list[tuple[str, str, dict]]:
    """(cell type, source, metadata) of a notebook's cells, or one Markdown cell for a Markdown file."""
    if path.suffix == ".md":
        return [("markdown", path.read_text(), {})]
    notebook = nbformat.read(path, as_version=4)
    return [(cell.cell_type, cell.source, dict(cell.metadata)) for cell in notebook.cells]


# ------------------------------------------------------------------------------------------- MyST, parsed a little


@dataclass
class Directive:
    name: str
    argument: str
    options: dict
    body: str


def split_fenced(text: str) -> list[str | Directive | tuple[str, str]]:
    """The text as a list of: plain Markdown (str), directives (parsed, body unparsed) and plain code fences
    (("code", the fence's full text)), so that nothing inside a code fence is taken for MyST."""
    lines = text.split("\n")
    pieces: list = []
    plain: list[str] = []
    i = 0
    while i < len(lines):
        opening = FENCE_OPEN.match(lines[i])
        if not opening:
            plain.append(lines[i])
            i += 1
            continue
        fence, info = opening["fence"], opening["info"].strip()
        close = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        end = next((j for j in range(i + 1, len(lines)) if close.match(lines[j])), len(lines))
        body = lines[i + 1:end]
        if plain:
            pieces.append("\n".join(plain))
            plain = []
        directive = DIRECTIVE.match(info)
        if directive and fence[0] in "`:":
            options, k = {}, 0
            while k < len(body) and (option := re.match(r"^:([\w-]+):\s*(.*)$", body[k])):
                options[option[1]] = option[2].strip()
                k += 1
            pieces.append(Directive(directive["name"], directive["argument"].strip(), options,
                                    "\n".join(body[k:]).strip("\n")))
        elif fence[0] == ":":
            raise ConversionError(f"a colon fence that is no directive: {lines[i]!r}")
        else:
            pieces.append(("code", "\n".join(lines[i:end + 1])))
        i = end + 1
    if plain:
        pieces.append("\n".join(plain))
    return pieces


def walk_directives(text: str):
    """Every directive of a MyST text, nested ones included, in reading order."""
    for piece in split_fenced(text):
        if isinstance(piece, Directive):
            yield piece
            yield from walk_directives(piece.body)


# ---------------------------------------------------------------------------------------- the book's numbering


@dataclass
class Target:
    kind: str       # "figure", "equation", "exercise", "section"
    number: int | None
    title: str = ""  # a section's heading, an exercise's title
    chapter: str = ""


@dataclass
class BookIndex:
    """Every reference target of the book, numbered as Jupyter Book numbers them: with no numbered toctree each
    kind of numbered element (figures, labelled equations, exercises) is counted through the whole book, in the
    toc's order."""
    targets: dict[str, Target] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)

    def add(self, label: str, kind: str, chapter: str, title: str = "", numbered: bool = True) -> None:
        number = None
        if numbered:
            number = self.counters[kind] = self.counters.get(kind, 0) + 1
        if label:
            if label in self.targets:
                raise ConversionError(f"the label {label!r} is defined twice (second time in {chapter})")
            self.targets[label] = Target(kind, number, title, chapter)

    def target(self, label: str, kind: str | None = None) -> Target:
        if label not in self.targets:
            raise ConversionError(f"a reference to {label!r}, which no document of the toc defines")
        found = self.targets[label]
        if kind is not None and found.kind != kind:
            raise ConversionError(f"{label!r} is a {found.kind}, referred to as a {kind}")
        return found

    @classmethod
    def of_book(cls, root: Path = ROOT) -> BookIndex:
        index = cls()
        for path in toc_documents(root):
            for cell_type, source, metadata in document_cells(path):
                if cell_type == "code":
                    figure = metadata.get("mystnb", {}).get("figure", {})
                    if figure.get("name"):
                        index.add(figure["name"], "figure", path.stem)
                elif cell_type == "markdown":
                    index._scan_markdown(source, path.stem)
        return index

    def _scan_markdown(self, text: str, chapter: str) -> None:
        pending_label = None
        for piece in split_fenced(text):
            if isinstance(piece, tuple):
                continue
            if isinstance(piece, Directive):
                self._scan_directive(piece, chapter)
                continue
            for match in re.finditer(r"^\((?P<label>[^()\s]+)\)=[ \t]*$|^#{1,6}\s+(?P<title>.+?)\s*$|"
                                     r"\$\$(?P<math>.+?)\$\$(?:[ \t]*\((?P<eq>[^()\s]+)\))?", piece, re.M | re.S):
                if match["label"]:
                    pending_label = match["label"]
                elif match["title"]:
                    if pending_label:
                        self.add(pending_label, "section", chapter, title=match["title"], numbered=False)
                    pending_label = None
                elif match["eq"]:
                    self.add(match["eq"], "equation", chapter)

    def _scan_directive(self, directive: Directive, chapter: str) -> None:
        name, options = directive.name, directive.options
        if name == "exercise":
            self.add(options.get("label", ""), "exercise", chapter, title=directive.argument,
                     numbered="nonumber" not in options)
        elif name == "math" and options.get("label"):
            self.add(options["label"], "equation", chapter)
        elif name in ("figure", "glue:figure") and options.get("name"):
            self.add(options["name"], "figure", chapter)
        if name not in ("math",):
            self._scan_markdown(directive.body, chapter)


# ------------------------------------------------------------------------------------------------- citations


class Citations:
    """Author-year citations as the book prints them (sphinxcontrib-bibtex's author_year style): {cite:p} as
    "[Kingma and Welling, 2014, Rezende *et al.*, 2014]", {cite:t} as "Kingma and Welling [2014]"."""

    def __init__(self, bibfile: Path = ROOT / "book" / "references.bib"):
        self.entries = parse_file(str(bibfile)).entries

    def authors(self, key: str) -> str:
        if key not in self.entries:
            raise ConversionError(f"a citation of {key!r}, which book/references.bib does not have")
        entry = self.entries[key]
        people = entry.persons.get("author") or entry.persons.get("editor")
        if not people:
            raise ConversionError(f"{key!r} in book/references.bib has no author")
        names = [Text(" ").join(person.rich_prelast_names + person.rich_last_names).render_as("text")
                 for person in people]
        if len(names) > 2:
            return f"{names[0]} *et al.*"
        return " and ".join(names)

    def year(self, key: str) -> str:
        return self.entries[key].fields.get("year", "n.d.")

    def parenthetical(self, keys: list[str]) -> str:
        return "[" + ", ".join(f"{self.authors(key)}, {self.year(key)}" for key in keys) + "]"

    def textual(self, keys: list[str]) -> str:
        return ", ".join(f"{self.authors(key)} [{self.year(key)}]" for key in keys)


# ---------------------------------------------------------------------------------------- MyST to plain Markdown


@dataclass
class Converter:
    index: BookIndex
    citations: Citations
    repository: str  # the repository's web address, for the line that replaces a solution

    def markdown(self, text: str) -> str:
        """MyST Markdown as plain Markdown, glued values as {{name}} placeholders."""
        if PLACEHOLDER.search(text):
            raise ConversionError(f"the text already holds {PLACEHOLDER.search(text)[0]!r}, which would be read "
                                  "as a glued value (write the LaTeX with spaces between the braces)")
        out = []
        for piece in split_fenced(text):
            if isinstance(piece, tuple):
                out.append(piece[1])
            elif isinstance(piece, Directive):
                out.append(self.directive(piece))
            else:
                out.append(self.plain(piece))
        return re.sub(r"\n{3,}", "\n\n", "\n".join(part for part in out if part is not None)).strip("\n")

    def plain(self, text: str) -> str:
        text = "\n".join(line for line in text.split("\n") if not TARGET.match(line))
        text = LABELLED_MATH.sub(lambda m: self.numbered_math(m["math"], m["label"]), text)
        return ROLE_OR_CODE.sub(self.role, text)

    def numbered_math(self, math: str, label: str) -> str:
        number = self.index.target(label, "equation").number
        body = math.rstrip()
        newline = "\n" if "\n" in math else " "
        return f"$${body}{newline}\\tag{{{number}}}{newline}$$"

    def role(self, match: re.Match) -> str:
        if not match["role"]:
            return match[0]  # inline code, left as it is
        name, body = match["role"][1:-1], match["body"]
        if name in ("glue", "glue:text", "glue:any"):
            key, _, spec = body.partition(":")
            return "{{" + key.strip() + (":" + spec if spec else "") + "}}"
        if name == "glue:md":
            key, _, markdown_format = body.partition(":")
            if markdown_format not in ("", "myst", "commonmark", "gfm"):
                raise ConversionError(f"{{glue:md}}`{body}`: unknown Markdown format {markdown_format!r}")
            return "{{" + key.strip() + "}}"
        if name.startswith("cite"):
            keys = [key.strip() for key in body.split(",") if key.strip()]
            return self.citations.textual(keys) if name == "cite:t" else self.citations.parenthetical(keys)
        if name in ("numref", "eq", "ref"):
            text, label = explicit_target(body)
            return self.reference(name, label, text)
        if name == "math":
            return f"${body}$"
        if name.startswith("bdg-link-"):
            text, url = explicit_target(body)
            return f"[{text or url}]({url})"
        if name == "doc":
            text, document = explicit_target(body)
            return text or document
        raise ConversionError(f"no plain Markdown for the role {{{name}}}`{body}`")

    def reference(self, role: str, label: str, text: str | None) -> str:
        target = self.index.target(label)
        where = "" if target.number is None else str(target.number)
        if role == "eq":
            if target.kind != "equation":
                raise ConversionError(f"{{eq}}`{label}` refers to a {target.kind}")
            return EQUATION_FORMAT.format(number=where)
        if target.kind == "section":
            return text or target.title
        default = {"figure": FIGURE_FORMAT, "equation": EQUATION_FORMAT, "exercise": EXERCISE_FORMAT}[target.kind]
        if text:  # {numref}`Figure %s <label>` or {ref}`some words <label>`
            return text.replace("%s", where).replace("{number}", where).replace("{name}", target.title)
        if role == "ref" and target.kind == "exercise" and target.title:
            return f"{default.format(number=where)} ({target.title})"
        return default.format(number=where)

    def directive(self, directive: Directive) -> str | None:
        name = directive.name
        if name in ADMONITIONS:
            title = directive.argument if name == "admonition" else name.capitalize()
            if name == "seealso":
                title = "See also"
            body = self.markdown(directive.body)
            quoted = "\n".join("> " + line if line else ">" for line in body.split("\n"))
            return f"> **{self.plain(title)}**\n>\n{quoted}"
        if name == "exercise":
            label = directive.options.get("label", "")
            number = self.index.target(label, "exercise").number if label else None
            heading = EXERCISE_FORMAT.format(number=number) if number else "Exercise"
            title = directive.argument
            if title:
                kind = re.match(r"^(\w+):\s+(.+)$", title)
                title = self.plain(title)
                heading += f" ({kind[1].lower()}): {self.plain(kind[2])}" if kind else f": {title}"
            return f"**{heading}**\n\n{self.markdown(directive.body)}"
        if name == "solution":
            label = directive.argument.strip()
            which = EXERCISE_FORMAT.format(number=self.index.target(label, "exercise").number) if label else \
                "this exercise"
            return f"*The solution to {which} is in [the rendered book]({self.repository}#read-it), not in this " \
                   "notebook.*"
        if name in ("glue:md", "glue", "glue:text", "glue:any"):
            return "{{" + directive.argument.strip() + "}}"
        if name == "math":
            label = directive.options.get("label")
            tag = f"\n\\tag{{{self.index.target(label, 'equation').number}}}" if label else ""
            return f"$$\n{directive.body}{tag}\n$$"
        raise ConversionError(f"no plain Markdown for the directive {{{name}}} (add it to {Path(__file__).name})")


def explicit_target(body: str) -> tuple[str | None, str]:
    """`text <target>` as (text, target); `target` as (None, target)."""
    match = re.match(r"^(?P<text>.*?)\s*<(?P<target>[^<>]+)>$", body.strip(), re.S)
    if match and match["text"]:
        return match["text"], match["target"].strip()
    return None, body.strip()


# -------------------------------------------------------------------------------- blocks, and when they can show

_BLOCKS = MarkdownIt("commonmark").use(dollarmath_plugin)


def blocks(markdown: str) -> list[str]:
    """The top-level blocks of a Markdown text (paragraphs, lists, headings, display math, ...)."""
    lines = markdown.split("\n")
    found = []
    for token in _BLOCKS.parse(markdown):
        if token.level == 0 and token.map and token.nesting in (0, 1):
            start, end = token.map
            found.append("\n".join(lines[start:end]).strip("\n"))
    return [block for block in found if block.strip()]


def glued_names(text: str) -> list[str]:
    return [match[1] for match in PLACEHOLDER.finditer(text)]


def glue_sites(code_cells: list[tuple[int, str]], library: Path = ROOT / "vaelab") -> dict[str, int]:
    """name (or "re:" and a pattern, for names built at run time) -> the first code cell that glues it, read from
    the code: glue("name", ...); glue(f"name_{x}", ...); glue(variable, ...), taken to glue the names written as
    string literals in its cell or as the keywords of a dict(name=value, ...) there; a function of the chapter or of the library that glues, at the cells that call
    it, with the names its arguments give (def glue_pair(prefix, ...): glue(f"{prefix}_difference", ...), then
    glue_pair("gmm_prior", ...)); and Chapter.end()'s names at the cell that calls it."""
    sites: dict[str, int] = {}
    helpers = dict(library_gluers(library))  # function -> its parameters, its glue calls' names
    for index, source in code_cells:
        tree = python_of(source)
        if tree is None:
            raise ConversionError(f"code cell {index} is not Python: {source[:80]!r}")
        literals = [m[1] for m in STRING_LITERAL.finditer(source)] + [  # and dict(name=value, ...)'s names
            keyword.arg for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "dict" for keyword in node.keywords if keyword.arg]
        in_helpers = set()
        for function, parameters, calls in gluing_functions(tree):
            helpers[function] = (parameters, [c.args[0] for c in calls])
            in_helpers.update(id(c) for c in calls)
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
            callee = call.func.id if isinstance(call.func, ast.Name) else \
                call.func.attr if isinstance(call.func, ast.Attribute) else None
            if is_glue_call(call) and call.args and id(call) not in in_helpers:
                keys = name_keys(call.args[0], {}, literals)
            elif callee in helpers:
                parameters, names = helpers[callee]
                bound = {parameter: argument.value for parameter, argument in zip(parameters, call.args)
                         if isinstance(argument, ast.Constant) and isinstance(argument.value, str)}
                bound.update({k.arg: k.value.value for k in call.keywords
                              if isinstance(k.value, ast.Constant) and isinstance(k.value.value, str)})
                keys = [key for name in names for key in name_keys(name, bound, literals)]
            else:
                continue
            for key in keys:
                sites.setdefault(key, index)
        if CHAPTER_END_CALL.search(source):
            for name in CHAPTER_END_GLUES:
                sites.setdefault(name, index)
    return sites


def gluing_functions(tree: ast.AST):
    """(name, parameters, glue calls) of each function defined at the top of `tree` (not a method) that glues."""
    for function in getattr(tree, "body", []):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            calls = [c for c in ast.walk(function) if is_glue_call(c) and c.args]
            if calls:
                arguments = function.args
                yield function.name, [a.arg for a in arguments.posonlyargs + arguments.args + arguments.kwonlyargs], \
                    calls


@functools.lru_cache
def library_gluers(library: Path) -> tuple:
    """The library's functions that glue, for glue_sites."""
    found = []
    for path in sorted(library.rglob("*.py")):
        for function, parameters, calls in gluing_functions(ast.parse(path.read_text())):
            found.append((function, (parameters, [c.args[0] for c in calls])))
    return tuple(found)


def python_of(source: str) -> ast.Module | None:
    """A code cell's syntax tree, its IPython magics and shell lines read as `pass`."""
    lines = [re.sub(r"^(\s*)[%!].*$", r"\1pass", line) for line in source.split("\n")]
    try:
        return ast.parse("\n".join(lines))
    except SyntaxError:
        return None


def is_glue_call(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and (
        (isinstance(node.func, ast.Name) and node.func.id == "glue") or
        (isinstance(node.func, ast.Attribute) and node.func.attr == "glue"))


def name_keys(expression: ast.expr, bound: dict[str, str], literals: list[str]) -> list[str]:
    """The names a glue call's first argument can take: the name, a pattern, or the cell's string literals."""
    if isinstance(expression, ast.Constant) and isinstance(expression.value, str):
        return [expression.value]
    if isinstance(expression, ast.Name):
        return [bound[expression.id]] if expression.id in bound else literals
    if isinstance(expression, ast.JoinedStr):
        pattern = ""
        for part in expression.values:
            if isinstance(part, ast.Constant):
                pattern += re.escape(str(part.value))
            elif isinstance(part.value, ast.Name) and part.value.id in bound:
                pattern += re.escape(bound[part.value.id])
            else:
                pattern += r"\w+"
        return ["re:" + pattern]
    return ["re:\\w+"]  # a name computed some other way: any name, from this cell on


def glued_at(name: str, sites: dict[str, int]) -> int | None:
    if name in sites:
        return sites[name]
    found = [index for key, index in sites.items() if key.startswith("re:") and re.fullmatch(key[3:], name)]
    return min(found) if found else None


def take_sentences_quoting(markdown: str, names) -> tuple[str, list[str]]:
    """The text without the sentences that quote any of `names`, and those sentences. A sentence runs from the end
    of the previous one (a full stop and a space), a line's `&nbsp;` or the paragraph's start, to its full stop."""
    taken = []
    while True:
        found = [m for m in PLACEHOLDER.finditer(markdown) if m[1] in names]
        if not found:
            return markdown, taken
        at = found[0].start()
        starts = [markdown.rfind("\n\n", 0, at) + 2, markdown.rfind(". ", 0, at) + 2, markdown.rfind(".\n", 0, at) + 2]
        nbsp = markdown.rfind("&nbsp;", 0, at)
        if nbsp >= 0:
            starts.append(nbsp + len("&nbsp;"))
        start = max(starts)
        stop = re.compile(r"\.(\s|$)").search(markdown, found[0].end())
        if stop is None:
            raise ConversionError(f"no end to the sentence that quotes {found[0][0]}")
        taken.append(re.sub(r"\s*\n\s*", " ", markdown[start:stop.end()]).strip().lstrip("> "))
        markdown = markdown[:start].rstrip(" ") + " " + markdown[stop.end():].lstrip(" ")
        markdown = re.sub(r" +\n", "\n", markdown)


# ------------------------------------------------------------------------------------------- the Colab notebook


def display_source(markdown: str) -> str:
    """The code of a cell that displays `markdown` with the glued values of this run."""
    if '"""' not in markdown and not markdown.endswith(("\\", '"')):
        literal = 'r"""\n' + markdown + '\n"""'
    else:
        literal = repr(markdown)
    return "# @title\nfrom vaelab.chapter import show_markdown\n\nshow_markdown(" + literal + ")"


def display_cell(markdown: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(display_source(markdown))
    # Colab shows a form cell as its title with the code folded away; JupyterLab folds a source_hidden input;
    # nbconvert and Jupyter Book drop or fold the input of a cell tagged hide-input, when told to.
    cell.metadata = {"cellView": "form", "jupyter": {"source_hidden": True}, "tags": ["hide-input"]}
    return cell


def read_template(source: str) -> str | None:
    """The Markdown template of a cell written by display_cell, or None for any other cell."""
    match = re.fullmatch(r"# @title\nfrom vaelab\.chapter import show_markdown\n\nshow_markdown\((.*)\)", source,
                         re.S)
    if not match:
        return None
    template = ast.literal_eval(match[1])
    return template[1:-1] if match[1].startswith('r"""') else template


class Chapter:
    """One chapter's Colab notebook."""

    def __init__(self, path: Path, converter: Converter):
        self.path = path
        self.converter = converter
        self.source = nbformat.read(path, as_version=4)
        code = [(i, cell.source) for i, cell in enumerate(self.source.cells) if cell.cell_type == "code"]
        self.sites = glue_sites(code)
        end_calls = [i for i, source in code if CHAPTER_END_CALL.search(source)]
        self.end_cell = end_calls[-1] if end_calls else None

    def where(self, name: str, cell: int) -> int:
        at = glued_at(name, self.sites)
        if at is None:
            raise ConversionError(f"{self.path.name}, cell {cell}: the text quotes {{{{{name}}}}}, which no code "
                                  "cell of the chapter glues")
        return at

    def notebook(self) -> nbformat.NotebookNode:
        after: dict[int, list[nbformat.NotebookNode]] = {}  # cells to write after source cell i
        out: list[nbformat.NotebookNode] = []
        deferred_to = -1  # while text waits for a later code cell, every later text waits with it, in order
        quoted_end = False

        def emit(index: int, cells: list) -> None:
            (after.setdefault(deferred_to, []) if deferred_to > index else out).extend(cells)

        for index, cell in enumerate(self.source.cells):
            if cell.cell_type == "code":
                out.append(code_cell(cell, index))
                caption = cell.metadata.get("mystnb", {}).get("figure", {})
                if caption.get("name"):
                    number = self.converter.index.target(caption["name"], "figure").number
                    text = f"**{FIGURE_FORMAT.format(number=number)}.** " + \
                        self.converter.markdown(caption.get("caption", "")).strip()
                    self.check_available(text, index + 1)
                    out.append(display_cell(text) if glued_names(text) else nbformat.v4.new_markdown_cell(text))
                out.extend(after.pop(index, []))
                continue
            if cell.cell_type != "markdown":
                out.append(copy.deepcopy(cell))
                continue
            markdown = self.converter.markdown(cell.source)
            if any(name in CHAPTER_END_GLUES for name in glued_names(markdown)) and index < (self.end_cell or 0):
                # "When this book was built, the chapter ran in ...": this run's time is told at its end instead
                markdown, _ = take_sentences_quoting(markdown, CHAPTER_END_GLUES)
                quoted_end = True
            groups: list[tuple[str, list[str]]] = []  # ("markdown" | "display", blocks), consecutive ones merged
            for block in blocks(markdown):
                names = glued_names(block)
                ready = max((self.where(name, index) for name in names), default=-1)
                if ready > index and ready > deferred_to:
                    late = [name for name in names if self.where(name, index) > index]
                    text_between = any(c.cell_type == "markdown" for c in self.source.cells[index + 1:ready])
                    if text_between and not re.match(r"^\s*([-*+>|]|\d+[.)]|\$\$|#)", block):
                        # Moving the rest of this text past the next cells' text would scramble the page: only
                        # the sentences that quote the late values wait for the cell that glues them.
                        block, sentences = take_sentences_quoting(block, late)
                        after.setdefault(ready, []).append(display_cell(" ".join(sentences)))
                        names = glued_names(block)
                    else:  # this and the rest of the text follow the code cell that glues the values
                        if groups:
                            emit(index, cells_of(groups))
                            groups = []
                        deferred_to = ready
                kind = "display" if names else "markdown"  # headings stay Markdown: Colab's contents list them
                if groups and groups[-1][0] == kind:
                    groups[-1][1].append(block)
                else:
                    groups.append((kind, [block]))
            emit(index, cells_of(groups))
        if quoted_end:
            if self.end_cell is None:
                raise ConversionError(f"{self.path.name}: the text quotes the run time, but no cell calls "
                                      "chapter.end()")
            position = next(i for i, c in enumerate(out) if c.get("id") == f"src-{self.end_cell}")
            out.insert(position + 1, display_cell(CHAPTER_END_TEMPLATE))
        for pending in after.values():
            out.extend(pending)
        notebook = nbformat.v4.new_notebook(cells=out, metadata=notebook_metadata(self.source, self.path))
        for number, new in enumerate(notebook.cells):
            new["id"] = f"cell-{number}"
        nbformat.validate(notebook)
        return notebook

    def check_available(self, text: str, index: int) -> None:
        for name in glued_names(text):
            if self.where(name, index) >= index:
                raise ConversionError(f"{self.path.name}: a figure caption quotes {{{{{name}}}}}, glued later")


def cells_of(groups: list[tuple[str, list[str]]]) -> list[nbformat.NotebookNode]:
    cells = []
    for kind, texts in groups:
        text = "\n\n".join(texts)
        cells.append(display_cell(text) if kind == "display" else nbformat.v4.new_markdown_cell(text))
    return cells


HIDDEN_IN_THE_BOOK = {"remove-cell", "remove-input", "hide-input", "hide-cell"}


def code_cell(cell: nbformat.NotebookNode, index: int) -> nbformat.NotebookNode:
    new = nbformat.v4.new_code_cell(cell.source)
    new.metadata = {key: value for key, value in cell.metadata.items() if key not in ("mystnb", "myst", "execution")}
    if HIDDEN_IN_THE_BOOK & set(cell.metadata.get("tags", [])):  # bookkeeping the book hides: folded, still run
        new.source = "# @title\n" + cell.source
        new.metadata.update({"cellView": "form", "jupyter": {"source_hidden": True}})
    new["id"] = f"src-{index}"  # found again by the position of chapter.end(); renumbered at the end
    return new


def notebook_metadata(source: nbformat.NotebookNode, path: Path) -> dict:
    return {
        "kernelspec": source.metadata.get("kernelspec", {"display_name": "Python 3", "language": "python",
                                                           "name": "python3"}),
        "language_info": {"name": "python"},
        "colab": {"provenance": [], "toc_visible": True},
        "vaelab": {"generated_from": f"book/{path.name}", "by": REGENERATE},
    }


# ------------------------------------------------------------------------------------------------------ the CLI


def converter_for(root: Path = ROOT) -> Converter:
    config = yaml.safe_load((root / "_config.yml").read_text())
    repository = config.get("repository", {}).get("url", "").rstrip("/")
    bibfiles = config.get("bibtex_bibfiles", ["book/references.bib"])
    return Converter(BookIndex.of_book(root), Citations(root / bibfiles[0]), repository)


def render(root: Path = ROOT) -> dict[Path, str]:
    """Each chapter's Colab notebook as the text to write, keyed by its path."""
    converter = converter_for(root)
    rendered = {}
    for path in chapters(root):
        notebook = Chapter(path, converter).notebook()
        rendered[root / "book" / "colab" / path.name] = nbformat.writes(notebook) + "\n"
    return rendered


def stale(root: Path = ROOT) -> list[Path]:
    """The Colab notebooks that differ from what the chapters give now, or are missing, or are left over."""
    rendered = render(root)
    out = [path for path, text in rendered.items() if not path.exists() or path.read_text() != text]
    leftovers = set((root / "book" / "colab").glob("*.ipynb")) - set(rendered)
    return sorted(out + list(leftovers))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if book/colab/ is stale")
    args = parser.parse_args(argv)
    if args.check:
        outdated = stale()
        for path in outdated:
            print(f"stale: {path.relative_to(ROOT)}", file=sys.stderr)
        if outdated:
            print(f"regenerate them with: {REGENERATE}", file=sys.stderr)
        return 1 if outdated else 0
    rendered = render()
    OUTPUT.mkdir(exist_ok=True)
    for leftover in set(OUTPUT.glob("*.ipynb")) - set(rendered):
        leftover.unlink()
    for path, text in rendered.items():
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
