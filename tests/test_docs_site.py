"""The built documentation site shows no literal markup, broken tables or over-wide code.

The site is built once (`mkdocs build --strict` into a temporary directory) and every page's
HTML is read back: what a reader sees outside code must not contain reST roles (`:class:`),
doctest prompts (`>>>`), reST `::` block markers, or Markdown that did not render; code must
not show escaped pipes; tables need a header row; code blocks must fit the code column; the
search must split words at punctuation. Where Debian's Chromium is installed, a few pages are
also laid out in it at 390 and 1280 px: no code block and no page may overflow.
Skipped when the `docs` extra (mkdocs) is not installed: `pip install -e '.[docs]'`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import attrs
import pytest

pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install -e '.[docs]'")
pytest.importorskip("mkdocstrings", reason="the docs extra is not installed")

ROOT = Path(__file__).resolve().parent.parent
BLOCK_TAGS = {"p", "li", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6", "dt", "dd", "div"}
CODE_TAGS = {"pre", "code", "script", "style", "svg"}
#: Longest code line that fits the code column at 1280 px (and scrolls, not wraps, below).
MAX_CODE_COLUMNS = 80
ROLE = re.compile(r":(class|meth|attr|func|mod|exc|obj|data|ref):")


@attrs.define
class Page:
    """What a reader sees on one page: prose blocks, code blocks and table header rows."""

    name: str
    prose: list[str] = attrs.Factory(list)
    code_blocks: list[str] = attrs.Factory(list)
    inline_code: list[str] = attrs.Factory(list)
    nested_quotes: int = 0
    header_rows: list[list[str]] = attrs.Factory(list)


class _Reader(HTMLParser):
    """Splits a page's article into prose blocks (code excluded) and <pre> blocks."""

    def __init__(self, page: Page) -> None:
        super().__init__(convert_charrefs=True)
        self.page = page
        self.in_article = 0
        self.code_depth = 0
        self.pre: list[str] | None = None
        self.inline: list[str] | None = None
        self.text: list[str] = []
        self.in_thead = False
        self.quote_depth = 0
        self.row: list[str] | None = None
        self.cell: list[str] | None = None

    def _end_block(self) -> None:
        block = "".join(self.text).strip()
        if block:
            self.page.prose.append(block)
        self.text = []

    def handle_starttag(self, tag: str, attrs_: list[tuple[str, str | None]]) -> None:
        if tag == "article":
            self.in_article += 1
        if not self.in_article:
            return
        if tag in CODE_TAGS:
            self.code_depth += 1
        if tag == "blockquote":
            self.quote_depth += 1
            if self.quote_depth >= 3:  # what Markdown makes of a `>>>` line
                self.page.nested_quotes += 1
        if tag == "pre":
            self.pre = []
        if tag == "code" and self.pre is None:
            self.inline = []
        if tag in BLOCK_TAGS:
            self._end_block()
        if tag == "thead":
            self.in_thead = True
        if tag == "tr" and self.in_thead:
            self.row = []
        if tag == "th" and self.row is not None:
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if not self.in_article:
            return
        if tag in CODE_TAGS:
            self.code_depth -= 1
        if tag == "blockquote":
            self.quote_depth -= 1
        if tag == "pre" and self.pre is not None:
            self.page.code_blocks.append("".join(self.pre))
            self.pre = None
        if tag == "code" and self.inline is not None:
            self.page.inline_code.append("".join(self.inline))
            self.inline = None
        if tag in BLOCK_TAGS:
            self._end_block()
        if tag == "th" and self.row is not None and self.cell is not None:
            self.row.append("".join(self.cell).strip())
            self.cell = None
        if tag == "tr" and self.row is not None:
            self.page.header_rows.append(self.row)
            self.row = None
        if tag == "thead":
            self.in_thead = False
        if tag == "article":
            self.in_article -= 1

    def handle_data(self, data: str) -> None:
        if not self.in_article:
            return
        if self.pre is not None:
            self.pre.append(data)
        if self.inline is not None:
            self.inline.append(data)
        if self.cell is not None:
            self.cell.append(data)
        if self.code_depth:
            self.text.append("\x00")  # inline code: present, but its content is not prose
        else:
            self.text.append(data)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built strictly into a temporary directory."""
    site = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    return site


@pytest.fixture(scope="module")
def pages(site: Path) -> list[Page]:
    """Every page of the site, as a reader sees it."""
    found = []
    for html in sorted(site.glob("**/index.html")):
        page = Page(html.parent.relative_to(site).as_posix() or "home")
        _Reader(page).feed(html.read_text(encoding="utf-8"))
        found.append(page)
    return found


def _where(pages: list[Page], bad: re.Pattern[str]) -> list[str]:
    return [f"{page.name}: {block[:120]!r}" for page in pages for block in page.prose
            if bad.search(block)]  # fmt: skip


def test_site_has_the_pages(pages: list[Page]) -> None:
    """The reader finds the reference's prose and code, so the checks below cannot pass empty."""
    reference = next(page for page in pages if page.name == "reference")
    assert len(reference.prose) > 100
    assert len(reference.code_blocks) > 10


def test_no_literal_sphinx_roles(pages: list[Page]) -> None:
    """No `:class:`, `:meth:`, `:attr:` (or other reST role) shows as text."""
    assert _where(pages, ROLE) == []


def test_no_doctest_prompt_outside_code(pages: list[Page]) -> None:
    """No `>>>` shows outside a code block, as text or as the quotes Markdown makes of it."""
    assert _where(pages, re.compile(r">>>")) == []
    assert [page.name for page in pages if page.nested_quotes] == []


