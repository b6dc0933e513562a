"""AWS Lambda and short-lived scripts: flush after each invocation.

A Lambda environment is frozen as soon as the handler returns: no background
thread runs and no `atexit` hook fires until the next invocation thaws it, if
one ever does. Messages still queued then may wait for minutes, or be lost with
the environment. `flush_after` delivers them before the handler returns, within
the invocation's remaining time.

Example:
    ```python
    import courier_analytics as analytics
    from courier_analytics.integrations.aws_lambda import flush_after

    @flush_after
    def handler(event, context):
        analytics.track("Export Finished", user_id=event["user_id"])
        return {"ok": True}
    ```
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, ParamSpec, Protocol, TypeVar, overload

from courier_analytics import _default

__all__ = ["DEFAULT_MARGIN", "flush_after"]

logger = logging.getLogger("courier_analytics")

P = ParamSpec("P")
R = TypeVar("R")

#: Seconds of the invocation's remaining time kept free after the flush.
DEFAULT_MARGIN = 0.5


class _Flushable(Protocol):
    def flush(self, timeout: float | None = None) -> bool: ...


@overload
def flush_after(handler: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def flush_after(
    *, client: _Flushable | None = None, margin: float = DEFAULT_MARGIN
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def flush_after(
    handler: Callable[P, R] | None = None,
    /,
    *,
    client: _Flushable | None = None,
    margin: float = DEFAULT_MARGIN,
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a handler so that each call flushes analytics before it returns.

    The flush is bounded by the invocation's remaining time (the Lambda context's
    `get_remaining_time_in_millis()`) less `margin`, so a slow or unreachable
    Courier never makes the invocation time out. Without a Lambda context (a cron
    script's `main()`, a test) it is bounded by the client's `flush_timeout`.
    The handler's result, or its exception, is passed on unchanged; a flush that
    gives up is logged, and what it left is delivered when the environment thaws
    for the next invocation.

    Use it bare (`@flush_after`) or with options (`@flush_after(margin=1.0)`).

    Args:
        handler: The function to wrap: a Lambda handler `(event, context)` or any
            synchronous function.
        client: The client to flush; default the module-level default client.
        margin: Seconds of the remaining time to leave for the handler's own
            return (at least 0).

    Returns:
        The wrapped handler (or a decorator, when called with options only).

    Raises:
        TypeError: `handler` is not callable, or is a coroutine function (Lambda
            runs synchronous handlers; in async code await `Client.aflush`).
        ValueError: `margin` is negative.
    """
    if isinstance(margin, bool) or not isinstance(margin, int | float):
        raise TypeError(f"margin must be a number of seconds, not {type(margin).__name__}")
    if margin < 0:
        raise ValueError(f"margin must be 0 or more seconds, not {margin!r}")

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        if not callable(function):
            raise TypeError(f"flush_after wraps a function, not {type(function).__name__}")
        if inspect.iscoroutinefunction(function):
            raise TypeError(
                "flush_after wraps synchronous handlers; in async code use "
                "`await client.aflush(timeout)` or `await courier_analytics.aflush(timeout)`"
            )

        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return function(*args, **kwargs)
            finally:
                _flush(client, _timeout(args, kwargs, margin))

        return wrapper

    return decorate if handler is None else decorate(handler)


def _timeout(args: tuple[Any, ...], kwargs: dict[str, Any], margin: float) -> float | None:
    """Seconds the flush may take: the Lambda context's remaining time less `margin`."""
    context = args[1] if len(args) >= 2 else kwargs.get("context")
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if not callable(remaining):
        return None
    try:
        seconds = float(remaining()) / 1000
    except Exception:  # a context that cannot tell: fall back to the client's default
        return None
    return max(0.0, seconds - margin)


def _flush(client: _Flushable | None, timeout: float | None) -> None:
    try:
        done = _default.flush(timeout) if client is None else client.flush(timeout)
    except Exception:  # analytics never breaks the handler's answer
        logger.exception("courier-analytics: flushing after the handler failed")
        return
    if not done:
        logger.warning(
            "courier-analytics: the flush after the handler gave up after %ss; what is left "
            "is delivered when this environment next runs",
            timeout,
        )
