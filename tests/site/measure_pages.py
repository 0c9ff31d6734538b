"""Per chapter: how much of the code a Colab reader sees teaches nothing, and how tall the rendered page is.

    python tests/site/measure_pages.py                                  # the notebooks of this repository
    python tests/site/measure_pages.py --site _build/html               # and the pages' heights in the built book
    python tests/site/measure_pages.py --book /tmp/stage --site ... --json measures.json

Code lines are the non-blank lines of a notebook's code cells that are not only a comment. Bookkeeping lines are
the code lines a reader on Colab sees that teach nothing about the subject:

- every line of a code cell tagged `remove-cell` or `remove-input` (the book hides it; Colab shows it);
- every line of the Colab install cell (`if "google.colab" in sys.modules: %pip install ...`);
- every line of a top-level statement, in any other code cell, all of whose calls are bookkeeping calls: myst-nb's
  glue (`glue`, `vaelab.chapter.glue`), clocks (`time.perf_counter`, `time.time`, `time.monotonic`, `chapter.end`),
  and swapping in shipped checkpoints (any call through `shipped.`, e.g. `vaelab.shipped.prefer`). A statement
  without any call (`x = 3`) is not bookkeeping, nor is one that calls anything else as well.

A reader meets fewer of them than the source holds: the book shows a `remove-input` cell's output alone and
nothing of a `remove-cell` one, and the Colab notebooks (book/colab, book/_ext/colab_notebooks.py) fold both, a
one-line title in place of the code. So two counts are reported: every bookkeeping line of the source, and the
bookkeeping lines a reader *sees*, those outside the folded cells (the install cell included: Colab needs it).

The page height is the document's scrollHeight in headless Chromium at a 1280-pixel window (and at 800), once
MathJax has typeset the page, with dropdowns closed: the length a reader scrolls.
"""
from __future__ import annotations

import argparse
import ast
import functools
import http.server
import json
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from served import CHROMIUM, CHROMIUM_ARGS, ROOT, new_context, toc_pages  # noqa: E402

GLUE = {"glue"}
CLOCKS = {("time", "perf_counter"), ("time", "time"), ("time", "monotonic"), ("chapter", "end")}


def _call_name(call: ast.Call) -> tuple[str, str]:
    """("time", "perf_counter") for time.perf_counter(), ("vaelab.shipped", "prefer") for vaelab.shipped.prefer(),
    ("", "glue") for glue()."""
    f = call.func
    if isinstance(f, ast.Name):
        return "", f.id
    if isinstance(f, ast.Attribute):
        return ast.unparse(f.value), f.attr
    return "", ""


def is_bookkeeping_call(call: ast.Call) -> bool:
    owner, name = _call_name(call)
    return (name in GLUE or (owner.split(".")[-1], name) in CLOCKS or owner == "shipped"
            or owner.endswith(".shipped"))


def _calls(node: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(node) if isinstance(n, ast.Call)]


def _code_lines(source: str) -> set[int]:
    return {i for i, line in enumerate(source.splitlines(), 1)
            if line.strip() and not line.strip().startswith("#")}


def measure_notebook(path: Path) -> dict:
    """Code lines and bookkeeping lines of one notebook (see the module's docstring)."""
    code = bookkeeping = seen = 0
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        lines = _code_lines(source)
        code += len(lines)
        tags = cell.get("metadata", {}).get("tags", [])
        if {"remove-cell", "remove-input"} & set(tags):  # folded: the reader sees none of its code
            bookkeeping += len(lines)
            continue
        if "google.colab" in source:
            bookkeeping += len(lines)
            seen += len(lines)
            continue
        python = "\n".join("pass" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
        try:
            tree = ast.parse(python)
        except SyntaxError:
            continue
        marked: set[int] = set()
        for statement in tree.body:
            calls = _calls(statement)
            if calls and all(is_bookkeeping_call(c) for c in calls):
                marked |= set(range(statement.lineno, statement.end_lineno + 1))
        bookkeeping += len(lines & marked)
        seen += len(lines & marked)
    return {"code_lines": code, "bookkeeping_lines": bookkeeping,
            "bookkeeping_share": bookkeeping / code if code else 0.0,
            "seen_lines": seen, "seen_share": seen / code if code else 0.0}


def page_heights(site: Path, pages: list[str], widths=(1280, 800)) -> dict[str, dict[int, int]]:
    """The rendered height of each page at each window width, in CSS pixels."""
    from playwright.sync_api import sync_playwright

    from test_rendered_book import WAIT_MATHJAX

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format, *args):  # noqa: A002
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    server = f"http://127.0.0.1:{httpd.server_address[1]}/"
    heights: dict[str, dict[int, int]] = {}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            for page in pages:
                for width in widths:
                    context, _ = new_context(browser, server, width)
                    tab = context.new_page()
                    tab.goto(server + page + ".html", wait_until="load", timeout=90_000)
                    tab.evaluate(WAIT_MATHJAX)
                    tab.wait_for_timeout(500)  # images and widgets settle
                    heights.setdefault(page, {})[width] = tab.evaluate("document.documentElement.scrollHeight")
                    context.close()
            browser.close()
    finally:
        httpd.shutdown()
    return heights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--book", type=Path, default=ROOT, help="the sources, with _toc.yml (default: this checkout)")
    parser.add_argument("--site", type=Path, help="the built book (_build/html), for the pages' heights")
    parser.add_argument("--json", type=Path, help="also write the measures to this file")
    args = parser.parse_args(argv)
    pages = [p for p in toc_pages(args.book) if (args.book / f"{p}.ipynb").is_file()]
    rows = {page: measure_notebook(args.book / f"{page}.ipynb") for page in pages}
    if args.site:
        for page, heights in page_heights(args.site.resolve(), pages).items():
            rows[page]["height"] = heights
    print("| notebook | code lines | bookkeeping lines in the source (share) | of them a reader sees (share) "
          "| page height at 1280 / 800 px |")
    print("|---|---:|---:|---:|---:|")
    for page, row in rows.items():
        height = row.get("height")
        shown = f"{height[1280]:,} / {height[800]:,}" if height else "(no --site)"
        print(f"| {page} | {row['code_lines']} | {row['bookkeeping_lines']} ({100 * row['bookkeeping_share']:.1f} %) "
              f"| {row['seen_lines']} ({100 * row['seen_share']:.1f} %) | {shown} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
