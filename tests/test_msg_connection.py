"""The message socket on websockets' own asyncio client: framing property, handshake, proxy, TLS, compression.

Property: any stream of frames (pushes, fragmented or not, with pings and unknown frames in
between), cut into any chunks, gives the same pushes: through websockets' own parser
(``ClientProtocol``, Sans-I/O) and the client's frame handling, and over a real socket against
a raw asyncio server that writes the chunks one by one. The rest runs over loopback sockets.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import ssl
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import run_subscription, set_connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_hostile_servers import RawServer, accept, behave_after_login, login
from test_subscription_faults import ScriptedServer, ThreadedServer, handshake, push
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from airflow_provider_multimarkets.exceptions import MultiMarketsConfigError
from airflow_provider_multimarkets.messaging.client import MultiMarketsMsgClient, SubscriptionSpec
from airflow_provider_multimarkets.messaging.subscription import SubscriptionRecorder
from airflow_provider_multimarkets.messaging.ws import choose_proxy, connect_arguments, ssl_context
from airflow_provider_multimarkets.sandbox import SandboxConfig


def server_frame(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin).serialize(mask=False)


# ---- the property: any stream, cut into any chunks, gives the same pushes ---------------------------

push_content = st.text(max_size=60)  # any text: unicode, quotes, escapes
stream_item = st.one_of(
    st.tuples(st.just("push"), st.integers(0, 10**6), push_content, st.integers(1, 3), st.booleans()),
    st.tuples(st.just("unknown"), st.sampled_from(['{"msgCode":"heartbeat"}', '{"header":{"bizType":"pong"}}'])),
    st.tuples(st.just("ping"), st.binary(max_size=8)),
)


def _encode(items: list[tuple[Any, ...]]) -> tuple[bytes, list[dict[str, Any]], int]:
    """The server's bytes for a stream, the pushes in it, and how many unknown frames."""
    data, pushes, unknown = b"", [], 0
    for item in items:
        if item[0] == "ping":
            data += server_frame(Opcode.PING, item[1])
        elif item[0] == "unknown":
            data += server_frame(Opcode.TEXT, item[1].encode())
            unknown += 1
        else:
            _, order_id, note, fragments, ping_inside = item
            body = push(order_id, seq=len(pushes) + 1)
            body["content"]["note"] = note
            body["content"]["n"] = len(pushes)  # distinct pushes (the same push sent again is a duplicate)
            pushes.append(body)
            raw = json.dumps(body, ensure_ascii=False).encode()
            step = max(1, len(raw) // fragments)
            parts = [raw[i : i + step] for i in range(0, len(raw), step)]
            for i, part in enumerate(parts):
                opcode = Opcode.TEXT if i == 0 else Opcode.CONT
                data += server_frame(opcode, part, fin=i == len(parts) - 1)
                if ping_inside and i == 0 and len(parts) > 1:
                    data += server_frame(Opcode.PING, b"in-between")  # control frames may sit between fragments
    return data, pushes, unknown


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False) if b > a] or [b""]


def _through_websockets(chunks: list[bytes]) -> SubscriptionRecorder:
    """websockets' own parser, chunk by chunk, then the client's frame handling on each message."""
    protocol = ClientProtocol(parse_uri("ws://127.0.0.1/x"), state=State.OPEN, max_size=None)
    client = MultiMarketsMsgClient(SubscriptionSpec(token="t" * 40))
    recorder = SubscriptionRecorder(inline_limit=10_000)
    fragments: list[bytes] = []
    for chunk in chunks:
        protocol.receive_data(chunk)
        for event in protocol.events_received():
            if event.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                fragments.append(bytes(event.data))
                if event.fin:
                    client._handle(b"".join(fragments), recorder)
                    fragments = []
        recorder.commit()
    return recorder


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(stream_item, max_size=10), st.lists(st.integers(min_value=0), max_size=12))
def test_any_stream_cut_into_any_chunks_gives_the_same_pushes(items: list[tuple[Any, ...]], cuts: list[int]) -> None:
    data, pushes, unknown = _encode(items)
    whole, cut = _through_websockets([data]), _through_websockets(_cut(data, cuts))
    assert cut.inline == whole.inline == pushes
    assert cut.unknown_frames == whole.unknown_frames == unknown
    assert cut.malformed == whole.malformed == 0


