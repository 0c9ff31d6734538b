def pytest_addoption(parser):
    # Seen when pytest is given tests/site (or a file in it); `pytest tests` skips these tests unless VAELAB_SITE
    # names the built site.
    parser.addoption("--site", default=None, metavar="DIR",
                     help="the built book to test, e.g. _build/html (or set VAELAB_SITE)")
    parser.addoption("--book", default=None, metavar="DIR",
                     help="the sources it was built from, with _toc.yml (default: this repository; or VAELAB_BOOK)")
