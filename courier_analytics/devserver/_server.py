"""Running the stand-in: `DevServer` (background thread) and `serve` (blocking).

Both run uvicorn with httptools and uvloop (when installed), no access log and no
lifespan, on a socket we bind ourselves so that `port=0` yields a known free port
before the server thread starts.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

import uvicorn

from courier_analytics.devserver._app import DevApp, create_app
from courier_analytics.devserver._faults import Faults
from courier_analytics.devserver._state import (
    DEFAULT_API_KEY,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_EVENTS,
    DEFAULT_MAX_IDEMPOTENCY_RECORDS,
    DEFAULT_MAX_PROFILE_BYTES,
    DEFAULT_MAX_PROFILES,
    DevState,
)

DEFAULT_HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 10.0

logger = logging.getLogger("courier_analytics.devserver")


def exposure_warning(host: str) -> str | None:
    """The warning to give when `host` makes the stand-in reachable from other machines."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return None
    return (
        f"the Courier stand-in is bound to {host}, reachable from other machines: anyone "
        "who can reach it sees every event and profile it received and can reset it or "
        "inject faults. Bind it to 127.0.0.1 unless you mean that."
    )


def _uvicorn_config(app: DevApp, *, log_level: str = "warning") -> uvicorn.Config:
    has_uvloop = importlib.util.find_spec("uvloop") is not None
    has_httptools = importlib.util.find_spec("httptools") is not None
    return uvicorn.Config(
        app,
        http="httptools" if has_httptools else "h11",
        loop="uvloop" if has_uvloop else "asyncio",
        lifespan="off",
        access_log=False,
        server_header=False,
        log_level=log_level,
        timeout_graceful_shutdown=2,
    )


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


