"""Plugins and source middleware: transform, enrich or filter messages before they leave.

As in analytics.js and `@segment/analytics-node`: a plugin is any object with a
`name`, a `type` (`"before"` or `"enrichment"`) and a method per message
type (`track`, `identify`, ...) or one `process` for every type. Each takes
the Segment-spec message as a plain dict and returns it (changed or not), or
`None`. They run in the caller's thread, after the call's arguments are
validated and before the message is encoded and queued: every `before` plugin
first, then every `enrichment` one, each group in registration order. Source
middleware is a `before` plugin made from one function.

The registry is read without a lock on the call path: each change builds new
chains and swaps them in whole. With nothing registered the call path pays one
truth test.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

from courier_analytics._errors import PluginError

__all__ = [
    "STAGES",
    "TYPES",
    "FirstFailures",
    "Middleware",
    "Plugin",
    "Plugins",
    "Step",
    "run_plugins",
]

logger = logging.getLogger("courier_analytics")

#: The message types, each also the name of a plugin's method for that type.
TYPES: Final = ("identify", "track", "group", "page", "screen", "alias")
#: Plugin types run here, in this order.
STAGES: Final = ("before", "enrichment")

#: A source middleware: takes the message dict, returns it (or a new one) or None to drop it.
Middleware = Callable[[dict[str, Any]], dict[str, Any] | None]

#: One step of a chain: (name, stage, the function to call with the message dict).
Step = tuple[str, str, Callable[[dict[str, Any]], object]]


class Plugin(Protocol):
    """What [`register`][courier_analytics.Client.register] needs of a plugin object.

    Besides these two attributes a plugin has a method per message type it
    handles (`identify`, `track`, `group`, `page`, `screen`, `alias`) or
    one `process` for every type; each is called as `method(message)` with the
    Segment-spec message dict and returns the message dict to go on with, or
    `None`: a `before` plugin drops the message that way; for an
    `enrichment` plugin `None` keeps the message as it now is.

    Attributes:
        name: Unique among the client's plugins; `deregister(name)` removes it.
        type: `"before"` or `"enrichment"`.
    """

    name: str
    type: str


class Plugins:
    """A client's plugins and source middleware, and the chain each message type runs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: tuple[tuple[str, str, object], ...] = ()  # (name, stage, plugin)
        #: message type -> its steps; only types that have some. Read on the call path.
        self.chains: dict[str, tuple[Step, ...]] = {}

    def __repr__(self) -> str:
        return f"<Plugins {[name for name, _, _ in self._entries]!r}>"

    # ------------------------------------------------------------- registration

    def register(self, *plugins: Plugin) -> None:
        """Add plugins, after those already registered (see `Plugin`).

        Raises:
            TypeError: a plugin lacks a `name` or any method to call.
            ValueError: an unknown `type`, or a name already registered.
        """
        entries = [_entry(plugin) for plugin in plugins]
        self._add(entries)

    def add_source_middleware(self, middleware: Middleware) -> str:
        """Add a `before` step made of one function; return the name it is registered under."""
        if not callable(middleware):
            raise TypeError(
                f"middleware must be a function taking the message dict, "
                f"not {type(middleware).__name__}"
            )
        label = getattr(middleware, "__qualname__", type(middleware).__name__)
        with self._lock:
            taken = {name for name, _, _ in self._entries}
            name, number = f"source-middleware:{label}", 1
            while name in taken:
                number += 1
                name = f"source-middleware:{label}#{number}"
            self._set((*self._entries, (name, "before", _Middleware(middleware))))
        return name

    def deregister(self, name: str) -> None:
        """Remove the plugin or source middleware registered under `name`.

        Raises:
            ValueError: nothing is registered under that name.
        """
        with self._lock:
            kept = tuple(entry for entry in self._entries if entry[0] != name)
            if len(kept) == len(self._entries):
                known = ", ".join(repr(n) for n, _, _ in self._entries) or "none"
                raise ValueError(f"no plugin named {name!r} is registered (registered: {known})")
            self._set(kept)

    def clear(self) -> None:
        """Remove every plugin and source middleware."""
        with self._lock:
            self._set(())

    def names(self, kind: str) -> list[str]:
        """Names of the plugins that a message of type `kind` goes through, in order."""
        return [name for name, _, _ in self.chains.get(kind, ())]

    def _add(self, entries: list[tuple[str, str, object]]) -> None:
        with self._lock:
            taken = {name for name, _, _ in self._entries}
            for name, _, _ in entries:
                if name in taken:
                    raise ValueError(
                        f"a plugin named {name!r} is already registered; "
                        f"deregister({name!r}) it first or choose another name"
                    )
                taken.add(name)
            self._set((*self._entries, *entries))

    def _set(self, entries: tuple[tuple[str, str, object], ...]) -> None:
        """Store the entries and rebuild every chain (lock held)."""
        chains: dict[str, tuple[Step, ...]] = {}
        for kind in TYPES:
            steps = [
                (name, stage, function)
                for wanted in STAGES
                for name, stage, plugin in entries
                if stage == wanted
                and (function := getattr(plugin, kind, None) or getattr(plugin, "process", None))
            ]
            if steps:
                chains[kind] = tuple(steps)
        self._entries = entries
        self.chains = chains


