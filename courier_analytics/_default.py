"""Settings modules: module-level settings and the default client built from them.

`courier_analytics` and `courier_analytics.segment` both work this way: their
module-level settings (`courier_analytics.api_key`, `segment.write_key`, ...)
are read when the default client is built, lazily, on the first call. Assigning a
setting marks it stale: the next call builds a new client from the new settings,
and the old one delivers what it had queued in the background (and at exit, at
the latest); a call that still reaches the old one (a thread held it across the
rebuild) goes on to the new one. `DefaultClient` is that logic, once, for both
modules.

Settings that cannot make a client (no API key, `region="asia"`) never make a
module-level call raise on `courier_analytics`: its default client is then a
stand-in that drops each call (counted, passed to `on_error`), and the problem is
logged once, as an ERROR. The Segment drop-in raises at the call, as Segment does.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
import threading
import time
import types
import weakref
from collections.abc import Callable
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar

from courier_analytics._client import Client, FlushReport, Stats
from courier_analytics._errors import ConfigurationError
from courier_analytics._events import Emitter, EventName
from courier_analytics._options import REGIONS, Options
from courier_analytics._plugins import Middleware, Plugin, Plugins

__all__ = [
    "SETTINGS",
    "DefaultClient",
    "SettingsModule",
    "add_source_middleware",
    "aflush",
    "ashutdown",
    "configure",
    "core",
    "default_client",
    "deregister",
    "flush",
    "flush_report",
    "install",
    "on",
    "proxy",
    "register",
    "retire",
    "shutdown",
    "stats",
]

logger = logging.getLogger("courier_analytics")

#: Names of the module-level settings: exactly the fields of `Options`.
SETTINGS: frozenset[str] = frozenset(Options.__match_args__)

P = ParamSpec("P")
R = TypeVar("R")


class _Closable(Protocol):
    def shutdown(self) -> None: ...


C = TypeVar("C", bound=_Closable)


class DefaultClient(Generic[C]):
    """The lazily built client behind a settings module's functions.

    Args:
        module: Name of the settings module whose attributes are the settings.
        settings: Names of the settings, each passed to `build` as a keyword.
        build: Makes a client from the settings (`Client` itself, usually).
        published: A module attribute that mirrors the current client (Segment's
            `default_client`); assigning it replaces the client, `None` rebuilds.
        stand_in: Makes the client used while the settings are invalid, from the
            problem's text; without it, the `ConfigurationError` raises at the call.
    """

    def __init__(
        self,
        module: str,
        settings: frozenset[str],
        build: Callable[..., C],
        *,
        published: str | None = None,
        stand_in: Callable[[str], C] | None = None,
    ) -> None:
        self.module = module
        self.settings = settings
        self.published = published
        self._build = build
        self._stand_in = stand_in
        # Replaced clients still delivering what they had queued (see `retired`).
        self._retiring: set[C] = set()
        self._lock = threading.Lock()  # held while a client is built or replaced
        self._count_lock = threading.Lock()
        self._generation = 0  # bumped by every assignment of a setting
        # The client and the generation of the settings it was built from, as one
        # value so that a reader without the lock never pairs one with the other's.
        self._current: tuple[C, int] | None = None
        _ALL.add(self)

    def changed(self, name: str, value: object) -> None:
        """Note that the module's attribute `name` was just assigned `value`."""
        if name in self.settings:
            with self._count_lock:
                self._generation += 1
        elif name == self.published:
            with self._lock:
                self._current = None if value is None else (value, self._generation)  # type: ignore[assignment]

    def peek(self) -> C | None:
        """The current client, or `None` before the first call (builds nothing)."""
        current = self._current
        return None if current is None else current[0]

    def get(self) -> C:
        """The current client, built first if there is none or a setting changed since."""
        current = self._current
        if current is not None and current[1] == self._generation:
            return current[0]
        with self._lock:
            current = self._current
            if current is None or current[1] != self._generation:
                module = sys.modules[self.module]
                generation = self._generation
                # A setting assigned while this builds bumps the generation past
                # `generation`, so the next call builds again with it.
                settings = {name: getattr(module, name) for name in self.settings}
                try:
                    fresh = self._build(**settings)
                except ConfigurationError as exc:
                    if self._stand_in is None:
                        raise
                    # Once per change of the settings, not once per call; the text
                    # names the setting, never the key's value.
                    logger.error(
                        "courier-analytics: the settings of %s are invalid: %s. Until a "
                        "setting is assigned, every call is dropped (counted in stats().dropped) "
                        "and passed to on_error",
                        self.module,
                        exc,
                    )
                    fresh = self._stand_in(str(exc))
                self._current = (fresh, generation)
                self._publish(fresh)
                if current is not None:
                    logger.info(
                        "courier-analytics: settings of %s changed; its default client was rebuilt",
                        self.module,
                    )
                    self._retire(current[0])
                return fresh
            return current[0]

    def retired(self) -> list[C]:
        """Clients replaced after a setting changed that are still shutting down."""
        with self._count_lock:
            return list(self._retiring)

    def _retire(self, client: C) -> None:
        """Hand `client`'s late calls to the current client, and shut it down meanwhile."""
        if isinstance(client, Client):
            client._successor = self.get  # type: ignore[assignment]
        with self._count_lock:
            self._retiring.add(client)

        def done() -> None:
            with self._count_lock:
                self._retiring.discard(client)

        retire(client, done)

    def take(self) -> C | None:
        """Forget the current client and return it (the next call builds a new one)."""
        with self._lock:
            current, self._current = self._current, None
            self._publish(None)
        return None if current is None else current[0]

    def _publish(self, client: C | None) -> None:
        if self.published is not None:
            # Straight into the module's dict: no SettingsModule.__setattr__ round trip.
            sys.modules[self.module].__dict__[self.published] = client

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()


