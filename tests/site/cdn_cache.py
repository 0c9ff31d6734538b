"""Local copies, from the npm registry, of the JavaScript that the built book loads from CDNs.

The pages ask for MathJax 3, require.js and @jupyter-widgets/html-manager by `https://cdn.jsdelivr.net/npm/<name>@<version>/<file>`
URLs (pinned in _config.yml). Such a URL names an npm package and a file in it, and jsDelivr serves that file as
published on npm, so `npm pack <name>@<version>` gives the very bytes a reader's browser gets (the require.js tag
carries a Subresource Integrity hash, which the browser checks against the local copy as well). The test of the
rendered book (test_rendered_book.py) answers those URLs from here and refuses every other outside request.

    python tests/site/cdn_cache.py            # .ci/setup-site: pack what _config.yml asks for, if missing

The cache is `.ci/cache/npm/` (git-ignored), or $VAELAB_CDN_CACHE.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# https://cdn.jsdelivr.net/npm/@scope/name@1.2.3/path and https://unpkg.com/name@1.2.3/path
CDN_URL = re.compile(r"https://(?:cdn\.jsdelivr\.net/npm|unpkg\.com)/(?P<spec>(?:@[\w.-]+/)?[\w.-]+@[^/\s\"']+)/"
                     r"(?P<path>[^\s\"'#?]*)")
EXACT_VERSION = re.compile(r"^\d+\.\d+\.\d+$")


def cache_dir() -> Path:
    return Path(os.environ.get("VAELAB_CDN_CACHE", ROOT / ".ci" / "cache" / "npm"))


def specs_in_config(config: Path = ROOT / "_config.yml") -> list[str]:
    """The `name@version` of every CDN URL in the book's configuration, in order of appearance."""
    return list(dict.fromkeys(m["spec"] for m in CDN_URL.finditer(config.read_text())))


def _folder(spec: str) -> Path:
    return cache_dir() / spec.replace("/", "+")


def resolved(spec: str) -> str | None:
    """The exact `name@version` the cache holds for `spec`, or None if it holds none."""
    marker = _folder(spec) / "resolved"
    return marker.read_text().strip() if marker.is_file() else None


def local_file(url: str) -> Path | None:
    """The cached file that answers a CDN URL, or None (not a CDN URL of an npm package, or not cached)."""
    m = CDN_URL.fullmatch(url.split("#")[0].split("?")[0])
    if not m:
        return None
    path = m["path"] or "index.js"
    package = (_folder(m["spec"]) / "package").resolve()
    candidate = (package / path).resolve()
    if package not in candidate.parents or not candidate.is_file():
        return None
    return candidate


def fetch(specs: list[str]) -> dict[str, str]:
    """`npm pack` each spec not yet in the cache and unpack it; returns spec -> exact name@version."""
    done = {}
    for spec in specs:
        version = spec.rsplit("@", 1)[1]
        if not EXACT_VERSION.match(version):
            raise SystemExit(f"{spec}: pin an exact version in the CDN URL (the local copy must be the file the "
                             f"page gets)")
        if resolved(spec) is None:
            folder = _folder(spec)
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory() as tmp:
                out = subprocess.run(["npm", "pack", "--json", "--pack-destination", tmp, spec],
                                     check=True, capture_output=True, text=True).stdout
                info = json.loads(out)[0]
                with tarfile.open(Path(tmp) / info["filename"]) as tar:
                    tar.extractall(folder, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
            (folder / "resolved").write_text(f"{info['name']}@{info['version']}\n")
        done[spec] = resolved(spec)
    return done


if __name__ == "__main__":
    for spec, exact in fetch(specs_in_config()).items():
        print(f"local copy of {spec}: {exact} in {_folder(spec)}", file=sys.stderr)
