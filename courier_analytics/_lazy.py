"""httpx, imported the first time something of it is used, not with the package.

The default sender (`_http11.py`) never needs httpx to deliver: only its exception
classes, to report a failed request (a documented contract: a network failure's
`DeliveryError` has the `httpx` exception as its cause), and its transports, when the
`transport` option or a proxy asks for one. httpx and what it pulls in (httpcore, h11,
idna, certifi's loader, `urllib.request`, `email`...) take 40-80 ms to import, most
of a cold start (see the Performance page), so modules that use it write:

```python
if TYPE_CHECKING:
    import httpx
else:
    from courier_analytics._lazy import httpx
```

and every `httpx.X` they evaluate (in an `except` clause, an `isinstance` check, a
`raise`) imports httpx then, on a path where a request failed or httpx is used anyway.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["httpx"]


class LazyModule:
    """Stands for a module, imported at the first read of one of its attributes."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self._name), attribute)


httpx = LazyModule("httpx")