_ALL: weakref.WeakSet[DefaultClient[Any]] = weakref.WeakSet()

# The default client's plugins and event handlers: kept across its rebuilds.
_plugins = Plugins()
_events = Emitter()


def _build(**settings: Any) -> Client:
    return Client._built(Options(**settings), _plugins, _events)


def _stand_in(problem: str) -> Client:
    """The default client while the settings are invalid: it drops and reports each call.

    Its calls still validate their arguments (bad ones raise, as ever); a valid
    message is dropped, counted and passed to `on_error` (when that setting is
    usable) as a `ConfigurationError`.
    """
    handler = getattr(sys.modules[core.module], "on_error", None)
    options = Options(
        # Explicit values that cannot be invalid: the environment's key or URL may be.
        api_key="unused",
        base_url=REGIONS["us"],
        send=False,
        deliver=True,  # COURIER_ANALYTICS_DELIVER may be the invalid setting
        on_error=handler if callable(handler) else None,
        flush_at_exit=False,
    )
    client = Client._built(options, _plugins, _events)
    client._refusal = problem
    return client


#: The default client of `courier_analytics` itself.
core: DefaultClient[Client] = DefaultClient(
    "courier_analytics", SETTINGS, _build, stand_in=_stand_in
)


class SettingsModule(types.ModuleType):
    """Module type of a settings module: assigning a setting marks its default client stale."""

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        defaults = self.__dict__.get("_defaults")
        if isinstance(defaults, DefaultClient):
            defaults.changed(name, value)


def install(defaults: DefaultClient[Any]) -> None:
    """Make `defaults.module` a settings module served by `defaults`."""
    module = sys.modules[defaults.module]
    module.__dict__["_defaults"] = defaults
    module.__class__ = SettingsModule


def configure(**settings: Any) -> None:
    """Set several module-level settings at once (names as in [`Client`][courier_analytics.Client]).

    Example:
        ```python
        import courier_analytics as analytics

        analytics.configure(api_key="pk_test_123", region="eu", send=False)
        ```

    Raises:
        TypeError: a name that is not a setting.
    """
    unknown = sorted(set(settings) - SETTINGS)
    if unknown:
        raise TypeError(
            f"unknown setting(s) {', '.join(unknown)}; settings are: {', '.join(sorted(SETTINGS))}"
        )
    module = sys.modules[core.module]
    for name, value in settings.items():
        setattr(module, name, value)


def default_client() -> Client:
    """The client behind the module-level functions, built from the module settings.

    Raises:
        ConfigurationError: the settings are invalid (e.g. no API key anywhere).
            Module-level calls do not raise then: each is dropped and reported.
    """
    client = core.get()
    if client._refusal is not None:
        raise ConfigurationError(client._refusal)
    return client


def retire(client: _Closable, done: Callable[[], None] = lambda: None) -> None:
    """Shut an old client down without blocking the caller (which goes on with a new one).

    Its queue is delivered in the background, and at exit at the latest; when no thread
    can start (interpreter shutdown on Python 3.12+) it is shut down right here. `done`
    is called once it is.
    """

    def shut_down() -> None:
        try:
            client.shutdown()
            # Its final counts stay in the OpenTelemetry counters, which would drop
            # them when the client is collected (see _metrics.Recorder.close).
            recorder = getattr(getattr(client, "_worker", None), "metrics", None)
            if recorder is not None:
                recorder.close()
        finally:
            done()

    try:
        threading.Thread(target=shut_down, name="courier-analytics-retire", daemon=True).start()
    except RuntimeError:
        shut_down()


