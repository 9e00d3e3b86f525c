"""The deferrable order operator and its tracking trigger: subscription and placement in the worker, then
the same stream resumed by the trigger with the same token and push log; the lookup when the stream cannot
prove the outcome; the same XCom as tracking in the worker."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import ORDER_BIZ_TYPE, ORDER_BODY, FakeTaskStateStore, FakeTI, order_context

from airflow_provider_multimarkets._compat import DURABLE_EXECUTION
from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook
from airflow_provider_multimarkets.operators.order import MultiMarketsMarketOrderOperator
from airflow_provider_multimarkets.trading import order_state
from airflow_provider_multimarkets.triggers.order_tracking import MultiMarketsOrderTrackingTrigger

CLASSPATH = "airflow_provider_multimarkets.triggers.order_tracking.MultiMarketsOrderTrackingTrigger"


@pytest.fixture(autouse=True)
def _own_push_dir(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MULTIMARKETS_PUSH_DIR", str(tmp_path / "mm-pushes"))


def _op(**kwargs: Any) -> MultiMarketsMarketOrderOperator:
    kwargs.setdefault("window_seconds", 20)
    kwargs.setdefault("poll_interval", 0.2)
    kwargs.setdefault("lookup_timeout", 10)
    return MultiMarketsMarketOrderOperator(task_id="order", order=dict(ORDER_BODY), **kwargs)


def _deferred(op: MultiMarketsMarketOrderOperator, context: Any) -> Any:
    with pytest.raises(BaseException) as info:  # TaskDeferred is not an Exception on every Airflow version
        op.execute(context)
    assert type(info.value).__name__ == "TaskDeferred", info.value
    return info.value


def _run(trigger: Any) -> dict[str, Any]:
    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("no event")

    return asyncio.run(first())


def _shape(value: Any) -> Any:
    """Keys and value types, recursively: what two XComs of two orders have in common."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    return type(value).__name__


def test_deferrable_hands_the_stream_to_the_trigger_and_returns_the_same_xcom(
    sandbox: Any, mm_conn: dict[str, Any]
) -> None:
    sandbox.state.config.order_push_delay = 1.0  # the fill comes after the worker handed the stream over
    store = FakeTaskStateStore() if DURABLE_EXECUTION else None
    context = order_context(FakeTI(), store)
    deferred = _deferred(_op(deferrable=True), context)
    assert deferred.method_name == "execute_complete"
    assert deferred.timeout is not None and deferred.timeout.total_seconds() == 20 + 10 + 300
    classpath, kwargs = deferred.trigger.serialize()
    assert classpath == CLASSPATH
    (placed,) = sandbox.state.orders
    order_id = placed["response"]["orderId"]
    assert kwargs["order_id"] == str(order_id) and kwargs["order"]["orderId"] == order_id
    (token,) = sandbox.state.streams  # the worker's token: the trigger resumes that very stream
    assert kwargs["token"] == token and kwargs["lookup"] is True and kwargs["spool_path"].endswith("order.jsonl")
    if store is not None:  # the worker wrote the order's ids before it deferred, no final status yet
        assert store.values[order_state.ORDER_ID] == order_id and order_state.FINAL_STATUS not in store.values
    again = MultiMarketsOrderTrackingTrigger(**kwargs)
    assert again.serialize() == (classpath, kwargs) and token not in repr(again)
    event = _run(again)
    assert event["source"] == "push" and event["final"] is True
    assert sandbox.state.streams[token].connections == 2  # the same stream, resumed
    deferred_result = _op(deferrable=True).execute_complete(context, event)
    assert deferred_result["fill"]["tracked"] and deferred_result["fill"]["final_status"] == "completed"
    if store is not None:
        assert store.values[order_state.FINAL_STATUS] == 2 and store.values[order_state.FILL] == deferred_result["fill"]
    # the same XCom as an order tracked in the worker
    sandbox.state.config.order_push_delay = 0.0
    inline = _op(deferrable=False).execute(order_context(FakeTI(run_id="manual__2"), FakeTaskStateStore()))
    assert _shape(deferred_result) == _shape(inline)
    assert {k: v for k, v in deferred_result["fill"].items() if k in ("final_status", "tracked", "push_biz_type")} == {
        k: v for k, v in inline["fill"].items() if k in ("final_status", "tracked", "push_biz_type")
    }


