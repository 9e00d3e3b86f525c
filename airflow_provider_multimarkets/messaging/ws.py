"""How the message socket is opened: websockets' own asyncio client, with our TLS, proxy and limits (no protocol code).

The protocol (handshake, framing, fragments, ping/pong, the closing handshake, ``max_size``,
per-message deflate, HTTP ``CONNECT`` and SOCKS proxies) is websockets' own
(:func:`websockets.asyncio.client.connect`). This module only chooses its arguments:

* **TLS** for ``wss://`` from the connection's ``verify`` extra: the system's CAs, a CA bundle
  path, or (``false``) no verification.
* **Proxies** from the environment, picked by websockets itself (``wss_proxy``/``ws_proxy``, then
  SOCKS, ``https_proxy``, ``http_proxy``; ``no_proxy`` honoured). The chosen value is checked
  first, so that a malformed one is a :class:`MultiMarketsMsgError` naming the variable instead
  of a bare ``ValueError`` from deep inside the client.
* **Bounds** (:class:`BoundedConnection`): websockets answers every ping of the server as soon as
  it reads it, without waiting for its write buffer to drain, so a server that floods pings and
  never reads would grow that buffer without end. While the write buffer is over ``write_limit``,
  the connection stops reading (the server's own TCP buffer then fills and it must stop), and it
  records since when: the client ends a connection stalled for ``STALL_SECONDS`` (:mod:`..limits`). It also
  records when the last complete frame (data or control) arrived: the client's idle rule.

websockets is imported here at module level: this module is imported only when a socket opens.
"""

from __future__ import annotations

import os
import ssl
import time
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.frames import DATA_OPCODES, Frame
from websockets.proxy import get_proxy, parse_proxy
from websockets.uri import WebSocketURI

from airflow_provider_multimarkets.api.settings import MSG_WS_COMPRESSIONS
from airflow_provider_multimarkets.exceptions import MultiMarketsMsgError
from airflow_provider_multimarkets.messaging.limits import CLOSE_TIMEOUT, MAX_QUEUE, WRITE_LIMIT

_monotonic = time.monotonic


class BoundedConnection(ClientConnection):
    """websockets' client connection, plus two facts the subscription needs and one bound.

    ``last_frame``: ``time.monotonic()`` of the last complete frame received (a data frame, a
    ping, a pong, a close). ``messages_in``: whole messages received so far. ``stalled_since``: since when the write buffer is over the limit
    (``None`` while it is not); reading is paused meanwhile (the frame queue does not resume it
    either), so at most one network read of ping answers is added to a buffer that is already full.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last_frame = time.monotonic()
        self.stalled_since: float | None = None
        self.messages_in = 0

    def process_event(self, event: Any) -> None:
        ClientConnection.process_event(self, event)  # (not super(): this runs for every frame)
        self.last_frame = _monotonic()
        if type(event) is Frame and event.fin and event.opcode in DATA_OPCODES:
            self.messages_in += 1  # whole messages received; the client counts those it read

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        resume = self.recv_messages.resume

        def resume_unless_stalled() -> None:  # the frame queue resumes reading: not while stalled
            if self.stalled_since is None:
                resume()

        self.recv_messages.resume = resume_unless_stalled

    def pause_writing(self) -> None:
        super().pause_writing()
        self.stalled_since = time.monotonic()
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        self.stalled_since = None
        if not getattr(self.recv_messages, "paused", False):  # the frame queue's own pause stays
            self.transport.resume_reading()


def ssl_context(verify: bool | str = True) -> ssl.SSLContext:
    """TLS for ``wss://``: verified against the system's CAs, a CA bundle path, or (``False``) not at all."""
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)


def proxy_variable(value: str) -> str:
    """The environment variable that holds ``value`` (for messages), or a description."""
    for name, setting in sorted(os.environ.items()):  # urllib.request.getproxies reads every <scheme>_proxy
        if name.lower().endswith("_proxy") and setting == value:
            return name
    return "the system proxy settings"


_proxies: dict[tuple[str, int, bool, int], str | None] = {}


def choose_proxy(uri: WebSocketURI) -> str | None:
    """The proxy websockets would use for ``uri`` (or ``None``), checked: a malformed value is a
    :class:`MultiMarketsMsgError` naming its variable and the fix, never a bare ``ValueError``.

    The choice scans the whole environment (about 2 ms on a loaded host), so it is made once per
    host and environment: a process's environment changes only from inside it."""
    key = (
        uri.host,
        uri.port,
        uri.secure,
        hash(frozenset((k, v) for k, v in os.environ.items() if "proxy" in k.lower())),
    )
    if key in _proxies:
        return _proxies[key]
    proxy = get_proxy(uri)
    if proxy is None:
        return None
    where = proxy_variable(proxy)
    try:
        parsed = parse_proxy(proxy)
        if not 0 < parsed.port < 65536:
            raise ValueError(f"port {parsed.port} is out of range")
    except Exception as exc:  # ValueError (port, IPv6 brackets), InvalidProxy (scheme, path, credentials)
        detail = str(exc).replace(proxy, "<proxy>")[:200]
        raise MultiMarketsMsgError(
            f"The proxy for the message WebSocket set in {where} is not a valid proxy URL ({detail}). "
            f"Write it as http://host:port (or https://, socks5h://), or add {uri.host} to no_proxy."
        ) from None
    if parsed.scheme.startswith("socks"):
        try:
            import python_socks  # noqa: F401 - websockets needs it for SOCKS
        except ImportError:
            raise MultiMarketsMsgError(
                f"{where} sets a SOCKS proxy ({parsed.scheme}://{parsed.host}:{parsed.port}) for the message "
                "WebSocket; websockets needs the python-socks package for it: pip install 'python-socks[asyncio]', "
                f"or set an HTTP proxy, or add {uri.host} to no_proxy."
            ) from None
    _proxies[key] = proxy
    return proxy


def connect_arguments(
    uri: WebSocketURI,
    *,
    verify: bool | str,
    compression: str,
    open_timeout: float,
    max_size: int,
    ping_interval: float | None,
    ping_timeout: float | None,
) -> dict[str, Any]:
    """The keyword arguments of :func:`websockets.asyncio.client.connect` for one message socket."""
    if compression not in MSG_WS_COMPRESSIONS:
        raise MultiMarketsMsgError(
            f"msg_ws_compression must be one of {', '.join(MSG_WS_COMPRESSIONS)}, got {compression!r}."
        )
    arguments: dict[str, Any] = {
        "compression": "deflate" if compression == "deflate" else None,
        "proxy": choose_proxy(uri),
        "open_timeout": open_timeout,
        "ping_interval": ping_interval,
        "ping_timeout": ping_timeout,
        "close_timeout": CLOSE_TIMEOUT,
        "max_size": max_size,
        "max_queue": MAX_QUEUE,
        "write_limit": WRITE_LIMIT,
        "create_connection": BoundedConnection,
    }
    if uri.secure:
        arguments["ssl"] = ssl_context(verify)
    return arguments
