"""A cold start pays only for what it uses: no httpx unless a transport or proxy needs it.

Each test runs a fresh interpreter (the test process has imported everything) and
reads its `sys.modules`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

#: Needed only by httpx transports, a proxy, an HTTP-date Retry-After or a retry.
HEAVY = ("httpx", "httpcore", "h11", "urllib.request", "email.utils", "backoff")

#: Code that answers one request with 202 on 127.0.0.1 and names the server's `url`:
#: a bare HTTP/1.1 server, since http.server would import urllib.
ONE_ANSWER = """
import socket as _socket, threading as _threading

def _serve(listener):
    connection, _ = listener.accept()
    data = b""
    while b"\\r\\n\\r\\n" not in data or not data.endswith(b"}"):
        data += connection.recv(65536)
    connection.sendall(b"HTTP/1.1 202 Accepted\\r\\nContent-Length: 2\\r\\n\\r\\n{}")
    connection.recv(1)  # until the client closes it

_listener = _socket.create_server(("127.0.0.1", 0))
_threading.Thread(target=_serve, args=(_listener,), daemon=True).start()
url = f"http://127.0.0.1:{_listener.getsockname()[1]}"
"""


def run_python(code: str, env: dict[str, str] | None = None) -> Any:
    """Run `code` in a fresh interpreter; the last line it printed, read as JSON."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_does_not_import_httpx() -> None:
    """`import courier_analytics` (and the Segment drop-in) leaves httpx unimported."""
    result = run_python(
        textwrap.dedent(
            f"""
            import json, sys
            import courier_analytics, courier_analytics.segment
            print(json.dumps({{"loaded": [m for m in {HEAVY!r} if m in sys.modules]}}))
            """
        )
    )

    assert result == {"loaded": []}


def test_delivery_over_the_default_sender_does_not_import_httpx() -> None:
    """Client(), track() and flush() to a local server import neither httpx nor the IDNA codec."""
    code = ONE_ANSWER + textwrap.dedent(
        """
        import json, sys
        import courier_analytics

        client = courier_analytics.Client(api_key="k", base_url=url, flush_at_exit=False)
        client.track("Signed Up", user_id="u1")
        flushed = client.flush(30)
        print(json.dumps({
            "delivered": client.stats.delivered,
            "flushed": flushed,
            "loaded": [m for m in ("httpx", "encodings.idna") if m in sys.modules],
        }))
        """
    )

    assert run_python(code) == {"delivered": 1, "flushed": True, "loaded": []}
