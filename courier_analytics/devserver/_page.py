"""The HTML page at `/`: the event log, like Courier's Data Logs.

The first rows are rendered on the server (every value through `html.escape`);
a small inline script then refreshes the table from `/__dev/events` every
second, writing values with `textContent` only, never as HTML. Both take each
event's data as a preview of its first characters (`?preview=`), so a refresh
costs a few hundred kilobytes at most, however large the bodies. A strict
Content-Security-Policy (hashes of the inline script and style, nothing else)
stops any markup that slipped through from running. The API key is never
part of the state the page shows.
"""

from __future__ import annotations

import base64
import hashlib
import html
from typing import Any

import orjson

DATA_PREVIEW_CHARS = 300
COLUMNS = ("Received", "Status", "Route", "Type", "User", "Event", "Data")

_STYLE = """
body { font: 14px system-ui, sans-serif; margin: 1.5rem; color: #1d1d1f; }
h1 { font-size: 1.25rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #ddd;
         vertical-align: top; }
td.data { font-family: ui-monospace, monospace; font-size: 12px; word-break: break-all; }
td.received { white-space: nowrap; }
/* A narrow screen scrolls the table sideways rather than squeezing the body column
   into a sliver, one character wide per line. */
.scroll { overflow-x: auto; }
td.data { min-width: 18rem; }
td.no-recipient { color: #777; font-style: italic; white-space: nowrap; }
.Mapped { color: #0a7d32; } .Unmapped { color: #a15c00; } .Duplicate { color: #777; }
"""

_SCRIPT = """
(function () {
  "use strict";
  var body = document.getElementById("events");
  var table = document.getElementById("log");
  var refreshes = 0;
  function cell(row, text, className) {
    var td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (className) { td.className = className; }
    row.appendChild(td);
  }
  function render(events) {
    var rows = document.createDocumentFragment();
    events.forEach(function (e) {
      var row = document.createElement("tr");
      row.setAttribute("data-event-id", String(e.id));
      cell(row, e.received, "received");
      cell(row, e.status, String(e.status));
      cell(row, e.route);
      cell(row, e.type);
      cell(row, e.user || "no recipient", e.user ? "" : "no-recipient");
      cell(row, e.event || e.type);
      cell(row, e.data, "data");
      rows.appendChild(row);
    });
    body.replaceChildren(rows);
    refreshes += 1;
    table.setAttribute("data-source", "script");
    table.setAttribute("data-refreshes", String(refreshes));
  }
  function refresh() {
    fetch("/__dev/events?limit=500&preview=%(limit)d", {cache: "no-store"})
      .then(function (r) { return r.json(); })
      .then(render)
      .catch(function () {})
      .then(function () { setTimeout(refresh, 1000); });
  }
  refresh();
})();
""".replace("%(limit)d", str(DATA_PREVIEW_CHARS))


def _csp_hash(source: str) -> str:
    digest = hashlib.sha256(source.encode()).digest()
    return "'sha256-" + base64.b64encode(digest).decode() + "'"


CONTENT_SECURITY_POLICY = (
    "default-src 'none'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    f"script-src {_csp_hash(_SCRIPT)}; style-src {_csp_hash(_STYLE)}"
).encode()


def _preview(value: Any) -> str:
    """The data cell: the preview string the events API gave (`?preview=`), else JSON."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    if len(text) > DATA_PREVIEW_CHARS:
        return text[:DATA_PREVIEW_CHARS] + "\u2026"
    return text


def _row(event: dict[str, Any]) -> str:
    status = str(event.get("status", ""))
    values = (
        (event.get("received"), "received"),
        (status, status),
        (event.get("route"), ""),
        (event.get("type"), ""),
        (event.get("user") or "no recipient", "" if event.get("user") else "no-recipient"),
        (event.get("event") or event.get("type"), ""),
        (_preview(event.get("data")), "data"),
    )
    cells = "".join(
        f'<td class="{html.escape(css)}">{html.escape("" if value is None else str(value))}</td>'
        if css
        else f"<td>{html.escape('' if value is None else str(value))}</td>"
        for value, css in values
    )
    return f'<tr data-event-id="{html.escape(str(event.get("id", "")))}">{cells}</tr>'


def render_page(events_newest_first: list[dict[str, Any]]) -> tuple[bytes, bytes]:
    """The page's HTML (UTF-8) and its Content-Security-Policy header value."""
    header = "".join(f"<th>{name}</th>" for name in COLUMNS)
    rows = "".join(_row(event) for event in events_newest_first)
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Courier stand-in: Data Logs</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>Courier stand-in: Data Logs</h1>
<p>Newest first; refreshes every second. JSON: <a href="/__dev/events">/__dev/events</a>,
<a href="/__dev/profiles">/__dev/profiles</a>, <a href="/__dev/sends">/__dev/sends</a>
(what mapped events sent), <a href="/__dev/stats">/__dev/stats</a>.</p>
<div class="scroll">
<table id="log" data-source="server">
<thead><tr>{header}</tr></thead>
<tbody id="events">{rows}</tbody>
</table>
</div>
<script>{_SCRIPT}</script>
</body>
</html>
"""
    return page.encode(), CONTENT_SECURITY_POLICY
