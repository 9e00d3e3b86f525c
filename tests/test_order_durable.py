"""Durable execution of the order operator (Airflow 3.3+): what it writes to the task state store and
when, what a retry or a clear decides from it, for both margin variants, against the sandbox."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from conftest import ORDER_BIZ_TYPE, ORDER_BODY, FakeTaskStateStore, FakeTI, order_context

from airflow_provider_multimarkets._compat import DURABLE_EXECUTION
from airflow_provider_multimarkets.exceptions import MultiMarketsOrderError
from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook
from airflow_provider_multimarkets.operators.order import (
    CROSS_MARKET_ORDER,
    ISOLATED_ORDER_PAGE,
    MultiMarketsMarketOrderOperator,
)
from airflow_provider_multimarkets.trading import order_state
from airflow_provider_multimarkets.trading.order_identity import derive_idempotency_key, derive_third_party_order

durable_only = pytest.mark.skipif(not DURABLE_EXECUTION, reason="the task state store needs Airflow 3.3+")
TPO = derive_third_party_order("dag", "manual__1", "order")
#: a full-margin market order valid on the sandbox's seed data (tradeType 1, BINAN_SOL_USDT)
FULL_MARGIN_ORDER: dict[str, Any] = {
    "accountCurrency": "USDT",
    "accountDigits": 2,
    "accountId": 1034123,
    "bizType": 1,
    "crossLevelNum": 1,
    "direction": 1,
    "requestNum": "0.10",
    "requestPrice": "2225",
    "requestTime": 1698299972000,
    "symbolId": 720,
    "tradeType": 1,
}


@pytest.fixture(autouse=True)
def _own_push_dir(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MULTIMARKETS_PUSH_DIR", str(tmp_path / "mm-pushes"))


def _orders_received(sandbox: Any) -> int:
    return int(sandbox.state.received[ORDER_BIZ_TYPE] + sandbox.state.received[CROSS_MARKET_ORDER])


def _store(sandbox: Any, values: dict[str, Any] | None = None) -> FakeTaskStateStore:
    return FakeTaskStateStore(values, marks=lambda: _orders_received(sandbox))


def _op(*, full_margin: bool = False, **kwargs: Any) -> MultiMarketsMarketOrderOperator:
    kwargs.setdefault("window_seconds", 10)
    kwargs.setdefault("poll_interval", 0.2)
    kwargs.setdefault("lookup_timeout", 10)
    if full_margin:
        return MultiMarketsMarketOrderOperator(
            task_id="order", order=dict(FULL_MARGIN_ORDER), biz_type=CROSS_MARKET_ORDER, **kwargs
        )
    return MultiMarketsMarketOrderOperator(task_id="order", order=dict(ORDER_BODY), **kwargs)


def _place_directly(body: dict[str, Any], biz_type: str = ORDER_BIZ_TYPE, **call: Any) -> dict[str, Any]:
    return dict(MultiMarketsHook().call(biz_type, {**body, "thirdPartyOrder": TPO}, idempotent=False, **call))


def _evidence(*, key_sent: bool, biz_type: str = ORDER_BIZ_TYPE) -> dict[str, Any]:
    import datetime as dt

    values: dict[str, Any] = {
        order_state.THIRD_PARTY_ORDER: TPO,
        order_state.ORDER_CALL: order_state.order_call_record(
            biz_type, 1, idempotency_key_sent=key_sent, now=dt.datetime.now(dt.timezone.utc)
        ),
    }
    if key_sent:
        values[order_state.IDEMPOTENCY_KEY] = derive_idempotency_key(TPO)
    return values


# ---- the first try ------------------------------------------------------------------------------------


@durable_only
@pytest.mark.parametrize("full_margin", [False, True], ids=["isolated", "full-margin"])
def test_first_try_writes_the_store_before_and_after_the_order_call(
    sandbox: Any, mm_conn: dict[str, Any], full_margin: bool
) -> None:
    store = _store(sandbox)
    result = _op(full_margin=full_margin).execute(order_context(FakeTI(), store))
    (placed,) = sandbox.state.orders
    order_id = placed["response"]["orderId"]
    written = {key: (value, calls_received) for key, value, calls_received in store.writes}
    # before the call: the thirdPartyOrder, the idempotency-key (when sent) and the evidence of the call
    assert written[order_state.THIRD_PARTY_ORDER] == (TPO, 0)
    call, calls_before = written[order_state.ORDER_CALL]
    assert calls_before == 0 and call["try_number"] == 1 and call["idempotency_key_sent"] is True
    assert call["biz_type"] == (CROSS_MARKET_ORDER if full_margin else ORDER_BIZ_TYPE)
    assert written[order_state.IDEMPOTENCY_KEY] == (derive_idempotency_key(TPO), 0)
    # and the gateway got that key with the order call (the sandbox's documented cache holds its answer)
    assert [k[0] for k in sandbox.state.idempotency.answers] == [derive_idempotency_key(TPO)]
    # right after the answer: the orderId and the answer; after the fill: the final status and the fill
    assert written[order_state.ORDER_ID] == (order_id, 1)
    assert written[order_state.ORDER][0]["orderId"] == order_id
    assert written[order_state.FINAL_STATUS] == (2, 1)
    assert written[order_state.FILL][0] == result["fill"] and result["fill"]["final_status"] == "completed"
    keys_in_order = [k for k, _, _ in store.writes]
    assert keys_in_order.index(order_state.ORDER_CALL) < keys_in_order.index(order_state.ORDER_ID)
    assert keys_in_order.index(order_state.ORDER_ID) < keys_in_order.index(order_state.FINAL_STATUS)
    assert result["order"]["orderId"] == order_id and "adopted" not in result
    from airflow_provider_multimarkets._compat import NEVER_EXPIRE

    # every key outlives every retry and clear (the mixin's own write of the id included)
    assert {key: store.retentions[key] for key in store.values} == dict.fromkeys(store.values, NEVER_EXPIRE)


@durable_only
def test_a_store_that_cannot_record_the_call_places_nothing(sandbox: Any, mm_conn: dict[str, Any]) -> None:
    store = _store(sandbox)
    store.fail_on = {order_state.ORDER_CALL}
    with pytest.raises(MultiMarketsOrderError, match="NOT placed.*task state store could not record it") as info:
        _op(track=False).execute(order_context(FakeTI(), store))
    assert info.value.placed is False and _orders_received(sandbox) == 0


# ---- retries and clears -------------------------------------------------------------------------------------


@durable_only
@pytest.mark.parametrize("full_margin", [False, True], ids=["isolated", "full-margin"])
def test_a_final_order_is_returned_at_once(sandbox: Any, mm_conn: dict[str, Any], full_margin: bool) -> None:
    store = _store(sandbox)
    first = _op(full_margin=full_margin).execute(order_context(FakeTI(), store))
    before = dict(sandbox.state.received)
    again = _op(full_margin=full_margin).execute(order_context(FakeTI(try_number=2), store))
    assert dict(sandbox.state.received) == before  # no call at all: not a token, not a lookup, not an order
    assert len(sandbox.state.orders) == 1
    assert again["adopted"] is True and again["adopted_by"] == "store"
    assert again["order"] == first["order"] and again["fill"] == first["fill"]
    assert again["resumed"] == {"how": "store", "try_number": 2}


@durable_only
def test_an_open_order_is_tracked_not_placed(sandbox: Any, mm_conn: dict[str, Any]) -> None:
    pending = _place_directly({**ORDER_BODY, "bizType": 10})  # a limit order: status 1 until it fills
    store = _store(sandbox, {**_evidence(key_sent=False), order_state.ORDER_ID: pending["orderId"]})
    store.values[order_state.ORDER] = pending

    def fill_once_looked_up_twice() -> None:
        deadline = time.monotonic() + 60
        while sandbox.state.received[ISOLATED_ORDER_PAGE] < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        sandbox.state.set_order_status(pending["orderId"], 2)

    filler = threading.Thread(target=fill_once_looked_up_twice, daemon=True)
    filler.start()
    result = _op(window_seconds=1).execute(order_context(FakeTI(try_number=2), store))
    filler.join(timeout=60)
    assert len(sandbox.state.orders) == 1  # nothing new
    assert result["adopted_by"] == "store" and result["order"]["orderId"] == pending["orderId"]
    assert result["fill"]["final_status"] == "completed" and result["fill"]["tracked"] is False
    assert store.values[order_state.FINAL_STATUS] == 2


@durable_only
def test_evidence_without_an_id_is_looked_up_and_adopted(sandbox: Any, mm_conn: dict[str, Any]) -> None:
    """Killed after the gateway processed the order, before the answer: the store has the evidence, the
    lookup the order."""
    placed = _place_directly(ORDER_BODY)
    store = _store(sandbox, _evidence(key_sent=False))
    result = _op().execute(order_context(FakeTI(try_number=2), store))
    assert len(sandbox.state.orders) == 1 and sandbox.state.received[ISOLATED_ORDER_PAGE] >= 1
    assert result["adopted_by"] == "lookup" and result["order"]["orderId"] == placed["orderId"]
    assert store.values[order_state.ORDER_ID] == placed["orderId"]


@durable_only
def test_evidence_without_an_order_places_it_once(sandbox: Any, mm_conn: dict[str, Any]) -> None:
    """Killed before the request arrived: the lookup finds none, and the order is placed."""
    store = _store(sandbox, _evidence(key_sent=False))
    result = _op(track=False).execute(order_context(FakeTI(try_number=2), store))
    assert len(sandbox.state.orders) == 1 and "adopted" not in result


@durable_only
def test_full_margin_retry_without_evidence_places(sandbox: Any, mm_conn: dict[str, Any]) -> None:
    """Killed before the order call: the store proves the order was never sent."""
    op = _op(full_margin=True, track=False)
    result = op.execute(order_context(FakeTI(try_number=2), _store(sandbox)))
    assert (
        len(sandbox.state.orders) == 1 and result["order"]["orderId"] == sandbox.state.orders[0]["response"]["orderId"]
    )


@durable_only
def test_full_margin_retry_with_a_stored_id_tracks_and_places_nothing(sandbox: Any, mm_conn: dict[str, Any]) -> None:
    """Killed after the answer, before the fill: the stored orderId decides (no lookup is documented)."""
    placed = _place_directly(FULL_MARGIN_ORDER, CROSS_MARKET_ORDER)
    store = _store(
        sandbox,
        {**_evidence(key_sent=False, biz_type=CROSS_MARKET_ORDER), order_state.ORDER_ID: placed["orderId"]},
    )
    store.values[order_state.ORDER] = placed
    result = _op(full_margin=True, window_seconds=1).execute(order_context(FakeTI(try_number=2), store))
    assert len(sandbox.state.orders) == 1 and _orders_received(sandbox) == 1
    assert result["adopted_by"] == "store" and result["order"]["orderId"] == placed["orderId"]
    assert sandbox.state.received[ISOLATED_ORDER_PAGE] == 0  # no lookup for this variant


@durable_only
def test_full_margin_evidence_without_a_key_refuses(sandbox: Any, mm_conn: dict[str, Any]) -> None:
    store = _store(sandbox, _evidence(key_sent=False, biz_type=CROSS_MARKET_ORDER))
    with pytest.raises(MultiMarketsOrderError, match=rf"Nothing was placed: .*without an idempotency-key.*{TPO}"):
        _op(full_margin=True).execute(order_context(FakeTI(try_number=2), store))
    assert _orders_received(sandbox) == 0


@durable_only
def test_full_margin_evidence_with_a_key_sends_the_same_request_again(sandbox: Any, mm_conn: dict[str, Any]) -> None:
    """Killed after the gateway processed the order, before the answer: the same key gets the same order."""
    key = derive_idempotency_key(TPO)
    placed = _place_directly(FULL_MARGIN_ORDER, CROSS_MARKET_ORDER, idempotency_key=key)
    store = _store(sandbox, _evidence(key_sent=True, biz_type=CROSS_MARKET_ORDER))
    result = _op(full_margin=True, track=False).execute(order_context(FakeTI(try_number=2), store))
    assert len(sandbox.state.orders) == 1
    assert result["order"]["orderId"] == placed["orderId"] and result["adopted_by"] == "idempotency_key"


@durable_only
def test_durable_false_leaves_the_store_alone(sandbox: Any, mm_conn: dict[str, Any]) -> None:
    store = _store(sandbox)
    op = _op(track=False, durable=False)
    assert op.durable is False
    op.execute(order_context(FakeTI(), store))
    assert store.writes == [] and len(sandbox.state.orders) == 1


def test_below_airflow_3_3_one_line_says_durable_needs_it(
    sandbox: Any, mm_conn: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    from airflow_provider_multimarkets.operators import order as order_module

    monkeypatch.setattr(order_module, "DURABLE_EXECUTION", False)
    monkeypatch.setattr(order_module, "airflow_version", lambda: "3.2.0")
    store = _store(sandbox)
    _op(track=False).execute(order_context(FakeTI(), store))
    out = capfd.readouterr()
    text = out.out + out.err
    assert text.count("Durable execution (the order kept in the task state store) needs Airflow 3.3+") == 1
    assert "on Airflow 3.2.0" in text and store.writes == []  # today's behaviour: the lookup only


def test_a_concurrent_duplicate_is_not_placed_and_the_lookup_decides(sandbox: Any, mm_conn: dict[str, Any]) -> None:
    sandbox.add_fault(ORDER_BIZ_TYPE, envelope="GGATEWAY_CODE_018", msg="request frequency too fast")
    with pytest.raises(
        MultiMarketsOrderError, match="NOT placed: the gateway refused it as a concurrent duplicate"
    ) as info:
        _op(track=False).execute(order_context(FakeTI()))
    assert "found none yet" in str(info.value) and info.value.placed is None and sandbox.state.orders == []


def test_the_idempotency_key_extra_turns_the_header_off(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import set_connection

    set_connection(monkeypatch, sandbox.connection(retry_backoff=0.01, idempotency_key=False))
    store = _store(sandbox) if DURABLE_EXECUTION else None
    _op(track=False).execute(order_context(FakeTI(), store))
    assert len(sandbox.state.orders) == 1 and not sandbox.state.idempotency.answers
    if store is not None:  # the store says no key was sent, so no retry relies on one
        assert order_state.IDEMPOTENCY_KEY not in store.values
        assert store.values[order_state.ORDER_CALL]["idempotency_key_sent"] is False


@durable_only
def test_a_retry_racing_an_earlier_request_still_in_flight_places_nothing(
    sandbox: Any, mm_conn: dict[str, Any]
) -> None:
    """Try 1's order call is still being processed when try 2 runs (its lookup finds nothing yet): the same
    idempotency-key makes the gateway refuse try 2's request as a concurrent duplicate. One order."""
    store = _store(sandbox)
    release = sandbox.hold(ORDER_BIZ_TYPE)
    first: dict[str, Any] = {}

    def try_1() -> None:
        first["result"] = _op(track=False).execute(order_context(FakeTI(), store))

    thread = threading.Thread(target=try_1, daemon=True)
    thread.start()
    assert sandbox.state.idempotency.wait_in_flight(1, timeout=60)
    with pytest.raises(MultiMarketsOrderError, match="NOT placed: the gateway refused it as a concurrent duplicate"):
        _op(track=False).execute(order_context(FakeTI(try_number=2), store))
    release.set()
    thread.join(timeout=60)
    assert (
        len(sandbox.state.orders) == 1
        and first["result"]["order"]["orderId"] == sandbox.state.orders[0]["response"]["orderId"]
    )
    assert sandbox.state.idempotency.refused == 1
