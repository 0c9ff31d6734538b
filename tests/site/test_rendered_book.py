"""The built book as a reader gets it: every page of the table of contents, opened in headless Chromium.

Run by .ci/test after the book is built (it passes --book, the staged copy the site was built from):

    python -m pytest tests/site --site _build/html        # or VAELAB_SITE=_build/html python -m pytest tests/site

Without a built site (plain `pytest tests`) every test here is skipped. The site is served from 127.0.0.1 by a
thread of this process; the JavaScript the pages load from CDNs (MathJax, require.js, the ipywidgets
html-manager) is answered from local copies of the npm packages (cdn_cache.py, filled by .ci/setup-site), and
any other request that leaves 127.0.0.1 fails the test. Per page it checks: figures (counted from the notebooks'
sources), broken images, console errors and failed requests, math typeset with no raw TeX left in the visible
text (dropdown solutions opened), links and anchors, citations and cross-references, and that every slider, tab
and dropdown of the embedded widgets changes the pictures it drives, with no kernel. Full-page screenshots go to
_build/screenshots/<page>.png (beside the site's folder), with report.json, what each visit saw, and cdn.txt, which
npm package answered which CDN URL.

Environment: VAELAB_CHROMIUM (default /usr/bin/chromium), VAELAB_SCREENSHOTS (default <site>/../screenshots).
"""
from __future__ import annotations

import ast
import html.parser
import json
import re
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import cdn_cache
from served import new_context

SUMMARY = pytest.StashKey[list]()  # lines for the terminal summary (conftest.py)
WIDGET_VIEW = 'script[type="application/vnd.jupyter.widget-view+json"]'
SHOWS = {("plt", "show"), ("fig", "show")}  # plt.show(), fig.show()


# ---------------------------------------------------------------- what the book should contain, from its sources


@dataclass
class CodeCell:
    index: int  # in the notebook, counting every cell
    source: str
    shows: bool  # runs plt.show() or fig.show(), itself or through a function of the notebook
    figure: dict | None  # myst-nb's cell metadata {"mystnb": {"figure": {"caption", "name"}}}
    tags: list[str]

    @property
    def first_line(self) -> str:
        return next((line for line in self.source.splitlines() if line.strip()), "")[:70]


def _python(source: str) -> ast.Module:
    """A cell's code as Python; IPython's %magics and !commands become `pass`."""
    lines = ["pass" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()]
    try:
        return ast.parse("\n".join(lines))
    except SyntaxError:
        return ast.Module(body=[], type_ignores=[])


def _calls(node: ast.AST, into_functions: bool):
    """The names called under `node`: ("plt", "show") for plt.show(), ("", "name") for name(); without
    descending into function and class bodies unless `into_functions`."""
    for child in ast.iter_child_nodes(node):
        if not into_functions and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda,
                                                      ast.ClassDef)):
            continue
        if isinstance(child, ast.Call):
            f = child.func
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                yield f.value.id, f.attr
            elif isinstance(f, ast.Name):
                yield "", f.id
        yield from _calls(child, into_functions)


def code_cells(notebook: Path) -> list[CodeCell]:
    """The code cells myst-nb renders (a cell tagged remove-cell is left out of the page). A cell draws a figure
    (`shows`) when it runs plt.show() or fig.show() itself, or calls a function of the notebook that does
    (a cell that only defines such a function draws nothing)."""
    raw = [(i, c) for i, c in enumerate(json.loads(notebook.read_text())["cells"]) if c["cell_type"] == "code"]
    trees = {i: _python("".join(c["source"])) for i, c in raw}
    bodies = {}  # the notebook's functions: name -> everything they call
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                bodies.setdefault(node.name, set()).update(_calls(node, into_functions=True))
    drawers, grew = set(), True
    while grew:  # functions that draw, directly or through another one
        new = {name for name, calls in bodies.items()
               if name not in drawers and (calls & SHOWS or any(("", d) in calls for d in drawers))}
        drawers |= new
        grew = bool(new)
    cells = []
    for index, cell in raw:
        meta = cell.get("metadata", {})
        tags = meta.get("tags", [])
        if "remove-cell" in tags:
            continue
        calls = set(_calls(trees[index], into_functions=False))
        shows = bool(calls & SHOWS) or any(("", d) in calls for d in drawers)
        figure = (meta.get("mystnb") or meta.get("render") or {}).get("figure")
        cells.append(CodeCell(index, "".join(cell["source"]), shows, figure, tags))
    return cells


