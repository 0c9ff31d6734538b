import sys


def pytest_addoption(parser):
    # Seen when pytest is given tests/site (or a file in it); `pytest tests` skips these tests unless VAELAB_SITE
    # names the built site.
    parser.addoption("--site", default=None, metavar="DIR",
                     help="the built book to test, e.g. _build/html (or set VAELAB_SITE)")
    parser.addoption("--book", default=None, metavar="DIR",
                     help="the sources it was built from, with _toc.yml (default: this repository; or VAELAB_BOOK)")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    module = sys.modules.get("test_rendered_book")  # imported only if its tests were collected
    lines = config.stash.get(module.SUMMARY, None) if module else None
    if lines:
        terminalreporter.write_sep("-", "rendered book, page by page")
        for line in lines:
            terminalreporter.write_line(line)