def run_plugins(
    chain: tuple[Step, ...], kind: str, data: dict[str, Any]
) -> dict[str, Any] | str | PluginError:
    """Run a message type's chain (from `Plugins.chains`) on `data`.

    Returns:
        The message to go on with; or the name of the `before` step that dropped
        it; or the `PluginError` that cancelled it.

    Raises:
        TypeError: a `before` step returned something other than a mapping or None.
    """
    for name, stage, function in chain:
        try:
            result = function(data)
            if type(result) is dict:
                data = result
                continue
        except Exception as exc:
            if stage == "before":
                message_id = str(data.get("messageId"))
                error = PluginError(
                    f"{kind} {message_id} cancelled: before plugin {name!r} raised "
                    f"{type(exc).__name__}",
                    plugin=name,
                    message_id=message_id,
                )
                error.__cause__ = exc
                return error
            _complain(name, function, f"raised {type(exc).__name__}")
            continue
        if result is None:
            if stage == "before":
                return name
            continue
        if not isinstance(result, Mapping):
            if stage == "before":
                raise TypeError(
                    f"before plugin {name!r} returned {type(result).__name__}; it must "
                    f"return the message dict, or None to drop the message"
                )
            _complain(name, function, f"returned {type(result).__name__}, not the message dict")
            continue
        data = dict(result)
    return data


class FirstFailures:
    """Remembers which callables failed already, so that each is warned about once.

    Held weakly where the callable allows it: a plain set of ids would take a
    new function, made where a freed one lived, for the old one and log its first
    failure at DEBUG only.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._weak: weakref.WeakSet[Any] = weakref.WeakSet()
        self._strong: set[Any] = set()  # callables that take no weak reference

    def first(self, function: object) -> bool:
        """Whether this is `function`'s first failure (and remember it)."""
        with self._lock:
            try:
                if function in self._weak:
                    return False
                self._weak.add(function)
            except TypeError:  # no weak reference to it: it is kept alive here
                key = function if getattr(type(function), "__hash__", None) else id(function)
                if key in self._strong:
                    return False
                self._strong.add(key)
            return True


#: The enrichment steps whose failure was logged as a warning already.
_complained = FirstFailures()


def _complain(name: str, function: object, what: str) -> None:
    """Log an enrichment plugin's failure: once as a warning, then at DEBUG."""
    first = _complained.first(function)
    logger.log(
        logging.WARNING if first else logging.DEBUG,
        "courier-analytics: enrichment plugin %r %s; skipped it, the message goes on%s",
        name,
        what,
        " (later failures of this plugin are logged at DEBUG)" if first else "",
    )


class _Middleware:
    """A source middleware function as a `before` plugin."""

    __slots__ = ("process",)

    def __init__(self, function: Middleware) -> None:
        self.process = function


def _entry(plugin: object) -> tuple[str, str, object]:
    name = getattr(plugin, "name", None)
    if not isinstance(name, str) or not name.strip():
        raise TypeError(
            f"a plugin needs a non-empty str `name` attribute; {type(plugin).__name__} has {name!r}"
        )
    stage = getattr(plugin, "type", None)
    if stage not in STAGES:
        raise ValueError(
            f"plugin {name!r} has type {stage!r}; plugins here are 'before' or 'enrichment' "
            f"(Courier is the one destination, so there are no destination plugins)"
        )
    methods = [m for m in (*TYPES, "process") if getattr(plugin, m, None) is not None]
    for method in methods:
        if not callable(getattr(plugin, method)):
            raise TypeError(f"plugin {name!r}: {method} must be a method, not a value")
    if not methods:
        raise TypeError(
            f"plugin {name!r} has no process() and none of the methods {', '.join(TYPES)}: "
            f"it would never run"
        )
    return name, stage, plugin
