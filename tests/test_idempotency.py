"""The ``idempotency-key`` request header: what the hook sends, and the gateway's documented cache in the sandbox.

Documented in the vendor's OpenAPI file ("Global Unified Request Header", ``HEAD /``) and the
white-label docs of the same gateway; not on the Open API pages. Answers are cached 24 h per key +
bizType + version + group + companyId; a duplicate that arrives while the first is still being
processed gets ``GATEWAY_CODE_018``. The concurrency tests hold the first request inside the
sandbox (``Sandbox.hold``) and wait on events, never on a clock.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import requests
from conftest import ORDER_BIZ_TYPE, ORDER_BODY, set_connection

from airflow_provider_multimarkets.api.envelope import GATEWAY_CODES, parse_response
from airflow_provider_multimarkets.exceptions import (
    MultiMarketsApiError,
    MultiMarketsConcurrentDuplicateError,
    MultiMarketsConfigError,
)
from airflow_provider_multimarkets.hooks.multimarkets import IDEMPOTENCY_HEADER, MultiMarketsHook
from airflow_provider_multimarkets.sandbox import SandboxConfig
from airflow_provider_multimarkets.sandbox.idempotency import IdempotencyCache

KEY = "af_daily_orders_buy_eurusd_0123456789abcdef"
ORDER_PAGE = "tradeapi.app.OrderApiService.queryOrderPage"


def _sent_headers(sandbox: Any, biz_type: str) -> list[dict[str, str]]:
    return [h for b, h in sandbox.state.seen_headers if b == biz_type]


def test_the_hook_sends_the_key_only_when_a_call_gives_one(mm_conn: dict[str, Any], sandbox: Any) -> None:
    hook = MultiMarketsHook()
    hook.call(ORDER_BIZ_TYPE, ORDER_BODY, idempotent=False, idempotency_key=KEY)
    hook.call(ORDER_BIZ_TYPE, ORDER_BODY, idempotent=False)
    sent = _sent_headers(sandbox, ORDER_BIZ_TYPE)
    assert [h.get(IDEMPOTENCY_HEADER) for h in sent] == [KEY, None]


def test_the_connection_extra_turns_sending_off(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, sandbox.connection(idempotency_key=False))
    MultiMarketsHook().call(ORDER_BIZ_TYPE, ORDER_BODY, idempotent=False, idempotency_key=KEY)
    assert IDEMPOTENCY_HEADER not in _sent_headers(sandbox, ORDER_BIZ_TYPE)[0]
    assert len(sandbox.state.orders) == 1


@pytest.mark.parametrize("bad", ["has space", "x" * 256, "", "ключ", 42])
def test_a_key_that_cannot_be_a_header_is_a_config_error_before_anything_is_sent(
    mm_conn: dict[str, Any], sandbox: Any, bad: Any
) -> None:
    with pytest.raises(MultiMarketsConfigError, match="idempotency key"):
        MultiMarketsHook().call(ORDER_BIZ_TYPE, ORDER_BODY, idempotent=False, idempotency_key=bad)
    assert sandbox.state.received[ORDER_BIZ_TYPE] == 0


def test_a_repeat_of_the_key_is_answered_from_the_cache(mm_conn: dict[str, Any], sandbox: Any) -> None:
    hook = MultiMarketsHook()
    first = hook.call(ORDER_BIZ_TYPE, ORDER_BODY, idempotent=False, idempotency_key=KEY)
    again = hook.call(ORDER_BIZ_TYPE, ORDER_BODY, idempotent=False, idempotency_key=KEY)
    assert again == first and len(sandbox.state.orders) == 1 and sandbox.state.idempotency.replayed == 1
    # the cache key is key + bizType + version + group + companyId: another bizType runs on its own
    page = hook.call(ORDER_PAGE, {"tradeType": 2}, idempotency_key=KEY)
    assert page["total"] == 1
    # another key places another order
    other = hook.call(ORDER_BIZ_TYPE, ORDER_BODY, idempotent=False, idempotency_key=KEY + "_2")
    assert other["orderId"] != first["orderId"] and len(sandbox.state.orders) == 2


def test_a_business_error_is_cached_a_gateway_refusal_is_not(mm_conn: dict[str, Any], sandbox: Any) -> None:
    hook = MultiMarketsHook()
    bad = {**ORDER_BODY, "symbolId": 424242}
    for _ in range(2):
        with pytest.raises(MultiMarketsApiError) as info:
            hook.call(ORDER_BIZ_TYPE, bad, idempotent=False, idempotency_key="k_refused")
        assert info.value.code == "CFDWBWE000013"
    assert sandbox.state.idempotency.replayed == 1
    # a request the gateway refused (a signature over another body) leaves the key free
    url, headers, _ = hook.build_request(ORDER_BIZ_TYPE, ORDER_BODY, idempotency_key="k_free")
    tampered = json.dumps({**ORDER_BODY, "requestNum": "0.2"}).encode()
    answer = requests.post(url, data=tampered, headers=headers, timeout=10).json()
    assert answer["code"] == "00012001"
    placed = hook.call(ORDER_BIZ_TYPE, ORDER_BODY, idempotent=False, idempotency_key="k_free")
    assert placed["tradeVolume"] == "0.1" and len(sandbox.state.orders) == 1


def test_a_concurrent_duplicate_is_refused_with_gateway_code_018(mm_conn: dict[str, Any], sandbox: Any) -> None:
    release = sandbox.hold(ORDER_BIZ_TYPE)
    results: dict[str, Any] = {}

    def first() -> None:
        try:
            results["first"] = MultiMarketsHook().call(
                ORDER_BIZ_TYPE, ORDER_BODY, idempotent=False, idempotency_key=KEY
            )
        except Exception as exc:  # reported by the assertion below
            results["first"] = exc

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert sandbox.state.idempotency.wait_in_flight(1, timeout=60), "the first request never arrived"
        with pytest.raises(MultiMarketsConcurrentDuplicateError) as info:
            MultiMarketsHook().call(ORDER_BIZ_TYPE, ORDER_BODY, idempotent=False, idempotency_key=KEY)
    finally:
        release.set()
        thread.join(60)
    error = info.value
    assert error.code == "GATEWAY_CODE_018" and error.concurrent_duplicate and error.placed is False
    assert "did nothing" in str(error) and error.meaning == "a concurrent duplicate was refused (idempotency-key)"
    placed = results["first"]
    assert isinstance(placed, dict) and len(sandbox.state.orders) == 1  # the duplicate placed nothing
    # once the first has finished, the same key gets its answer from the cache
    assert MultiMarketsHook().call(ORDER_BIZ_TYPE, ORDER_BODY, idempotent=False, idempotency_key=KEY) == placed
    assert sandbox.state.idempotency.refused == 1 and len(sandbox.state.orders) == 1


def test_an_expired_key_runs_again(sandbox_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    sb = sandbox_factory(SandboxConfig(idempotency_ttl=0.0))  # nothing stays cached
    set_connection(monkeypatch, sb.connection())
    hook = MultiMarketsHook()
    a = hook.call(ORDER_BIZ_TYPE, ORDER_BODY, idempotent=False, idempotency_key=KEY)
    b = hook.call(ORDER_BIZ_TYPE, ORDER_BODY, idempotent=False, idempotency_key=KEY)
    assert a["orderId"] != b["orderId"] and len(sb.state.orders) == 2


def test_the_cache_keeps_an_answer_24_hours_by_a_fake_clock() -> None:
    now = [1000.0]
    cache = IdempotencyCache(clock=lambda: now[0])
    key = ("k", "biz", "0.0.1", "tradeApi", "439")
    assert cache.begin(key) == ("new", None)
    assert cache.begin(key) == ("busy", None)
    cache.finish(key, "answer")
    now[0] += 24 * 3600 - 1
    assert cache.begin(key) == ("cached", "answer")
    assert cache.begin(("k", "biz", "0.0.1", "tradeApi", "440")) == ("new", None)  # another company
    now[0] += 2
    assert cache.begin(key) == ("new", None)  # 24 h later: run again


def test_gateway_code_018_is_a_typed_error_with_meaning_and_hint() -> None:
    for code in ("GATEWAY_CODE_018", "GGATEWAY_CODE_018"):
        assert GATEWAY_CODES[code].meaning == "a concurrent duplicate was refused (idempotency-key)"
        envelope = {"code": code, "msg": "request frequency too fast, please try again later", "data": "x", "ok": False}
        body = json.dumps(envelope).encode()
        with pytest.raises(MultiMarketsConcurrentDuplicateError) as info:
            parse_response(200, body, biz_type=ORDER_BIZ_TYPE)
        assert isinstance(info.value, MultiMarketsApiError) and info.value.concurrent_duplicate
        assert "not placed by it" in info.value.hint
    with pytest.raises(MultiMarketsApiError) as other:
        parse_response(200, b'{"code":"CFDWBWE000013","msg":"no","ok":false}', biz_type=ORDER_BIZ_TYPE)
    assert not other.value.concurrent_duplicate


def test_acall_sends_the_key_too(mm_conn: dict[str, Any], sandbox: Any) -> None:
    import asyncio

    hook = MultiMarketsHook()
    first = asyncio.run(hook.acall(ORDER_BIZ_TYPE, ORDER_BODY, idempotent=False, idempotency_key=KEY))
    again = asyncio.run(hook.acall(ORDER_BIZ_TYPE, ORDER_BODY, idempotent=False, idempotency_key=KEY))
    assert first == again and len(sandbox.state.orders) == 1
    assert [h.get(IDEMPOTENCY_HEADER) for h in _sent_headers(sandbox, ORDER_BIZ_TYPE)] == [KEY, KEY]
