"""Every page of the built book fits its column, at a 1280-pixel window and at 800 (a split screen): no display
equation, code block or table wider than the column unless it scrolls inside a box the reader can see, and every
figure large enough to read (layout.py says how each is measured). The measuring code itself is checked first, on
a small synthetic page that has one of each fault.

    python -m pytest tests/site --site _build/html     # with the other tests of the rendered book

Full-page screenshots at 800 pixels go beside test_rendered_book's: _build/screenshots/<page>@800.png.
"""
from __future__ import annotations

import base64
import io
import json
import urllib.parse

import pytest
from PIL import Image

import layout
from served import new_context
from test_rendered_book import OPEN_DROPDOWNS, WAIT_MATHJAX
from vaelab import viz

SUMMARY = pytest.StashKey[list]()  # lines for the terminal summary (conftest.py)


@pytest.fixture(scope="session")
def measured(browser, server, screenshots, pytestconfig):
    """measured(page, width): what layout.MEASURE finds on the page in a window `width` pixels wide, with MathJax
    done and every dropdown open (cached; one visit per page and width)."""
    done: dict[tuple[str, int], dict] = {}

    def measure(page: str, width: int) -> dict:
        if (page, width) not in done:
            context, requests = new_context(browser, server, width)
            try:
                tab = context.new_page()
                tab.goto(urllib.parse.urljoin(server, page + ".html"), wait_until="load", timeout=90_000)
                tab.evaluate(WAIT_MATHJAX)
                tab.evaluate(OPEN_DROPDOWNS)
                tab.wait_for_timeout(300)  # toggle animations
                tab.evaluate(WAIT_MATHJAX)
                result = tab.evaluate(layout.MEASURE)
                if width != 1280:  # test_rendered_book takes the 1280-pixel screenshots
                    tab.screenshot(path=str(screenshots / f"{page.replace('/', '__')}@{width}.png"), full_page=True)
            finally:
                context.close()
            result["refused"] = requests.refused
            done[(page, width)] = result
        return done[(page, width)]

    yield measure
    pytestconfig.stash[SUMMARY] = [
        f"{page}.html at {width} px: {m['height']:,} px high, {len(m['items'])} equations, code blocks and tables "
        f"({sum(i['verdict'] == 'scrolls' for i in m['items'])} scroll in a box), "
        f"{sum(not p['widget'] for p in m['pictures'])} pictures" for (page, width), m in sorted(done.items())]


@pytest.mark.parametrize("width", layout.WIDTHS)
def test_equations_code_and_tables_fit_the_column(measured, page, width):
    m = measured(page, width)
    found = layout.problems(m)
    assert not found, f"{page}.html at {width} px (column {m['column']} px):\n  " + "\n  ".join(found)


@pytest.mark.parametrize("width", layout.WIDTHS)
def test_figures_are_large_enough_to_read(measured, page, width):
    m = measured(page, width)
    found = layout.figure_problems(m, viz.MIN_FONT_POINTS, viz.DPI)
    assert not found, f"{page}.html at {width} px (column {m['column']} px):\n  " + "\n  ".join(found)


# ---------------------------------------------------------------- the measuring code, on a synthetic page


def _png(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("L", (width, height), 200).save(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


# The structure of a rendered page (sphinx-book-theme's article column, MathJax's display math in a div.math that
# hides overflow, pygments' code blocks), each element either fitting or showing one of the faults.
WIDE = "x" * 400
SYNTHETIC = f"""<!doctype html><html><body style="margin:0;background:#fff">
<article class="bd-article" style="width:700px;padding:0 32px;box-sizing:border-box">
 <div class="math" id="narrow-eq" style="overflow:hidden">
  <mjx-container display="true" style="display:block;overflow-x:auto"><mjx-math style="display:inline-block;
   width:300px">a = b</mjx-math></mjx-container></div>
 <div class="math" style="overflow:hidden"><span class="eqno">(3)</span>
  <mjx-container display="true" style="display:block;overflow-x:auto;min-width:0"><mjx-math style="display:inline-block;
   width:1200px">wide equation</mjx-math></mjx-container></div>
 <div class="highlight"><pre style="overflow-x:auto;background:rgb(243,244,245)">{WIDE}</pre></div>
 <div><pre style="overflow:visible;background:transparent;white-space:pre">{WIDE}</pre></div>
 <div style="overflow:hidden"><table><tr><td style="white-space:nowrap">{WIDE}</td></tr></table></div>
 <table><tr><td>a small table</td></tr></table>
 <div class="cell_output"><img src="{_png(1300, 300)}" style="max-width:100%"></div>
 <div class="cell_output"><img src="{_png(600, 300)}" style="max-width:100%"></div>
 <div class="cell_output"><img src="{_png(200, 100)}" style="max-width:100%"></div>
 <div class="cell_output"><div class="jupyter-widgets"><img src="{_png(30, 30)}"></div></div>
</article></body></html>"""


def test_the_measure_tells_what_fits_from_what_does_not(chromium):
    context = chromium.new_context(viewport={"width": 800, "height": 900})
    try:
        tab = context.new_page()
        tab.set_content(SYNTHETIC)
        m = tab.evaluate(layout.MEASURE)
    finally:
        context.close()
    verdicts = [(item["kind"], item["verdict"]) for item in m["items"]]
    assert verdicts == [("equation", "fits"), ("equation", "hidden"), ("code", "scrolls"), ("code", "spills"),
                        ("table", "cut"), ("table", "fits")], m["items"]
    assert m["column"] == 700 - 64
    found = layout.problems(m)
    assert len(found) == 4 and "(3) wide equation" in found[0] and "no visible box" in found[0], found
    assert "scrolls sideways" in found[-1]  # the code that spills widens the whole page
    figures = layout.figure_problems(m, min_font_points=10, dpi=100)
    assert len(figures) == 3, figures  # the shrunk 1300-px figure, the 200-px one, the 30-px widget picture
    assert "smaller than the body's" in figures[0] and "under 300" in figures[1] and "widget" in figures[2]


def test_bookkeeping_is_counted_as_measure_pages_defines_it(tmp_path):
    from measure_pages import measure_notebook

    def cell(source, tags=()):
        return {"cell_type": "code", "metadata": {"tags": list(tags)}, "source": source, "outputs": [],
                "execution_count": None}

    notebook = {"cells": [
        cell('import sys\nif "google.colab" in sys.modules:\n    %pip install -q vaelab'),  # 3 lines, all Colab set-up
        cell("t0 = time.perf_counter()\nmodel = train(recipe)  # teaches\n\nglue('loss', loss,\n     display=False)"),
        cell("shown = vaelab.shipped.prefer({'vae': run})\nprint(shown.reason)"),
        cell("for name in names:\n    glue(name, values[name])", tags=["remove-cell"]),
        cell("# only a comment\nx = 3"),
        {"cell_type": "markdown", "metadata": {}, "source": "glue('not code', 1)"},
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "chapter.ipynb"
    path.write_text(json.dumps(notebook))
    measured = measure_notebook(path)
    # code lines: 3 + 4 + 2 + 2 + 1; bookkeeping: the install cell, the clock, the two lines of glue, the swap and
    # the hidden cell; not `model = train(...)`, `print(shown)` or `x = 3`
    assert measured["code_lines"] == 12 and measured["bookkeeping_lines"] == 3 + 1 + 2 + 1 + 2, measured
    assert measured["seen_lines"] == 3 + 1 + 2 + 1, measured  # all but the hidden cell, which readers get folded
