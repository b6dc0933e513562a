"""The default client behind the module-level functions (``courier_analytics.track`` ...).

It is built lazily from the module's settings (``courier_analytics.api_key`` and
the other names of :class:`Options`) on the first call. Assigning a setting, or
calling :func:`configure`, marks it stale: the next call builds a new client from
the new settings, and the old one delivers what it had queued in the background
(and at exit, at the latest).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import types
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

import attrs

from courier_analytics._client import Client, Stats
from courier_analytics._options import Options

__all__ = [
    "SETTINGS",
    "configure",
    "default_client",
    "flush",
    "proxy",
    "retire",
    "shutdown",
    "stats",
]

logger = logging.getLogger("courier_analytics")

#: Names of the module-level settings: exactly the fields of :class:`Options`.
SETTINGS: frozenset[str] = frozenset(field.name for field in attrs.fields(Options))

P = ParamSpec("P")
R = TypeVar("R")


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.client: Client | None = None
        self.stale = False
        self.generation = 0  # bumped by every assignment of a setting


_state = _State()


def _package() -> types.ModuleType:
    return sys.modules["courier_analytics"]


class SettingsModule(types.ModuleType):
    """Module type of ``courier_analytics``: assigning a setting marks the default client stale."""

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name in SETTINGS:
            _state.generation += 1
            _state.stale = True


def configure(**settings: Any) -> None:
    """Set several module-level settings at once (names as in :class:`Client`).

    Example:
        >>> import courier_analytics as analytics
        >>> analytics.configure(api_key="pk_test_123", region="eu", send=False)

    Raises:
        TypeError: a name that is not a setting.
    """
    unknown = sorted(set(settings) - SETTINGS)
    if unknown:
        raise TypeError(
            f"unknown setting(s) {', '.join(unknown)}; settings are: {', '.join(sorted(SETTINGS))}"
        )
    module = _package()
    for name, value in settings.items():
        setattr(module, name, value)


def default_client() -> Client:
    """The client behind the module-level functions, built from the module settings.

    Raises:
        ConfigurationError: the settings are invalid (e.g. no API key anywhere).
    """
    client = _state.client
    if client is not None and not _state.stale:
        return client
    with _state.lock:
        if _state.client is None or _state.stale:
            module = _package()
            generation = _state.generation
            fresh = Client(**{name: getattr(module, name) for name in SETTINGS})
            old, _state.client = _state.client, fresh
            # A setting assigned while the client was being built makes it stale again.
            _state.stale = _state.generation != generation
            if old is not None:
                logger.info("courier-analytics: settings changed; the default client was rebuilt")
                retire(old)
        return _state.client


def retire(client: Client | Any) -> None:
    """Shut an old client down without blocking the caller (which goes on with a new one).

    Its queue is delivered in the background, and at exit at the latest; when no thread
    can start (interpreter shutdown on Python 3.12+) it is shut down right here.
    """
    try:
        threading.Thread(
            target=client.shutdown, name="courier-analytics-retire", daemon=True
        ).start()
    except RuntimeError:
        client.shutdown()


def proxy(method: Callable[Concatenate[Client, P], R]) -> Callable[P, R]:
    """A module-level function calling ``method`` on the default client."""
    name = method.__name__

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        result: R = getattr(default_client(), name)(*args, **kwargs)
        return result

    return call


def flush(timeout: float | None = None) -> bool:
    """Flush the default client, if one was made; see :meth:`Client.flush`."""
    client = _state.client
    return True if client is None else client.flush(timeout)


def shutdown(timeout: float | None = None) -> None:
    """Shut the default client down, if one was made; the next call builds a new one."""
    with _state.lock:
        client, _state.client = _state.client, None
    if client is not None:
        client.shutdown(timeout)


def stats() -> Stats | None:
    """The default client's :attr:`Client.stats`, or ``None`` before the first call."""
    client = _state.client
    return None if client is None else client.stats


def _after_fork_in_child() -> None:
    _state.lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