def figure_id(name: str) -> str:
    """The HTML id docutils gives a figure named `name`."""
    from docutils.nodes import fully_normalize_name, make_id

    return make_id(fully_normalize_name(name))


# ---------------------------------------------------------------- one visit per page


@dataclass
class Visit:
    page: str
    url: str
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    outside_requests: list[str] = field(default_factory=list)
    local_copies: dict[str, str] = field(default_factory=dict)  # CDN URL -> npm name@version that answered it
    problems: list[str] = field(default_factory=list)  # the visit itself: time-outs and the like
    dom: dict = field(default_factory=dict)  # what COLLECT returned
    controls: list[dict] = field(default_factory=list)  # sliders, tabs, dropdowns: what using each did
    screenshot: Path | None = None
    seconds: float = 0.0


# Everything the checks need, read off the page in one call, after MathJax and the widgets are done and every
# dropdown is open.
COLLECT = r"""() => {
  const visible = el => el.checkVisibility ? el.checkVisibility() : !!(el.offsetWidth || el.offsetHeight);
  const inWidget = el => !!el.closest('.widget-subarea, .jupyter-widgets');
  const short = (s, n = 90) => (s || '').replace(/\s+/g, ' ').trim().slice(0, n);
  const imgInfo = img => ({src: short(img.getAttribute('src'), 70), ok: img.complete && img.naturalWidth > 0,
                           visible: visible(img), widget: inWidget(img)});
  const cells = [...document.querySelectorAll('div.cell')].map(cell => {
    const out = cell.querySelector('.cell_output');
    const imgs = out ? [...out.querySelectorAll('img')].filter(i => !inWidget(i)) : [];
    return {imgs: imgs.length, imgsOk: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
            figures: out ? [...out.querySelectorAll('figure[id]')].map(f => f.id) : [],
            input: short((cell.querySelector('.cell_input') || {}).textContent, 70)};
  });
  const figures = [...document.querySelectorAll('figure')].map(f => ({
    id: f.id, imgs: f.querySelectorAll('img').length,
    imgsOk: [...f.querySelectorAll('img')].filter(i => i.complete && i.naturalWidth > 0).length,
    caption: short((f.querySelector('figcaption') || {}).innerText, 200)}));
  const math = [...document.querySelectorAll('.math')];
  const untypeset = math.filter(m => !m.querySelector('mjx-container')).map(m => short(m.textContent));
  const mathErrors = [...document.querySelectorAll('mjx-merror')].map(e =>
    short(e.getAttribute('data-mjx-error') || e.textContent) + ' in ' +
    short((e.closest('mjx-container') || e).parentElement.textContent || '', 60));
  // The prose as a reader sees it: visible text outside code, program output and typeset math.
  const skip = 'pre, code, script, style, textarea, mjx-container, mjx-assistive-mml, .cell_input, ' +
               '.highlight, .widget-subarea, .output.stream, .output.text_plain';
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const prose = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (!el || el.closest(skip) || !visible(el) || !n.textContent.trim()) continue;
    prose.push(n.textContent);
  }
  const unresolvedNodes = [...document.querySelectorAll(
      '.xref, .problematic, .system-message, a.reference.internal:not([href])')]
    .filter(e => !e.closest('a[href]')).map(e => short(e.outerHTML, 120));
  const links = [...document.querySelectorAll('a[href]')].map(a => ({href: a.href, text: short(a.textContent, 50)}));
  const widgetViews = [...document.querySelectorAll('%(view)s')].map(s => {
    const area = s.previousElementSibling;
    return {rendered: !!(area && area.classList.contains('widget-subarea') && area.children.length),
            cell: short(((s.closest('div.cell') || {}).querySelector ?
                         (s.closest('div.cell').querySelector('.cell_input') || {}).textContent : ''), 70)};
  });
  return {title: document.title, images: [...document.images].map(imgInfo), cells, figures,
          nMath: math.length, untypeset, mathErrors, mathjax: window.MathJax ? (MathJax.version || 'config only') : null,
          prose: prose.join(' '), unresolvedNodes, links, widgetViews,
          sliders: document.querySelectorAll('.widget-slider .noUi-handle').length};
}""".replace("%(view)s", WIDGET_VIEW)

