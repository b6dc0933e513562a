"""A cold start pays only for what it uses: no httpx unless a transport or proxy needs it,
no delivery engine before a client, no OpenTelemetry unless the app set it up, no spool
backend without a spool, nothing for a retry before one.

Each test runs a fresh interpreter (the test process has imported everything) and
reads its `sys.modules`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

#: Needed only by httpx transports, a proxy, an HTTP-date Retry-After or a retry.
HEAVY = ("httpx", "httpcore", "h11", "urllib.request", "email.utils", "backoff")

#: Not needed by a delivery that succeeds at once, so not by a cold start either:
#: the spool's backends (no spool is set), the jitter's `random` (no retry), the
#: check for uvloop (`importlib.util`), the CLIs and what only the extras use, and
#: attrs (the package's own values are dataclasses; importing attrs, with the
#: `platform` it loads, and building its classes cost a cold start about a fifth).
NOT_ON_DELIVERY = (
    *HEAVY,
    "attr",
    "attrs",
    "encodings.idna",
    "random",
    "importlib.util",
    "sqlite3",
    "redis",
    "opentelemetry",
    "courier_analytics._spool._backend",
    "courier_analytics._spool._journal",
    "courier_analytics._spool._sqlite",
    "courier_analytics._spool._redis",
    "courier_analytics._spool._cli",
    "courier_analytics._cli",
    "courier_analytics._bar",
    "courier_analytics._demo",
    "courier_analytics._import",
    "courier_analytics.devserver",
    "courier_analytics.integrations",
    "courier_analytics.segment",
    "courier_analytics.testing",
)

#: Not needed by `import courier_analytics`: the delivery engine and what it imports
#: (the first Client() imports them), optional backends and extras, unused stdlib.
NOT_AT_IMPORT = (
    *NOT_ON_DELIVERY,
    "asyncio",
    "ssl",
    "socket",
    "selectors",
    "subprocess",
    "decimal",
    "email",
    "courier_analytics._worker",
    "courier_analytics._engine",
    "courier_analytics._transport",
    "courier_analytics._http11",
    "courier_analytics._http11_parser",
    "courier_analytics._lanes",
    "courier_analytics._concurrency",
    "courier_analytics._threads",
)

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


def loaded_after(imports: str, modules: tuple[str, ...]) -> Any:
    """Which of `modules` a fresh interpreter holds after `import {imports}`."""
    code = f"import json, sys\nimport {imports}\n"
    code += f"print(json.dumps([m for m in {modules!r} if m in sys.modules]))"
    return run_python(code)


def test_import_does_not_import_httpx() -> None:
    """`import courier_analytics` (and the Segment drop-in) leaves httpx unimported."""
    assert loaded_after("courier_analytics, courier_analytics.segment", HEAVY) == []


#: What the standard library itself loads on older Pythons: `uuid` imports `platform`,
#: which imported `subprocess` (and so `selectors`) at its top before Python 3.11.
STDLIB_BEFORE_3_11 = ("subprocess", "selectors")


def test_import_loads_no_engine_extra_or_unused_module() -> None:
    """`import courier_analytics` loads none of NOT_AT_IMPORT (with opentelemetry installed)."""
    unused = NOT_AT_IMPORT
    if sys.version_info < (3, 11):
        unused = tuple(name for name in unused if name not in STDLIB_BEFORE_3_11)
    assert loaded_after("courier_analytics", unused) == []


def test_a_meter_provider_named_in_the_environment_is_used() -> None:
    """OTEL_PYTHON_METER_PROVIDER set: a client records through the global provider it names."""
    code = textwrap.dedent(
        """
        import json, sys
        import courier_analytics

        client = courier_analytics.Client(api_key="k", send=False)
        print(json.dumps({"metrics": client._worker.metrics is not None}))
        """
    )
    env = {**os.environ, "OTEL_PYTHON_METER_PROVIDER": "sdk_meter_provider"}

    assert run_python(code, env) == {"metrics": True}


def test_delivery_over_the_default_sender_does_not_import_httpx() -> None:
    """Client(), track() and flush() to a local server import none of NOT_ON_DELIVERY: no
    httpx, IDNA codec, spool or retry's jitter, and no OpenTelemetry where it is installed
    and the app did not set it up."""
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
            "loaded": [m for m in NOT_ON_DELIVERY if m in sys.modules],
        }))
        """
    ).replace("NOT_ON_DELIVERY", repr(NOT_ON_DELIVERY))

    assert run_python(code) == {"delivered": 1, "flushed": True, "loaded": []}


#: Ends a script that forked `pid`, whose child writes to the pipe `tell` once it has
#: got past what is tested: prints whether the child hung (30 s bounds a failure only:
#: a working child answers at once).
CHILD_HUNG = """
hung = not select.select([ready], [], [], 30)[0]
if hung:
    os.kill(pid, 9)
os.waitpid(pid, 0)
print(json.dumps({"hung": hung}))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_fork_while_another_thread_imports_the_engine_leaves_the_child_a_working_client() -> None:
    """fork() while another thread's first Client() imports the engine: the child's works."""
    code = textwrap.dedent(
        """
        import importlib.abc, importlib.util, json, os, select, sys, threading
        import courier_analytics

        sys.setswitchinterval(1000)  # threads switch only where one waits
        entered, go = threading.Event(), threading.Event()

        class Held(importlib.abc.MetaPathFinder, importlib.abc.Loader):
            # Holds the engine's import half done until fork() begins (see below).
            def find_spec(self, name, path, target=None):
                if name != "courier_analytics._worker":
                    return None
                sys.meta_path.remove(self)
                self.spec = importlib.util.find_spec(name)
                return importlib.util.spec_from_loader(name, self, origin=self.spec.origin)

            def create_module(self, spec):
                return None

            def exec_module(self, module):
                entered.set()
                go.wait()
                self.spec.loader.exec_module(module)

        sys.meta_path.insert(0, Held())
        os.register_at_fork(before=go.set)  # runs first: the package's hooks came before
        options = dict(api_key="k", send=False, flush_at_exit=False)
        first = threading.Thread(target=lambda: courier_analytics.Client(**options))
        first.start()
        entered.wait()
        ready, tell = os.pipe()
        pid = os.fork()
        if pid == 0:
            courier_analytics.Client(**options).track("Signed Up", user_id="u1")
            os.write(tell, b"1")
            os._exit(0)
        first.join()
        """
    )
    code += CHILD_HUNG

    assert run_python(code) == {"hung": False}