def proxy(
    method: Callable[Concatenate[Any, P], R], defaults: DefaultClient[Any] = core
) -> Callable[P, R]:
    """A module-level function calling `method` on the default client of `defaults`.

    It has `method`'s name, docs and signature, less `self`.
    """
    name = method.__name__

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        result: R = getattr(defaults.get(), name)(*args, **kwargs)
        return result

    signature = inspect.signature(method)
    parameters = list(signature.parameters.values())[1:]
    call.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    return call


def _flushed(timeout: float | None) -> list[tuple[Client, float | None]]:
    """Default clients to flush (the current one and those retired and still delivering).

    Each with its timeout: what is left of one deadline, `timeout` (default: each
    client's `flush_timeout`) from now.
    """
    current = core.peek()
    clients = [*core.retired(), *([] if current is None else [current])]
    if timeout is None:
        return [(client, None) for client in clients]
    deadline = time.monotonic() + timeout
    return [(client, max(0.0, deadline - time.monotonic())) for client in clients]


def flush(timeout: float | None = None) -> bool:
    """Flush the default client, if one was made, and those a setting change replaced.

    A client replaced after a setting changed delivers what it had queued in the
    background; this waits for that too, within the same `timeout`. See
    [`Client.flush`][courier_analytics.Client.flush].
    """
    done = True
    for client, wait in _flushed(timeout):
        done = client.flush(wait) and done
    return done


def flush_report(timeout: float | None = None) -> FlushReport:
    """Flush the default client and say what became of its messages since the last flush.

    See [`Client.flush_report`][courier_analytics.Client.flush_report]; before the
    first call, a report of nothing (`done` and `ok`).
    """
    client = core.peek()
    if client is None:
        return FlushReport(done=True, delivered=0, failed=0, dropped=0, pending=0)
    return client.flush_report(timeout)


def shutdown(timeout: float | None = None) -> None:
    """Shut the default client down, if one was made; the next call builds a new one.

    It also waits, within `timeout`, for the clients a setting change replaced.
    """
    wait = _flush_timeout() if timeout is None else timeout
    deadline = time.monotonic() + wait
    client = core.take()
    if client is not None:
        client.shutdown(wait)
    for old in core.retired():
        old.shutdown(max(0.0, deadline - time.monotonic()))


async def aflush(timeout: float | None = None) -> bool:
    """`flush` from async code; see `Client.aflush`."""
    done = True
    for client, wait in _flushed(timeout):
        done = await client.aflush(wait) and done
    return done


async def ashutdown(timeout: float | None = None) -> None:
    """`shutdown` from async code; see `Client.ashutdown`."""
    wait = _flush_timeout() if timeout is None else timeout
    deadline = time.monotonic() + wait
    client = core.take()
    if client is not None:
        await client.ashutdown(wait)
    for old in core.retired():
        await old.ashutdown(max(0.0, deadline - time.monotonic()))


def _flush_timeout() -> float:
    """The module's `flush_timeout` setting (the default of flush and shutdown)."""
    value = getattr(sys.modules[core.module], "flush_timeout", 30.0)
    return float(value) if isinstance(value, (int, float)) and value > 0 else 30.0


def stats() -> Stats | None:
    """The default client's counters, or `None` before the first call.

    See [`Client.stats`][courier_analytics.Client.stats].
    """
    client = core.peek()
    return None if client is None else client.stats


def register(*plugins: Plugin) -> None:
    """Add plugins to the default client (see `Client.register`).

    They stay registered when a changed setting rebuilds the default client.
    """
    _plugins.register(*plugins)


def deregister(name: str) -> None:
    """Remove a plugin from the default client (see `Client.deregister`)."""
    _plugins.deregister(name)


def add_source_middleware(middleware: Middleware) -> str:
    """Add source middleware to the default client (see `Client.add_source_middleware`)."""
    return _plugins.add_source_middleware(middleware)


def on(name: EventName, handler: Callable[..., Any]) -> Callable[[], None]:
    """Subscribe to the default client's events (see `Client.on`).

    The subscription holds across rebuilds of the default client, and covers a
    retired client's last deliveries too.
    """
    return _events.on(name, handler)


def _after_fork_in_child() -> None:
    for defaults in list(_ALL):
        defaults._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