# Open what a reader can open: sphinx-design / sphinx-exercise dropdowns (<details>) and sphinx-togglebutton.
OPEN_DROPDOWNS = r"""() => {
  let opened = 0;
  document.querySelectorAll('details:not([open])').forEach(d => { d.open = true; opened++; });
  document.querySelectorAll('button.toggle-button.toggle-button-hidden').forEach(b => { b.click(); opened++; });
  return opened;
}"""

# Digests of the pictures a reader sees inside `root`: what a slider must change.
VISIBLE_PICTURES = r"""async (root) => {
  const out = [];
  for (const img of root.querySelectorAll('img')) {
    if (!(img.checkVisibility() && img.naturalWidth > 0)) continue;
    const bytes = await (await fetch(img.src)).arrayBuffer();
    const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
    out.push([...digest.slice(0, 8)].map(b => b.toString(16).padStart(2, '0')).join(''));
  }
  return out;
}"""

WAIT_MATHJAX = r"""async () => {
  if (!window.MathJax || !MathJax.startup || !MathJax.startup.promise) return null;
  await MathJax.startup.promise;
  return MathJax.version;
}"""

WIDGETS_RENDERED = r"""() => [...document.querySelectorAll('%(view)s')].every(s => {
  const area = s.previousElementSibling;
  return area && area.classList.contains('widget-subarea') && area.children.length > 0;
})""".replace("%(view)s", WIDGET_VIEW)


def _context_of(element) -> tuple:
    """The element's cell output (where its pictures are) and the first line of its cell's code."""
    root = element.locator("xpath=ancestor::div[contains(@class, 'cell_output')][1]")
    if root.count() == 0:
        root = element.locator("xpath=ancestor::div[contains(@class, 'widget-subarea')][1]")
    cell_input = element.locator("xpath=ancestor::div[contains(concat(' ', normalize-space(@class), ' '), "
                                 "' cell ')][1]//div[contains(@class, 'cell_input')]")
    cell = re.sub(r"\s+", " ", cell_input.first.text_content() or "").strip()[:70] if cell_input.count() else ""
    return root, cell


def _pictures_change(page, root, act) -> tuple[bool, str]:
    """Do `act`, then wait up to 5 s for the visible pictures under `root` to change."""
    before = root.evaluate(VISIBLE_PICTURES)
    act()
    after, deadline = before, time.monotonic() + 5
    while time.monotonic() < deadline:
        after = root.evaluate(VISIBLE_PICTURES)
        if after != before:
            break
        page.wait_for_timeout(100)
    if not before:
        return False, "no visible picture beside it"
    return after != before, f"{len(before)} visible picture(s) {'changed' if after != before else 'did not change'}"


# If `e` sits in a page of a Tab that is not shown, mark that page's tab (and the current one) and say so.
MARK_HIDING_TAB = r"""e => {
  for (let n = e; n && n.parentElement; n = n.parentElement) {
    const box = n.parentElement;
    if (box.classList.contains('widget-tab-contents') && /(lm|p)-mod-hidden/.test(n.className)) {
      const bar = box.parentElement.querySelector(':scope > .lm-TabBar, :scope > .p-TabBar');
      const tabs = bar ? bar.querySelectorAll('.lm-TabBar-tab, .p-TabBar-tab') : [];
      const tab = tabs[[...box.children].indexOf(n)];
      if (!tab || !tab.checkVisibility()) return false;
      tab.setAttribute('data-vaelab-reveal', 'show');
      const current = bar.querySelector('.lm-mod-current, .p-mod-current');
      if (current) current.setAttribute('data-vaelab-reveal', 'back');
      return true;
    }
  }
  return false;
}"""


