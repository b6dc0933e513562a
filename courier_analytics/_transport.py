"""Senders: send one request to Courier and hand its answer back, for the worker's loop.

Every sender has one method for the delivery engine, `start(request, on_done)`:
it sends the request and returns; `on_done` gets the whole answer, or the error
that ended the attempt, from the event loop.

By default the worker uses `NativeSender`, a lean keep-alive HTTP/1.1 client
(`_http11.py`) that costs a fraction of an httpx transport per request.
`HttpxSender` works with any httpx transport instead, asynchronous (used
directly) or synchronous (run on up to `SYNC_THREADS` daemon threads, started as
requests need them): it is used when the `transport` option is given (proxies,
custom TLS, tests with `httpx.MockTransport` or respx) and when a proxy is
configured in the environment (`HTTPS_PROXY` and friends), which httpx then honours.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, NamedTuple, Protocol
from urllib.parse import urlsplit

import orjson

from courier_analytics._http11 import MAX_BODY, Http11Pool, RawResponse, until_done
from courier_analytics._outcomes import detached
from courier_analytics._routes import Request
from courier_analytics._threads import BlockingRunner
from courier_analytics._version import __version__

if TYPE_CHECKING:
    from typing import TypeAlias

    import httpx

    AnyTransport: TypeAlias = httpx.AsyncBaseTransport | httpx.BaseTransport
else:
    from courier_analytics._lazy import httpx

__all__ = [
    "SYNC_THREADS",
    "THIRD_PARTY_LOGGERS",
    "USER_AGENT",
    "AnyTransport",
    "HttpxSender",
    "NativeSender",
    "OnDone",
    "Response",
    "Sender",
    "environment_proxy",
    "is_loopback",
    "make_sender",
    "without_key",
]

USER_AGENT = f"courier-analytics/{__version__} (python)"


def __getattr__(name: str) -> object:
    if name == "AnyTransport":  # made when asked for: it needs httpx
        return httpx.AsyncBaseTransport | httpx.BaseTransport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Most threads that run a synchronous transport's requests, started as needed.
#: More would mostly contend for the GIL (and httpx's pool holds 100 connections).
SYNC_THREADS = 32


class Response(NamedTuple):
    """What Courier answered: status, `Retry-After` header and body."""

    status: int
    retry_after: str | None
    body: bytes


def _raw_body(response: httpx.Response) -> httpx.SyncByteStream | httpx.AsyncByteStream:
    """`response`'s body as sent, unless its Content-Length is over `MAX_BODY` (refused).

    Its Content-Encoding is not decoded: an answer is judged by its status, as the
    native sender judges it, so a 202 whose body does not decode is still delivery.
    The stream itself is read, not `aiter_raw()`: a response made with `content=`
    (as `httpx.MockTransport`'s handlers make them) was read when made, and its
    stream gives the body again.
    """
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY:
        raise httpx.RemoteProtocolError(
            f"an answer of {length} bytes, over the {MAX_BODY}-byte limit"
        )
    return response.stream


def _within_limit(body: bytearray, piece: bytes) -> bytes:
    """`piece`, if the body stays within `MAX_BODY` with it; Courier's answers are tiny."""
    if len(body) + len(piece) > MAX_BODY:
        raise httpx.RemoteProtocolError(f"an answer over the {MAX_BODY}-byte limit")
    return piece


def _retry_after(response: httpx.Response) -> str | None:
    """The first `Retry-After` header, as the native sender reads it (httpx joins them)."""
    values = response.headers.get_list("retry-after")
    return values[0] if values else None


def _blanked(body: bytes, status: int, key: bytes) -> bytes:
    """An error answer's body without the API key, should the server (a proxy?) echo it.

    The body's message goes into error reports and log lines, which never show the
    key. JSON can spell it with escapes (`\\u005f` for `_`), so the body is looked at
    decoded too, and what is read from it is blanked after decoding.
    """
    if status < 300 or not key:
        return body
    body = body.replace(key, b"***")
    if b"\\" not in body:
        return body
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body  # not JSON: nothing reads a message from it
    secret = key.decode("ascii")
    try:
        # Compared decoded, not through repr(), which escapes a key's backslash or quotes
        blanked = _blank_strings(data, secret)
        return body if blanked == data else orjson.dumps(blanked)
    except (RecursionError, orjson.JSONEncodeError):  # absurdly deep: keep nothing of it
        return b""


def _blank_strings(value: object, secret: str) -> object:
    """`value` (decoded JSON) with `secret` blanked in every string, keys included."""
    if isinstance(value, str):
        return value.replace(secret, "***")
    if isinstance(value, list):
        return [_blank_strings(item, secret) for item in value]
    if isinstance(value, dict):
        return {
            _blank_strings(name, secret): _blank_strings(item, secret)
            for name, item in value.items()
        }
    return value


def _holds_key(error: BaseException, secret: str) -> bool:
    """Whether the key is in `error`'s text, arguments or attributes (one level deep).

    An httpx request among them counts: it carries the Authorization header.
    """
    values = (str(error), *error.args, *getattr(error, "__dict__", {}).values())
    for value in values:
        if isinstance(value, (httpx.Request, httpx.Headers)):
            return True
        try:
            if secret in (value if isinstance(value, str) else repr(value)):
                return True
        except Exception:  # a repr that fails: the value cannot be vouched for
            return True
    return False


def _rebuilt(error: BaseException, secret: str) -> BaseException:
    """An exception like `error`, its text without the key, and nothing else of it."""
    text = str(error).replace(secret, "***")
    try:
        return type(error)(text)
    except Exception:  # a class that takes other arguments
        if isinstance(error, httpx.TransportError):
            return httpx.TransportError(text)
        return RuntimeError(f"{type(error).__name__}: {text}")


def without_key(exc: BaseException, key: bytes) -> BaseException:
    """`exc` made safe to report: nothing reachable from it holds the API key.

    An error of the transport can quote the answer (h11 quotes a malformed line, and
    a hostile server or proxy can echo the Authorization header in it), keep the
    httpx request (headers included), or have been raised while handling one that
    does (`raise ... from None` keeps `__context__`). Its chain is `detached` and
    a link that holds the key is replaced by one of its type whose text has the key
    blanked.
    """
    secret = key.decode("ascii")

    def replace(link: BaseException) -> BaseException:
        return _rebuilt(link, secret) if secret and _holds_key(link, secret) else link

    return detached(exc, replace)


#: httpx's and httpcore's loggers: at DEBUG, httpcore logs the answers' headers and
#: the errors' texts, either of which a hostile server or proxy can make quote the key.
THIRD_PARTY_LOGGERS = (
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
)


class _KeyFilter(logging.Filter):
    """Blanks the API keys of this process's httpx senders in third-party log records.

    A logger's filters see the records logged to it, not its children's, so it is
    added to each of `THIRD_PARTY_LOGGERS`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a record that cannot be formatted: logging reports it
            return True
        if record.exc_info:  # formatted here, to be blanked too
            text += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info, record.exc_text = None, None
        elif not any(secret in text for secret in self.secrets):
            return True
        for secret in self.secrets:
            text = text.replace(secret, "***")
        record.msg, record.args = text, None
        return True


_KEY_FILTER = _KeyFilter()


def _keep_out_of_logs(key: bytes) -> None:
    """Blank `key` in the records of httpx's and httpcore's loggers, from now on."""
    if not key:
        return
    _KEY_FILTER.secrets.add(key.decode("ascii"))
    for name in THIRD_PARTY_LOGGERS:
        logger = logging.getLogger(name)
        if _KEY_FILTER not in logger.filters:
            logger.addFilter(_KEY_FILTER)


def _send_sync(
    transport: httpx.BaseTransport, request: httpx.Request, deadline: float
) -> tuple[int, str | None, bytes]:
    response = transport.handle_request(request)
    try:
        body = bytearray()
        stream = _raw_body(response)
        if not isinstance(stream, httpx.SyncByteStream):
            raise TypeError("the transport answered with an asynchronous stream")
        for piece in stream:
            body += _within_limit(body, piece)
            if time.monotonic() > deadline:  # a trickled body: free this thread
                raise httpx.ReadTimeout("no whole answer by the request's deadline")
        return response.status_code, _retry_after(response), bytes(body)
    finally:
        response.close()


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine (`localhost`, 127.0.0.0/8, `::1`)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _headers(api_key: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"Authorization", b"Bearer " + api_key.encode("ascii")),
        (b"Content-Type", b"application/json"),
        (b"Accept", b"application/json"),
        (b"User-Agent", USER_AGENT.encode("ascii")),
    ]


#: Called once with the answer to a request, or with the error that ended it: an
#: `httpx.TransportError`, or (a bug of a transport) any other exception.
OnDone = Callable[["Response | None", "BaseException | None"], None]


class Sender(Protocol):
    """What the engine needs from a transport."""

    def start(self, request: Request, on_done: OnDone) -> None:
        """Send one request; `on_done` gets the whole answer, or the error that ended it.

        `on_done` runs once, from the event loop, never from within `start`.
        """

    async def aclose(self) -> None:
        """Release connections; a request started and not answered ends with an error."""


class NativeSender:
    """Sends requests over the lean keep-alive HTTP/1.1 client of `_http11.py`.

    A request goes out on an idle connection, or on one opened for it, and its
    answer comes back by callback, with no task or future per request.
    """

    def __init__(self, base_url: str, api_key: str, *, timeout: float, max_connections: int):
        self._key = api_key.encode("ascii")
        self._pool = Http11Pool(
            base_url, _headers(api_key), timeout=timeout, max_idle=max_connections
        )

    def __repr__(self) -> str:
        return "<NativeSender>"

    def _encode(self, request: Request) -> bytes:
        extra = b""
        if request.idempotency_key is not None:
            extra = b"Idempotency-Key: " + request.idempotency_key.encode() + b"\r\n"
        return self._pool.build(request.path, request.body, extra)

    @property
    def idle(self) -> int:
        """Idle connections open (a request started now opens none)."""
        return self._pool.idle

    def start(self, request: Request, on_done: OnDone) -> None:
        """Send one request; `on_done` gets the answer or the error, once, from the loop."""
        self._pool.start(self._encode(request), partial(self._done, on_done))

    def close_idle(self) -> None:
        """Close the connections idle for longer than the rate needs them."""
        self._pool.close_idle()

    def _done(self, on_done: OnDone, raw: RawResponse | None, error: BaseException | None) -> None:
        if raw is not None:
            status, body = raw.status, raw.body
            if status >= 300:
                body = _blanked(body, status, self._key)
            on_done(Response(status, raw.retry_after, body), None)
        else:
            assert error is not None  # one of the two is given
            on_done(None, without_key(error, self._key))

    async def send(self, request: Request) -> Response:
        """`start`, awaited: the whole answer (raises `httpx.TransportError`)."""
        return await until_done(self.start, request)

    async def aclose(self) -> None:
        """Close every connection; a request started and not answered ends with an error."""
        await self._pool.aclose()


def environment_proxy(base_url: str) -> str | None:
    """The proxy the environment (`HTTPS_PROXY`, `NO_PROXY`...) sets for `base_url`.

    Where proxies come from the environment alone (not macOS or Windows, whose
    system settings `urllib` also reads), no `*_proxy` variable means none, known
    without importing `urllib.request` (and the `email` and `http.client` it pulls in).
    """
    url = urlsplit(base_url)
    host = url.hostname or ""
    if is_loopback(host):
        return None
    if sys.platform not in ("darwin", "win32") and not any(
        name.lower().endswith("_proxy") for name in os.environ
    ):
        return None
    from urllib.request import getproxies, proxy_bypass

    proxies = getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy or proxy_bypass(host):
        return None
    return proxy


def make_sender(
    base_url: str,
    api_key: str,
    *,
    timeout: float,
    max_connections: int,
    transport: AnyTransport | None = None,
) -> Sender:
    """The sender for these options: httpx when a transport or proxy is set, else native."""
    if transport is None and (proxy := environment_proxy(base_url)):
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        transport = httpx.AsyncHTTPTransport(proxy=proxy, limits=limits, retries=0)
        return HttpxSender(base_url, api_key, timeout=timeout, transport=transport)
    if transport is None:
        return NativeSender(base_url, api_key, timeout=timeout, max_connections=max_connections)
    threads = min(max_connections, SYNC_THREADS)
    return HttpxSender(base_url, api_key, timeout=timeout, transport=transport, threads=threads)


class HttpxSender:
    """Sends requests to one Courier base URL with a fixed set of headers.

    Args:
        base_url: Courier's URL, e.g. `https://api.courier.com`.
        api_key: Sent as `Authorization: Bearer <api_key>`; never logged.
        timeout: Seconds allowed for connecting, writing, reading and waiting for a
            pooled connection, each; and twice that for the whole request, so an
            answer trickled byte by byte cannot hold it longer.
        transport: The httpx transport to send with.
        threads: Most threads that run a synchronous transport's requests; they start
            as requests wait for one, and end after 30 s without work (but one).

    An asynchronous transport's connections are opened in the worker's event loop,
    which ends with the client, so `aclose` closes them (httpx's transports stay
    usable: a later client opens new ones). A synchronous transport stays open:
    it is yours to close.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float,
        transport: AnyTransport,
        threads: int = 8,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._headers = _headers(api_key)
        self._key = api_key.encode("ascii")
        _keep_out_of_logs(self._key)
        self._timeout = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
        self._deadline = 2 * timeout  # connect, then the whole answer, as the native client
        self._runner: BlockingRunner | None = None
        self._sending: set[asyncio.Task[Response]] = set()  # started, not yet done
        self._async: httpx.AsyncBaseTransport | None = None
        self._sync: httpx.BaseTransport | None = None
        if isinstance(transport, httpx.AsyncBaseTransport):
            self._async = transport
        elif isinstance(transport, httpx.BaseTransport):
            self._sync = transport
            self._runner = BlockingRunner(threads, "courier-analytics-http")
        else:
            raise TypeError(
                "transport must be an httpx.AsyncBaseTransport or httpx.BaseTransport, "
                f"not {type(transport).__name__}"
            )

    def __repr__(self) -> str:
        return f"<HttpxSender {self._base_url}>"

    def _encode(self, request: Request) -> httpx.Request:
        headers = self._headers
        if request.idempotency_key is not None:
            headers = [*headers, (b"Idempotency-Key", request.idempotency_key.encode())]
        return httpx.Request(
            "POST",
            self._base_url + request.path,
            headers=headers,
            content=request.body,
            extensions={"timeout": self._timeout},
        )

    def start(self, request: Request, on_done: OnDone) -> None:
        """Send one request in a task of its own; `on_done` gets what `send` returns or raises."""
        task = asyncio.ensure_future(self.send(request))
        self._sending.add(task)
        task.add_done_callback(partial(self._done, on_done))

    def _done(self, on_done: OnDone, task: asyncio.Task[Response]) -> None:
        self._sending.discard(task)
        if task.cancelled():
            on_done(None, httpx.TransportError("the sender was closed"))
        elif (error := task.exception()) is not None:
            on_done(None, error)
        else:
            on_done(task.result(), None)

    async def send(self, request: Request) -> Response:
        """Send one request and read the whole answer.

        httpx's timeouts bound each read, not the whole answer: a server sending a
        byte now and then would hold the request (and its user's lane) for ever. So
        the whole request has a deadline too.

        Raises:
            httpx.TransportError: the request could not be sent or its answer read.
        """
        error: BaseException
        try:
            status, retry_after, body = await asyncio.wait_for(
                self._send(self._encode(request)), self._deadline
            )
        except asyncio.TimeoutError as exc:  # TimeoutError since 3.11, an alias
            error = httpx.ReadTimeout(f"no whole answer within {self._deadline:g}s")
            error.__cause__ = exc
        except Exception as exc:  # its text may quote the answer (h11's do), and so on
            error = exc
        else:
            return Response(status, retry_after, _blanked(body, status, self._key))
        # Raised out of the except block, so that no __context__ holds the original
        raise without_key(error, self._key)

    async def _send(self, built: httpx.Request) -> Response:
        if self._async is not None:
            response = await self._async.handle_async_request(built)
            try:
                body = bytearray()
                stream = _raw_body(response)
                if not isinstance(stream, httpx.AsyncByteStream):
                    raise TypeError("the transport answered with a synchronous stream")
                async for piece in stream:
                    body += _within_limit(body, piece)
            finally:
                await response.aclose()
            return Response(response.status_code, _retry_after(response), bytes(body))
        transport, runner = self._sync, self._runner
        if transport is None or runner is None:  # pragma: no cover - one of the two is set
            raise RuntimeError("the sender has no transport")
        deadline = time.monotonic() + self._deadline
        return Response(*await runner.run(lambda: _send_sync(transport, built, deadline)))

    async def aclose(self) -> None:
        """End the requests under way; close an asynchronous transport's connections."""
        sending = set(self._sending)
        running = set(sending)
        while running:
            for task in running:
                task.cancel()
            # A cancellation can be lost (before Python 3.12, asyncio.wait_for drops one
            # that meets the end of what it waits for), so what still runs is cancelled
            # again.
            _, running = await asyncio.wait(running, timeout=0.05)
        await asyncio.gather(*sending, return_exceptions=True)  # retrieves their errors
        if self._runner is not None:
            self._runner.close()
        if self._async is not None:
            await self._async.aclose()
