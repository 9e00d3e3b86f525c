"""The message socket against hostile servers (issue 21): raw asyncio servers on 127.0.0.1, real sockets.

Each case ends as documented: a close with a code is read as that close whatever the timing of
pings; memory stays bounded under ping floods, endless fragments and a server that never reads
(RSS growth under 50 MB); a peer that completes no frame within the idle timeout is idle; a bad
proxy value names its variable; a too-deep frame is a malformed frame, also in the push log. No
raw exception leaves the subscription. No outcome depends on a short wall-clock window: the
servers are driven by what the client sends, and time bounds are generous.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import run_subscription, set_connection
from test_subscription_faults import ThreadedServer, push

Play = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: the longest any hostile server keeps going on its own (the client ends far sooner)
SERVER_BOUND = 40.0


class RawServer(ThreadedServer):
    """A raw asyncio TCP server: ``play(reader, writer, connection_number)`` plays one connection."""

    def __init__(self, play: Play) -> None:
        super().__init__()
        self.play = play
        self.connections = 0

    async def _start(self) -> Any:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await asyncio.wait_for(self.play(reader, writer, self.connections), SERVER_BOUND)
            except (Exception, asyncio.TimeoutError):  # the client went away, or the bound: fine
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return server

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/openapi-c/openMsg/{{appId}}"


async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer the WebSocket upgrade (101)."""
    request = await reader.readuntil(b"\r\n\r\n")
    key = next(
        line.split(b":", 1)[1].strip()
        for line in request.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key")
    )
    accept_key = base64.b64encode(hashlib.sha1(key + GUID).digest())  # noqa: S324 - RFC 6455
    writer.write(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_key + b"\r\n\r\n"
    )
    await writer.drain()


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, length: int | None = None) -> bytes:
    """An unmasked server frame; ``length`` overrides the length field (a lie, for hostile cases)."""
    size = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | opcode])
    if size < 126:
        head += bytes([size])
    elif size < 1 << 16:
        head += bytes([126]) + size.to_bytes(2, "big")
    else:
        head += bytes([127]) + size.to_bytes(8, "big")
    return head + payload


def text(obj: Any) -> bytes:
    return frame(0x1, json.dumps(obj).encode())


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One (masked) client frame: opcode and payload."""
    first, second = await reader.readexactly(2)
    size = second & 0x7F
    if size == 126:
        size = int.from_bytes(await reader.readexactly(2), "big")
    elif size == 127:
        size = int.from_bytes(await reader.readexactly(8), "big")
    mask = await reader.readexactly(4) if second & 0x80 else b"\0\0\0\0"
    data = await reader.readexactly(size)
    return first & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(data))


async def login(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read ``login`` and ``subscribe_asset``, answer the login as the H5 client expects."""
    for expected in ("login", "subscribe_asset"):
        opcode, data = await read_frame(reader)
        while opcode != 0x1:  # websockets' protocol pings in between
            if opcode == 0x9:
                writer.write(frame(0xA, data))
            opcode, data = await read_frame(reader)
        assert json.loads(data)["head"]["msgType"] == expected
        if expected == "login":
            writer.write(text({"msgCode": "subscribe_success", "content": {"code": "0"}}))
    await writer.drain()


async def behave(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pushes: int = 1) -> None:
    """A well-behaved connection: log in, send ``pushes`` trade pushes, answer pings until the end."""
    await login(reader, writer)
    for i in range(pushes):
        writer.write(text(push(100 + i, seq=i + 1)))
    await writer.drain()
    while True:
        opcode, data = await read_frame(reader)
        if opcode == 0x9:
            writer.write(frame(0xA, data))
        elif opcode == 0x8:
            writer.write(frame(0x8, data[:2]))
            await writer.drain()
            return


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def peak_rss_growth() -> Iterator[list[int]]:
    """The growth of this process's resident memory over the block (peak minus start), sampled."""
    start = _rss()
    peak = [start]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], _rss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = [0]
    try:
        yield result
    finally:
        stop.set()
        sampler.join(5)
        result[0] = max(peak[0], _rss()) - start