def _reveal(page, element) -> list:
    """Click the tabs that hide `element`; returns the tabs to click afterwards to put them back."""
    back = []
    for _ in range(4):  # tabs in tabs
        if element.is_visible() or not element.evaluate(MARK_HIDING_TAB):
            break
        previous = page.locator('[data-vaelab-reveal="back"]')
        back.insert(0, previous.element_handle() if previous.count() else None)
        page.locator('[data-vaelab-reveal="show"]').click()
        page.evaluate("() => document.querySelectorAll('[data-vaelab-reveal]')"
                      ".forEach(t => t.removeAttribute('data-vaelab-reveal'))")
    return [b for b in back if b is not None]


def _exercise_widgets(page, visit: Visit) -> None:
    """Move every slider by one step with the keyboard, click every other tab of every visible tab bar, pick
    another option of every dropdown; each time the pictures of that cell must change. The widgets are
    kernel-free (jslink in the browser), so nothing else is needed."""
    controls = []
    handles = page.locator(".widget-slider .noUi-handle")
    for i in range(handles.count()):
        controls.append(("slider", i, handles.nth(i)))
    tabs = page.locator(".widget-tab > .lm-TabBar .lm-TabBar-tab, .widget-tab > .p-TabBar .p-TabBar-tab")
    for i in range(tabs.count()):
        if tabs.nth(i).is_visible():  # vaelab's Stack stand-in on ipywidgets 7 is a Tab with a hidden bar
            controls.append(("tab", i, tabs.nth(i)))
    selects = page.locator(".widget-dropdown select")
    for i in range(selects.count()):
        controls.append(("dropdown", i, selects.nth(i)))
    for kind, i, element in controls:
        root, cell = _context_of(element)
        result = {"control": f"{kind} {i + 1}", "label": "", "cell": cell, "changed": False, "detail": ""}
        try:
            put_back = _reveal(page, element)
            element.scroll_into_view_if_needed(timeout=5000)
            if kind == "slider":
                widget = element.locator("xpath=ancestor::div[contains(@class, 'widget-slider')][1]")
                labels = widget.locator(".widget-label")
                result["label"] = (labels.first.text_content() or "").strip() if labels.count() else ""
                now, top = element.get_attribute("aria-valuenow"), element.get_attribute("aria-valuemax")
                key, back = ("ArrowLeft", "ArrowRight") if now is not None and now == top else ("ArrowRight",
                                                                                              "ArrowLeft")
                element.focus()
                changed, detail = _pictures_change(page, root, lambda: element.press(key))
                detail += f" (value {now} -> {element.get_attribute('aria-valuenow')} by {key})"
                element.press(back)
            elif kind == "tab":
                result["label"] = (element.text_content() or "").strip()
                if "mod-current" in (element.get_attribute("class") or ""):
                    continue  # the tab shown first: reached by clicking another tab, then this one
                bar = element.locator("xpath=..")
                current = bar.locator(".lm-mod-current, .p-mod-current").first
                changed, detail = _pictures_change(page, root, lambda: element.click())
                current.click()
            else:
                options = element.locator("option")
                index = element.evaluate("e => e.selectedIndex")
                if options.count() < 2:
                    continue
                other = (index + 1) % options.count()
                result["label"] = (options.nth(other).text_content() or "").strip()
                changed, detail = _pictures_change(page, root, lambda: element.select_option(index=other))
                element.select_option(index=index)
            result["changed"], result["detail"] = changed, detail
            for tab in put_back:
                tab.click()
        except Exception as error:  # a broken widget is a finding, not a crash of the whole visit
            result["detail"] = f"could not use it: {type(error).__name__}: {str(error).splitlines()[0]}"
        visit.controls.append(result)


