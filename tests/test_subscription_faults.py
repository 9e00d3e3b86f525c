"""The subscription trigger against misbehaving message servers (scripted WebSocket servers on loopback).

Each case is either retried with backoff and counted in ``reconnects``, or ends the subscription
with a MultiMarketsMsgError that names the cause and the fix.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeClock, run_subscription, set_connection

Handler = Callable[[Any, int], Awaitable[None]]


def push(order_id: int, *, seq: Any = 1, trace: Any = None, msg_code: Any = "trade") -> dict[str, Any]:
    return {
        "msgCode": msg_code,
        "timestamp": 1_700_000_000_000 + order_id,
        "seqId": seq,
        "trace": trace,
        "content": {"bizType": "POSITION_OPEN", "paramMap": {"orderId": str(order_id), "orderStatus": "2"}},
    }


async def handshake(ws: Any) -> None:
    """Answer login and subscribe_asset as the gateway does."""
    for expected in ("login", "subscribe_asset"):
        frame = json.loads(await ws.recv())
        assert frame["head"]["msgType"] == expected
        await ws.send(json.dumps({"msgCode": expected, "seqId": frame["seqId"], "content": {"code": "0"}}))


class ThreadedServer:
    """An asyncio server on a thread of its own, for the time of a ``with`` block, on 127.0.0.1."""

    def __init__(self) -> None:
        self.port = 0
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _start(self) -> Any:
        """Start serving (an async context manager that stops the server) and set ``port``."""
        raise NotImplementedError

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with await self._start():
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> Any:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


class ScriptedServer(ThreadedServer):
    """A websockets server; ``handler(ws, connection_number)`` plays one connection."""

    def __init__(self, handler: Handler, **serve_kwargs: Any) -> None:
        super().__init__()
        self.handler = handler
        self.serve_kwargs = serve_kwargs
        self.connections = 0

    async def _start(self) -> Any:
        from websockets.asyncio.server import serve

        async def play(ws: Any) -> None:
            self.connections += 1
            try:
                await self.handler(ws, self.connections)
            except Exception:  # the client went away: fine
                pass

        server = await serve(play, "127.0.0.1", 0, **self.serve_kwargs)
        self.port = next(iter(server.sockets)).getsockname()[1]
        return server

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/openapi-c/openMsg/{{appId}}"


@pytest.fixture
def use_ws(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    def point(url: str) -> None:
        set_connection(monkeypatch, sandbox.connection(msg_ws_url=url))

    return point


def run(**kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("token", "t" * 40)
    kwargs.setdefault("ping_interval", 5)
    return run_subscription(backoff=0.02, **kwargs)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---- identity -----------------------------------------------------------------------------------


def test_per_connection_seq_ids_without_trace_lose_nothing(use_ws: Any, tmp_path: Path) -> None:
    async def handler(ws: Any, n: int) -> None:
        await handshake(ws)
        for i in range(5):  # every connection counts seqId from 1, and sends no trace
            await ws.send(json.dumps(push((n - 1) * 5 + i, seq=i + 1)))
        if n == 1:
            await ws.close(1011)
        await ws.wait_closed()

    out = tmp_path / "p.jsonl"
    with ScriptedServer(handler) as server:
        use_ws(server.url)
        event = run(max_messages=10, output_path=str(out))
    assert event["status"] == "success" and event["summary"]["messages"] == 10
    assert sorted(int(f["content"]["paramMap"]["orderId"]) for f in lines(out)) == list(range(10))
    assert event["summary"]["reconnects"] == 1


def test_distinct_pushes_sharing_one_seq_id_and_trace(use_ws: Any) -> None:
    async def handler(ws: Any, n: int) -> None:
        await handshake(ws)
        for i in range(5):
            await ws.send(json.dumps(push(i, seq=7, trace="same")))
        await ws.wait_closed()

    with ScriptedServer(handler) as server:
        use_ws(server.url)
        summary = run(max_messages=5)["summary"]
    assert summary["messages"] == 5 and summary["duplicates_dropped"] == 0


def test_unhashable_fields_do_not_end_the_run(use_ws: Any) -> None:
    async def handler(ws: Any, n: int) -> None:
        await handshake(ws)
        await ws.send(json.dumps(push(0, msg_code=["trade"])))
        await ws.send(json.dumps(push(1, seq={"a": 1})))
        await ws.send(json.dumps(push(2, trace=[1, 2])))
        for i in range(3, 6):
            await ws.send(json.dumps(push(i)))
        await ws.wait_closed()

    with ScriptedServer(handler) as server:
        use_ws(server.url)
        event = run(max_messages=5)
    summary = event["summary"]
    # a msgCode that is not a string is no push kind: an unknown frame, counted, never written
    assert event["status"] == "success" and summary["messages"] == 5 and summary["unknown_frames"] == 1


# ---- connections that end ------------------------------------------------------------------------


def test_handshake_failures_are_retried_and_counted(use_ws: Any) -> None:
    """A server restarting: the first handshakes get garbage or a bad header, then it is back."""

    def process_request(connection: Any, request: Any) -> Any:
        from websockets.http11 import Response

        if server.connections < 2:
            server.connections += 1
            return Response(200, "OK", __import__("websockets").datastructures.Headers(), b"not a websocket")
        return None

    async def handler(ws: Any, n: int) -> None:
        await handshake(ws)
        for i in range(3):
            await ws.send(json.dumps(push(i)))
        await ws.wait_closed()

    with ScriptedServer(handler, process_request=process_request) as server:
        use_ws(server.url)
        event = run(max_messages=3)
    assert event["status"] == "success" and event["summary"]["reconnects"] == 2
    assert "handshake" in event["summary"]["last_error"] or "HTTP" in event["summary"]["last_error"]


def test_garbage_instead_of_http_is_retried(use_ws: Any, sandbox: Any) -> None:
    """A raw TCP server that answers the handshake with garbage (InvalidMessage), then with a 101
    whose Sec-WebSocket-Accept is wrong (InvalidHeaderValue), then nothing answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    served = []

    answers = [
        b"\x00\x01garbage\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: bogus\r\n\r\n",
    ]

    def garbage() -> None:
        for answer in answers:
            conn, _ = sock.accept()
            conn.recv(4096)
            conn.sendall(answer)
            time.sleep(0.1)
            conn.close()
            served.append(1)

    thread = threading.Thread(target=garbage, daemon=True)
    thread.start()
    use_ws(f"ws://127.0.0.1:{port}/x/{{appId}}")
    event = run(max_reconnects=2, deadline=time.time() + 10, open_timeout=1)
    sock.close()
    assert event["status"] == "error" and "failed 3 times in a row" in event["message"]
    assert event["summary"]["reconnects"] == 2 and len(served) == 2
    assert "handshake" in event["summary"]["last_error"] or "timed out" in event["summary"]["last_error"]