@pytest.fixture
def use_ws(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    def point(url: str) -> None:
        set_connection(monkeypatch, sandbox.connection(msg_ws_url=url))

    return point


def run(**kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("token", "t" * 40)
    kwargs.setdefault("ping_interval", 5)
    kwargs.setdefault("window", 60)
    return run_subscription(backoff=0.02, **kwargs)


MB = 1 << 20


# ---- a close with a code, whatever the timing of pings ------------------------------------------------


@pytest.mark.parametrize("code", [4001, 1000, 1001])
def test_a_close_while_tcp_stays_open_is_read_as_that_close(use_ws: Any, code: int) -> None:
    """The server sends a close frame and keeps TCP open 3 s; pings fall due in that gap (0.2 s)."""

    async def play(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        if n > 1:
            await accept(reader, writer)
            await behave(reader, writer)
            return
        await accept(reader, writer)
        await login(reader, writer)
        writer.write(frame(0x8, code.to_bytes(2, "big") + b"token expired"))
        await writer.drain()
        await asyncio.sleep(3)  # TCP stays open; the client's pings (0.2 s) fall due meanwhile

    with RawServer(play) as server:
        use_ws(server.url)
        event = run(max_messages=1, ping_interval=0.2)
        connections = server.connections
    print(
        f"RESULT close {code} + TCP open 3 s: {event['status']} {event.get('error_type', '')}, "
        f"reconnects {event['summary']['reconnects']}"
    )
    if code == 4001:  # the token path, not a raw AssertionError from a send in CLOSING
        assert event["status"] == "error" and event["error_type"] == "MultiMarketsMsgAuthError"
        assert "fetch a new one" in event["message"] and connections == 1
    else:  # a counted reconnect, then the push of the next connection
        summary = event["summary"]
        assert event["status"] == "success" and summary["messages"] == 1 and summary["reconnects"] == 1
        assert f"closed the connection ({code}" in summary["last_error"]


@pytest.mark.parametrize(
    ("hostile", "ends"),
    [
        (frame(0x1, length=1 << 63), "max_frame_bytes"),  # a frame length of 2**63
        (frame(0x8, (4001).to_bytes(2, "big") + b"\xff\xfe"), "reconnect"),  # a close reason that is not UTF-8
    ],
    ids=["length-2**63", "close-reason-not-utf8"],
)
def test_malformed_lengths_and_close_reasons_end_as_documented(use_ws: Any, hostile: bytes, ends: str) -> None:
    async def play(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await accept(reader, writer)
        if n > 1:
            await behave(reader, writer)
            return
        await login(reader, writer)
        writer.write(hostile)
        await writer.drain()
        await asyncio.sleep(3)

    with RawServer(play) as server:
        use_ws(server.url)
        event = run(max_messages=1, ping_interval=0.2)
    print(
        f"RESULT {ends}: {event['status']} {event.get('error_type', '')} {event.get('message', '')[:80]} "
        f"{event['summary'].get('last_error', '')}"
    )
    if ends == "max_frame_bytes":  # websockets refuses it (1009): the documented error, not retried
        assert event["status"] == "error" and event["error_type"] == "MultiMarketsMsgError"
        assert "max_frame_bytes" in event["message"]
    else:  # websockets fails the connection (1007): a counted reconnect
        assert event["status"] == "success" and event["summary"]["reconnects"] == 1
        assert "1007" in event["summary"]["last_error"]


# ---- memory stays bounded ------------------------------------------------------------------------------


def test_a_ping_flood_from_a_server_that_never_reads(use_ws: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pings as fast as the socket takes them, nothing read: the answers cannot pile up."""
    from airflow_provider_multimarkets.messaging import client

    monkeypatch.setattr(client, "STALL_SECONDS", 2.0)
    sent = [0]

    async def play(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await accept(reader, writer)
        if n > 1:
            await behave(reader, writer)
            return
        burst = frame(0x9) * 8192  # 8192 empty pings: 16 KiB, answered with 48 KiB of pongs
        started = time.monotonic()
        while time.monotonic() - started < 30:  # never reads; its own writes wait when the client stops reading
            writer.write(burst)
            await writer.drain()
            sent[0] += 8192

    with RawServer(play) as server, peak_rss_growth() as growth:
        use_ws(server.url)
        started = time.monotonic()
        event = run(max_messages=1, ping_interval=20, idle_timeout=60)  # only the stall can end it
        elapsed = time.monotonic() - started
    summary = event["summary"]
    print(
        f"RESULT ping flood: {event['status']}, reconnects {summary['reconnects']}, RSS +{growth[0] / MB:.1f} MB, "
        f"{elapsed:.1f} s, {sent[0]} pings sent, last_error: {summary['last_error']}"
    )
    assert event["status"] == "success" and summary["reconnects"] == 1, event
    assert "has not read what the client sent" in summary["last_error"]
    assert growth[0] < 50 * MB, f"RSS grew {growth[0] / MB:.0f} MB under {sent[0]} pings"
    assert elapsed < 60  # generous: the reason above says the stall (2 s here) ended it


@pytest.mark.parametrize("fragment", [b"", b"x" * 1000], ids=["empty", "1000-bytes"])
def test_endless_fragments(use_ws: Any, fragment: bytes) -> None:
    """One text frame without FIN, then continuation frames without end."""

    async def play(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await accept(reader, writer)
        await login(reader, writer)
        writer.write(frame(0x1, b'{"msgCode":"trade",', fin=False))
        burst = frame(0x0, fragment, fin=False) * 256
        while True:
            writer.write(burst)
            await writer.drain()

    with RawServer(play) as server, peak_rss_growth() as growth:
        use_ws(server.url)
        started = time.monotonic()
        event = run(max_messages=1, max_frame_bytes=1_000_000)
        elapsed = time.monotonic() - started
        connections = server.connections
    print(
        f"RESULT endless fragments ({len(fragment)} B): {event.get('error_type')}, RSS +{growth[0] / MB:.1f} MB, "
        f"{elapsed:.1f} s: {event.get('message', '')[:90]}"
    )
    assert event["status"] == "error" and event["error_type"] == "MultiMarketsMsgError", event
    says = "fragments" if not fragment else "max_frame_bytes=1000000"
    assert says in event["message"] and connections == 1
    assert growth[0] < 50 * MB, f"RSS grew {growth[0] / MB:.0f} MB"
    assert elapsed < 30


def test_a_window_ends_on_time_against_a_server_that_never_completes_a_frame(use_ws: Any) -> None:
    async def play(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await accept(reader, writer)
        await login(reader, writer)
        writer.write(frame(0x1, fin=False)[:1] + bytes([126]) + (60000).to_bytes(2, "big"))
        while True:  # a byte now and then of a frame that never ends, pings unanswered
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.2)

    with RawServer(play) as server:
        use_ws(server.url)
        started = time.monotonic()
        event = run(window=4, idle_timeout=60, ping_interval=30)
        elapsed = time.monotonic() - started
    print(f"RESULT never-completed frame, 4 s window: {event['status']}, ended after {elapsed:.1f} s")
    assert event["status"] == "success" and event["summary"]["stop_reason"] == "window"
    # the window, then at most DRAIN_SECONDS (5) of reading after logout; generous for a busy machine
    assert elapsed < 4 + 5 + 10


# ---- a peer that completes no frame is idle --------------------------------------------------------------


def test_a_server_that_drips_one_frame_is_idle(use_ws: Any) -> None:
    """A 1000-byte frame at one byte every 0.3 s: bytes arrive, no frame completes."""

    async def play(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await accept(reader, writer)
        if n > 1:
            await behave(reader, writer)
            return
        await login(reader, writer)
        writer.write(frame(0x1, length=1000)[:4])
        for _ in range(1000):
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.3)

    with RawServer(play) as server:
        use_ws(server.url)
        event = run(max_messages=1, ping_interval=1, idle_timeout=2)
    summary = event["summary"]
    print(f"RESULT drip: {event['status']}, reconnects {summary['reconnects']}, last_error: {summary['last_error']}")
    assert event["status"] == "success" and summary["reconnects"] == 1, event
    assert "no complete frame" in summary["last_error"] or "keepalive" in summary["last_error"]


# ---- proxies ------------------------------------------------------------------------------------------


@pytest.fixture
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ws_proxy", "http://127.0.0.1:99999"),
        ("ws_proxy", ":abc"),
        ("ws_proxy", "http://[::1"),
        ("ws_proxy", "socks5://h:99999"),
        ("HTTPS_PROXY", "http://proxy.example:abc"),
        ("ws_proxy", "ftp://proxy.example:21"),
    ],
)
def test_every_bad_proxy_value_names_its_variable(
    use_ws: Any, no_proxies: None, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    use_ws("ws://127.0.0.1:9/openapi-c/openMsg/{appId}")
    monkeypatch.setenv(variable, value)
    event = run(max_messages=1, window=20)
    print(f"RESULT proxy {variable}={value}: {event['error_type']}: {event['message'][:160]}")
    assert event["status"] == "error" and event["error_type"] == "MultiMarketsMsgError", event
    assert variable in event["message"] and "no_proxy" in event["message"]
    assert event["summary"]["reconnects"] == 0  # not retried: it would fail the same way


def test_a_socks_proxy_without_python_socks_says_what_to_install(
    use_ws: Any, no_proxies: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("websockets")
    try:
        import python_socks  # noqa: F401

        pytest.skip("python-socks is installed")
    except ImportError:
        pass
    use_ws("ws://127.0.0.1:9/openapi-c/openMsg/{appId}")
    monkeypatch.setenv("wss_proxy", "socks5h://127.0.0.1:1080")
    monkeypatch.setenv("ws_proxy", "socks5h://127.0.0.1:1080")
    event = run(max_messages=1, window=20)
    assert event["status"] == "error" and "python-socks" in event["message"] and "ws_proxy" in event["message"]


@pytest.mark.parametrize(
    "answer", [b"", b"HTTP/1.1 \xc2\xb200 Connection established\r\n\r\n"], ids=["closes", "superscript-200"]
)
def test_a_proxy_that_fails_connect_fails_at_once(
    use_ws: Any, no_proxies: None, monkeypatch: pytest.MonkeyPatch, answer: bytes
) -> None:
    """A proxy that closes during CONNECT, or answers ``²00``: each attempt fails at once, not after open_timeout."""

    async def play(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if answer:
            writer.write(answer)
            await writer.drain()

    with RawServer(play) as proxy:
        use_ws("ws://gateway.invalid:80/openapi-c/openMsg/{appId}")
        monkeypatch.setenv("ws_proxy", f"http://127.0.0.1:{proxy.port}")
        started = time.monotonic()
        event = run(max_messages=1, open_timeout=30, max_reconnects=2)
        elapsed = time.monotonic() - started
    print(f"RESULT proxy {answer[:20]!r}: 3 attempts in {elapsed:.1f} s, last_error: {event['summary']['last_error']}")
    assert event["status"] == "error" and "failed 3 times in a row" in event["message"], event
    assert "proxy" in event["summary"]["last_error"].lower()
    assert elapsed < 30  # three attempts, none of which waited the 30 s open_timeout


# ---- too-deep frames ------------------------------------------------------------------------------------


DEEP = b'{"msgCode":"trade","content":' + b"[" * 100_000 + b"]" * 100_000 + b"}"


@pytest.mark.parametrize("fast", ["1", "0"], ids=["orjson", "json"])
def test_a_frame_nested_100000_deep_is_malformed(
    use_ws: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast: str
) -> None:
    from airflow_provider_multimarkets.messaging import codec

    monkeypatch.setenv("MULTIMARKETS_FAST_JSON", fast)
    monkeypatch.setattr(codec, "_loads", None)
    monkeypatch.setattr(codec, "_bytes_loads", None)

    async def play(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await accept(reader, writer)
        await login(reader, writer)
        writer.write(frame(0x1, DEEP) + text(push(1)))
        await writer.drain()
        await behave_after_login(reader, writer)

    out = tmp_path / "p.jsonl"
    with RawServer(play) as server:
        use_ws(server.url)
        event = run(max_messages=1, output_path=str(out))
    summary = event["summary"]
    print(
        f"RESULT deep frame ({fast}): {event['status']}, messages {summary['messages']}, malformed {summary['malformed_frames']}"
    )
    assert event["status"] == "success" and summary["messages"] == 1 and summary["malformed_frames"] == 1
    assert summary["reconnects"] == 0 and len(out.read_text().splitlines()) == 1


async def behave_after_login(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        opcode, data = await read_frame(reader)
        if opcode == 0x9:
            writer.write(frame(0xA, data))
        elif opcode == 0x8:
            return


@pytest.mark.parametrize("fast", ["1", "0"], ids=["orjson", "json"])
def test_a_too_deep_line_in_a_push_log_is_unreadable_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast: str
) -> None:
    from airflow_provider_multimarkets.messaging import codec
    from airflow_provider_multimarkets.storage.push_log import PushLog, read_push_log

    monkeypatch.setenv("MULTIMARKETS_FAST_JSON", fast)
    monkeypatch.setattr(codec, "_loads", None)
    path = tmp_path / "p.jsonl"
    path.write_bytes(DEEP + b"\n" + json.dumps(push(1)).encode() + b"\n")
    for _ in range(2):  # every restart reads it the same way
        with PushLog(str(path)) as log:
            assert log.tally.messages == 1 and log.unreadable_lines == 1
    assert read_push_log(str(path)).unreadable_lines == 1


# ---- nothing raw leaves the subscription ----------------------------------------------------------------


def test_an_unexpected_error_is_an_event_not_a_raw_exception(use_ws: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_multimarkets.messaging.client import MultiMarketsMsgClient

    async def broken(self: Any, *args: Any) -> None:
        raise RuntimeError("a defect with the token " + self.spec.token)

    monkeypatch.setattr(MultiMarketsMsgClient, "_session", broken)
    use_ws("ws://127.0.0.1:9/openapi-c/openMsg/{appId}")
    event = run(max_messages=1, token="s" * 40)
    assert event["status"] == "error" and event["error_type"] == "MultiMarketsMsgError"
    assert "RuntimeError" in event["message"] and "s" * 40 not in event["message"]
