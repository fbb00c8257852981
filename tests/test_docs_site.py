"""The documentation site (issue 22): `mkdocs build --strict` (warnings are errors) builds the
guides in docs/ and an API reference generated from the docstrings, every guide is in the
navigation, and the pages open in a real browser (headless Chromium) with no script error.

Chromium is Debian's package (`apt-get install chromium`), not a Python one; where /usr/bin/chromium
is absent the browser test is skipped, saying so. The site is served from 127.0.0.1, as a reader's
browser gets it (from file:// URLs Chromium refuses the search's web worker)."""

from __future__ import annotations

import functools
import http.server
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")

PAGES = {
    "": "elukit is a Python library",
    "conventions/": "Conventions",
    "jax-keras/": "elukit.keras",
    "theory/": "derivations",
    "api/elukit/": 'id="elukit.get"',
    "api/theory/": 'id="elukit.theory.moments.moments"',
    "api/torch/": 'id="elukit.torch.functional.elu"',
    "api/keras/": 'id="elukit.keras.layers.ELU"',
}
"""Page (under the site root) -> text its rendered DOM must contain."""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return out, done.stderr


def test_the_site_builds_with_warnings_as_errors(site):
    out, log = site
    assert "WARNING" not in log, log
    assert "not included in the \"nav\"" not in log, log  # every guide is reachable
    for page, text in PAGES.items():
        assert text in (out / page / "index.html").read_text(encoding="utf-8"), page


def test_every_guide_is_in_the_navigation():
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))

    def pages(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for value in node.values():
                yield from pages(value)
        elif isinstance(node, list):
            for value in node:
                yield from pages(value)

    listed = set(pages(config["nav"]))
    on_disk = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert on_disk == listed


@pytest.fixture(scope="module")
def served(site):
    out, _ = site
    handler = functools.partial(_QuietHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


def chromium(*args: str) -> subprocess.CompletedProcess:
    if not CHROMIUM.exists():
        pytest.skip("headless Chromium is not installed (/usr/bin/chromium is absent: apt-get install chromium)")
    return subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--enable-logging=stderr", "--v=0", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("page", list(PAGES))
def test_a_page_opens_in_headless_chromium(site, served, page, tmp_path):
    def site_root(page):
        return site[0] / page / "index.html"

    done = chromium(f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=3000", "--dump-dom",
                    served + page)
    assert done.returncode == 0, done.stderr[-2000:]
    assert PAGES[page] in done.stdout  # the DOM the browser built, after its scripts ran
    assert "rst-content" in done.stdout and "</html>" in done.stdout
    assert 'class="toctree-expand"' in done.stdout  # added by the theme's JavaScript: the scripts ran
    if not page.startswith("api/") and "<table" in site_root(page).read_text(encoding="utf-8"):
        assert "wy-table-responsive" in done.stdout  # tables wrapped by the theme's JavaScript
    errors = [line for line in done.stderr.splitlines() if "CONSOLE" in line and re.search(r"Uncaught|Error", line)]
    assert errors == []


def test_the_readme_names_the_command_that_builds_the_site():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "`mkdocs build --strict`" in readme
    assert "mkdocs build --strict" in (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
