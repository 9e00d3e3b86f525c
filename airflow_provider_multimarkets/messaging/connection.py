"""One message WebSocket connection, on websockets' Sans-I/O layer (async; no Airflow import).

The protocol itself (the opening handshake and its checks, framing, fragmentation, ping/pong, the
closing handshake, ``max_size``, per-message deflate) is websockets' own ``ClientProtocol``, used as
its docs describe for integrations (https://websockets.readthedocs.io/en/stable/howto/sansio.html).
This module does only the I/O around it: TCP, TLS (verified by default, or with the connection's CA
bundle), an HTTP(S) ``CONNECT`` proxy from the environment (``wss_proxy``/``https_proxy``/
``http_proxy``, ``no_proxy``; as websockets' and requests' clients read them), and timeouts.

Why not websockets' asyncio client: it hands over one message per ``recv()`` (a future and the
message queue's bookkeeping for every frame), about half of what a push costs the subscription.
Here every message of one network read is handed to ``on_message`` in one synchronous pass, then
``on_batch`` runs once (the subscription writes the pushes of that read in one append), all before
the next read. Backpressure is the socket itself: nothing is queued in between, so memory is one
read (at most 256 KiB, asyncio's read size) plus one message (``max_size``).

Errors are websockets' own exceptions, as its asyncio client raises them: ``InvalidURI``,
``InvalidStatus`` and the other ``InvalidHandshake`` kinds while opening, ``ConnectionClosedOK`` /
``ConnectionClosedError`` (with the close frames received and sent) when the connection ends,
``OSError`` and ``TimeoutError`` from the network.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import WebSocketURI, parse_uri

from airflow_provider_multimarkets.api.settings import MSG_WS_COMPRESSIONS
from airflow_provider_multimarkets.exceptions import MultiMarketsMsgError

#: ``on_message(data, binary)``: one whole message (a text message's UTF-8 bytes, not decoded);
#: a true result stops the reading (the subscription is done).
OnMessage = Callable[[bytes, bool], bool]
#: ``on_batch()``: after the messages of one read; a true result stops the reading as well.
OnBatch = Callable[[], bool]
#: the proxy's answer to CONNECT, at most (status line and headers)
MAX_PROXY_ANSWER = 16 * 1024
#: the handshake answer's headers looked for before the protocol gets the bytes as they are
MAX_HANDSHAKE_ANSWER = 64 * 1024

_TEXT, _BINARY, _CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONT


class _Stop(Exception):
    """The application stopped reading (a stop condition holds)."""


class MsgConnection(asyncio.Protocol):
    """An open client WebSocket connection: frames in batches to ``on_message`` / ``on_batch``.

    Open one with :func:`open_connection`. :meth:`wait` returns when ``on_message`` stops the
    reading and raises how the connection ended otherwise (``ConnectionClosedOK`` for a normal
    close, ``ConnectionClosedError``, or what ``on_message``/``on_batch`` raised).
    """

    def __init__(
        self, protocol: ClientProtocol, on_message: OnMessage, on_batch: OnBatch, *, max_size: int | None
    ) -> None:
        loop = asyncio.get_running_loop()
        self.protocol = protocol
        self.on_message = on_message
        self.on_batch = on_batch
        self.transport: asyncio.Transport | None = None
        #: ``time.monotonic()`` of the last bytes received (the client's idle check)
        self.last_data = time.monotonic()
        self._opened: asyncio.Future[None] = loop.create_future()
        self._ended: asyncio.Future[None] = loop.create_future()
        self._lost: asyncio.Future[None] = loop.create_future()
        self._tunnel: asyncio.Future[None] | None = None
        self._proxy_answer = bytearray()
        self._fragments: list[bytes] | None = None
        self._fragments_binary = False
        self._in_fragment = False
        self._buffer = bytearray()  # the start of a frame (or of the handshake answer) not complete yet
        self._split = False  # frames are cut out here (no extension negotiated), see _split_frames
        self._head_fed = False
        self.max_size = max_size if max_size is not None else 1 << 62

    # ---- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.last_data = time.monotonic()
        if self._tunnel is not None and not self._tunnel.done():
            self._proxy_data(data)
            return
        if self._ended.done():  # the application stopped reading: the protocol still sees the closing handshake
            self._drain(data)
            return
        try:
            if self._split:
                self._split_frames(data)
            else:
                self._feed(data)
        except _Stop:
            self._settle(self._ended, None)
        except Exception as exc:  # the application's error ends the connection, and is what wait() raises
            self._settle(self._ended, exc)
            self._abort()
            return
        if self.protocol.close_expected():
            self._close_soon()

    def _drain(self, data: bytes) -> None:
        """After the application stopped: bytes to the protocol only (whole frames first), nothing delivered."""
        protocol = self.protocol
        if not self._opened.done():
            return
        if self._buffer:  # the start of a frame cut out here: the protocol reads from that frame boundary on
            data, self._buffer = bytes(self._buffer) + data, bytearray()
        self._split = False
        protocol.receive_data(data)
        self._flush()
        protocol.events_received()
        if protocol.close_expected():
            self._close_soon()

    def _feed(self, data: bytes) -> None:
        """Bytes for websockets' protocol: the handshake answer, frames that are not plain, or everything."""
        protocol = self.protocol
        rest = b""
        if not self._opened.done():
            rest = self._handshake_data(data)
            if not self._opened.done():
                return
        else:
            protocol.receive_data(data)
            self._flush()
        events: list[Any] = protocol.events_received()  # frames, once the handshake answer is taken
        for frame in events:  # whether a fragmented message is under way (then every frame goes here)
            opcode = frame.opcode
            if opcode is _TEXT or opcode is _BINARY:
                self._in_fragment = not frame.fin
            elif opcode is _CONT and frame.fin:
                self._in_fragment = False
        self._deliver(events)
        if events and self.on_batch():
            raise _Stop
        if protocol.state is not State.OPEN:
            self._split = False  # closing: the protocol sees every byte from here on
        if rest:  # the frames that came with the handshake answer
            if self._split:
                self._split_frames(rest)
            else:
                self._feed(rest)

    def _handshake_data(self, data: bytes) -> bytes:
        """Feed the protocol the handshake answer only; return what follows it (frames), once it is open."""
        protocol = self.protocol
        rest = b""
        if self._head_fed:  # the body of an answer that is not 101: the protocol reads it
            protocol.receive_data(data)
            self._flush()
        else:
            self._buffer += data
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0 and len(self._buffer) <= MAX_HANDSHAKE_ANSWER:
                return b""
            cut = end + 4 if end >= 0 else len(self._buffer)
            head, rest = bytes(self._buffer[:cut]), bytes(self._buffer[cut:])
            self._buffer = bytearray()
            self._head_fed = True
            protocol.receive_data(head)
            self._flush()
            if protocol.handshake_exc is None and protocol.state is State.CONNECTING and rest:
                protocol.receive_data(rest)
                self._flush()
                rest = b""
        if protocol.handshake_exc is not None:
            self._settle(self._opened, protocol.handshake_exc)
            self._abort()
            raise _Stop
        if protocol.state is State.CONNECTING:
            return b""
        events = protocol.events_received()
        assert events and type(events[0]) is Response, events
        self._split = not protocol.extensions  # per-message deflate: every frame through the protocol
        self._opened.set_result(None)
        return rest

    def _split_frames(self, data: bytes) -> None:
        """Cut the frames out of the byte stream: each whole, unfragmented, unmasked text or binary
        frame straight to ``on_message``; any other frame (control frames, fragments, reserved bits, a
        mask, one over ``max_size``) whole to the protocol, which answers pings, closes, and fails the
        connection as RFC 6455 says. The protocol gets whole frames only, so its state stays exact."""
        buffer = self._buffer
        buffer += data
        size, pos, limit, on_message = len(buffer), 0, self.max_size, self.on_message
        try:
            while size - pos >= 2:
                first, second = buffer[pos], buffer[pos + 1]
                length, head = second & 0x7F, 2
                if length == 126:
                    if size - pos < 4:
                        break
                    length, head = (buffer[pos + 2] << 8) | buffer[pos + 3], 4
                elif length == 127:
                    if size - pos < 10:
                        break
                    length, head = int.from_bytes(buffer[pos + 2 : pos + 10], "big"), 10
                if not second & 0x80 and length <= limit:  # else masked (a server must not), or too big
                    end = pos + head + length
                    if end > size:
                        break
                    if (first == 0x81 or first == 0x82) and not self._in_fragment:
                        payload = bytes(buffer[pos + head : end])
                        pos = end
                        if on_message(payload, first == 0x82):
                            raise _Stop
                        continue
                    frame, pos = bytes(buffer[pos:end]), end
                    self._feed(frame)
                    if self._split:
                        continue
                # the protocol judges the rest: it fails the connection, or it is closing
                rest, pos = bytes(buffer[pos:]), size
                self._split = False
                if rest:
                    self._feed(rest)
                return
        finally:
            del buffer[:pos]
        if pos and self.on_batch():
            raise _Stop

    def _deliver(self, events: list[Any]) -> None:
        on_message = self.on_message
        for frame in events:
            opcode = frame.opcode
            if opcode is _TEXT or opcode is _BINARY:
                if frame.fin:
                    data = frame.data  # the protocol's reader hands over a bytearray: bytes, hashable
                    if on_message(data if type(data) is bytes else bytes(data), opcode is _BINARY):
                        raise _Stop
                    continue
                self._fragments, self._fragments_binary = [frame.data], opcode is _BINARY
            elif opcode is _CONT and self._fragments is not None:
                self._fragments.append(frame.data)
                if frame.fin:
                    data, self._fragments = b"".join(self._fragments), None
                    if on_message(data, self._fragments_binary):
                        raise _Stop
            # ping (answered by the protocol), pong, close: nothing for the application

    def eof_received(self) -> bool | None:
        try:
            self.protocol.receive_eof()
        except EOFError:  # websockets < 14: not idempotent
            pass
        self._flush()
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        protocol = self.protocol
        if protocol.state is not State.CLOSED:
            try:
                protocol.receive_eof()  # no EOF was read (reset, abort): the protocol learns it here
            except EOFError:  # websockets < 14: not idempotent
                pass
        if not self._opened.done():
            if protocol.handshake_exc is not None:
                self._settle(self._opened, protocol.handshake_exc)
            elif self._tunnel is not None and not self._tunnel.done():
                error = exc or InvalidHandshake("the proxy closed the connection")
                self._settle(self._tunnel, error)
                self._settle(self._opened, error)
            else:
                self._settle(self._opened, exc or InvalidHandshake("the connection closed during the handshake"))
        try:
            self.on_batch()  # what the last read handed over is written before the end is reported
        except Exception as error:
            self._settle(self._ended, error)
        self._settle(self._ended, protocol.close_exc)
        self._settle(self._lost, None)

    # ---- the application's side ---------------------------------------------------------------

    async def send(self, text: str) -> None:
        """Send one text message (raises ``ConnectionClosed`` when the connection is no longer open)."""
        protocol = self.protocol
        if protocol.state is not State.OPEN:
            raise protocol.close_exc
        protocol.send_text(text.encode("utf-8"))
        self._flush()

    async def wait(self) -> None:
        """Until the application stops reading (returns) or the connection ends (raises how)."""
        await asyncio.shield(self._ended)

    async def close(self, timeout: float = 2.0) -> None:
        """The closing handshake (code 1000), then the TCP connection; ``timeout`` bounds the wait."""
        protocol = self.protocol
        self._settle(self._ended, None)  # nothing more is delivered: what comes now is not read
        if protocol.state is State.OPEN:
            protocol.send_close(1000)
            self._flush()
        if self.transport is not None and not self._lost.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._lost), timeout)
            except asyncio.TimeoutError:
                pass
        self._abort()

    @property
    def close_code(self) -> int | None:
        return self.protocol.close_code

    @property
    def close_reason(self) -> str | None:
        return self.protocol.close_reason

    # ---- helpers ----------------------------------------------------------------------------

    def _flush(self) -> None:
        transport = self.transport
        if transport is None:
            return
        for chunk in self.protocol.data_to_send():
            if chunk:
                transport.write(chunk)
            elif transport.can_write_eof():
                transport.write_eof()  # the protocol's end of stream (after the closing handshake)

    def _close_soon(self) -> None:
        """A client waits for the server to close TCP after the closing handshake, but not forever."""
        asyncio.get_running_loop().call_later(2.0, self._abort)

    def _abort(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    @staticmethod
    def _settle(future: asyncio.Future[None], exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is None:
            future.set_result(None)
        else:
            future.set_exception(exc)
            future.exception()  # retrieved: no "exception was never retrieved" when nobody waits

    # ---- through a proxy ----------------------------------------------------------------------

    def _proxy_data(self, data: bytes) -> None:
        assert self._tunnel is not None
        self._proxy_answer += data
        end = self._proxy_answer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._proxy_answer) > MAX_PROXY_ANSWER:
                self._settle(self._tunnel, InvalidHandshake("the proxy's answer to CONNECT is too long"))
                self._abort()
            return
        head = bytes(self._proxy_answer[:end]).decode("latin-1")
        rest = bytes(self._proxy_answer[end + 4 :])
        status_line = head.split("\r\n", 1)[0]
        parts = status_line.split(" ", 2)
        status = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0
        if not 200 <= status < 300:
            error: Exception
            if status == 407:
                error = MultiMarketsMsgError(
                    "The proxy for the message WebSocket asks for credentials (HTTP 407). Put them in the proxy "
                    "URL (https_proxy=http://user:password@host:port) or add the platform's host to no_proxy."
                )
            else:
                error = InvalidHandshake(f"the proxy refused CONNECT ({status_line[:200]!r})")
            self._settle(self._tunnel, error)
            self._abort()
            return
        self._settle(self._tunnel, None)
        self._proxy_answer = bytearray(rest)  # a server does not speak first; kept for the handshake anyway


def _proxy_for(uri: WebSocketURI) -> urllib.parse.SplitResult | None:
    """The proxy the environment sets for ``uri``, as websockets' own client picks it (or ``None``)."""
    if urllib.request.proxy_bypass(f"{uri.host}:{uri.port}") or urllib.request.proxy_bypass(uri.host):
        return None
    proxies = urllib.request.getproxies()
    for scheme in ("wss", "socks", "https") if uri.secure else ("ws", "socks", "https", "http"):
        proxy = proxies.get(scheme)
        if proxy:
            parsed = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
            if scheme == "socks" or parsed.scheme.startswith("socks"):
                raise MultiMarketsMsgError(
                    f"The environment sets a SOCKS proxy ({parsed.scheme}://{parsed.hostname}:{parsed.port}) for the "
                    "message WebSocket, which supports HTTP(S) proxies only. Set https_proxy to an HTTP proxy, or add "
                    f"{uri.host} to no_proxy."
                )
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise MultiMarketsMsgError(
                    f"The proxy set in {scheme}_proxy ({parsed.scheme or 'no scheme'}://{parsed.hostname or '?'}) is not "
                    f"an http:// or https:// URL. Fix it, or add {uri.host} to no_proxy."
                )
            return parsed
    return None


def _connect_request(uri: WebSocketURI, proxy: urllib.parse.SplitResult) -> bytes:
    host = f"[{uri.host}]" if ":" in uri.host else uri.host
    lines = [f"CONNECT {host}:{uri.port} HTTP/1.1", f"Host: {host}:{uri.port}"]
    if proxy.username is not None:
        user = urllib.parse.unquote(proxy.username)
        password = urllib.parse.unquote(proxy.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        lines.append(f"Proxy-Authorization: Basic {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def ssl_context(verify: bool | str = True) -> ssl.SSLContext:
    """TLS for ``wss://``: verified against the system's CAs, a CA bundle path, or (``False``) not at all."""
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)


def _extensions(compression: str) -> list[Any] | None:
    if compression == "none":
        return None
    if compression == "deflate":
        from websockets.extensions.permessage_deflate import enable_client_permessage_deflate

        return list(enable_client_permessage_deflate(None))
    raise MultiMarketsMsgError(
        f"msg_ws_compression must be one of {', '.join(MSG_WS_COMPRESSIONS)}, got {compression!r}."
    )


async def open_connection(
    url: str,
    *,
    on_message: OnMessage,
    on_batch: OnBatch,
    open_timeout: float,
    max_size: int,
    compression: str = "none",
    verify: bool | str = True,
) -> MsgConnection:
    """Open the connection (TCP, TLS, proxy, handshake) within ``open_timeout`` seconds."""
    uri = parse_uri(url)  # InvalidURI
    protocol = ClientProtocol(uri, extensions=_extensions(compression), max_size=max_size)
    connection = MsgConnection(protocol, on_message, on_batch, max_size=max_size)
    try:
        await asyncio.wait_for(_open(connection, uri, verify), open_timeout)
    except BaseException:
        connection._abort()
        raise
    return connection


async def _open(connection: MsgConnection, uri: WebSocketURI, verify: bool | str) -> None:
    loop = asyncio.get_running_loop()
    context = ssl_context(verify) if uri.secure else None
    proxy = _proxy_for(uri)
    if proxy is None:
        await loop.create_connection(
            lambda: connection, uri.host, uri.port, ssl=context, server_hostname=uri.host if context else None
        )
    else:
        proxy_tls = ssl_context(True) if proxy.scheme == "https" else None
        assert proxy.hostname is not None  # checked in _proxy_for
        await loop.create_connection(
            lambda: connection,
            proxy.hostname,
            proxy.port or (443 if proxy.scheme == "https" else 80),
            ssl=proxy_tls,
            server_hostname=proxy.hostname if proxy_tls else None,
        )
        connection._tunnel = loop.create_future()
        assert connection.transport is not None
        connection.transport.write(_connect_request(uri, proxy))
        await asyncio.shield(connection._tunnel)
        if context is not None:
            transport = await loop.start_tls(connection.transport, connection, context, server_hostname=uri.host)
            assert transport is not None
            connection.transport = transport  # type: ignore[assignment]
    protocol = connection.protocol
    protocol.send_request(protocol.connect())
    connection._flush()
    leftover = bytes(connection._proxy_answer) if connection._tunnel is not None else b""
    connection._proxy_answer = bytearray()
    if leftover:
        connection.data_received(leftover)
    await asyncio.shield(connection._opened)
