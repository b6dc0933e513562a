"""Settings modules: module-level settings and the default client built from them.

`courier_analytics` and `courier_analytics.segment` both work this way: their
module-level settings (`courier_analytics.api_key`, `segment.write_key`, ...)
are read when the default client is built, lazily, on the first call. Assigning a
setting marks it stale: the next call builds a new client from the new settings,
and the old one delivers what it had queued in the background (and at exit, at
the latest). `DefaultClient` is that logic, once, for both
modules.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
import threading
import types
import weakref
from collections.abc import Callable
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar

import attrs

from courier_analytics._client import Client, Stats
from courier_analytics._events import Emitter, EventName
from courier_analytics._options import Options
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
SETTINGS: frozenset[str] = frozenset(field.name for field in attrs.fields(Options))

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
    """

    def __init__(
        self,
        module: str,
        settings: frozenset[str],
        build: Callable[..., C],
        *,
        published: str | None = None,
    ) -> None:
        self.module = module
        self.settings = settings
        self.published = published
        self._build = build
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
                fresh = self._build(**{name: getattr(module, name) for name in self.settings})
                self._current = (fresh, generation)
                self._publish(fresh)
                if current is not None:
                    logger.info(
                        "courier-analytics: settings of %s changed; its default client was rebuilt",
                        self.module,
                    )
                    retire(current[0])
                return fresh
            return current[0]

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
    client = Client(**settings)
    client._adopt(_plugins, _events)
    return client


#: The default client of `courier_analytics` itself.
core: DefaultClient[Client] = DefaultClient("courier_analytics", SETTINGS, _build)


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
    """
    return core.get()


def retire(client: _Closable) -> None:
    """Shut an old client down without blocking the caller (which goes on with a new one).

    Its queue is delivered in the background, and at exit at the latest; when no thread
    can start (interpreter shutdown on Python 3.12+) it is shut down right here.
    """
    try:
        threading.Thread(
            target=_retired, args=(client,), name="courier-analytics-retire", daemon=True
        ).start()
    except RuntimeError:
        _retired(client)


def _retired(client: _Closable) -> None:
    client.shutdown()
    # Its final counts stay in the OpenTelemetry counters, which would drop them
    # when the client is collected (see _metrics.Recorder.close).
    recorder = getattr(getattr(client, "_worker", None), "metrics", None)
    if recorder is not None:
        recorder.close()


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


def flush(timeout: float | None = None) -> bool:
    """Flush the default client, if one was made.

    See [`Client.flush`][courier_analytics.Client.flush].
    """
    client = core.peek()
    return True if client is None else client.flush(timeout)


def shutdown(timeout: float | None = None) -> None:
    """Shut the default client down, if one was made; the next call builds a new one."""
    client = core.take()
    if client is not None:
        client.shutdown(timeout)


async def aflush(timeout: float | None = None) -> bool:
    """Flush the default client from async code, if one was made; see `Client.aflush`."""
    client = core.peek()
    return True if client is None else await client.aflush(timeout)


async def ashutdown(timeout: float | None = None) -> None:
    """Shut the default client down from async code; see `Client.ashutdown`."""
    client = core.take()
    if client is not None:
        await client.ashutdown(timeout)


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
