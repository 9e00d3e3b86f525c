"""The apiKey's call budget is one budget for every process that shares its store (host file or
Redis), the ban breaker stops every one of them, and a store that cannot be used is a clear error."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import set_connection

from airflow_provider_multimarkets.api.budget import (
    Block,
    CallBudget,
    FallbackStore,
    HostStore,
    ProcessStore,
    RedisStore,
)
from airflow_provider_multimarkets.exceptions import (
    MultiMarketsBannedError,
    MultiMarketsBudgetError,
    MultiMarketsBudgetWaitError,
    MultiMarketsConfigError,
    MultiMarketsRateLimitError,
)
from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook
from deploy.harness import peak_in_window, start_redis_server

API_KEY = "budget-test-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A real redis-server on a free loopback port (Debian's package; `make test` installs it)."""
    port = _free_port()
    proc = start_redis_server(port)
    yield f"redis://127.0.0.1:{port}/0"
    proc.kill()
    proc.wait(timeout=10)


def _redis_store(url: str, limit: int, window: float, key: str = API_KEY) -> RedisStore:
    import redis

    return RedisStore(redis.Redis.from_url(url, socket_timeout=2), key, limit, window, description=url)


# ---- N separate OS processes never exceed the budget in any sliding window --------------------------

CHILD = r"""
import json, sys, time
from airflow_provider_multimarkets.api.budget import CallBudget, HostStore, RedisStore
kind, where, key, limit, window, calls = sys.argv[1:7]
limit, window, calls = int(limit), float(window), int(calls)
if kind == "host":
    store = HostStore(where, key, limit, window)
else:
    import redis
    store = RedisStore(redis.Redis.from_url(where), key, limit, window, description=where)
last = [0.0]
def clock():
    last[0] = time.time()
    return last[0]
budget = CallBudget(store, limit=limit, window=window, max_wait=60, clock=clock)
taken = []
for _ in range(calls):
    budget.acquire()
    taken.append(int(last[0] * 1000))   # the timestamp the store admitted
print(json.dumps(taken))
"""


def _run_processes(kind: str, where: str, key: str, processes: int, calls: int, limit: int, window: float) -> list[int]:
    args = [kind, where, key, str(limit), str(window), str(calls)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(processes)
    ]
    stamps: list[int] = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]
        stamps += json.loads(out.strip().splitlines()[-1])
    assert len(stamps) == processes * calls
    return stamps


