"""What fits the column of a rendered page: display equations, code blocks, tables and figures, measured in the browser.

MEASURE runs in the page and returns, for every display equation (MathJax's mjx-container), code block (pre) and
table of the article, how wide its content is and what happens to the part that does not fit:

    fits        the content is no wider than the box it is in, and that box no wider than the column;
    scrolls     the content is wider, inside a box that scrolls (overflow-x auto or scroll) and that a reader can
                see (a border, a background of its own or a shadow): a cue that there is more to the right;
    hidden      the content is wider, inside a box that scrolls but shows nothing of it: the reader sees the
                equation cut at the right edge and has no reason to scroll (what MathJax's display math does);
    cut         the content is wider than a box that clips it (overflow-x hidden or clip);
    spills      the content (or its scrolling box) reaches past the right edge of the column.

Only `fits` and `scrolls` are acceptable (`problems`). MEASURE also returns every picture of the article (not those
inside widgets): its natural and rendered width. `figure_problems` checks the figures drawn in the book's style
(vaelab.viz): each is at least MIN_FIGURE_PX wide on the page, and shrunk so little that its smallest text,
MIN_FONT_POINTS at the style's DPI, is still as large as the page's smallest body text (code, measured too).
"""
from __future__ import annotations

WIDTHS = (1280, 800)  # a laptop's full window, and half of a large screen (a split screen)
MIN_FIGURE_PX = 300  # every figure of a cell's output is at least this wide on the page
MIN_PICTURE_PX = 48  # and every picture of a widget at least this high: a 28-pixel image shown larger, not smaller
SLACK_PX = 1.5  # sub-pixel rounding of the browser's boxes

MEASURE = r"""() => {
  const column = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  const colStyle = getComputedStyle(column);
  const colBox = column.getBoundingClientRect();
  const colLeft = colBox.left + parseFloat(colStyle.paddingLeft);
  const colRight = colBox.right - parseFloat(colStyle.paddingRight);
  const visible = el => el.checkVisibility ? el.checkVisibility() : !!(el.offsetWidth || el.offsetHeight);
  const transparent = c => !c || c === 'transparent' || /rgba\(.*,\s*0\)$/.test(c);
  const pageBackground = getComputedStyle(document.body).backgroundColor;
  const seenBox = el => {  // a box whose edges a reader can see
    const s = getComputedStyle(el);
    const border = ['Top', 'Right', 'Bottom', 'Left'].some(side =>
      parseFloat(s['border' + side + 'Width']) > 0 && s['border' + side + 'Style'] !== 'none' &&
      !transparent(s['border' + side + 'Color']));
    const background = !transparent(s.backgroundColor) && s.backgroundColor !== pageBackground;
    return border || background || (s.boxShadow && s.boxShadow !== 'none');
  };
  const short = (s, n = 80) => (s || '').replace(/\s+/g, ' ').trim().slice(0, n);
  const describe = el => {
    if (el.matches('mjx-container')) {
      const math = el.closest('.math');
      const label = math && math.querySelector('.eqno, .math-label') ||
                    (el.parentElement && el.parentElement.querySelector('.eqno'));
      return (label ? short(label.textContent.replace('#', ''), 12) + ' ' : '') +  // without its headerlink
             short((el.querySelector('mjx-assistive-mml') || el).textContent, 60);
    }
    return short(el.textContent, 60);
  };
  // What happens to the part of `el` (content `width` pixels wide from `left`) that does not fit.
  const verdict = (el, left, width) => {
    const right = left + width;
    for (let box = el; box && box !== column; box = box.parentElement) {
      const s = getComputedStyle(box);
      const r = box.getBoundingClientRect();
      const inner = r.left + box.clientLeft + box.clientWidth;  // the right edge of what the box shows
      if (s.overflowX === 'visible' || right <= inner + %(slack)s) continue;
      if (s.overflowX === 'auto' || s.overflowX === 'scroll') {
        if (!seenBox(box)) return {verdict: 'hidden', box: box.tagName.toLowerCase() + '.' + box.className};
        return {verdict: r.right <= colRight + %(slack)s ? 'scrolls' : 'spills', box: box.tagName.toLowerCase()};
      }
      return {verdict: 'cut', box: box.tagName.toLowerCase() + '.' + box.className};
    }
    return {verdict: right <= colRight + %(slack)s ? 'fits' : 'spills', box: 'column'};
  };
  const items = [];
  const add = (kind, el, left, width) => {
    if (!visible(el)) return;
    const v = verdict(el, left, width);
    items.push({kind, what: describe(el), width: Math.round(width), column: Math.round(colRight - colLeft),
                verdict: v.verdict, box: short(v.box, 60)});
  };
  for (const el of column.querySelectorAll('mjx-container[display="true"]')) {
    const math = el.querySelector('mjx-math') || el;
    const r = math.getBoundingClientRect();
    add('equation', el, r.left, Math.max(r.width, math.scrollWidth));
  }
  for (const el of column.querySelectorAll('pre')) {
    if (el.closest('.widget-subarea, .jupyter-widgets')) continue;
    const r = el.getBoundingClientRect();
    add('code', el, r.left + el.clientLeft, el.scrollWidth);
  }
  for (const el of column.querySelectorAll('table')) {
    const r = el.getBoundingClientRect();
    add('table', el, r.left, Math.max(r.width, el.scrollWidth));
  }
  const inWidget = el => !!el.closest('.widget-subarea, .jupyter-widgets');
  const pictures = [...column.querySelectorAll('img')].filter(visible).map(img => {
    const r = img.getBoundingClientRect();
    const figure = img.closest('figure[id]');
    return {src: short(img.getAttribute('src'), 70), natural: img.naturalWidth, naturalHeight: img.naturalHeight,
            width: Math.round(r.width), height: Math.round(r.height), widget: inWidget(img),
            output: !!img.closest('.cell_output'), figure: figure ? figure.id : null};
  });
  const code = column.querySelector('.cell_input pre, div.highlight pre');
  return {items, pictures, column: Math.round(colRight - colLeft),
          smallestBodyText: code ? parseFloat(getComputedStyle(code).fontSize) : 12.8,
          pageWidth: document.documentElement.scrollWidth, viewport: window.innerWidth,
          height: document.documentElement.scrollHeight};
}""".replace("%(slack)s", str(SLACK_PX))