@pytest.fixture(scope="session")
def visit(browser, server, site, screenshots, pytestconfig):
    """visit(page) opens the page once per session and returns what it found (cached)."""
    done: dict[str, Visit] = {}

    def open_page(name: str) -> Visit:
        if name in done:
            return done[name]
        url = urllib.parse.urljoin(server, name + ".html")
        v = Visit(name, url)
        done[name] = v
        start = time.monotonic()
        context, requests = new_context(browser, server, 1280)
        v.outside_requests, v.local_copies = requests.refused, requests.local_copies
        page = context.new_page()

        def on_console(msg):
            if msg.type == "error":
                where = msg.location or {}
                at = f" ({where.get('url', '')}:{where.get('lineNumber', '')})" if where.get("url") else ""
                v.console_errors.append(msg.text + at)

        page.on("console", on_console)
        page.on("pageerror", lambda error: v.console_errors.append(f"uncaught {error.name}: {error.message}"))
        failed_urls = set()

        def failed(url, why):
            if url not in failed_urls and url not in v.outside_requests:  # once, with its HTTP status if it has one
                failed_urls.add(url)
                v.failed_requests.append(f"{url} ({why})")

        page.on("response", lambda resp: failed(resp.url, f"HTTP {resp.status}") if resp.status >= 400 else None)
        page.on("requestfailed", lambda req: failed(req.url, req.failure))
        try:
            page.goto(url, wait_until="load", timeout=90_000)
            try:
                page.wait_for_function(WIDGETS_RENDERED, timeout=60_000)
            except Exception:
                v.problems.append("the embedded widgets did not all render within 60 s")
            version = page.evaluate(WAIT_MATHJAX)
            v.dom["mathjax_ready"] = version
            v.dom["dropdowns_opened"] = page.evaluate(OPEN_DROPDOWNS)
            page.wait_for_timeout(300)  # toggle animations
            page.evaluate(WAIT_MATHJAX)
            v.dom.update(page.evaluate(COLLECT))
            v.screenshot = screenshots / (name.replace("/", "__") + ".png")
            page.screenshot(path=str(v.screenshot), full_page=True)
            _exercise_widgets(page, v)
            page.wait_for_timeout(200)  # let late console errors arrive
        except Exception as error:
            v.problems.append(f"{type(error).__name__}: {str(error).splitlines()[0]}")
        finally:
            v.seconds = time.monotonic() - start
            context.close()
        return v

    yield open_page
    # What each visit saw, for a person reading the screenshots (and for timing the test).
    summary = {name: {"seconds": round(v.seconds, 1), "problems": v.problems, "console_errors": v.console_errors,
                      "failed_requests": v.failed_requests, "outside_requests": v.outside_requests,
                      "images": len(v.dom.get("images", [])), "figures": [f["id"] for f in v.dom.get("figures", [])],
                      "math": v.dom.get("nMath"), "mathjax": v.dom.get("mathjax_ready"),
                      "dropdowns_opened": v.dom.get("dropdowns_opened"), "prose_chars": len(v.dom.get("prose", "")),
                      "widgets": len(v.dom.get("widgetViews", [])), "controls": v.controls,
                      "screenshot": v.screenshot.name if v.screenshot else None} for name, v in done.items()}
    (screenshots / "report.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    pytestconfig.stash[SUMMARY] = [
        f"{name}.html: {v.seconds:.1f} s, {len(v.dom.get('images', []))} images, "
        f"{len(v.dom.get('figures', []))} figures, {v.dom.get('nMath', 0)} math, {len(v.controls)} widget controls used"
        for name, v in done.items()] + [f"screenshots and report.json in {screenshots}"]


@pytest.fixture(scope="session")
def static_ids(site):
    """ids (and a-names) of every HTML file of the site, read from the files, for links into pages."""
    cache: dict[Path, set[str]] = {}

    class Ids(html.parser.HTMLParser):
        def __init__(self):
            super().__init__()
            self.ids = set()

        def handle_starttag(self, tag, attrs):
            for key, value in attrs:
                if key == "id" or (tag == "a" and key == "name"):
                    self.ids.add(value)

    def ids_of(path: Path) -> set[str]:
        if path not in cache:
            parser = Ids()
            parser.feed(path.read_text(errors="replace"))
            cache[path] = parser.ids
        return cache[path]

    return ids_of


# ---------------------------------------------------------------- the checks, page by page


def _where(v: Visit) -> str:
    return f"{v.page}.html"


def _visited(visit, page) -> Visit:
    v = visit(page)
    assert not v.problems, f"{_where(v)}: the visit itself failed: {v.problems}"
    return v


def test_page_exists(site, page):
    assert (site / f"{page}.html").is_file(), f"{page}.html, a page of _toc.yml, is not in {site}"