@pytest.mark.parametrize("kind", ["host", "redis"])
def test_separate_processes_share_one_budget(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    where = str(tmp_path / "store") if kind == "host" else request.getfixturevalue("redis_url")
    limit, window = 10, 1.0
    stamps = _run_processes(kind, where, f"{API_KEY}-{kind}-{os.getpid()}", 6, 12, limit, window)
    # 72 calls by 6 processes: never more than 10 in any 1-second window, wherever it starts ...
    assert peak_in_window(stamps, int(window * 1000)) <= limit
    # ... and the budget was used, not merely slow: every full window admitted its 10 calls
    assert peak_in_window(stamps, int(window * 1000)) == limit
    span = (max(stamps) - min(stamps)) / 1000
    assert span >= (72 / limit - 1) * window * 0.99


# ---- the ban breaker --------------------------------------------------------------------------------

BLOCKER = r"""
import sys, time
from airflow_provider_multimarkets.api.budget import CallBudget, HostStore
from airflow_provider_multimarkets.exceptions import MultiMarketsBannedError
store = HostStore(sys.argv[1], sys.argv[2], 100, 60.0)
budget = CallBudget(store, limit=100, window=60.0)
budget.record(MultiMarketsBannedError("418 from the gateway", retry_after=float(sys.argv[3])))
"""


def test_a_418_seen_by_one_process_blocks_the_others(tmp_path: Path) -> None:
    where = str(tmp_path / "store")
    started = time.time()
    subprocess.run([sys.executable, "-c", BLOCKER, where, API_KEY, "1.5"], check=True, timeout=120)
    budget = CallBudget(HostStore(where, API_KEY, 100, 60.0), limit=100, window=60.0, max_wait=30)
    block = budget.store.read_block()
    assert block is not None and block.status == 418 and block.until >= started + 1.5
    budget.acquire()
    assert time.time() >= block.until  # no call could have started inside the ban


def test_a_ban_longer_than_max_wait_fails_at_once_with_its_end(tmp_path: Path) -> None:
    where = str(tmp_path / "store")
    subprocess.run([sys.executable, "-c", BLOCKER, where, API_KEY, "600"], check=True, timeout=120)
    budget = CallBudget(HostStore(where, API_KEY, 100, 60.0), limit=100, window=60.0, max_wait=5)
    started = time.monotonic()
    with pytest.raises(MultiMarketsBannedError) as info:
        budget.acquire()
    message = str(info.value)
    assert "HTTP 418" in message and "until about 20" in message and "No call was sent" in message
    assert "rate_limit_max_wait" in message and info.value.ban_ends_at is not None
    assert time.monotonic() - started < 5  # failed at once, not after waiting


def test_a_block_keeps_the_later_end() -> None:
    store = ProcessStore(10, 1.0)
    now = time.time()
    store.write_block(Block(now + 100, 418))
    store.write_block(Block(now + 5, 429))
    assert store.read_block() == Block(now + 100, 418)


def test_429_without_retry_after_blocks_one_window_and_too_frequent_envelope_too() -> None:
    from airflow_provider_multimarkets.exceptions import MultiMarketsApiError

    budget = CallBudget(ProcessStore(10, 60.5), limit=10, window=60.5)
    for retry_after in (None, 0.0, -5.0, float("nan"), float("inf")):
        block = budget.record(MultiMarketsRateLimitError("429", retry_after=retry_after))
        assert block is not None and block.status == 429
        assert 60 < block.until - time.time() <= 60.5
    envelope = MultiMarketsApiError("too frequent", code="00012005", msg="", trace="", http_status=200)
    assert budget.record(envelope) is not None
    assert budget.record(MultiMarketsConfigError("not a rate problem")) is None


def test_budget_exhausted_longer_than_max_wait_fails_with_when_to_call_again() -> None:
    budget = CallBudget(ProcessStore(2, 60.0), limit=2, window=60.0, max_wait=1.0)
    budget.acquire()
    budget.acquire()
    with pytest.raises(MultiMarketsBudgetWaitError, match="No call was sent. Call again after 20") as info:
        budget.acquire()
    # the gateway answered nothing: no HTTP status, and no 429 that the order operator could report
    assert not isinstance(info.value, MultiMarketsRateLimitError)
    assert info.value.http_status is None and info.value.call_sent is False and info.value.retry_after > 50


def test_waiting_is_logged_once_with_the_time_waited() -> None:
    lines: list[str] = []
    now = [1_800_000_000.0]  # a fake clock that moves only when the budget sleeps: no window decides
    budget = CallBudget(
        ProcessStore(1, 0.3),
        limit=1,
        window=0.3,
        log=lines.append,
        clock=lambda: now[0],
        sleep=lambda seconds: now.__setitem__(0, now[0] + seconds),
    )
    for _ in range(4):
        budget.acquire()
    assert len(lines) == 1 and lines[0].startswith("Waited 0.") and "shared call budget" in lines[0]
    assert budget.waits == 3 and budget.waited > 0.6


def test_async_form_shares_the_same_store_and_block(tmp_path: Path) -> None:
    where = str(tmp_path / "store")
    # a window long enough that a busy machine cannot let it pass between the sync calls and the async one
    sync_budget = CallBudget(HostStore(where, API_KEY, 3, 4.0), limit=3, window=4.0)
    async_budget = CallBudget(HostStore(where, API_KEY, 3, 4.0), limit=3, window=4.0)
    for _ in range(3):
        sync_budget.acquire()

    async def take() -> float:
        return await async_budget.aacquire()

    assert asyncio.run(take()) > 0.5  # the three sync calls filled the window for the async one too
    sync_budget.record(MultiMarketsBannedError("418", retry_after=0.8))
    started = time.time()
    asyncio.run(take())
    assert time.time() - started >= 0.7


# ---- a store that cannot be used --------------------------------------------------------------------


def test_unwritable_directory_is_a_config_error_naming_the_field(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(MultiMarketsConfigError, match="'rate_limit_dir'.*No call was sent"):
        HostStore(str(not_a_dir / "budget"), API_KEY, 100, 60.0)


def test_redis_down_is_a_clear_error_not_a_hang() -> None:
    started = time.monotonic()
    with pytest.raises(MultiMarketsBudgetError, match="unreachable.*No call was sent.*rate_limit_fallback"):
        _redis_store(f"redis://127.0.0.1:{_free_port()}/0", 100, 60.0)
    assert time.monotonic() - started < 10


def test_redis_dying_mid_run_is_a_clear_error() -> None:
    port = _free_port()
    proc = start_redis_server(port)
    try:
        budget = CallBudget(_redis_store(f"redis://127.0.0.1:{port}/0", 100, 60.0), limit=100, window=60.0)
        budget.acquire()
    finally:
        proc.kill()
        proc.wait(timeout=10)
    with pytest.raises(MultiMarketsBudgetError, match="unreachable"):
        budget.acquire()


# ---- through the hook ---------------------------------------------------------------------------


def _conn(sandbox: Any, **extra: Any) -> dict[str, Any]:
    return sandbox.connection(**extra)


def test_hook_uses_the_host_store_by_default(sandbox: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MULTIMARKETS_BUDGET_DIR", str(tmp_path / "host"))
    set_connection(monkeypatch, _conn(sandbox))
    hook = MultiMarketsHook()
    hook.get_msg_token()
    assert isinstance(hook.budget.store, HostStore) and hook.budget.store.directory == str(tmp_path / "host")
    assert list((tmp_path / "host").glob("*.sqlite"))


def test_hook_uses_redis_named_by_an_airflow_connection(
    sandbox: Any, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MM_REDIS", redis_url)
    set_connection(monkeypatch, _conn(sandbox, rate_limit_redis_conn_id="mm_redis"))
    hook = MultiMarketsHook()
    hook.get_msg_token()
    assert isinstance(hook.budget.store, RedisStore) and "mm_redis" in hook.budget.store.description


def test_hook_with_redis_down_fails_or_falls_back_as_configured(
    sandbox: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MM_REDIS", f"redis://127.0.0.1:{_free_port()}/0")
    set_connection(monkeypatch, _conn(sandbox, rate_limit_redis_conn_id="mm_redis"))
    with pytest.raises(MultiMarketsBudgetError, match="connection 'mm_redis'"):
        MultiMarketsHook().get_msg_token()
    assert sandbox.state.received["getMsgPushToken"] == 0
    set_connection(
        monkeypatch,
        _conn(
            sandbox,
            rate_limit_redis_conn_id="mm_redis",
            rate_limit_fallback="host",
            rate_limit_hosts=50,
            rate_limit_window=1,
        ),
    )
    hook = MultiMarketsHook()
    assert hook.get_msg_token().endswith("push")  # after the fallback's one-window pause (1.25 s here)
    store = hook.budget.store
    assert isinstance(store, FallbackStore) and store.redis is None and store.share == 2
    out = capsys.readouterr()  # Airflow 3 logs through structlog to stdout, Airflow 2 through logging
    text = out.out + out.err + caplog.text
    assert "(ConnectionError). Falling back to this host's share of the budget" in text
    assert "2 of 100 calls per window ('rate_limit_hosts' 50)" in text


def test_hook_names_a_missing_redis_connection(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, _conn(sandbox, rate_limit_redis_conn_id="no_such_redis"))
    with pytest.raises(MultiMarketsConfigError, match="'rate_limit_redis_conn_id' names 'no_such_redis'"):
        MultiMarketsHook().get_msg_token()


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"rate_limit_store": "disk"}, "rate_limit_store"),
        ({"rate_limit_store": "redis"}, "rate_limit_redis_conn_id"),
        ({"rate_limit_fallback": "ignore"}, "rate_limit_fallback"),
        ({"rate_limit_max_wait": "inf"}, "rate_limit_max_wait"),
        ({"rate_limit_window": "inf"}, "rate_limit_window"),
        ({"ban_seconds": 0}, "ban_seconds"),
        ({"rate_limit_dir": 5}, "rate_limit_dir"),
    ],
)
def test_budget_settings_are_validated(extra: dict[str, Any], field: str) -> None:
    from airflow_provider_multimarkets.api.settings import settings_from_connection

    with pytest.raises(MultiMarketsConfigError, match=f"'{field}'"):
        settings_from_connection(host=None, port=None, login="k", password="p", extra={"company_id": 1, **extra})


# ---- issue 26: a budget that survives its store -------------------------------------------------------


class FakeClock:
    """A wall clock the test moves: sleeping advances it (no test waits for real)."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


def _stores(tmp_path: Path, redis_url: str, limit: int, window: float) -> dict[str, Any]:
    return {
        "process": ProcessStore(limit, window),
        "host": HostStore(str(tmp_path / "host"), f"{API_KEY}-pace", limit, window),
        "redis": _redis_store(redis_url, limit, window, key=f"{API_KEY}-pace-{time.time_ns()}"),
    }


@pytest.mark.parametrize("kind", ["process", "host", "redis"])
def test_a_429_blocks_the_whole_window_and_releases_calls_at_the_budgets_pace(
    kind: str, tmp_path: Path, redis_url: str
) -> None:
    # issue 26: a 429's Retry-After (4.4 s) is only when one slot frees; the window is still full
    limit, window = 10, 60.0
    store = _stores(tmp_path, redis_url, limit, window)[kind]
    clock = FakeClock(time.time())
    budget = CallBudget(store, limit=limit, window=window, max_wait=600, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        budget.acquire()
    block = budget.record(MultiMarketsRateLimitError("429", retry_after=4.4))
    assert block is not None and block.status == 429 and block.until == pytest.approx(clock.now + window)
    end_ms = int(block.until * 1000)
    # nothing before the block's end; at its end one call, then one per window / limit (6 s), never two at once
    assert store.take(end_ms + 5) == 0
    wait_ms = store.take(end_ms + 10)
    assert 5_000 <= wait_ms <= 6_100
    assert store.take(end_ms + 6_010) == 0
    assert store.take(end_ms + 6_020) > 5_000
    store.close()


def test_processes_waiting_on_a_429_are_released_one_at_a_time(tmp_path: Path) -> None:
    """Six real processes wait on a 429 recorded in the host store; they start one per window / limit."""
    where = str(tmp_path / "store")
    limit, window = 10, 2.0
    budget = CallBudget(HostStore(where, API_KEY, limit, window), limit=limit, window=window)
    recorded = time.time()
    block = budget.record(MultiMarketsRateLimitError("429", retry_after=0.2))
    assert block is not None
    stamps = _run_processes("host", where, API_KEY, 6, 2, limit, window)
    assert min(stamps) >= block.until * 1000  # nobody called into the block...
    # ... and none started before its slot: slot j frees at the block's end + j * window / limit, so by
    # any time t at most (t - end) / step + 1 calls can have started (never a burst when the block ends)
    end, step = block.until * 1000, window * 1000 / limit
    for n, stamp in enumerate(sorted(stamps), start=1):
        assert n <= (stamp - end) / step + 1 + 0.01, (n, stamp - end)
    assert recorded > 0


def test_a_restarted_empty_redis_reloads_the_script_and_counts_as_full_for_one_window(tmp_path: Path) -> None:
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    proc = start_redis_server(port)
    lines: list[str] = []
    import redis

    def store() -> RedisStore:
        client = redis.Redis.from_url(url, socket_timeout=2)
        return RedisStore(
            client, API_KEY, 10, 1.0, description=url, cache_dir=str(tmp_path), host="host-a", log=lines.append
        )

    first = store()
    now_ms = int(time.time() * 1000)
    for i in range(10):
        assert first.take(now_ms + i) == 0
    proc.kill()
    proc.wait(timeout=10)
    proc = start_redis_server(port)  # the same port, nothing kept: scripts and keys gone
    try:
        later = now_ms + 100
        wait = first.take(later)  # NoScriptError: the script is loaded again, not "unreachable"
        assert first.restarts_seen == 1 and first.paced_after_restart == 1
        # the gateway may still count the 10 calls, all made just now: nothing for one whole window (1 s),
        # then the budget's own 10 per window, into a window the gateway has emptied
        assert 1000 <= wait <= 1010
        assert all(first.take(later + wait + i) == 0 for i in range(10)) and first.take(later + wait + 10) > 900
        assert any("lost its data" in line for line in lines)
        # a new process of this host remembers the key's epoch (host cache) and does not pace again
        second = store()
        assert second.paced_after_restart == 0 and second.epoch == first.epoch
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_redis_that_kept_its_data_but_lost_its_scripts_goes_on_at_once(redis_url: str) -> None:
    import redis

    key = f"{API_KEY}-flush-{time.time_ns()}"
    store = _redis_store(redis_url, 10, 60.0, key=key)
    now_ms = int(time.time() * 1000)
    assert store.take(now_ms) == 0
    redis.Redis.from_url(redis_url).script_flush()  # what a restart with its data (RDB/AOF) looks like
    assert store.take(now_ms + 1) == 0  # reloaded, and no pacing: the calls Redis counted are still there
    assert store.restarts_seen == 1 and store.paced_after_restart == 0


def test_a_call_waiting_when_redis_goes_away_falls_back_to_the_hosts_share(tmp_path: Path) -> None:
    import redis

    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    proc = start_redis_server(port)
    lines: list[str] = []
    limit, window = 10, 1.0

    def connect() -> RedisStore:
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
        return RedisStore(client, API_KEY, limit, window, description=url, cache_dir=str(tmp_path), host="h")

    store = FallbackStore(
        connect,
        lambda share: HostStore(str(tmp_path), API_KEY, share, window, name="fallback"),
        limit=limit,
        hosts=2,
        description=url,
        log=lines.append,
        retry_seconds=0.2,
    )
    budget = CallBudget(store, limit=limit, window=window, max_wait=30)
    try:
        budget.record(MultiMarketsRateLimitError("429", retry_after=0.1))  # in Redis: blocked one window
        waiting = budget._step(0.0)
        assert waiting > 0.5 and store.redis is not None  # this call now waits on Redis's block ...
        proc.kill()
        proc.wait(timeout=10)
        budget._sleep(waiting)
        budget.acquire()  # ... and goes on, on this host's share, when Redis is gone: no error
        assert store.redis is None and store.share == 5 and store.falls == 1
        assert any("5 of 10 calls per window ('rate_limit_hosts' 2)" in line for line in lines)
        # a ban met meanwhile is kept on the host ...
        budget.record(MultiMarketsBannedError("418", retry_after=120))
        assert isinstance(store.read_block(), Block) and store.read_block().status == 418  # type: ignore[union-attr]
        proc = start_redis_server(port)
        time.sleep(0.3)  # past retry_seconds, so that the next operation tries Redis again
        block = store.read_block()
        # ... and merged into Redis once it answers again, with the calls the host made meanwhile
        assert store.redis is not None and block is not None and block.status == 418
        client = redis.Redis.from_url(url)
        assert client.hget(store.redis.block_key, "status") == b"418"
        assert any(m.startswith(b"fb:h:") for m in client.zrange(store.redis.bucket_key, 0, -1))
        assert any("answers again" in line for line in lines)
    finally:
        proc.kill()
        proc.wait(timeout=10)


@pytest.mark.parametrize(("hosts", "share"), [(None, 1), (1, 100), (2, 50), (3, 33), (200, 1)])
def test_a_hosts_share_never_adds_up_to_more_than_the_key_allows(hosts: int | None, share: int) -> None:
    from airflow_provider_multimarkets.api.budget import host_share

    assert host_share(100, hosts) == share
    assert (hosts or 1) * host_share(100, hosts) <= max(100, hosts or 1)


# ---- the host store's faults: every wait bounded, every bad file named -----------------------------------

HOLD_LOCK = r"""
import os, signal, sys
from filelock import FileLock
lock = FileLock(sys.argv[1])
lock.acquire()
print("held", flush=True)
os.kill(os.getpid(), signal.SIGSTOP)   # a process stopped while it holds the lock (as in D state)
"""

HOLD_EXCLUSIVE = r"""
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("held", flush=True)
sys.stdin.read()
"""


def _holder(script: str, path: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", script, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_stopped_process_holding_the_file_lock_is_a_bounded_clear_error(tmp_path: Path) -> None:
    store = HostStore(str(tmp_path), API_KEY, 10, 60.0, lock_timeout=1.0)
    holder = _holder(HOLD_LOCK, store.lock_path)
    try:
        budget = CallBudget(store, limit=10, window=60.0, max_wait=1.0)
        started = time.monotonic()
        with pytest.raises(MultiMarketsBudgetError, match="held the lock .*No call was sent.*fuser") as info:
            budget.acquire()
        assert time.monotonic() - started < 30  # bounded (1 s asked; generous for a busy machine)
        assert store.lock_path in str(info.value)
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_a_process_holding_begin_exclusive_is_a_bounded_clear_error(tmp_path: Path) -> None:
    store = HostStore(str(tmp_path), API_KEY, 10, 60.0, lock_timeout=1.0)
    holder = _holder(HOLD_EXCLUSIVE, store.db_path)
    try:
        with pytest.raises(MultiMarketsBudgetError, match="stayed locked by another process.*No call was sent"):
            CallBudget(store, limit=10, window=60.0, max_wait=1.0).acquire()
    finally:
        holder.kill()
        holder.wait(timeout=10)


@pytest.mark.parametrize(
    "content",
    [b"\xff\xfe\x00garbage", b'{"until": 1e400, "status": 429}', b'{"until": "soon"}', b"[1, 2]", b'{"until": 1e12}'],
    ids=["not-utf8", "infinite", "not-a-number", "not-an-object", "far-future"],
)
def test_a_corrupt_block_file_names_the_file_to_delete(tmp_path: Path, content: bytes) -> None:
    store = HostStore(str(tmp_path), API_KEY, 10, 60.0)
    Path(store.block_path).write_bytes(content)
    with pytest.raises(MultiMarketsBudgetError, match="No call was sent. Delete .*\\.block") as info:
        CallBudget(store, limit=10, window=60.0).acquire()
    assert store.block_path in str(info.value)
    # the next 429 or 418 replaces it
    CallBudget(store, limit=10, window=60.0).record(MultiMarketsBannedError("418", retry_after=5))
    assert store.read_block() is not None


def test_a_garbage_database_names_the_file_to_delete(tmp_path: Path) -> None:
    from airflow_provider_multimarkets.api.budget import key_id

    (tmp_path / f"{key_id(API_KEY)}.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(MultiMarketsBudgetError, match="corrupt.*No call was sent. Delete .*\\.sqlite") as info:
        HostStore(str(tmp_path), API_KEY, 10, 60.0)
    assert "rate_limit_dir" not in str(info.value)  # not "change the directory": delete this file


@pytest.mark.parametrize("kind", ["host", "redis"])
def test_a_clock_stepped_back_an_hour_never_blocks_longer_than_one_window(
    kind: str, tmp_path: Path, redis_url: str
) -> None:
    limit, window = 5, 60.0
    store = _stores(tmp_path, redis_url, limit, window)[kind]
    clock = FakeClock(time.time())
    budget = CallBudget(store, limit=limit, window=window, max_wait=600, clock=clock, sleep=clock.sleep)
    for _ in range(limit):
        budget.acquire()
    budget.record(MultiMarketsRateLimitError("429", retry_after=None))
    clock.now -= 3600  # NTP steps the clock back an hour
    clock.slept = 0.0
    budget.acquire()
    assert clock.slept <= window + 1  # the block's own window, not 3,660 s
    # without a block: calls stamped "in the future" wait at most one window too
    store2 = _stores(tmp_path / "2", redis_url, limit, window)[kind]
    clock2 = FakeClock(time.time())
    budget2 = CallBudget(store2, limit=limit, window=window, max_wait=600, clock=clock2, sleep=clock2.sleep)
    for _ in range(limit):
        budget2.acquire()
    clock2.now -= 3600
    clock2.slept = 0.0
    budget2.acquire()
    assert clock2.slept <= window + 1


def test_kubernetes_host_store_warns_once_naming_the_redis_extra(
    sandbox: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from airflow_provider_multimarkets.api import budget as budget_module

    monkeypatch.setattr(budget_module, "_warned_kubernetes", False)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("MULTIMARKETS_BUDGET_DIR", str(tmp_path))
    set_connection(monkeypatch, _conn(sandbox))
    for _ in range(2):
        MultiMarketsHook().get_msg_token()
    out = capsys.readouterr()  # Airflow 3 logs to stdout; Airflow 2 to stderr and to caplog (the same line twice)
    counts = [part.count("runs in a Kubernetes pod") for part in (out.out, out.err, caplog.text)]
    assert max(counts) == 1 and "'rate_limit_redis_conn_id'" in out.out + out.err + caplog.text


def test_the_redis_client_comes_from_the_redis_providers_hook(
    sandbox: Any, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_MM_REDIS",
        json.dumps(
            {
                "conn_type": "redis",
                "host": "127.0.0.1",
                "port": int(redis_url.rsplit(":", 1)[1].split("/")[0]),
                "extra": {"db": 3},
            }
        ),
    )
    set_connection(monkeypatch, _conn(sandbox, rate_limit_redis_conn_id="mm_redis"))
    hook = MultiMarketsHook()
    hook.get_msg_token()
    store = hook.budget.store
    assert isinstance(store, RedisStore)
    kwargs = store.client.connection_pool.connection_kwargs
    assert kwargs["db"] == 3 and kwargs["socket_timeout"] == 2.0 and kwargs["socket_connect_timeout"] == 2.0
    assert "apache-airflow-providers-redis" in str(kwargs.get("driver_info") or kwargs.get("lib_name"))


def test_an_order_held_back_by_the_budget_is_not_reported_as_rejected_by_the_gateway() -> None:
    from airflow_provider_multimarkets.operators.order import MultiMarketsMarketOrderOperator

    operator = MultiMarketsMarketOrderOperator(task_id="order", order={"symbolId": 1})
    wait = MultiMarketsBudgetWaitError("no free call ... No call was sent.", retry_after=30)
    error = operator._placement_failure({"thirdPartyOrder": "af_x"}, wait)
    assert error.placed is False and "NOT placed (no call was sent" in str(error)
    assert "gateway rejected" not in str(error)
    breaker = CallBudget(ProcessStore(1, 60.0), limit=1, window=60.0).blocked_error(
        Block(time.time() + 300, 418), time.time(), 0.0
    )
    error = operator._placement_failure({"thirdPartyOrder": "af_x"}, breaker)
    assert error.placed is False and "no call was sent" in str(error)
