"""The worker's connections: a socket, plain or TLS, read and written from the loop.

Courier has no batch endpoint, so every message is one small request, and what
lies between the socket and the HTTP/1.1 protocol is paid once per message.
asyncio's transports put several Python calls there for each read and write, and
its TLS layer (`asyncio.sslproto`) many more: it runs OpenSSL over memory buffers
and copies each record between them and the socket. Here the socket reads and
writes itself from the loop's reader and writer callbacks (`add_reader`,
`add_writer`): for TLS, the non-blocking `ssl.SSLSocket` is one OpenSSL call per
read and per write. It can also resume a TLS session, which asyncio's layer
cannot: the pool offers each new connection an earlier one's session, and the
server's abbreviated handshake sends and checks no certificate.

`SocketTransport` is an `asyncio.Transport` with what `Http11Pool`'s connections
use: `write`, `abort`, `close`, `is_closing` and `get_extra_info`.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any

__all__ = ["READ_SIZE", "SocketTransport", "connect_tcp", "open_socket"]

#: Bytes read at a time: a TLS record holds at most 16 KiB, an answer a few hundred.
READ_SIZE = 16 * 1024
#: Exceptions that mean "not now": the socket cannot take or give bytes yet.
_NOT_NOW = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


async def connect_tcp(loop: asyncio.AbstractEventLoop, address: str, port: int) -> socket.socket:
    """A non-blocking TCP connection to `address` (an IP address) and `port`.

    Raises `OSError` as `create_connection` does; on cancellation (a connect
    timeout) the socket is closed.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        # Each request is one write, answered before the next: never wait for more.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await loop.sock_connect(sock, (address, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def open_socket(
    loop: asyncio.AbstractEventLoop,
    protocol: asyncio.BufferedProtocol,
    sock: socket.socket,
    tls: tuple[ssl.SSLContext, str, ssl.SSLSession | None] | None,
) -> SocketTransport:
    """Complete the TLS handshake on `sock` (from `connect_tcp`), then give `protocol`
    its transport.

    `tls` is the context, the server's name, and the session of an earlier
    connection to offer for resumption (or `None`). Raises `OSError` (`ssl.SSLError`
    included) as `create_connection` does; on failure or cancellation (a connect
    timeout) the socket is closed.
    """
    try:
        if tls is not None:
            context, server_hostname, session = tls
            sock = context.wrap_socket(
                sock,
                server_hostname=server_hostname,
                do_handshake_on_connect=False,
                session=session,
            )
            await _handshake(loop, sock)
    except BaseException:
        sock.close()
        raise
    transport = SocketTransport(loop, sock, protocol)
    transport.offered = None if tls is None else tls[2]
    protocol.connection_made(transport)
    return transport


async def _handshake(loop: asyncio.AbstractEventLoop, sock: ssl.SSLSocket) -> None:
    """Drive `do_handshake` on a non-blocking socket until it completes."""
    fd = sock.fileno()
    while True:
        try:
            sock.do_handshake()
            return
        except ssl.SSLWantReadError:
            add, remove = loop.add_reader, loop.remove_reader
        except ssl.SSLWantWriteError:
            add, remove = loop.add_writer, loop.remove_writer
        ready: asyncio.Future[None] = loop.create_future()
        add(fd, _settle, ready)
        try:
            await ready
        finally:
            remove(fd)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


#: The protocol of a transport that has told its protocol it is lost.
_GONE = asyncio.BufferedProtocol()