def test_normal_close_reconnects_with_backoff_and_counts(use_ws: Any, fake_clock: FakeClock) -> None:
    async def handler(ws: Any, n: int) -> None:
        await handshake(ws)
        await ws.close(1000 if n % 2 else 1001)  # a normal close, again and again

    with ScriptedServer(handler) as server:
        use_ws(server.url)
        event = run(deadline=fake_clock.time.time() + 3, reconnect_backoff=0.2, max_reconnects=100)
        logins = server.connections
    summary = event["summary"]
    assert summary["reconnects"] == logins - 1 or summary["reconnects"] == logins
    # backed off: 0.1-0.2 s, then doubling up to 30 s, so a handful of logins in 3 s (not hundreds);
    # the window passes on the client's own clock, moved on by its backoff sleeps
    backoffs = [s for s in fake_clock.sleeps if s >= 0.05]
    assert 2 <= logins <= 8 and len(backoffs) >= logins - 1
    assert "closed the connection (100" in summary["last_error"]


def test_normal_close_without_a_deadline_ends(use_ws: Any) -> None:
    async def handler(ws: Any, n: int) -> None:
        await handshake(ws)
        await ws.close(1000)

    with ScriptedServer(handler) as server:
        use_ws(server.url)
        event = run(deadline=None, reconnect_backoff=0.01, max_reconnects=3)
    assert event["status"] == "error" and "failed 4 times in a row" in event["message"]
    assert event["summary"]["reconnects"] == 3