def problems(measured: dict) -> list[str]:
    """The equations, code blocks and tables of one measured page that do not fit (see the module's docstring),
    and a page wider than the window."""
    found = [f"{item['kind']} {item['what']!r}: {item['width']} px in a {item['column']}-px column, "
             f"{EXPLAINED[item['verdict']]} ({item['box']})"
             for item in measured["items"] if item["verdict"] not in ("fits", "scrolls")]
    if measured["pageWidth"] > measured["viewport"] + SLACK_PX:
        found.append(f"the page is {measured['pageWidth']} px wide in a {measured['viewport']}-px window: "
                     f"it scrolls sideways")
    return found


EXPLAINED = {"hidden": "the rest scrolls out of sight with no visible box to show that it does",
             "cut": "the rest is cut off", "spills": "it reaches past the column's right edge"}


def figure_problems(measured: dict, min_font_points: float, dpi: float) -> list[str]:
    """Figures of cell outputs narrower than MIN_FIGURE_PX on the page, or shrunk so much that text drawn at
    `min_font_points` (the book style's smallest) is smaller than the page's smallest body text; pictures of
    widgets lower than MIN_PICTURE_PX."""
    found = []
    body = measured["smallestBodyText"]
    for p in measured["pictures"]:
        if p["widget"]:
            if p["height"] < MIN_PICTURE_PX:
                found.append(f"widget picture {p['src']}: {p['height']} px high, under {MIN_PICTURE_PX}")
            continue
        if not p["output"] or not p["natural"]:
            continue
        name = p["figure"] or p["src"]
        if p["width"] < MIN_FIGURE_PX:
            found.append(f"figure {name}: {p['width']} px wide on the page, under {MIN_FIGURE_PX}")
            continue
        text_px = min_font_points * dpi / 72 * p["width"] / p["natural"]
        if text_px < body - 0.05:
            found.append(f"figure {name}: drawn {p['natural']} px wide, shown at {p['width']} px, so its "
                         f"{min_font_points:g}-point text is {text_px:.1f} px, smaller than the body's "
                         f"{body:g}-px code: draw it narrower (vaelab.viz.COLUMN_INCHES)")
    return found
