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
