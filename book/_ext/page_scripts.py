"""Each script of a page once.

Sphinx 7.4 (the Sphinx of Jupyter Book 1) puts an inline script that an extension adds once the builder exists,
`app.add_js_file(None, body=...)`, into every page twice: once as added (file name None) and once more when the
pages are written (StandaloneHTMLBuilder.prepare_writing re-adds the registered scripts with file name ''), and
the two do not compare equal. sphinx-thebe's `const THEBE_JS_URL = ...` then runs twice on every page:
"SyntaxError: Identifier 'THEBE_JS_URL' has already been declared" (sphinx-togglebutton's `var` is doubled too).
This drops the second copy of any script, keeping the order.
"""


def _key(script):
    attributes = getattr(script, "attributes", {}) or {}
    return (getattr(script, "filename", script) or "", getattr(script, "priority", 0),
            tuple(sorted((str(k), str(v)) for k, v in attributes.items())))


def drop_repeated_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            kept.append(script)
    scripts[:] = kept  # the builder's own list: it restores it after each page


def setup(app):
    # After the extensions that add per-page scripts (MathJax, myst-nb's widget scripts: default priority 500).
    app.connect("html-page-context", drop_repeated_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
