"""The Data Logs page in real headless Chromium: escaping and order after the script ran.

Chromium (Debian's ``chromium`` package, see ``install_browser.sh``) loads the page
with ``--dump-dom`` and a virtual-time budget, so the page's own script fetches
``/__dev/events`` and re-renders the table before the DOM is printed. The dump is
the live DOM: markup that had been injected would appear as elements, text shows
as escaped text.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from courier_analytics.devserver import DevServer

CHROMIUM = Path("/usr/bin/chromium")
SCRIPT_PAYLOAD = "<script>window.__pwned=1</script>"
IMG_PAYLOAD = "<img src=x onerror=\"document.title='pwned'\">"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="headless browser test needs /usr/bin/chromium: run tests/devserver/install_browser.sh",
)


class _Dom(HTMLParser):
    """Collects table rows (cell texts), element tags and the title from a DOM dump."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.table_attrs: dict[str, str | None] = {}
        self.rows: list[list[str]] = []
        self.title = ""
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "table":
            self.table_attrs = dict(attrs)
        elif tag == "tr" and dict(attrs).get("data-event-id"):
            self.rows.append([])
        elif tag == "td" and self.rows:
            self.rows[-1].append("")
        self._in = tag

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "td" and self.rows:
            self.rows[-1][-1] += data
        elif self._in == "title":
            self.title += data


def _dump_dom(url: str) -> str:
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [
                str(CHROMIUM),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=3000",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=90,
            check=True,
        )
    return done.stdout


@pytest.fixture(scope="module")
def dom() -> _Dom:
    """The page's DOM after its script ran, with three events (one hostile) logged."""
    with DevServer(api_key="browser-key") as server:
        headers = {"Authorization": "Bearer browser-key"}
        for index, name in enumerate(["First Event", SCRIPT_PAYLOAD, IMG_PAYLOAD, "Last Event"]):
            body = {"type": "track", "messageId": f"m{index}", "userId": "u1", "event": name}
            httpx.post(server.base_url + "/inbound/segment", json=body, headers=headers)
        dumped = _dump_dom(server.page_url)
    parsed = _Dom()
    parsed.feed(dumped)
    return parsed


def test_page_script_ran_and_rendered_rows(dom: _Dom) -> None:
    """The table was re-rendered by the page's script from /__dev/events."""
    assert dom.table_attrs.get("data-source") == "script"
    assert int(dom.table_attrs.get("data-refreshes") or 0) >= 1


def test_events_are_listed_newest_first(dom: _Dom) -> None:
    """Rows run from the newest event to the oldest."""
    names = [row[5] for row in dom.rows]
    assert names == [
        "Segment-TrackEvent:Last Event",
        "Segment-TrackEvent:" + IMG_PAYLOAD,
        "Segment-TrackEvent:" + SCRIPT_PAYLOAD,
        "Segment-TrackEvent:First Event",
    ]


def test_hostile_event_names_show_as_text_and_do_not_run(dom: _Dom) -> None:
    """Markup in event names is shown as text: no injected script or img element, no effect."""
    assert dom.tags.count("script") == 1  # the page's own
    assert "img" not in dom.tags
    assert dom.title != "pwned"
    assert any(SCRIPT_PAYLOAD in cell for row in dom.rows for cell in row)


def test_chromium_is_the_browser() -> None:
    """The browser used is the system Chromium, not a downloaded one."""
    assert shutil.which(str(CHROMIUM)) is not None


#: The page at 390 px in an iframe (headless Chromium keeps its window at least 500 px
#: wide); reports the cells of a column that wrap onto a second line, and whether the
#: page itself is wider than the screen (the table should scroll inside its box).
_NARROW_FRAME = """<!doctype html><html><body style="margin:0">
<iframe id="page" src="page.html" style="width:390px;height:700px;border:0"></iframe>
<script>
document.getElementById("page").addEventListener("load", function () {
  var doc = this.contentDocument, win = this.contentWindow, wrapped = [];
  doc.querySelectorAll("td.received, td.no-recipient").forEach(function (td) {
    var line = parseFloat(win.getComputedStyle(td).lineHeight) || 20;
    var text = doc.createRange();
    text.selectNodeContents(td);  // the text's own height: the cell stretches to its row
    if (text.getBoundingClientRect().height > line * 1.5) { wrapped.push(td.textContent); }
  });
  if (doc.documentElement.scrollWidth > win.innerWidth) { wrapped.push("(the page)"); }
  document.body.setAttribute("data-found", JSON.stringify(wrapped));
});
</script></body></html>"""


def test_narrow_screen_keeps_timestamps_and_no_recipient_on_one_line(tmp_path: Path) -> None:
    """At 390 px, no timestamp or 'no recipient' wraps, and the table scrolls, not the page."""
    import json
    import re

    from courier_analytics.devserver._page import render_page

    events = [
        {"id": 2, "received": "2026-12-06T21:59:50.662+00:00", "status": "Mapped",
         "route": "courier", "type": "track", "user": None, "event": "Order Completed",
         "data": '{"event":"Order Completed","messageId":"m1","type":"track"}'},
        {"id": 1, "received": "2026-12-06T21:59:50.514+00:00", "status": "Unmapped",
         "route": "courier", "type": "track", "user": "user_1001", "event": "Signed Up",
         "data": '{"event":"Signed Up","messageId":"m2","userId":"user_1001"}'},
    ]  # fmt: skip
    page, _csp = render_page(events)
    (tmp_path / "page.html").write_bytes(page)
    frame = tmp_path / "frame.html"
    frame.write_text(_NARROW_FRAME, encoding="utf-8")
    profile = tmp_path / "profile"
    dumped = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--no-first-run",
         "--allow-file-access-from-files", f"--user-data-dir={profile}",
         "--window-size=800,900", "--virtual-time-budget=3000", "--dump-dom", frame.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    found = re.search(r'data-found="([^"]*)"', dumped.stdout)
    assert found is not None, dumped.stderr[-2000:]
    assert json.loads(found.group(1).replace("&quot;", '"')) == []