def test_no_console_error_and_no_failed_request(visit, page):
    v = _visited(visit, page)
    problems = [f"console: {e}" for e in v.console_errors] + [f"request failed: {r}" for r in v.failed_requests]
    problems += [f"request leaving 127.0.0.1 (no local copy; the test refuses it): {u}" for u in v.outside_requests]
    assert not problems, f"{_where(v)}:\n  " + "\n  ".join(problems)


def test_figures_are_in_the_page(visit, book, page):
    """Each figure cell of the notebook has its image in the page, counted from the notebook, not hard-coded."""
    v = _visited(visit, page)
    source = book / f"{page}.ipynb"
    if not source.is_file():
        pytest.skip(f"{page} is not a notebook")
    cells, shown = code_cells(source), v.dom["cells"]
    errors = []
    named = [c for c in cells if c.figure and c.figure.get("name")]
    ids = {f["id"]: f for f in v.dom["figures"] if f["id"]}
    for c in named:
        fid = figure_id(c.figure["name"])
        fig = ids.get(fid)
        if fig is None:
            errors.append(f"figure {c.figure['name']!r} (notebook cell {c.index}: {c.first_line!r}) is not in the page")
        elif fig["imgsOk"] == 0:
            errors.append(f"figure {c.figure['name']!r} has {fig['imgs']} image(s), none of which loads")
        elif c.figure.get("caption") and not fig["caption"]:
            errors.append(f"figure {c.figure['name']!r} has no caption in the page")
    page_figures = [fid for s in shown for fid in s["figures"]]  # named figures of the cell outputs
    if len(page_figures) != len(named):
        errors.append(f"{len(named)} named figure cell(s) in {source.name}, {len(page_figures)} named figures in "
                      f"the page's cell outputs: {page_figures}")
    # Cross-check with the cells that draw: each code cell calling plt.show()/fig.show() has >= 1 image.
    if len(shown) != len(cells):
        errors.append(f"{len(cells)} code cells in {source.name} but {len(shown)} in the page: cannot match them")
        drawn = sum(c.shows for c in cells)
        imgs = sum(s["imgs"] for s in shown)
        if imgs < drawn:
            errors.append(f"{drawn} cells call plt.show()/fig.show(), the page's cell outputs have {imgs} images")
    else:
        for c, s in zip(cells, shown):
            if (c.shows or c.figure) and "remove-output" not in c.tags and s["imgs"] == 0:
                errors.append(f"notebook cell {c.index} draws a figure ({c.first_line!r}) but its output in the "
                              f"page has no image")
    assert not errors, f"{_where(v)}:\n  " + "\n  ".join(errors)


def test_no_broken_image(visit, page):
    v = _visited(visit, page)
    broken = [i["src"] for i in v.dom["images"] if i["visible"] and not i["ok"]]
    assert not broken, f"{_where(v)}: {len(broken)} broken image(s): {broken}"


def test_the_book_has_figures(visit, book, pages):
    """A book whose notebooks draw nothing, or whose pages show no figure, cannot pass."""
    drawn = images = 0
    for page in pages:
        source = book / f"{page}.ipynb"
        if source.is_file():
            drawn += sum(c.shows or bool(c.figure) for c in code_cells(source))
            images += sum(s["imgs"] for s in _visited(visit, page).dom["cells"])
    assert drawn > 0, "no notebook of the book draws a figure (plt.show(), fig.show() or a mystnb figure)"
    assert images >= drawn, f"{drawn} figure cells in the notebooks, {images} images in the pages' cell outputs"


def test_math_is_typeset(visit, page):
    v = _visited(visit, page)
    d = v.dom
    if d["nMath"] == 0:
        return
    assert d["mathjax_ready"], f"{_where(v)}: {d['nMath']} math elements but MathJax did not start " \
                               f"(window.MathJax: {d['mathjax']})"
    assert not d["untypeset"], f"{_where(v)}: {len(d['untypeset'])} of {d['nMath']} math elements not " \
                               f"typeset, e.g. {d['untypeset'][:5]}"
    assert not d["mathErrors"], f"{_where(v)}: MathJax errors: {d['mathErrors'][:10]}"


