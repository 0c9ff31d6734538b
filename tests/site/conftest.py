import sys

from served import book, browser, chromium, pages, parametrize_pages, screenshots, server, site  # noqa: F401 - fixtures


def pytest_addoption(parser):
    # Seen when pytest is given tests/site (or a file in it); `pytest tests` skips these tests unless VAELAB_SITE
    # names the built site.
    parser.addoption("--site", default=None, metavar="DIR",
                     help="the built book to test, e.g. _build/html (or set VAELAB_SITE)")
    parser.addoption("--book", default=None, metavar="DIR",
                     help="the sources it was built from, with _toc.yml (default: this repository; or VAELAB_BOOK)")


def pytest_generate_tests(metafunc):
    parametrize_pages(metafunc)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lines = []
    for name in ("test_rendered_book", "test_layout"):  # imported only if their tests were collected
        module = sys.modules.get(name)
        lines += config.stash.get(module.SUMMARY, []) if module else []
    if lines:
        terminalreporter.write_sep("-", "rendered book, page by page")
        for line in lines:
            terminalreporter.write_line(line)
