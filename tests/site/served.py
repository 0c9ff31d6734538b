"""The built book, served from 127.0.0.1, and headless Chromium to read it: the fixtures every test of the rendered
site shares (conftest.py makes them available), and the pages of the table of contents those tests run over."""
from __future__ import annotations

import functools
import http.server
import os
import sys
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import cdn_cache

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "book" / "_ext"))
from colab_notebooks import toc_documents  # noqa: E402 - the book's own reader of _toc.yml
CHROMIUM = os.environ.get("VAELAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]  # a small /dev/shm (containers) must not crash a long page


def book_root(config) -> Path:
    """The book's sources (_toc.yml, the notebooks): --book, $VAELAB_BOOK, or this repository."""
    value = config.getoption("book", default=None) or os.environ.get("VAELAB_BOOK")
    return Path(value).resolve() if value else ROOT


def toc_pages(root: Path = ROOT) -> list[str]:
    """Every document of the table of contents, without its suffix, in reading order (read as the Colab converter
    reads it)."""
    return [str(path.relative_to(root).with_suffix("")) for path in toc_documents(root)]


def _site_dir(config) -> Path | None:
    value = config.getoption("site", default=None) or os.environ.get("VAELAB_SITE")
    return Path(value).resolve() if value else None


@pytest.fixture(scope="session")
def site(pytestconfig) -> Path:
    folder = _site_dir(pytestconfig)
    if folder is None:
        pytest.skip("no built site to test: build the book, then run with --site _build/html or VAELAB_SITE "
                    "(.ci/test does)")
    if not (folder / "index.html").is_file():
        pytest.fail(f"{folder} has no index.html: is it a built book (_build/html)?")
    return folder


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - quiet; the browser reports failures
        pass


@pytest.fixture(scope="session")
def server(site):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                            functools.partial(_Handler, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="session")
def chromium(pytestconfig):
    """Headless Chromium (Debian's, driven by playwright). Missing, it fails the tests of a built site and skips
    the others (the checks of the measuring code on synthetic pages, in a plain `pytest tests`)."""
    missing = pytest.fail if _site_dir(pytestconfig) else pytest.skip
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the site test needs playwright: .ci/setup-site installs requirements-site.txt")
    if not os.access(CHROMIUM, os.X_OK):
        missing(f"no Chromium at {CHROMIUM}: apt-get install chromium chromium-driver (.ci/setup-site does)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def browser(site, chromium):
    """Chromium, for the tests of the built site (skipped without one)."""
    return chromium


@pytest.fixture(scope="session")
def screenshots(site) -> Path:
    folder = Path(os.environ.get("VAELAB_SCREENSHOTS", site.parent / "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def parametrize_pages(metafunc):
    """Each test that takes `page` runs once per page of the table of contents."""
    if "page" in metafunc.fixturenames:
        metafunc.parametrize("page", toc_pages(book_root(metafunc.config)))


@pytest.fixture(scope="session")
def book(pytestconfig) -> Path:
    return book_root(pytestconfig)


@pytest.fixture(scope="session")
def pages(pytestconfig) -> list[str]:
    return toc_pages(book_root(pytestconfig))


@dataclass
class Requests:
    """What a browser context asked for beyond 127.0.0.1: the URLs refused, and the CDN URLs answered from a local
    npm copy (URL -> the name@version that answered)."""
    refused: list[str] = field(default_factory=list)
    local_copies: dict[str, str] = field(default_factory=dict)


def new_context(browser, server: str, width: int, height: int = 900):
    """A browser context of the given window size whose requests stay on 127.0.0.1: the CDN scripts answered from
    the local npm copies (cdn_cache), anything else refused. Returns the context and its `Requests`."""
    base_host = urllib.parse.urlsplit(server).netloc
    requests = Requests()
    context = browser.new_context(viewport={"width": width, "height": height}, service_workers="block")

    def route(r):
        url = r.request.url
        if urllib.parse.urlsplit(url).netloc == base_host:
            return r.continue_()
        local = cdn_cache.local_file(url)
        if local is None:
            requests.refused.append(url)
            return r.abort("blockedbyclient")
        spec = cdn_cache.CDN_URL.match(url)["spec"]
        requests.local_copies[url] = cdn_cache.resolved(spec) or spec
        r.fulfill(path=str(local), headers={"Access-Control-Allow-Origin": "*"})

    context.route("**/*", route)
    return context, requests
