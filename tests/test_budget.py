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

from airflow_provider_multimarkets.api.budget import Block, CallBudget, HostStore, ProcessStore, RedisStore
from airflow_provider_multimarkets.exceptions import (
    MultiMarketsBannedError,
    MultiMarketsBudgetError,
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
    with pytest.raises(MultiMarketsRateLimitError, match="No call was sent. Call again after 20"):
        budget.acquire()


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
    set_connection(monkeypatch, _conn(sandbox, rate_limit_redis_conn_id="mm_redis", rate_limit_fallback="host"))
    hook = MultiMarketsHook()
    assert hook.get_msg_token().endswith("push")
    assert isinstance(hook.budget.store, HostStore)
    out = capsys.readouterr()  # Airflow 3 logs through structlog to stdout, Airflow 2 through logging
    assert "(ConnectionError). Falling back to the per-host budget" in out.out + out.err + caplog.text


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
