"""The built site, opened in a real headless Chromium (``make browser``; part of ``make test``).

Serves ``_build/html`` on a localhost port and opens every page. A page fails on: a console
error or uncaught exception; a request that leaves localhost (the site must work offline);
math left untypeset (a ``.math`` element without MathJax output, a raw ``\\(``, ``\\[`` or
``$$`` in the rendered text outside code, or a TeX error); a broken image; an internal
link to a page that does not exist or to an ``#anchor`` that is not on it; a dropdown
(exercise solution) that does not open when its button is clicked. The search page must
find each chapter from a word of its title, and a chapter opened straight from disk
(``file://``, no server) must typeset its math. A full-page screenshot of every chapter is
saved under ``_build/screenshots/``.

Needs the built book and Debian's ``chromium`` (``apt-get install chromium``; Playwright's
own browser download is not used). Without either the whole module is skipped, loudly.
Environment: ``SITE_HTML`` (default ``_build/html``), ``CHROMIUM`` (default: ``chromium``
on PATH, else ``/usr/bin/chromium``).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import threading
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = Path(os.environ.get("SITE_HTML", ROOT / "_build" / "html")).resolve()
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--disable-dev-shm-usage"]
SKIP_DIRS = {"_static", "_sources", "_images", "_sphinx_design_static"}
CHAPTER = re.compile(r"^book/(\d\d-[^/]+)/index\.html$")
_REFRESH = re.compile(r'<meta\s+http-equiv="Refresh"\s+content="\d+;\s*url=([^"]+)"', re.I)


def _skip_reason() -> str | None:
    if not (HTML / "index.html").is_file():
        return f"BROWSER TEST SKIPPED: no built site at {HTML} (run `make book` first)"
    if not Path(CHROMIUM).is_file() or not os.access(CHROMIUM, os.X_OK):
        return (f"BROWSER TEST SKIPPED: no chromium at {CHROMIUM} "
                "(apt-get install chromium, or set CHROMIUM=/path/to/chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return ("BROWSER TEST SKIPPED: playwright is not installed "
                "(pip install -r requirements/lock.txt)")
    return None


_REASON = _skip_reason()
if _REASON:
    print(f"\n{'!' * 78}\n{_REASON}\n{'!' * 78}")
    pytest.skip(_REASON, allow_module_level=True)

from playwright.sync_api import sync_playwright  # noqa: E402

PAGES = sorted(
    p.relative_to(HTML).as_posix() for p in HTML.rglob("*.html")
    if not SKIP_DIRS & set(p.relative_to(HTML).parts)
)
CHAPTERS = [p for p in PAGES if CHAPTER.match(p)]

# Walks the rendered text outside code and MathJax output (JS, run in the page).
_RAW_MATH_JS = r"""() => {
  const skip = new Set(["PRE", "CODE", "SCRIPT", "STYLE", "TEXTAREA", "MJX-CONTAINER"]);
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {
    acceptNode(node) {
      for (let el = node.parentElement; el; el = el.parentElement) {
        if (skip.has(el.tagName) || el.classList.contains("highlight")) {
          return NodeFilter.FILTER_REJECT;
        }
      }
      return NodeFilter.FILTER_ACCEPT;
    }
  });
  const hits = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const t = n.textContent;
    for (const d of ["\\(", "\\[", "$$"]) {
      const i = t.indexOf(d);
      if (i >= 0) hits.push(t.slice(Math.max(0, i - 30), i + 40).replace(/\s+/g, " "));
    }
  }
  return hits.slice(0, 5);
}"""

_PAGE_FACTS_JS = r"""async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  const imgs = Array.from(document.images);
  await Promise.all(imgs.map(i => { i.loading = "eager"; return i.decode().catch(() => null); }));
  const math = Array.from(document.querySelectorAll("span.math, div.math"));
  return {
    mathjax: !!(window.MathJax && MathJax.version),
    math: math.length,
    untypeset: math.filter(m => !m.querySelector("mjx-container"))
                   .slice(0, 5).map(m => m.textContent.slice(0, 60)),
    containers: document.querySelectorAll("mjx-container").length,
    texErrors: Array.from(document.querySelectorAll("mjx-merror"))
                   .slice(0, 5).map(e => e.getAttribute("data-mjx-error") || e.textContent),
    brokenImages: imgs.filter(i => !i.complete || i.naturalWidth === 0)
                      .map(i => i.getAttribute("src")),
    links: Array.from(document.querySelectorAll("a[href]"))
                .map(a => [a.getAttribute("href"), a.href]),
    ids: Array.from(document.querySelectorAll("[id], a[name]")).map(e => e.id || e.name),
  };
}"""


class _Ids(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if value and (key == "id" or (key == "name" and tag == "a")):
                self.ids.add(value)


@functools.cache
def _ids_in(path: Path) -> frozenset[str]:
    parser = _Ids()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return frozenset(parser.ids)


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def base_url():
    handler = functools.partial(_Quiet, directory=str(HTML))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def context(browser):
    # One context for all pages, so the theme's assets and MathJax come from its cache.
    # Half-scale pixels: a full-page screenshot of a long chapter costs a quarter as much.
    ctx = browser.new_context(viewport={"width": 1280, "height": 900},
                              device_scale_factor=0.5)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context):
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    pg.problems = []  # type: ignore[attr-defined]

    def on_console(msg):
        if msg.type == "error":
            where = msg.location.get("url", "") if msg.location else ""
            pg.problems.append(f"console error: {msg.text} {where}".strip())

    pg.on("console", on_console)
    pg.on("pageerror", lambda exc: pg.problems.append(f"uncaught exception: {exc}"))

    def on_request(req):
        scheme = urlsplit(req.url).scheme
        host = urlsplit(req.url).hostname
        if scheme in ("http", "https", "ws", "wss") and host not in ("127.0.0.1", "localhost"):
            pg.problems.append(f"request leaves the machine: {req.url}")

    pg.on("request", on_request)
    yield pg
    pg.close()


def _local_target(href_abs: str, base_url: str) -> tuple[Path, str] | None:
    """(file, fragment) for a link into the served site, None for anything else."""
    if not href_abs.startswith(base_url):
        return None
    parts = urlsplit(href_abs)
    rel = unquote(parts.path)[len(urlsplit(base_url).path):]
    target = HTML / rel
    if rel == "" or rel.endswith("/"):
        target = target / "index.html"
    return target, unquote(parts.fragment)


def _check_links(facts, page_file: Path, base_url: str) -> list[str]:
    problems = []
    own_ids = set(facts["ids"])
    for raw, absolute in facts["links"]:
        if raw.startswith(("javascript:", "mailto:")) or raw in ("#", ""):
            continue
        target = _local_target(absolute, base_url)
        if target is None:
            continue  # external links are not followed (the test runs offline)
        path, fragment = target
        if not path.is_file():
            problems.append(f"link to a missing file: {raw}")
            continue
        if not fragment:
            continue
        ids = own_ids if path.resolve() == page_file.resolve() else _ids_in(path)
        if fragment not in ids:
            problems.append(f"link to a missing anchor: {raw}")
    return sorted(set(problems))


_DROPDOWN_STATE_JS = r"""() => {
  const shown = el => !!el && el.getClientRects().length > 0
                      && getComputedStyle(el).visibility !== "hidden";
  return Array.from(document.querySelectorAll(".admonition.dropdown")).map((item, i) => {
    const title = item.querySelector(".admonition-title");
    const button = item.querySelector(".toggle-button");
    const body = item.querySelector(":scope > :not(.admonition-title)");
    return {
      label: ((title && title.textContent) || "#" + i).trim().replace(/\s+/g, " "),
      button: !!button,
      expanded: !!button && button.getAttribute("aria-expanded") === "true",
      body: !!body,
      visible: shown(body),
    };
  });
}"""


def _check_dropdowns(pg) -> list[str]:
    """Click every dropdown (exercise solutions, sphinx-togglebutton) and every closed
    <details>; each must open, showing its content."""
    problems = []
    before = pg.evaluate(_DROPDOWN_STATE_JS)
    items = pg.locator(".admonition.dropdown")
    for i, state in enumerate(before):
        if not state["button"]:
            problems.append(f"dropdown without a toggle button: {state['label']!r}")
        elif state["expanded"] or state["visible"]:
            problems.append(f"dropdown open before it is clicked: {state['label']!r}")
        else:
            items.nth(i).locator(".toggle-button").first.click(timeout=15_000)
    after = pg.evaluate(_DROPDOWN_STATE_JS)
    for state, was in zip(after, before, strict=True):
        if was["button"] and not (was["expanded"] or was["visible"]):
            if not state["expanded"]:
                problems.append(f"dropdown does not open when clicked: {state['label']!r}")
            elif state["body"] and not state["visible"]:
                problems.append(f"dropdown opened but its content is hidden: {state['label']!r}")
    for i, det in enumerate(pg.query_selector_all("details:not([open])")):
        summary = det.query_selector(":scope > summary")
        if summary is None:
            continue
        summary.click(timeout=15_000)
        if not det.evaluate("d => d.open"):
            problems.append(f"<details> #{i} does not open when clicked")
    return problems


@pytest.mark.parametrize("rel", PAGES)
def test_page(page, base_url, rel):
    pg = page
    redirect = _REFRESH.search((HTML / rel).read_text(encoding="utf-8", errors="replace"))
    if redirect:  # jupyter-book's root index.html: a meta refresh to the real first page
        target = urljoin(base_url + rel, redirect.group(1))
        assert _local_target(target, base_url)[0].is_file(), f"{rel} redirects to {target}"
        pg.goto(base_url + rel, wait_until="load")
        pg.wait_for_url(target.split("#")[0], timeout=10_000)
        assert not pg.problems, f"{rel}:\n  " + "\n  ".join(pg.problems)
        return
    pg.goto(base_url + rel, wait_until="load")
    facts = pg.evaluate(_PAGE_FACTS_JS)
    problems = list(pg.problems)

    if facts["math"]:
        if not facts["mathjax"]:
            problems.append(f"{facts['math']} math elements but MathJax did not load")
        if facts["untypeset"]:
            problems.append(f"math left untypeset: {facts['untypeset']}")
        if facts["containers"] == 0:
            problems.append("page has math but no mjx-container")
    if facts["texErrors"]:
        problems.append(f"TeX errors: {facts['texErrors']}")
    raw = pg.evaluate(_RAW_MATH_JS)
    if raw:
        problems.append(f"raw TeX delimiters in the rendered text: {raw}")
    for src in facts["brokenImages"]:
        problems.append(f"broken image: {src}")
    problems += _check_links(facts, HTML / rel, base_url)

    match = CHAPTER.match(rel)
    if match:
        stem = rel[: -len(".html")]
        hrefs = [raw for raw, _ in facts["links"]]
        for suffix in (".ipynb", ".md"):
            if not any(h.endswith(f"_sources/{stem}{suffix}") for h in hrefs):
                problems.append(f"no {suffix} download offered")
        if not pg.locator(".regref-used a[href*='api.html#regref.']").count():
            problems.append("no 'regref functions used on this page' links to the API appendix")
        SHOTS.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(SHOTS / f"{match.group(1)}.png"), full_page=True)
    problems += _check_dropdowns(pg)
    problems += [p for p in pg.problems if p not in problems]

    assert not problems, f"{rel}:\n  " + "\n  ".join(problems)


_STOP = {"and", "the", "for", "with", "from", "into", "what", "their", "which", "through"}


def _search_term(chapter_file: Path) -> str:
    html = chapter_file.read_text(encoding="utf-8")
    h1 = re.search(r"<h1[^>]*>(.*?)</h1>", html, re.S)
    assert h1, f"{chapter_file}: no <h1>"
    title = re.sub(r"<[^>]+>", " ", h1.group(1))
    words = [w for w in re.findall(r"[A-Za-z]{5,}", title) if w.lower() not in _STOP]
    assert words, f"{chapter_file}: no word to search for in its title {title!r}"
    return max(words, key=len)


@pytest.mark.parametrize("rel", CHAPTERS)
def test_search_finds_chapter(page, base_url, rel):
    term = _search_term(HTML / rel)
    pg = page
    pg.goto(f"{base_url}search.html?q={term}", wait_until="load")
    pg.wait_for_function(
        """() => { const s = document.querySelector('#search-results .search-summary');
                   return s && /finished|did not match/.test(s.textContent); }""",
        timeout=30_000)
    hits = pg.eval_on_selector_all(
        "#search-results ul.search li a", "as => as.map(a => a.getAttribute('href'))")
    assert hits, f"search for {term!r} (from {rel}'s title) found nothing"
    assert any(h.split("?")[0].split("#")[0].endswith(rel) for h in hits), (
        f"search for {term!r} did not list {rel}; it listed {hits[:10]}")
    assert not pg.problems, "\n".join(pg.problems)


def test_chapter_typesets_from_disk(page):
    """Opened as a file, no server: the math still typesets (MathJax is in the site)."""
    assert CHAPTERS, "no chapter pages in the built site"
    rel = CHAPTERS[0]
    pg = page
    pg.goto((HTML / rel).as_uri(), wait_until="load")
    facts = pg.evaluate(_PAGE_FACTS_JS)
    assert facts["mathjax"], "MathJax did not load from file://"
    assert facts["math"] and not facts["untypeset"], facts["untypeset"]
    assert not [p for p in pg.problems if "error" in p], pg.problems
