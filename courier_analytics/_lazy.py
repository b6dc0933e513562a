"""What `import courier_analytics` leaves out: imported the first time it is used.

A short-lived process (a CLI, a Lambda cold start, a test run) pays for every
module the package imports, whether it sends anything or not. Three groups are
left for later:

- httpx and what it pulls in (httpcore, h11, idna, certifi's loader,
  `urllib.request`, `email`...). The default sender (`_http11.py`) never needs it
  to deliver: only its exception classes, to report a failed request (a documented
  contract: a network failure's `DeliveryError` has the `httpx` exception as its
  cause), and its transports, when the `transport` option or a proxy asks for one.
- The delivery engine (`_worker.py`, `_transport.py`, `_http11.py`) and asyncio,
  `ssl`, `socket`, `concurrent.futures`, `subprocess`... that it imports: the first
  `Client()` imports them, once, since a client delivers on the worker's event loop.
  A process that imports the package and sends nothing (a CLI's `--help`, an app
  whose module-level functions are never called) never pays for them.
- `ssl` and `socket` where only a failed request needs their exception classes,
  and the spool's journal where no spool is set.

Modules that use one write:

```python
if TYPE_CHECKING:
    import httpx
else:
    from courier_analytics._lazy import httpx
```

and every `httpx.X` they evaluate (in an `except` clause, an `isinstance` check, a
`raise`) imports httpx then. What stands for a class or function here (`Worker`,
`make_sender`, `is_loopback`, `Journal`) imports its module and calls the real one; the type
checker sees the real one.
"""

from __future__ import annotations

import importlib
import os
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from courier_analytics._spool._journal import Journal as _Journal
    from courier_analytics._worker import Worker as _Worker

__all__ = ["Journal", "Worker", "asyncio", "httpx", "is_loopback", "make_sender", "socket", "ssl"]


#: Held while a lazy import runs, and by `fork()` until it has ended. A child forked
#: while another thread was importing the engine (its first `Client()`) would find
#: that module's import lock held by a thread the child does not have: its own first
#: `Client()` would wait for ever. Re-entrant: importing one module may import another.
_importing = threading.RLock()


def _import(name: str) -> Any:
    """`importlib.import_module(name)`, never under way when the process forks."""
    with _importing:
        return importlib.import_module(name)


def _after_fork_in_child() -> None:
    global _importing
    _importing = threading.RLock()  # the parent's, held by fork(), stays held here


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=lambda: _importing.acquire(),
        after_in_parent=lambda: _importing.release(),
        after_in_child=_after_fork_in_child,
    )


class LazyModule:
    """Stands for a module, imported at the first read of one of its attributes."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: Any = None

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"

    def __getattr__(self, attribute: str) -> Any:
        # Called only for an attribute not read before: each is kept on this object,
        # so that the next read is a plain one (a retry loop reads `ssl.X` on every
        # failed attempt). These are classes and functions, which nothing reassigns.
        module = self._module
        if module is None:
            module = self._module = _import(self._name)
        value = getattr(module, attribute)
        setattr(self, attribute, value)
        return value


httpx = LazyModule("httpx")
asyncio = LazyModule("asyncio")
socket = LazyModule("socket")
ssl = LazyModule("ssl")


def Worker(**options: Any) -> _Worker:
    """`_worker.Worker(**options)`: the first client imports the engine."""
    worker: _Worker = _import("courier_analytics._worker").Worker(**options)
    return worker


def make_sender(*args: Any, **options: Any) -> Any:
    """`_transport.make_sender(...)`."""
    return _import("courier_analytics._transport").make_sender(*args, **options)


def is_loopback(host: str) -> bool:
    """`_transport.is_loopback(host)`: asked only of an `http://` URL."""
    loopback: bool = _import("courier_analytics._transport").is_loopback(host)
    return loopback


def Journal(*args: Any, **options: Any) -> _Journal:
    """`_spool._journal.Journal(...)`: made only for a client with a spool."""
    journal: _Journal = _import("courier_analytics._spool._journal").Journal(*args, **options)
    return journal
