"""The push-event watcher on Airflow 3.3+: one shared stream (one login, one socket, one token) for the
watchers of a connection and trade types, in ack mode, its state in the asset state store; and the
watcher's own faults (a token file that is not UTF-8, a read-only state_dir, a missing connection).

The shared streams run in Airflow 3.3's own ``SharedStreamManager`` (the triggerer's), against the
sandbox over real sockets; the asset state store is a dict behind the accessor API the triggerer
injects (``aget``/``aset``); persistence is confirmed the way the triggerer's supervisor does.
"""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ORDER_BIZ_TYPE, ORDER_BODY

from airflow_provider_multimarkets._compat import airflow_version

try:
    from airflow.triggers.shared_stream import SharedStreamManager

    SHARED = True
except ImportError:  # Airflow < 3.3
    SHARED = False

needs_shared_streams = pytest.mark.skipif(not SHARED, reason="shared streams need Airflow 3.3")
needs_airflow_3 = pytest.mark.skipif(airflow_version().startswith("2."), reason="event triggers need Airflow 3")


class StateStore:
    """The asset state store (asset name -> key -> JSON value), as the metadata DB keeps it."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], Any] = {}
        self.frozen = False  # a triggerer SIGKILLed: nothing it writes arrives any more
        self.writes = 0

    def accessors(self, *names: str) -> Any:
        store = self

        class Accessor:
            def __init__(self, name: str) -> None:
                self.name = name

            async def aget(self, key: str, default: Any = None) -> Any:
                return copy.deepcopy(store.values.get((self.name, key), default))

            async def aset(self, key: str, value: Any) -> None:
                if store.frozen:
                    raise ConnectionError("supervisor gone")
                store.values[(self.name, key)] = json.loads(json.dumps(value))
                store.writes += 1

        class Accessors:
            def __init__(self) -> None:
                self._by_name = {name: Accessor(name) for name in names}
                self._by_uri: dict[str, Any] = {}

        return Accessors()


class Triggerer:
    """One triggerer's runner: a SharedStreamManager, the triggers it runs, events confirmed stored."""

    def __init__(self, store: StateStore, triggers: list[Any], *, confirm: Any = None) -> None:
        self.store = store
        self.triggers = triggers
        self.events: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(triggers))}
        self.unconfirmed: list[int] = []
        self.confirm = confirm or (lambda trigger_index, payload: True)
        self.error: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._stop: asyncio.Event | None = None

    def _main(self) -> None:
        async def run_all() -> None:
            self._stop = asyncio.Event()
            manager = SharedStreamManager(ack_timeout=60.0)
            self.manager = manager

            async def one(index: int, trigger: Any) -> None:
                key = trigger.shared_stream_key()
                assert key is not None
                stream = manager.subscribe(trigger_id=index, trigger=trigger, key=key)
                try:
                    async for event in trigger.filter_shared_stream(stream):
                        seq = manager.bind_pending_event(trigger_id=index, key=key)
                        self.events[index].append(event.payload)
                        if seq is not None:
                            if self.confirm(index, event.payload):
                                manager.confirm_persisted([seq])  # the supervisor stored it
                            else:
                                self.unconfirmed.append(seq)
                finally:
                    await manager.unsubscribe(index, key)

            tasks = [asyncio.create_task(one(i, t)) for i, t in enumerate(self.triggers)]
            stopper = asyncio.create_task(self._stop.wait())
            await asyncio.wait({stopper, *tasks}, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                if task.done() and task.exception() is not None:
                    self.error = task.exception()
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await manager.stop_all()

        try:
            self._loop.run_until_complete(run_all())
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def __enter__(self) -> Triggerer:
        self._thread.start()
        return self

    def wait(self, what: str, check: Any, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.error is not None:
                raise AssertionError(f"the triggerer failed: {self.error!r}")
            if check():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; events: {self.events}")

    def kill(self) -> None:
        """As a SIGKILL: the state store gets nothing more, then everything stops."""
        self.store.frozen = True
        self.__exit__()
        self.store.frozen = False

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:
                pass
        self._thread.join(30)
        assert not self._thread.is_alive()


def _watcher(store: StateStore, tmp: Path, asset: str, **kwargs: Any) -> Any:
    from airflow_provider_multimarkets.triggers.push_event import MultiMarketsPushEventTrigger

    kwargs.setdefault("state_dir", str(tmp))
    kwargs.setdefault("reconnect_backoff", 0.05)
    kwargs.setdefault("ping_interval", 1.0)
    kwargs.setdefault("lease_seconds", 2.0)
    kwargs.setdefault("cohort_wait", 10.0)
    trigger = MultiMarketsPushEventTrigger(**kwargs)
    trigger.asset_state_store = store.accessors(asset)  # injected by the triggerer before run()
    return trigger


def _place(n: int) -> list[str]:
    from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook

    with MultiMarketsHook() as hook:
        return [str(hook.call(ORDER_BIZ_TYPE, ORDER_BODY, idempotent=False)["orderId"]) for _ in range(n)]


def _order_ids(events: list[dict[str, Any]]) -> list[str]:
    return [str(e["content"]["paramMap"]["orderId"]) for e in events]


def _subscribed(sandbox: Any) -> bool:
    streams = list(sandbox.state.streams.values())
    return bool(streams) and streams[-1].attached and "2" in streams[-1].trade_types


@needs_shared_streams
def test_ten_watchers_with_different_filters_share_one_socket_and_one_token(
    mm_conn: dict[str, Any], sandbox: Any, tmp_path: Path
) -> None:
    store = StateStore()
    symbol = str(ORDER_BODY["symbolId"])
    # 6 watchers whose filters match the orders (each a different filter), 4 whose filters do not
    matching = [{"symbol_ids": [symbol, str(9000 + i)]} for i in range(4)] + [
        {"biz_types": ["POSITION_OPEN", "POSITION_CLOSE"]},
        {"final_only": False},
    ]
    other = [{"symbol_ids": [str(7000 + i)]} for i in range(4)]
    triggers = [_watcher(store, tmp_path, f"asset-{i}", **f) for i, f in enumerate(matching + other)]
    assert len({t.watcher_id() for t in triggers}) == 10
    assert len({t.shared_stream_key() for t in triggers}) == 1
    with Triggerer(store, triggers) as triggerer:
        triggerer.wait("the subscription", lambda: _subscribed(sandbox))
        orders = _place(4)
        triggerer.wait(
            "every matching watcher's events",
            lambda: all(len(triggerer.events[i]) >= 4 for i in range(len(matching))),
        )
        time.sleep(0.5)
    assert sandbox.app.ws_stats["logins"] == 1 and sandbox.app.ws_stats["connections"] == 1  # one socket
    assert sandbox.state.received["getMsgPushToken"] == 1 and len(sandbox.state.streams) == 1  # one token
    for i in range(len(matching)):
        assert _order_ids(triggerer.events[i]) == orders  # each watcher, each order, once
    for i in range(len(matching), 10):
        assert triggerer.events[i] == []
    # the stream's state is in every watched asset's store, the token not in clear when a key is set
    docs = [v for (asset, key), v in store.values.items() if key.startswith("multimarkets.stream.")]
    assert len(docs) == 10 and len({d["sid"] for d in docs}) == 1  # a copy in every watched asset
    newest = max(docs, key=lambda d: d["version"])  # written to the first watcher's asset each time
    assert newest["pending"] == [] and newest["position"]["acked"] == 4 and len(newest["watchers"]) == 10
    assert newest["token"].startswith(("fernet:", "plain:")) and newest["released"] is True  # stopped in order


@needs_shared_streams
def test_a_stream_moved_to_another_host_resumes_its_token_and_replays_only_what_was_not_stored(
    mm_conn: dict[str, Any], sandbox: Any, tmp_path: Path
) -> None:
    store = StateStore()
    host_a, host_b = tmp_path / "host-a", tmp_path / "host-b"  # separate state dirs: separate hosts
    withhold = [False]

    def confirm(index: int, payload: dict[str, Any]) -> bool:
        return not withhold[0]

    first = Triggerer(store, [_watcher(store, host_a, "fills")], confirm=confirm)
    with first:
        first.wait("the subscription", lambda: _subscribed(sandbox))
        stored = _place(3)
        first.wait("3 events", lambda: len(first.events[0]) >= 3)
        # the next order's event reaches the triggerer, which dies before Airflow confirms it stored
        withhold[0] = True
        lost = _place(1)
        first.wait("the 4th event", lambda: len(first.events[0]) >= 4)
        first.kill()
    assert _order_ids(first.events[0]) == stored + lost
    during = _place(2)  # no triggerer runs: the platform queues these for the stream's token
    second = Triggerer(store, [_watcher(store, host_b, "fills")])
    with second:
        second.wait("the replay and the queued pushes", lambda: len(second.events[0]) >= 3, 90)
        time.sleep(1.0)  # pushes the sandbox re-sends on resume (its last 5 s) would arrive by now
    replayed = [e for e in second.events[0] if e.get("replayed")]
    fresh = [e for e in second.events[0] if not e.get("replayed")]
    assert _order_ids(replayed) == lost  # only the push whose event was not confirmed stored
    assert _order_ids(fresh) == during  # what was queued meanwhile, nothing stored before again
    assert sandbox.state.received["getMsgPushToken"] == 1  # the same token on the other host
    assert not list(host_b.glob("*.token"))  # nothing of the state came from a shared disk


@needs_shared_streams
def test_a_stream_held_by_a_live_triggerer_is_not_taken_over(
    mm_conn: dict[str, Any], sandbox: Any, tmp_path: Path
) -> None:
    store = StateStore()
    a = _watcher(store, tmp_path / "a", "shared-asset")
    b = _watcher(store, tmp_path / "b", "shared-asset", symbol_ids=[str(ORDER_BODY["symbolId"])])
    with Triggerer(store, [a]) as first:
        first.wait("the first stream", lambda: _subscribed(sandbox))
        with Triggerer(store, [b]) as second:
            second.wait("a second stream", lambda: len(sandbox.state.streams) == 2 and _subscribed(sandbox), 60)
            orders = _place(2)
            first.wait("events on the first", lambda: len(first.events[0]) >= 2)
            second.wait("events on the second", lambda: len(second.events[0]) >= 2)
    # two triggerers, two tokens: neither took the other's session
    assert [s.connections for s in sandbox.state.streams.values()] == [1, 1]
    assert _order_ids(first.events[0]) == orders and _order_ids(second.events[0]) == orders


# ---- the watcher's own faults (issue 23), on its standalone run ------------------------------------------


class Lines:
    """A logger that keeps what it was asked to log (and whether with a traceback)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, bool]] = []

    def _add(self, level: str, msg: str, *args: Any, **kwargs: Any) -> None:
        self.lines.append((level, msg % args if args else msg, bool(kwargs.get("exc_info"))))

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._add("info", msg, *args, **kwargs)

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._add("warning", msg, *args, **kwargs)

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._add("error", msg, *args, **kwargs)

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._add("debug", msg, *args, **kwargs)

    def exception(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._add("error", msg, *args, exc_info=True)


def _standalone(tmp: Path, **kwargs: Any) -> Any:
    from airflow_provider_multimarkets.triggers.push_event import MultiMarketsPushEventTrigger

    kwargs.setdefault("state_dir", str(tmp))
    kwargs.setdefault("reconnect_backoff", 0.05)
    kwargs.setdefault("ping_interval", 1.0)
    trigger = MultiMarketsPushEventTrigger(**kwargs)
    trigger._log = Lines()
    return trigger


async def _first_events(trigger: Any, count: int, timeout: float) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []

    async def consume() -> None:
        async for event in trigger.run():
            events.append(event.payload)
            if len(events) >= count:
                return

    try:
        await asyncio.wait_for(consume(), timeout)
    finally:
        await trigger.cleanup()
    return events


@needs_airflow_3
def test_a_token_file_that_is_not_utf8_is_reported_replaced_and_the_watch_goes_on(
    mm_conn: dict[str, Any], sandbox: Any, tmp_path: Path
) -> None:
    trigger = _standalone(tmp_path)
    _, token_path = trigger.paths()
    Path(token_path).parent.mkdir(parents=True, exist_ok=True)
    Path(token_path).write_bytes(b"\xff\xfe\x00not a token")

    def place_later() -> None:
        deadline = time.monotonic() + 60
        while not _subscribed(sandbox) and time.monotonic() < deadline:
            time.sleep(0.05)
        _place(1)

    placer = threading.Thread(target=place_later)
    placer.start()
    events = asyncio.run(_first_events(trigger, 1, 90))
    placer.join(60)
    assert len(events) == 1 and trigger.tokens_fetched == 1
    errors = [text for level, text, _ in trigger.log.lines if level == "error"]
    assert any("cannot be used (the file is not UTF-8 text)" in e and token_path in e for e in errors)
    assert Path(token_path).read_text().strip()  # replaced by the new token


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on a read-only file system (a tmpfs mounted ro: root can write nowhere in it)."""
    target = tmp_path / "ro"
    target.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(target)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only file system here: {mounted.stderr.decode()[:200]}")
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=False)


@needs_airflow_3
def test_a_read_only_state_dir_is_one_clear_line_and_the_watcher_never_dies(
    mm_conn: dict[str, Any], sandbox: Any, read_only_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trigger = _standalone(read_only_dir / "events")
    sleeps: list[float] = []

    async def fake_sleep(delay: float) -> None:  # the watcher's back-off: recorded, not waited
        sleeps.append(delay)
        if len(sleeps) >= 3:
            raise asyncio.CancelledError

    monkeypatch.setattr("airflow_provider_multimarkets.triggers.push_event._sleep", fake_sleep)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(_first_events(trigger, 1, 120))
    lines = trigger.log.lines
    saved = [t for level, t, _ in lines if level == "error" and "cannot save its msg token" in t]
    outages = [t for level, t, _ in lines if level == "error" and "Starting again in" in t]
    assert len(saved) == 1 and "Read-only file system" in saved[0] and "state_dir" in saved[0]
    assert len(outages) == 3 and all("push log" in t or "journal" in t or str(read_only_dir) in t for t in outages)
    assert not any(tb for _, _, tb in lines)  # one line each, no traceback
    assert sleeps == sorted(sleeps)  # backing off


@needs_airflow_3
def test_a_missing_connection_is_one_line_per_attempt_with_a_backoff(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_MULTIMARKETS_DEFAULT", raising=False)
    trigger = _standalone(tmp_path, multimarkets_conn_id="no_such_conn")
    sleeps: list[float] = []

    async def fake_sleep(delay: float) -> None:
        sleeps.append(delay)
        if len(sleeps) >= 5:
            raise asyncio.CancelledError

    monkeypatch.setattr("airflow_provider_multimarkets.triggers.push_event._sleep", fake_sleep)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(_first_events(trigger, 1, 60))
    errors = [(t, tb) for level, t, tb in trigger.log.lines if level == "error"]
    assert len(errors) == 5  # one clear line per attempt ...
    assert all("no_such_conn" in t and "attempt" in t and not tb for t, tb in errors)  # ... no traceback
    assert sleeps[0] >= 2.5 and sleeps == sorted(sleeps) and sleeps[-1] > sleeps[0] * 4  # backing off
    # a watcher that asked for a shared stream (the default) and runs alone says so once, and why
    (alone,) = [t for level, t, _ in trigger.log.lines if level == "info" and "runs alone" in t]
    if SHARED:  # Airflow 3.3+: the trigger was run directly, not by an AssetWatcher
        assert "no asset state store" in alone
    else:  # Airflow 3.0-3.2: the documented fallback, at-least-once from the journal
        assert f"need Airflow 3.3+, this is Airflow {airflow_version()}" in alone
