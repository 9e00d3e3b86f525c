"""The client-side limiter keeps one process under the apiKey's calls per minute."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from conftest import set_connection

from airflow_provider_multimarkets.rate_limit import SlidingWindowLimiter, limiter_for


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_at_most_limit_calls_in_any_window() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(100, 60.0, clock=clock, sleep=clock.sleep)
    stamps = []
    for _ in range(250):
        limiter.acquire()
        stamps.append(clock.now)
    for i, t in enumerate(stamps):
        in_window = [s for s in stamps[i:] if s - t < 60.0]
        assert len(in_window) <= 100
    assert stamps[99] == 1000.0 and stamps[100] == pytest.approx(1060.0)


def test_waits_only_as_long_as_needed() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(2, 10.0, clock=clock, sleep=clock.sleep)
    assert limiter.acquire() == 0 and limiter.acquire() == 0
    clock.now += 4
    assert limiter.acquire() == pytest.approx(6.0)


def test_shared_per_api_key_and_off_at_zero() -> None:
    assert limiter_for("key-a", 100) is limiter_for("key-a", 100)
    assert limiter_for("key-a", 100) is not limiter_for("key-b", 100)
    assert limiter_for("key-a", 0) is None
    with pytest.raises(ValueError):
        SlidingWindowLimiter(0)


def test_thread_safe() -> None:
    limiter = SlidingWindowLimiter(1000, 60.0)
    threads = [threading.Thread(target=lambda: [limiter.acquire() for _ in range(100)]) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(limiter._calls) == 800


def test_hook_stays_under_sandbox_limit(sandbox_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the sandbox limiting at 20 calls/2 s and the hook at 20/2 s (+margin), 45 calls never see a 429."""
    from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook
    from airflow_provider_multimarkets.sandbox import SandboxConfig

    sb = sandbox_factory(SandboxConfig(rate_limit=20, rate_window=2.0))
    set_connection(monkeypatch, sb.connection(rate_limit_per_minute=20))
    hook = MultiMarketsHook()
    monkeypatch.setattr(
        type(hook), "limiter", property(lambda self: limiter_for(self.settings.api_key + "-2s", 20, 2.0, margin=0.25))
    )
    for _ in range(45):
        hook.get_msg_token()
    answers = sb.state.counts()["answers"]
    assert answers == {"getMsgPushToken:200:0": 45}
