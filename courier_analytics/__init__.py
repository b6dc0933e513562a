"""courier-analytics: Segment-style analytics calls delivered straight to Courier.

Use the module-level functions with module settings, as with Segment's library:

```python
import courier_analytics as analytics

analytics.api_key = "..."  # or the COURIER_API_KEY environment variable
analytics.identify("user_123", {"email": "carrier.pigeon@example.com"})
analytics.track("Login Button Clicked", {"plan": "pro"}, user_id="user_123")
analytics.flush()
```

or a [`Client`][courier_analytics.Client] of your own. Assigning a setting after the first call is
not ignored: the next call builds a new default client with it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from courier_analytics import _default, _options, _spool
from courier_analytics._client import Client, FlushReport, Stats
from courier_analytics._default import (
    add_source_middleware,
    aflush,
    ashutdown,
    configure,
    default_client,
    deregister,
    flush,
    flush_report,
    on,
    proxy,
    register,
    shutdown,
    stats,
)
from courier_analytics._errors import (
    AuthenticationError,
    ClientClosedError,
    ConfigurationError,
    CourierAnalyticsError,
    DeliveryError,
    MessageTooLargeError,
    NotDeliveredError,
    PluginError,
    QueueFullError,
    RejectedError,
    RetriesExhaustedError,
)
from courier_analytics._events import MessageView
from courier_analytics._messages import MAX_REQUEST_BYTES, Message
from courier_analytics._options import REGIONS, ErrorHandler, EventLoop, Options, Ordering, Region
from courier_analytics._plugins import Plugin
from courier_analytics._retry import RetryPolicy
from courier_analytics._routes import DEFAULT_EVENT_PREFIX, RouteName
from courier_analytics._scope import User, reset, scope, user
from courier_analytics._signals import handle_sigterm
from courier_analytics._version import __version__

if TYPE_CHECKING:  # types of optional packages: importing this one imports neither
    from opentelemetry.metrics import MeterProvider

    from courier_analytics._transport import AnyTransport

__all__ = [
    "DEFAULT_EVENT_PREFIX",
    "MAX_REQUEST_BYTES",
    "REGIONS",
    "AuthenticationError",
    "Client",
    "ClientClosedError",
    "ConfigurationError",
    "CourierAnalyticsError",
    "DeliveryError",
    "ErrorHandler",
    "FlushReport",
    "Message",
    "MessageTooLargeError",
    "MessageView",
    "NotDeliveredError",
    "Options",
    "Plugin",
    "PluginError",
    "QueueFullError",
    "RejectedError",
    "RetriesExhaustedError",
    "RetryPolicy",
    "Stats",
    "User",
    "__version__",
    "add_source_middleware",
    "aflush",
    "alias",
    "ashutdown",
    "configure",
    "default_client",
    "deregister",
    "flush",
    "flush_report",
    "group",
    "handle_sigterm",
    "identify",
    "on",
    "page",
    "register",
    "reset",
    "scope",
    "screen",
    "shutdown",
    "stats",
    "track",
    "user",
]

# Module-level settings, read when the default client is built (same names and
# defaults as Client's options). Assigning one rebuilds the default client.
api_key: str | None = None
region: Region = "us"
base_url: str | None = None
route: RouteName = "api"
event_prefix: str = DEFAULT_EVENT_PREFIX
max_queue_size: int = 10_000
max_queue_bytes: int = _options.DEFAULT_MAX_QUEUE_BYTES
max_in_flight: int = _options.DEFAULT_MAX_IN_FLIGHT
ordering: Ordering = "identify"
event_loop: EventLoop = "asyncio"
flush_interval: float = 0.5
timeout: float = 10.0
max_retries: int = 10
max_retry_time: float | None = 120.0
retry: RetryPolicy | None = None
on_error: ErrorHandler | None = None
sync_mode: bool = False
send: bool = True
debug: bool = False
transport: AnyTransport | None = None
views_as_track: bool = False
flush_at_exit: bool = True
exit_timeout: float = 5.0
flush_timeout: float = 30.0
max_message_bytes: int = MAX_REQUEST_BYTES
allow_insecure_http: bool | None = None
spool: str | os.PathLike[str] | None = None
spool_max_age: float = _spool.DEFAULT_MAX_AGE
spool_max_bytes: int = _spool.DEFAULT_MAX_BYTES
spool_commit_interval: float = _spool.DEFAULT_COMMIT_INTERVAL
meter_provider: MeterProvider | None = None
deliver: bool | None = None

identify = proxy(Client.identify)
track = proxy(Client.track)
group = proxy(Client.group)
page = proxy(Client.page)
screen = proxy(Client.screen)
alias = proxy(Client.alias)

_default.install(_default.core)