class ChunkedServer(RawServer):
    """Plays ``script`` (the chunks of one stream) to each connection, one chunk per write."""

    def __init__(self) -> None:
        self.script: list[bytes] = []

        async def play(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            await accept(reader, writer)
            await login(reader, writer)
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for chunk in self.script:
                writer.write(chunk)
                await writer.drain()
                await asyncio.sleep(0.001)  # a chance for each chunk to be read on its own
            writer.write(server_frame(Opcode.TEXT, json.dumps(END).encode()))
            await writer.drain()
            await behave_after_login(reader, writer)

        super().__init__(play)


END = push(999_999_999, seq=0)


@pytest.fixture(scope="module")
def chunked_server() -> Any:
    with ChunkedServer() as server:
        yield server


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(st.lists(stream_item, max_size=6), st.lists(st.integers(min_value=0), max_size=12))
def test_over_a_real_socket_any_chunks_give_the_same_pushes(
    chunked_server: Any, sandbox: Any, tmp_path_factory: Any, items: list[tuple[Any, ...]], cuts: list[int]
) -> None:
    data, pushes, unknown = _encode(items)
    chunked_server.script = _cut(data, cuts)
    with pytest.MonkeyPatch.context() as monkeypatch:
        set_connection(monkeypatch, sandbox.connection(msg_ws_url=chunked_server.url))
        out = tmp_path_factory.mktemp("chunks") / "p.jsonl"
        event = run_subscription(token="t" * 40, max_messages=len(pushes) + 1, output_path=str(out), window=60)
    assert event["status"] == "success", event
    # one record per "\n" (str.splitlines would also cut at the U+0085 or U+2028 a push's text may hold)
    written = [json.loads(line) for line in out.read_text(encoding="utf-8").split("\n") if line]
    assert written == [*pushes, END] and event["summary"]["unknown_frames"] == unknown


def test_connect_arguments_follow_the_connection() -> None:
    """What websockets is asked for: TLS only for wss://, compression as configured, the bounds."""
    plain = connect_arguments(
        parse_uri("ws://h/x"),
        verify=True,
        compression="none",
        open_timeout=5,
        max_size=10,
        ping_interval=15,
        ping_timeout=35,
    )
    assert "ssl" not in plain and plain["compression"] is None and plain["max_size"] == 10
    assert plain["ping_interval"] == 15 and plain["ping_timeout"] == 35 and plain["write_limit"] == 64 * 1024
    secure = connect_arguments(
        parse_uri("wss://h/x"),
        verify=False,
        compression="deflate",
        open_timeout=5,
        max_size=10,
        ping_interval=15,
        ping_timeout=35,
    )
    assert secure["ssl"].verify_mode is ssl.CERT_NONE and secure["compression"] == "deflate"


# ---- over loopback --------------------------------------------------------------------------------


@pytest.fixture
def use_ws(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    def point(url: str, **extra: Any) -> None:
        set_connection(monkeypatch, sandbox.connection(msg_ws_url=url, **extra))

    return point


def test_handshake_answer_and_pushes_in_one_segment(use_ws: Any) -> None:
    """A raw server that writes its 101, the login answers and two pushes in one send."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()

    def serve() -> None:
        conn, _ = sock.accept()
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key")
        )
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())  # noqa: S324
        answer = (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        frames = b"".join(server_frame(Opcode.TEXT, json.dumps(push(i, seq=i)).encode()) for i in (1, 2))
        conn.sendall(answer + frames)
        try:
            while conn.recv(4096):
                pass
        except OSError:
            pass
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    use_ws(f"ws://127.0.0.1:{sock.getsockname()[1]}/x/{{appId}}")
    event = run_subscription(token="t" * 40, max_messages=2, window=10)
    sock.close()
    assert event["status"] == "success" and event["summary"]["messages"] == 2


class ConnectProxy(ThreadedServer):
    """An HTTP CONNECT proxy (optionally asking for credentials): records what it is asked to tunnel."""

    def __init__(self, require: str | None = None) -> None:
        super().__init__()
        self.require = require
        self.requests: list[bytes] = []

    async def _start(self) -> Any:
        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except OSError:
                pass
            finally:
                writer.close()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests.append(head)
            if self.require is not None and f"Proxy-Authorization: Basic {self.require}".encode() not in head:
                writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                writer.close()
                return
            host, port = head.split(b" ")[1].decode().rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return server


def test_subscription_through_an_http_proxy(sandbox_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook

    sb = sandbox_factory(SandboxConfig(trade_stream_rate=200))
    set_connection(monkeypatch, sb.connection())
    token = MultiMarketsHook().get_msg_token()
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with ConnectProxy(require=base64.b64encode(b"mm:s3cret").decode()) as proxy:
        monkeypatch.setenv("ws_proxy", f"http://mm:s3cret@127.0.0.1:{proxy.port}")
        event = run_subscription(token=token, max_messages=20, window=15)
        assert event["status"] == "success" and event["summary"]["messages"] == 20
        port = sb.connection()["extra"]["msg_ws_url"].split(":")[2].split("/")[0]
        assert proxy.requests and proxy.requests[0].startswith(f"CONNECT 127.0.0.1:{port} HTTP/1.1".encode())
        # wrong credentials: a clear error, no reconnect loop
        monkeypatch.setenv("ws_proxy", f"http://mm:wrong@127.0.0.1:{proxy.port}")
        event = run_subscription(token=token, max_messages=20, window=15)
    assert event["status"] == "error" and "HTTP 407" in event["message"] and "no_proxy" in event["message"]
    assert "wrong" not in event["message"] and "s3cret" not in event["message"]


def test_proxy_choice_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """websockets' own choice (wss_proxy/ws_proxy, SOCKS, https_proxy, http_proxy; no_proxy), checked."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    uri = parse_uri("wss://gateway.example/openMsg/1")
    assert choose_proxy(uri) is None
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    assert choose_proxy(uri) == "http://proxy.example:3128"
    monkeypatch.setenv("wss_proxy", "http://ws-proxy.example:8080")
    assert choose_proxy(uri) == "http://ws-proxy.example:8080"  # the WebSocket-specific one first
    monkeypatch.setenv("no_proxy", "gateway.example")
    assert choose_proxy(uri) is None
    assert choose_proxy(parse_uri("ws://other.example/x")) == "http://proxy.example:3128"  # ws:// takes https_proxy too


def test_per_message_deflate_when_asked(sandbox_factory: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook

    sb = sandbox_factory(SandboxConfig(trade_stream_rate=300))
    set_connection(monkeypatch, sb.connection(msg_ws_compression="deflate"))
    event = run_subscription(
        token=MultiMarketsHook().get_msg_token(), max_messages=50, output_path=str(tmp_path / "p.jsonl"), window=15
    )
    assert event["status"] == "success" and event["summary"]["messages"] == 50
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 50
    set_connection(monkeypatch, sb.connection(msg_ws_compression="brotli"))
    with pytest.raises(MultiMarketsConfigError, match="msg_ws_compression"):
        MultiMarketsHook().settings  # noqa: B018


def test_tls_context_follows_verify(tmp_path: Path) -> None:
    """``verify`` of the connection: websockets gets this context for wss:// (and none for ws://)."""
    assert ssl_context(True).verify_mode is ssl.CERT_REQUIRED and ssl_context(True).check_hostname
    unverified = ssl_context(False)
    assert unverified.verify_mode is ssl.CERT_NONE and not unverified.check_hostname
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate\n")
    with pytest.raises(ssl.SSLError):  # a bundle with no CA in it is refused, never ignored
        ssl_context(str(bundle))


def test_server_close_codes_end_the_connection_as_websockets_says(use_ws: Any) -> None:
    async def handler(ws: Any, n: int) -> None:
        await handshake(ws)
        await ws.send(json.dumps(push(1)))
        await ws.close(4001, "token expired")

    with ScriptedServer(handler) as server:
        use_ws(server.url)
        event = run_subscription(token="t" * 40, max_messages=5, window=10)
    assert event["status"] == "error" and event["error_type"] == "MultiMarketsMsgAuthError"
    assert event["summary"]["messages"] == 1  # the push before the close is written


def test_text_frame_that_is_not_utf8_is_skipped_and_counted(use_ws: Any, tmp_path: Path) -> None:
    async def handler(ws: Any, n: int) -> None:
        await handshake(ws)
        await ws.send(b'{"msgCode":"trade","x":"\xff\xfe"}', text=True)  # a text frame that is not UTF-8
        await ws.send(json.dumps(push(1)))
        await ws.wait_closed()

    out = tmp_path / "p.jsonl"
    with ScriptedServer(handler) as server:
        use_ws(server.url)
        event = run_subscription(token="t" * 40, max_messages=1, output_path=str(out), window=10)
    summary = event["summary"]
    assert event["status"] == "success" and summary["messages"] == 1 and summary["malformed_frames"] == 1
    assert summary["reconnects"] == 0 and out.read_text().count("\n") == 1