class DevServer:
    """A Courier stand-in running in a background thread, for tests and demos.

    Use it as a context manager (or call `start` and `stop`):

    ```python
    with DevServer(mappings={"Order Completed": "tmpl_order"}) as server:
        httpx.post(server.base_url + "/inbound/segment", ...)
        assert server.sends()
    ```

    Args:
        api_key: The bearer key clients must send.
        accept_any_key: Accept any non-empty bearer key.
        mappings: Event name -> template id (full Courier name or short name).
        faults: Faults to inject from the start.
        host: Address to bind; 127.0.0.1 unless you mean otherwise.
        port: Port to bind; 0 picks a free one.
        max_body_bytes: Bodies above this many bytes get 413.
        max_events: How many events and sends to remember.
        max_event_bytes: Bodies (and sends) kept whole per event; a larger one keeps
            a preview and `truncated: {"bytes": n}`.
        max_idempotency_records: Idempotency records kept at most, each for 24 h.
        max_profiles: Profiles kept at most; the least recently written go first.
        max_profile_bytes: Bytes of profiles' JSON kept at most, all together; the
            least recently written go first.
        allowed_hosts: Host names to answer besides `localhost`, IP addresses and
            `host` (for example a Docker service name); any other `Host` gets 403.
    """

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        accept_any_key: bool = False,
        mappings: Mapping[str, str] | None = None,
        faults: Faults | None = None,
        host: str = DEFAULT_HOST,
        port: int = 0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_events: int = DEFAULT_MAX_EVENTS,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        max_idempotency_records: int = DEFAULT_MAX_IDEMPOTENCY_RECORDS,
        max_profiles: int = DEFAULT_MAX_PROFILES,
        max_profile_bytes: int = DEFAULT_MAX_PROFILE_BYTES,
        allowed_hosts: Iterable[str] = (),
    ) -> None:
        self.state = DevState(
            api_key=api_key,
            accept_any_key=accept_any_key,
            mappings=mappings,
            faults=faults,
            max_body_bytes=max_body_bytes,
            max_events=max_events,
            max_event_bytes=max_event_bytes,
            max_idempotency_records=max_idempotency_records,
            max_profiles=max_profiles,
            max_profile_bytes=max_profile_bytes,
        )
        self.app = create_app(self.state, host_names=frozenset({host, *allowed_hosts}))
        self.host = host
        self._requested_port = port
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        # Deliberately without the API key.
        running = "running" if self._thread is not None else "stopped"
        return f"<DevServer {self.base_url if self._socket else self.host} {running}>"

    @property
    def port(self) -> int:
        """The bound port (valid once started)."""
        if self._socket is None:
            raise RuntimeError("DevServer is not started; call start() or use `with`.")
        port: int = self._socket.getsockname()[1]
        return port

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:<port>`: use it as the client's Courier base URL."""
        return _url(self.host, self.port)

    @property
    def page_url(self) -> str:
        """The URL of the Data Logs page."""
        return self.base_url + "/"

    @property
    def api_key(self) -> str:
        """The bearer key the stand-in accepts."""
        return self.state.api_key

    def start(self) -> DevServer:
        """Bind, start serving in a daemon thread and wait until it accepts requests.

        Raises:
            RuntimeError: Already started, or the server did not come up in time.
        """
        if self._thread is not None:
            raise RuntimeError("DevServer is already started.")
        if (warning := exposure_warning(self.host)) is not None:
            logger.warning(warning)
        self._socket = _bind(self.host, self._requested_port)
        server = uvicorn.Server(_uvicorn_config(self.app))
        sockets = [self._socket]
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": sockets}, name="courier-devserver", daemon=True
        )
        self._server, self._thread = server, thread
        thread.start()
        ready = threading.Event()
        while not server.started and thread.is_alive():
            ready.wait(0.005)
        if not server.started:
            self.stop()
            raise RuntimeError("The Courier stand-in failed to start; see the log above.")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving (hanging requests are released) and close the socket."""
        server, thread = self._server, self._thread
        if server is not None and thread is not None:
            self.app.release_hanging()
            server.should_exit = True
            thread.join(timeout)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = None

    def __enter__(self) -> DevServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- inspection and control (thread-safe) ---------------------------------

    def events(self) -> list[dict[str, Any]]:
        """The event log, OLDEST first (`GET /__dev/events` is newest first).

        Each event: `id`, `received` (ISO 8601 UTC), `route` (`segment`,
        `courier` or `profiles`), `type`, `messageId`, `user`, `event` (as
        Courier names it), `status` (`Mapped`, `Unmapped`, `Accepted`,
        `Duplicate`), `data` (the request body) and `send` (or `None`).
        """
        return self.state.events()

    def profiles(self) -> dict[str, dict[str, Any]]:
        """Stored profiles: user id -> profile."""
        return self.state.profiles()

    def sends(self) -> list[dict[str, Any]]:
        """The sends mapped events made, oldest first."""
        return self.state.sends()

    def stats(self) -> dict[str, Any]:
        """Request, duplicate and fault counters (the body of `GET /__dev/stats`)."""
        return self.state.stats()

    def faults(self) -> Faults:
        """The faults injected now."""
        return self.state.faults()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Block until `predicate()` is true, re-checked after every request; no polling.

        For example `server.wait_for(lambda: len(server.events()) == 3)`. Returns
        whether the predicate became true within `timeout` seconds.
        """
        return self.state.wait_for(predicate, timeout)

    def set_faults(self, faults: Faults) -> None:
        """Inject `faults` from the next request on (`Faults()` turns them off)."""
        self.state.set_faults(faults)

    def reset(self) -> None:
        """Forget profiles, events, sends, stats and idempotency records."""
        self.state.reset()


def serve(
    host: str = DEFAULT_HOST,
    port: int = 8787,
    api_key: str = DEFAULT_API_KEY,
    mappings: Mapping[str, str] | None = None,
    faults: Faults | None = None,
    *,
    accept_any_key: bool = False,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_events: int = DEFAULT_MAX_EVENTS,
    max_profiles: int = DEFAULT_MAX_PROFILES,
    max_profile_bytes: int = DEFAULT_MAX_PROFILE_BYTES,
    on_ready: Callable[[str], None] | None = None,
    log_level: str = "warning",
    warn_exposure: bool = True,
    allowed_hosts: Iterable[str] = (),
) -> None:
    """Run the stand-in in the foreground until interrupted (Ctrl-C).

    Args:
        host: Address to bind.
        port: Port to bind (0 picks a free one).
        api_key: The bearer key clients must send.
        mappings: Event name -> template id.
        faults: Faults to inject from the start.
        accept_any_key: Accept any non-empty bearer key.
        max_body_bytes: Bodies above this many bytes get 413.
        max_events: How many events and sends to remember.
        max_profiles: Profiles kept at most; the least recently written go first.
        max_profile_bytes: Bytes of profiles' JSON kept at most, all together.
        on_ready: Called with the base URL once the socket is bound.
        log_level: uvicorn's log level.
        warn_exposure: Log a WARNING when `host` is not a loopback address.
        allowed_hosts: Host names to answer besides `localhost`, IP addresses and `host`.
    """
    state = DevState(
        api_key=api_key,
        accept_any_key=accept_any_key,
        mappings=mappings,
        faults=faults,
        max_body_bytes=max_body_bytes,
        max_events=max_events,
        max_profiles=max_profiles,
        max_profile_bytes=max_profile_bytes,
    )
    if warn_exposure and (warning := exposure_warning(host)) is not None:
        logger.warning(warning)
    sock = _bind(host, port)
    try:
        if on_ready is not None:
            on_ready(_url(host, sock.getsockname()[1]))
        app = create_app(state, host_names=frozenset({host, *allowed_hosts}))
        uvicorn.Server(_uvicorn_config(app, log_level=log_level)).run(sockets=[sock])
    finally:
        sock.close()
