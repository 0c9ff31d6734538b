"""What a student reads in an executed Colab notebook (book/colab/NN.ipynb), checked against its chapter's MyST source
(book/NN.ipynb): no MyST syntax in the Markdown cells or in the Markdown the hidden cells displayed, no text of the
chapter's solutions anywhere, and every hidden cell's text displayed with its values filled in.

    python tests/colab/student_reads.py EXECUTED.ipynb SOURCE.ipynb

Needs only nbformat: it runs in the Colab-like environment of run_like_colab.sh, which has no book tooling.
"""
import re
import sys

import nbformat

MYST = re.compile(r":::|\{glue|\{cite|\{numref|\{(eq|ref|doc|math)\}`|\{bdg-|```\{|^\([\w.:-]+\)=|"
                  r"\$\$[ \t]*\([\w.:-]+\)|:label:|:class:|:format:|\{\{\s*[A-Za-z_]\w*\s*(:[^{}]*)?\}\}", re.M)
DISPLAYS_TEXT = "from vaelab.chapter import show_markdown"  # the cells written to show the chapter's text
SOLUTION = re.compile(r"^(?P<fence>`{3,}|:{3,})\{solution\}[^\n]*\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.M | re.S)


def problems(executed: nbformat.NotebookNode, source: nbformat.NotebookNode) -> list[str]:
    found = []
    read = []  # (where, text) of everything the student reads
    for index, cell in enumerate(executed.cells):
        if cell.cell_type == "markdown":
            read.append((f"Markdown cell {index}", cell.source))
        if cell.cell_type != "code":
            continue
        markdown = [o["data"]["text/markdown"] for o in cell.get("outputs", [])
                    if o.get("output_type") in ("display_data", "execute_result") and "text/markdown" in o["data"]]
        read += [(f"the Markdown displayed by cell {index}", text) for text in markdown]
        if DISPLAYS_TEXT in cell.source and len(markdown) != 1:
            found.append(f"hidden cell {index} displayed {len(markdown)} Markdown outputs, not 1")
    if not any(DISPLAYS_TEXT in cell.source for cell in executed.cells):
        found.append("no hidden cell displays the chapter's text with its values")
    for where, text in read:
        if match := MYST.search(text):
            found.append(f"MyST in {where}: {text[max(0, match.start() - 60):match.end() + 40]!r}")

    solutions = [m["body"] for cell in source.cells if cell.cell_type == "markdown"
                 for m in SOLUTION.finditer(cell.source)]
    if not solutions:
        found.append("the chapter's source has no solutions to look for")
    rest = "\n".join(cell.source for cell in source.cells)
    for body in solutions:
        rest = rest.replace(body, "")
    lines = {line.strip() for body in solutions for line in body.split("\n")
             if len(line.strip()) >= 25 and line.strip() not in rest}
    everything = "\n".join([cell.source for cell in executed.cells] + [text for _, text in read])
    for line in sorted(line for line in lines if line in everything)[:5]:
        found.append(f"solution text: {line!r}")
    return found


def main(executed_path: str, source_path: str) -> int:
    executed = nbformat.read(executed_path, as_version=4)
    found = problems(executed, nbformat.read(source_path, as_version=4))
    for problem in found:
        print(f"{executed_path}: {problem}", file=sys.stderr)
    hidden = sum(DISPLAYS_TEXT in cell.source for cell in executed.cells)
    if not found:
        print(f"  what the student reads: plain Markdown, no solution, {hidden} hidden cells' text with its values")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