class SocketTransport(asyncio.Transport):
    """A connection's transport: its socket read and written from the loop.

    Reads go into the protocol's buffer (`get_buffer`, `buffer_updated`). A write
    goes out at once; what the socket cannot take yet goes once it can, before
    anything written after it. `abort` and `close` are the same: the connection
    ends at once, without a TLS goodbye (the pool closes a connection only when
    nothing is left to say on it).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol: asyncio.BufferedProtocol,
    ) -> None:
        super().__init__()
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        # Bytes of TLS records that OpenSSL has read and not yet handed out: they
        # wake no reader callback, so the read goes on while there are any.
        self._pending = sock.pending if isinstance(sock, ssl.SSLSocket) else None
        self._unsent = b""  # written, and not yet taken by the socket
        self._writing = False  # whether a writer callback is registered
        self._closed = False
        #: The TLS session this connection offered the server to resume, if any.
        self.offered: ssl.SSLSession | None = None
        loop.add_reader(self._fd, self._read)

    @property
    def session(self) -> ssl.SSLSession | None:
        """The TLS session (`None` without TLS), to offer to the next connection."""
        return self._sock.session if isinstance(self._sock, ssl.SSLSocket) else None

    @property
    def resumed(self) -> bool:
        """Whether the TLS handshake resumed an earlier session."""
        return isinstance(self._sock, ssl.SSLSocket) and bool(self._sock.session_reused)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return self._sock
        if name == "ssl_object" and isinstance(self._sock, ssl.SSLSocket):
            return self._sock
        if name == "peername":
            try:
                return self._sock.getpeername()
            except OSError:
                return default
        return default

    def is_closing(self) -> bool:
        return self._closed

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            return
        if self._unsent:  # behind what the socket has not taken yet
            self._unsent += data
            return
        self._unsent = bytes(data)
        self._send()

    def _send(self) -> None:
        """Write what is unsent; wait for the socket when it cannot take it all yet."""
        data, wait_write = self._unsent, True
        try:
            # A plain socket may take part; OpenSSL (without partial writes, the `ssl`
            # module's mode) takes all or asks to be given the same bytes again.
            sent = self._sock.send(data)
        except ssl.SSLWantReadError:  # TLS needs the server's next record: _read retries
            sent, wait_write = 0, False
            if self._writing:  # a writable socket would call this again at once
                self._writing = False
                self._loop.remove_writer(self._fd)
        except _NOT_NOW:
            sent = 0
        except OSError as exc:  # reset, or a TLS error (`ssl.SSLError` is one)
            self._lose(exc)
            return
        self._unsent = data[sent:]
        if self._unsent:
            if wait_write and not self._writing:
                self._writing = True
                self._loop.add_writer(self._fd, self._send)
        elif self._writing:
            self._writing = False
            self._loop.remove_writer(self._fd)

    def _read(self) -> None:
        """The socket is readable: hand what it has (decrypted) to the protocol."""
        sock, protocol, pending = self._sock, self._protocol, self._pending
        while True:
            try:
                count = sock.recv_into(protocol.get_buffer(READ_SIZE))
            except ssl.SSLWantWriteError:  # TLS must write first (a renegotiation)
                if not self._writing:
                    self._writing = True
                    self._loop.add_writer(self._fd, self._write_then_read)
                return
            except _NOT_NOW:
                return  # a TLS record not yet whole, or one with no data (a ticket)
            except ssl.SSLZeroReturnError:  # the server's TLS goodbye
                count = 0
            except OSError as exc:
                self._lose(exc)
                return
            if not count:
                self._lose(None)
                return
            try:
                protocol.buffer_updated(count)
            except Exception as exc:  # as asyncio's transports: the connection ends at once
                self._loop.call_exception_handler(
                    {"message": "the protocol failed to read", "exception": exc, "transport": self}
                )
                self._lose(exc)
                return
            if self._closed or pending is None or not pending():
                break
        if self._unsent and not self._writing:  # a TLS write that waited on a read
            self._send()

    def _write_then_read(self) -> None:
        """Writable again, after TLS asked to write before it could read."""
        self._writing = False
        self._loop.remove_writer(self._fd)
        if self._unsent:
            self._send()
        if not self._closed:
            self._read()

    def _lose(self, exc: Exception | None) -> None:
        """The connection failed: closed now, and the protocol told from the loop, never
        from within `write` (whose caller has just started a request)."""
        if self._closed:
            return
        self._shut()
        self._loop.call_soon(self._tell_lost, exc)

    def _tell_lost(self, exc: Exception | None) -> None:
        # The protocol refers to its transport: let go of it, so that a closed
        # connection is freed at once, not by the cyclic garbage collector.
        protocol, self._protocol = self._protocol, _GONE
        protocol.connection_lost(exc)

    def _shut(self) -> None:
        self._closed = True
        loop, fd = self._loop, self._fd
        loop.remove_reader(fd)
        if self._writing:
            self._writing = False
            loop.remove_writer(fd)
        self._unsent = b""
        self._sock.close()

    def abort(self) -> None:
        """Close at once; the protocol hears `connection_lost(None)` from the loop."""
        if self._closed:
            return
        self._shut()
        self._loop.call_soon(self._tell_lost, None)

    def close(self) -> None:
        self.abort()
