"""``MultiMarketsOrderStatusSensor`` and its polling trigger against the sandbox's order list: target,
failed and unexpected final statuses (failing in the order's own words), poke and deferrable modes."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from conftest import ORDER_BIZ_TYPE, ORDER_BODY, set_connection

from airflow_provider_multimarkets.exceptions import MultiMarketsConfigError, MultiMarketsOrderError
from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook
from airflow_provider_multimarkets.sensors.order_status import MultiMarketsOrderStatusSensor
from airflow_provider_multimarkets.triggers.order_status import MultiMarketsOrderStatusTrigger

CLASSPATH = "airflow_provider_multimarkets.triggers.order_status.MultiMarketsOrderStatusTrigger"
PAGE = "tradeapi.app.OrderApiService.queryOrderPage"


def _place(tpo: str = "tpo_sensor", **body: Any) -> int:
    data = MultiMarketsHook().call(ORDER_BIZ_TYPE, {**ORDER_BODY, **body, "thirdPartyOrder": tpo}, idempotent=False)
    return int(data["orderId"])


def _sensor(**kwargs: Any) -> MultiMarketsOrderStatusSensor:
    kwargs.setdefault("task_id", "wait")
    kwargs.setdefault("poke_interval", 0.1)
    return MultiMarketsOrderStatusSensor(**kwargs)


def _run(trigger: Any) -> dict[str, Any]:
    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("no event")

    return asyncio.run(first())


def test_an_executed_order_ends_the_wait_by_id_or_by_third_party_order(sandbox: Any, mm_conn: dict[str, Any]) -> None:
    order_id = _place()
    for sensor in (_sensor(order_id=order_id), _sensor(third_party_order="tpo_sensor")):
        done = sensor.poke({})
        assert done.is_done
        value = done.xcom_value
        assert value["order_id"] == order_id and value["status"] == 2 and value["status_name"] == "completed"
        assert value["third_party_order"] == "tpo_sensor" and value["record"]["id"] == order_id


def test_an_open_order_keeps_the_sensor_waiting(sandbox: Any, mm_conn: dict[str, Any]) -> None:
    order_id = _place(bizType=10)  # a limit order: received, not executed
    assert _sensor(order_id=order_id).poke({}) is False
    assert _sensor(third_party_order="no_such_order").poke({}) is False  # not in the list (yet)


def test_a_failed_status_fails_in_the_orders_own_words(sandbox: Any, mm_conn: dict[str, Any]) -> None:
    order_id = _place(bizType=10)
    sandbox.state.set_order_status(order_id, 6, "Insufficient margin for this order")
    with pytest.raises(
        MultiMarketsOrderError,
        match=rf"order {order_id} \(thirdPartyOrder=tpo_sensor\): status 6 \(rejected\), "
        r"remark 'Insufficient margin for this order': a failed status",
    ) as info:
        _sensor(order_id=order_id).poke({})
    assert info.value.order_ids == [order_id] and info.value.placed is True


def test_a_final_status_in_neither_list_fails_too(sandbox: Any, mm_conn: dict[str, Any]) -> None:
    order_id = _place(bizType=10)
    sandbox.state.set_order_status(order_id, 4)
    with pytest.raises(MultiMarketsOrderError, match=r"status 4 \(cancelled\): a final status that is neither"):
        _sensor(order_id=order_id, failed_statuses=[6]).poke({})
    # a status the user waits for, final or not
    assert _sensor(order_id=order_id, target_statuses=[4], failed_statuses=[6]).poke({}).is_done


def test_two_orders_with_one_third_party_order_are_an_error(sandbox: Any, mm_conn: dict[str, Any]) -> None:
    _place(), _place()
    with pytest.raises(MultiMarketsOrderError, match="2 orders carry thirdPartyOrder=tpo_sensor.*give order_id"):
        _sensor(third_party_order="tpo_sensor").poke({})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "give order_id or third_party_order"),
        ({"order_id": 1, "target_statuses": []}, "target_statuses is empty"),
        ({"order_id": 1, "target_statuses": [2], "failed_statuses": [2, 6]}, r"statuses \[2\] are both"),
        ({"order_id": 1, "failed_statuses": [9]}, r"failed_statuses \[9\] are not order statuses"),
        ({"order_id": 1, "target_statuses": ["x"]}, "must be order statuses"),
        ({"order_id": 1, "hook_params": {"timeot": 5}}, "hook_params has unknown key"),
        ({"order_id": 1, "hook_params": [5]}, "hook_params must be a dict"),
    ],
)
def test_bad_arguments_are_config_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(MultiMarketsConfigError, match=message):
        _sensor(**kwargs)


def test_the_trigger_polls_until_the_status_changes(sandbox: Any, mm_conn: dict[str, Any]) -> None:
    order_id = _place(bizType=10)

    def fill_after_two_lookups() -> None:
        deadline = time.monotonic() + 60
        while sandbox.state.received[PAGE] < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        sandbox.state.set_order_status(order_id, 2)

    thread = threading.Thread(target=fill_after_two_lookups, daemon=True)
    thread.start()
    trigger = MultiMarketsOrderStatusTrigger(order_id=order_id, poll_interval=0.1, deadline=time.time() + 60)
    event = _run(trigger)
    thread.join(timeout=60)
    # the status changes once the 2nd lookup has arrived: that lookup may already see it (a busy machine
    # decides which), so the 1st lookup saw status 1 and the wait ended on the 2nd or a later one
    assert event["status"] == "done" and event["record"]["status"] == 2 and event["polls"] >= 2
    assert _sensor(order_id=order_id).execute_complete({}, event)["status"] == 2


def test_the_trigger_times_out_and_says_what_it_saw_last(sandbox: Any, mm_conn: dict[str, Any]) -> None:
    from airflow_provider_multimarkets._compat import AirflowSensorTimeout

    order_id = _place(bizType=10)
    event = _run(MultiMarketsOrderStatusTrigger(order_id=order_id, poll_interval=0.1, deadline=time.time() + 0.3))
    assert event["status"] == "timeout" and event["record"]["status"] == 1
    with pytest.raises(AirflowSensorTimeout, match=r"did not reach a status in \[2\].*status 1 \(received\)"):
        _sensor(order_id=order_id).execute_complete({}, event)


def test_the_trigger_reports_a_failing_lookup(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, sandbox.connection(retry_backoff=0.01, max_retries=0))
    sandbox.add_fault(PAGE, status=503, times=None)
    event = _run(MultiMarketsOrderStatusTrigger(order_id=1, poll_interval=0.1))
    assert event["status"] == "error" and "503" in event["message"]
    with pytest.raises(MultiMarketsOrderError, match="could not follow order 1: .*503"):
        _sensor(order_id=1).execute_complete({}, event)


def test_deferrable_sensor_returns_at_once_when_final_else_defers(sandbox: Any, mm_conn: dict[str, Any]) -> None:
    order_id = _place()
    assert _sensor(order_id=order_id, deferrable=True).execute({})["status"] == 2
    pending = _place("tpo_pending", bizType=10)
    with pytest.raises(BaseException) as info:
        _sensor(order_id=pending, deferrable=True, timeout=120, hook_params={"max_retries": 1}).execute({})
    deferred = info.value
    assert type(deferred).__name__ == "TaskDeferred" and deferred.method_name == "execute_complete"
    classpath, kwargs = deferred.trigger.serialize()
    assert classpath == CLASSPATH
    assert kwargs["order_id"] == str(pending) and kwargs["target_statuses"] == [2]
    assert kwargs["failed_statuses"] == [4, 5, 6, 7] and kwargs["hook_params"] == {"max_retries": 1}
    assert kwargs["deadline"] > time.time() + 100
    again = MultiMarketsOrderStatusTrigger(**kwargs)
    assert again.serialize() == (classpath, kwargs)


@pytest.mark.parametrize("event", [None, "garbage", {"status": "what"}])
def test_execute_complete_without_an_event_is_a_clear_error(event: Any) -> None:
    with pytest.raises(MultiMarketsOrderError, match="ended without an event"):
        _sensor(order_id=1).execute_complete({}, event)