def test_no_connection_in_the_whole_window_fails(use_ws: Any, fake_clock: FakeClock) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there: a total outage
    use_ws(f"ws://127.0.0.1:{port}/x/{{appId}}")
    # the 1 s window passes on the client's clock, by its backoff sleeps: at least one reconnect
    # happens whatever the load (it used to decide this by wall-clock time and fail on a busy machine)
    event = run(deadline=fake_clock.time.time() + 1.0, reconnect_backoff=0.3, max_reconnects=50)
    assert event["status"] == "error" and "No connection to the message WebSocket" in event["message"]
    assert "msg_ws_url" in event["message"] and event["summary"]["reconnects"] >= 1


def test_hung_handshake_does_not_overshoot_the_deadline(use_ws: Any) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()  # accepts, never answers the upgrade
    use_ws(f"ws://127.0.0.1:{sock.getsockname()[1]}/x/{{appId}}")
    started = time.monotonic()
    event = run(deadline=time.time() + 1.0, open_timeout=30)
    elapsed = time.monotonic() - started
    sock.close()
    assert event["status"] == "error" and "No connection" in event["message"]
    assert elapsed < 30  # the 30 s handshake timeout was cut to the window


# ---- frames --------------------------------------------------------------------------------------


def test_binary_frames_are_written_decoded(use_ws: Any, tmp_path: Path) -> None:
    async def handler(ws: Any, n: int) -> None:
        await handshake(ws)
        await ws.send(b"\xef\xbb\xbf" + json.dumps(push(1), ensure_ascii=False).encode())
        await ws.send(json.dumps(push(2)).encode("utf-16"))
        await ws.send(json.dumps(push(3)).encode())
        await ws.wait_closed()

    out = tmp_path / "p.jsonl"
    with ScriptedServer(handler) as server:
        use_ws(server.url)
        event = run(max_messages=3, output_path=str(out))
    assert event["summary"]["messages"] == 3
    assert [f["content"]["paramMap"]["orderId"] for f in lines(out)] == ["1", "2", "3"]


def test_frame_over_the_size_limit_names_the_setting(use_ws: Any) -> None:
    async def handler(ws: Any, n: int) -> None:
        await handshake(ws)
        big = push(1)
        big["content"]["blob"] = "x" * 5000
        await ws.send(json.dumps(big))
        await ws.wait_closed()

    with ScriptedServer(handler) as server:
        use_ws(server.url)
        event = run(max_messages=1, max_frame_bytes=2000)
        connections = server.connections
    assert event["status"] == "error" and "max_frame_bytes=2000" in event["message"]
    assert "msg_ws_url" not in event["message"] and connections == 1


# ---- the push log ----------------------------------------------------------------------------------


def test_full_disk_ends_the_run_without_reconnecting(use_ws: Any, tmp_path: Path) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")

    async def handler(ws: Any, n: int) -> None:
        await handshake(ws)
        for i in range(5):
            await ws.send(json.dumps(push(i)))
        await ws.wait_closed()

    with ScriptedServer(handler) as server:
        use_ws(server.url)
        out = tmp_path / "pushes.jsonl"
        out.symlink_to("/dev/full")  # every write: ENOSPC
        event = run(max_messages=5, output_path=str(out))
        connections = server.connections
    assert event["status"] == "error" and "disk is full" in event["message"]
    assert event["summary"]["messages"] == 0 and event["summary"]["reconnects"] == 0 and connections == 1


def test_output_under_a_file_is_a_clear_error(use_ws: Any, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    use_ws("ws://127.0.0.1:9/x/{appId}")
    event = run(max_messages=5, output_path=str(tmp_path / "f" / "p.jsonl"))
    assert event["status"] == "error" and event["error_type"] == "MultiMarketsMsgError"
    assert "is a file" in event["message"]