def test_a_fill_that_arrives_before_the_handover_is_not_deferred(sandbox: Any, mm_conn: dict[str, Any]) -> None:
    """The sandbox pushes the fill with the answer: nothing is left to track, the worker returns at once."""
    result = _op(deferrable=True).execute(order_context(FakeTI()))
    assert result["fill"]["tracked"] and result["subscription"]["until"]["met"]


def test_the_trigger_falls_back_on_the_lookup_when_the_stream_shows_nothing(
    sandbox: Any, mm_conn: dict[str, Any]
) -> None:
    placed = MultiMarketsHook().call(ORDER_BIZ_TYPE, {**ORDER_BODY, "thirdPartyOrder": "tpo_1"}, idempotent=False)
    import time

    trigger = MultiMarketsOrderTrackingTrigger(
        token=MultiMarketsHook().get_msg_token(),  # a stream subscribed after the fill: no push will come
        order_id=placed["orderId"],
        third_party_order="tpo_1",
        deadline=time.time() + 1,
        poll_interval=0.2,
        lookup_timeout=10,
        order=placed,
    )
    event = _run(trigger)
    assert event["status"] == "success" and event["final"] and event["source"] == "lookup"
    assert event["record"]["id"] == placed["orderId"] and event["record"]["status"] == 2
    result = _op(deferrable=True).execute_complete(order_context(FakeTI()), event)
    assert result["fill"]["final_status"] == "completed" and result["fill"]["tracked"] is False


def test_without_a_lookup_the_trigger_reports_what_the_stream_showed(sandbox: Any, mm_conn: dict[str, Any]) -> None:
    import time

    event = _run(
        MultiMarketsOrderTrackingTrigger(
            token=MultiMarketsHook().get_msg_token(),
            order_id="42",
            trade_types="1",
            trade_type=1,
            lookup=False,
            deadline=time.time() + 0.5,
        )
    )
    assert event["status"] == "success" and event["final"] is False and event["source"] is None
    assert sandbox.state.received["tradeapi.app.OrderApiService.queryOrderPage"] == 0


def test_a_stream_refused_and_a_failing_lookup_end_with_an_error_that_says_it_was_placed(
    sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from conftest import set_connection

    from airflow_provider_multimarkets.exceptions import MultiMarketsMsgError

    set_connection(monkeypatch, sandbox.connection(retry_backoff=0.01, max_retries=0))
    sandbox.state.faults.ws.refuse_login = True
    sandbox.add_fault("tradeapi.app.OrderApiService.queryOrderPage", status=503, times=None)
    event = _run(
        MultiMarketsOrderTrackingTrigger(
            token="expired-token-0000", order_id="42", deadline=time.time() + 5, poll_interval=0.2, lookup_timeout=1
        )
    )
    assert event["status"] == "error" and "lookup failed" in event["message"] and event["stream_error"]
    with pytest.raises(MultiMarketsMsgError, match=r"Order 42 \(thirdPartyOrder=af_\w+\) WAS placed, but tracking"):
        _op(deferrable=True).execute_complete(order_context(FakeTI()), event)


@pytest.mark.parametrize("event", [None, "garbage", {"status": "success"}])
def test_execute_complete_without_an_event_is_a_clear_error(event: Any) -> None:
    from airflow_provider_multimarkets.exceptions import MultiMarketsMsgError

    with pytest.raises(MultiMarketsMsgError, match="ended without an event.*WAS placed.*adopts it"):
        _op(deferrable=True).execute_complete(order_context(FakeTI()), event)


def test_deferrable_defaults_to_the_airflow_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "True")
    assert _op().deferrable is True
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "False")
    assert _op().deferrable is False and _op(deferrable=True).deferrable is True