RAW_TEX = [
    (re.compile(r"\\[A-Za-z]{2,}"), "a TeX command"),
    (re.compile(r"\\[()\[\]]"), "a TeX math delimiter"),
    (re.compile(r"\$\$"), "$$"),
    (re.compile(r"\$[^$\s][^$]{0,200}?[\\^_{}][^$]{0,200}?\$"), "$...$ math"),
]


def test_no_raw_tex_in_visible_text(visit, page):
    v = _visited(visit, page)
    text = v.dom["prose"]
    found = []
    for pattern, what in RAW_TEX:
        for m in pattern.finditer(text):
            found.append(f"{what}: ...{text[max(0, m.start() - 40):m.end() + 40]}...")
    assert not found, f"{_where(v)}: raw TeX in the visible text (dropdowns opened):\n  " + "\n  ".join(found[:20])


UNRESOLVED = re.compile(r"\?\?|\{(?:cite(?::\w+)?|eq|ref|numref|doc|term|glue(?::\w+)?|prf:ref)\}|"
                        r"undefined label|:cite:|:eq:|:ref:|\[\?\]")


def test_citations_and_references_resolve(visit, page):
    v = _visited(visit, page)
    text = v.dom["prose"]
    found = [f"...{text[max(0, m.start() - 50):m.end() + 50]}..." for m in UNRESOLVED.finditer(text)]
    found += [f"unresolved node {n}" for n in v.dom["unresolvedNodes"]]
    assert not found, f"{_where(v)}: unresolved references:\n  " + "\n  ".join(found[:20])


def test_internal_links_and_anchors_resolve(visit, site, server, static_ids, page):
    v = _visited(visit, page)
    bad = []
    for link in v.dom["links"]:
        href = link["href"]
        if not href.startswith(server):
            continue
        parts = urllib.parse.urlsplit(href)
        path = urllib.parse.unquote(parts.path).lstrip("/")
        target = site / path
        if path == "" or path.endswith("/"):
            target = target / "index.html"
        if not target.is_file():
            bad.append(f"{link['text']!r} -> {href}: no such file")
            continue
        fragment = urllib.parse.unquote(parts.fragment)
        if fragment and target.suffix == ".html" and fragment not in static_ids(target):
            bad.append(f"{link['text']!r} -> {href}: {target.name} has no element with id {fragment!r}")
    assert not bad, f"{_where(v)}: {len(bad)} broken internal link(s):\n  " + "\n  ".join(sorted(set(bad))[:30])


def test_widgets_respond(visit, page):
    """Every embedded widget renders, and each slider, tab and dropdown changes the pictures it drives, with no
    kernel."""
    v = _visited(visit, page)
    errors = [f"a widget did not render (cell {w['cell']!r})" for w in v.dom["widgetViews"] if not w["rendered"]]
    errors += [f"{c['control']} {c['label']!r} (cell {c['cell']!r}): {c['detail']}"
               for c in v.controls if not c["changed"]]
    assert not errors, f"{_where(v)}:\n  " + "\n  ".join(errors)


def test_screenshot_written(visit, page):
    v = _visited(visit, page)
    assert v.screenshot and v.screenshot.is_file() and v.screenshot.stat().st_size > 10_000, \
        f"{_where(v)}: no full-page screenshot at {v.screenshot}"


def test_javascript_came_from_local_npm_copies(visit, book, pages, screenshots):
    """Records which local npm package answered which CDN URL (screenshots/cdn.txt); every one is pinned."""
    used: dict[str, set[str]] = {}
    for page in pages:
        for url, exact in visit(page).local_copies.items():
            used.setdefault(exact, set()).add(url)
    lines = [f"{exact}: {len(urls)} file(s), e.g. {sorted(urls)[0]}" for exact, urls in sorted(used.items())]
    (screenshots / "cdn.txt").write_text("\n".join(lines) + "\n")
    configured = cdn_cache.specs_in_config(book / "_config.yml")
    missing = [spec for spec in configured if cdn_cache.resolved(spec) is None]
    assert not missing, f"no local copy of {missing}: run .ci/setup-site (python tests/site/cdn_cache.py)"
