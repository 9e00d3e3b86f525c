"""The message WebSocket connection (hooks/msg_connection.py): framing, handshake, proxy, TLS, compression.

The framing split is checked against websockets' own protocol: any stream of frames, cut into any
chunks, gives the same messages, the same answers to pings and the same ending whether the frames
are cut out here or all go through ``ClientProtocol``. The rest runs over loopback sockets.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
import ssl
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import run_subscription, set_connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_subscription_faults import ScriptedServer, ThreadedServer, handshake, push
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from airflow_provider_multimarkets.exceptions import MultiMarketsConfigError, MultiMarketsMsgError
from airflow_provider_multimarkets.messaging.connection import MsgConnection, _proxy_for, ssl_context
from airflow_provider_multimarkets.sandbox import SandboxConfig

MAX = 70_000


class FakeTransport:
    """Collects what the connection writes (its pongs and close frames)."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def can_write_eof(self) -> bool:
        return False

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True


def server_frame(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin).serialize(mask=False)


async def _play(chunks: list[bytes], *, split: bool, max_size: int = MAX) -> dict[str, Any]:
    messages: list[tuple[bytes, bool]] = []
    protocol = ClientProtocol(parse_uri("ws://127.0.0.1/x"), state=State.OPEN, max_size=max_size)
    conn = MsgConnection(protocol, lambda d, b: messages.append((d, b)) and False, lambda: False, max_size=max_size)
    transport = FakeTransport()
    conn.transport = transport  # type: ignore[assignment]
    conn._opened.set_result(None)
    conn._split = split
    for chunk in chunks:
        conn.data_received(chunk)
    ended: BaseException | None = None
    if conn._ended.done():
        ended = conn._ended.exception()
    # answers the client sent: parse them as a server would
    from websockets.server import ServerProtocol

    server = ServerProtocol(state=State.OPEN, max_size=None)
    server.receive_data(b"".join(transport.written))
    answers = [(f.opcode, bytes(f.data)) for f in server.events_received()]
    return {
        "messages": messages,
        "answers": answers,
        "ended": None if ended is None else (type(ended).__name__, protocol.close_code),
        "state": protocol.state,
    }


def _both(chunks: list[bytes], **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    async def run() -> tuple[dict[str, Any], dict[str, Any]]:
        return await _play(chunks, split=True, **kwargs), await _play(chunks, split=False, **kwargs)

    return asyncio.run(run())


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False) if b > a] or [b""]


message = st.tuples(
    st.sampled_from([Opcode.TEXT, Opcode.BINARY]),
    st.one_of(st.binary(max_size=200), st.integers(min_value=120, max_value=MAX + 500).map(lambda n: b"x" * n)),
    st.integers(min_value=1, max_value=3),  # fragments
    st.booleans(),  # a ping in between
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(message, max_size=12), st.lists(st.integers(min_value=0), max_size=8))
def test_framing_split_matches_the_protocol(messages: list[tuple[Opcode, bytes, int, bool]], cuts: list[int]) -> None:
    stream = b""
    for opcode, data, parts, ping in messages:
        size = max(1, len(data) // parts)
        pieces = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
        for index, piece in enumerate(pieces):
            first, last = index == 0, index == len(pieces) - 1
            stream += server_frame(opcode if first else Opcode.CONT, piece, fin=last)
            if ping and not last:
                stream += server_frame(Opcode.PING, b"are you there")
        if ping:
            stream += server_frame(Opcode.PING, b"p")
    split, plain = _both(_cut(stream, cuts))
    assert split == plain  # messages, pongs, and the ending (a message over max_size: 1009) are the same


@pytest.mark.parametrize(
    "bad",
    [
        Frame(Opcode.TEXT, b"{}").serialize(mask=True),  # a masked frame from a server
        bytes([0xC1, 0x02]) + b"{}",  # a reserved bit (RSV1) without an extension
        bytes([0x83, 0x00]),  # an unknown opcode
        server_frame(Opcode.CONT, b"x"),  # a continuation with no message under way
        server_frame(Opcode.TEXT, b"x" * (MAX + 1)),  # over max_size
        server_frame(Opcode.CLOSE, (1000).to_bytes(2, "big") + b"bye"),  # a normal close
        server_frame(Opcode.CLOSE, (4001).to_bytes(2, "big") + b"token expired"),
    ],
)
def test_frames_the_protocol_must_judge(bad: bytes) -> None:
    good = server_frame(Opcode.TEXT, b'{"a":1}')
    split, plain = _both([good + bad + good])
    assert split == plain
    assert split["messages"] == [(b'{"a":1}', False)]  # nothing after the frame that ends it
    assert split["state"] is not State.OPEN


def test_close_then_more_bytes_are_not_delivered() -> None:
    close = server_frame(Opcode.CLOSE, (1001).to_bytes(2, "big"))
    split, plain = _both([server_frame(Opcode.TEXT, b"1") + close, server_frame(Opcode.TEXT, b"2")])
    assert split == plain and split["messages"] == [(b"1", False)]
    assert (Opcode.CLOSE, (1001).to_bytes(2, "big")) in split["answers"]  # the closing handshake answered


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
    for name in ("ws_proxy", "wss_proxy", "https_proxy", "http_proxy", "all_proxy", "socks_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    uri = parse_uri("wss://gateway.example/openMsg/1")
    assert _proxy_for(uri) is None
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    chosen = _proxy_for(uri)
    assert chosen is not None and (chosen.hostname, chosen.port) == ("proxy.example", 3128)
    monkeypatch.setenv("no_proxy", "gateway.example")
    assert _proxy_for(uri) is None
    monkeypatch.delenv("no_proxy")
    monkeypatch.setenv("wss_proxy", "socks5h://127.0.0.1:1080")
    with pytest.raises(MultiMarketsMsgError, match="SOCKS proxy .* HTTP\\(S\\) proxies only"):
        _proxy_for(uri)


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