def test_no_rest_literal_block_marker(pages: list[Page]) -> None:
    """No paragraph ends in `::` (a reST literal-block marker shown as text)."""
    assert _where(pages, re.compile(r"::\s*$", re.MULTILINE)) == []


def test_no_unrendered_markdown(pages: list[Page]) -> None:
    """No code fences, unresolved cross-references, or escaped pipes show as text."""
    bad = re.compile(r"```|\]\[[\w.\-]+\]|\\\||\[`")
    assert _where(pages, bad) == []


def test_no_escaped_pipe_in_inline_code(pages: list[Page]) -> None:
    """No `\\|` shows inside code (a table's escaped pipe rendered literally)."""
    shown = [f"{page.name}: {code!r}" for page in pages for code in page.inline_code
             if "\\|" in code]  # fmt: skip
    assert shown == []


def test_table_header_rows_are_not_empty(pages: list[Page]) -> None:
    """Every table has a header row with at least one label."""
    empty = [page.name for page in pages for row in page.header_rows if not any(row)]
    assert empty == []


def test_code_blocks_fit_the_code_column(pages: list[Page]) -> None:
    """No code line is wider than the code column, so nothing scrolls at 1280 px."""
    wide = [f"{page.name}: {line!r} ({len(line)})" for page in pages
            for block in page.code_blocks for line in block.splitlines()
            if len(line) > MAX_CODE_COLUMNS]  # fmt: skip
    assert wide == []


def test_search_finds_words_next_to_punctuation(site: Path) -> None:
    """The search splits "(Django, Flask, FastAPI)" into words, so "Django" is found."""
    index = json.loads((site / "search" / "search_index.json").read_text(encoding="utf-8"))
    separator = re.compile(index["config"]["separator"])
    text = " ".join(
        doc["text"] for doc in index["docs"] if doc["location"].startswith("configuration/")
    )
    assert "(Django," in text
    words = {word.lower() for word in separator.split(text)}
    assert {"django", "flask", "fastapi", "flush", "max_queue_size"} <= words


CHROMIUM = Path("/usr/bin/chromium")
#: A page at `width` px in an iframe: headless Chromium keeps its window at least
#: 500 px wide whatever --window-size says, so a phone's width needs a frame.
#: `{probe}` runs on the framed page's `doc` once it has loaded.
_FRAME = """<!doctype html><html><body style="margin:0">
<iframe id="page" src="index.html" style="width:{width}px;height:900px;border:0"></iframe>
<script>
document.getElementById("page").addEventListener("load", function () {{
  var doc = this.contentDocument;
  {probe}
}});
</script></body></html>"""

#: Every code block, and the page itself, that is wider than its box after layout.
_OVERFLOW = r"""
  var wide = [], win = this.contentWindow;
  doc.querySelectorAll("article pre > code").forEach(function (code) {
    if (code.scrollWidth > code.clientWidth + 1) { wide.push(code.textContent.slice(0, 60)); }
  });
  if (doc.documentElement.scrollWidth > win.innerWidth) { wide.push("(the page)"); }
  document.body.setAttribute("data-found", JSON.stringify(wide));
"""


def _framed(site: Path, page: str, width: int, probe: str, profile: Path) -> list[str]:
    """What `probe` found on `page` laid out `width` px wide in headless Chromium."""
    frame = site / page / f"frame-{width}.html"
    frame.write_text(_FRAME.format(width=width, probe=probe), encoding="utf-8")
    dumped = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--no-first-run",
         "--allow-file-access-from-files", f"--user-data-dir={profile}",
         f"--window-size={max(800, width + 100)},1000", "--virtual-time-budget=3000",
         "--dump-dom", frame.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    frame.unlink()
    found = re.search(r'data-found="([^"]*)"', dumped.stdout)
    assert found is not None, dumped.stderr[-2000:]
    result: list[str] = json.loads(found.group(1).replace("&quot;", '"'))
    return result


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs /usr/bin/chromium: run tests/devserver/install_browser.sh"
)
@pytest.mark.parametrize(
    ("page", "width"),
    [("reference", 390), ("configuration", 390), ("cli", 390), ("", 390), ("reference", 1280)],
)
def test_nothing_overflows_in_a_browser(site: Path, tmp_path: Path, page: str, width: int) -> None:
    """In headless Chromium, no code block and no page is wider than the screen."""
    assert _framed(site, page, width, _OVERFLOW, tmp_path) == []


#: Every visual line of a wrapped code block that ends in a lone "." (a shell's
#: `. .venv/bin/activate` cut after its dot reads as a typo).
_LONE_DOT = r"""
  var found = [];
  doc.querySelectorAll("article pre > code").forEach(function (code) {
    var walker = doc.createTreeWalker(code, 4), node, line = "", top = null;
    while ((node = walker.nextNode())) {
      for (var i = 0; i < node.data.length; i++) {
        if (node.data[i] === "\n") { line = ""; top = null; continue; }
        var range = doc.createRange();
        range.setStart(node, i); range.setEnd(node, i + 1);
        var rect = range.getClientRects()[0];
        if (rect && top !== null && rect.top > top + 2) {
          if (/(^|\s)\.\s*$/.test(line)) { found.push(line); }
          line = "";
        }
        if (rect) { top = rect.top; }
        line += node.data[i];
      }
    }
  });
  document.body.setAttribute("data-found", JSON.stringify(found));
"""


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs /usr/bin/chromium: run tests/devserver/install_browser.sh"
)
@pytest.mark.parametrize("page", ["", "quickstart"])
def test_no_code_line_wraps_after_a_lone_dot(site: Path, tmp_path: Path, page: str) -> None:
    """At 390 px, no wrapped code line ends with a lone '.' (as in `&& . .venv/...`)."""
    assert _framed(site, page, 390, _LONE_DOT, tmp_path) == []
