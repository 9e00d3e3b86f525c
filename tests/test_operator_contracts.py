"""Fast contracts of the deferrable subscription operator: what it defers with, and how it ends."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_multimarkets.exceptions import MultiMarketsMsgAuthError, MultiMarketsMsgError
from airflow_provider_multimarkets.operators.msg_subscribe import MultiMarketsMsgSubscribeOperator

CLASSPATH = "airflow_provider_multimarkets.triggers.msg_subscribe.MultiMarketsMsgSubscribeTrigger"


def operator(**kwargs: Any) -> MultiMarketsMsgSubscribeOperator:
    kwargs.setdefault("task_id", "listen")
    kwargs.setdefault("token", "tok-" + "x" * 36)
    kwargs.setdefault("window_seconds", 60)
    kwargs.setdefault("output_path", "/tmp/mm-contract-pushes.jsonl")  # noqa: S108 - never written here
    return MultiMarketsMsgSubscribeOperator(deferrable=True, **kwargs)


def test_execute_defers_to_the_trigger_with_a_bounded_timeout() -> None:
    op = operator(trade_types="1,2", max_messages=10, until_order_id=42)
    with pytest.raises(BaseException) as info:  # TaskDeferred is not an Exception on every Airflow version
        op.execute({})
    deferred = info.value
    assert type(deferred).__name__ == "TaskDeferred"
    assert deferred.method_name == "execute_complete"
    assert deferred.timeout is not None and deferred.timeout.total_seconds() == 60 + 120
    classpath, kwargs = deferred.trigger.serialize()
    assert classpath == CLASSPATH
    assert kwargs["trade_types"] == "1,2" and kwargs["max_messages"] == 10 and kwargs["until_order_id"] == "42"
    assert kwargs["output_path"] == "/tmp/mm-contract-pushes.jsonl"  # noqa: S108
    assert kwargs["token"] == "tok-" + "x" * 36


def test_execute_complete_success_returns_the_summary() -> None:
    summary = {"messages": 3, "stop_reason": "window", "reconnects": 0, "duplicates_dropped": 0, "malformed_frames": 0}
    assert operator().execute_complete({}, {"status": "success", "summary": summary}) is summary


@pytest.mark.parametrize(
    ("error_type", "raised"),
    [("MultiMarketsMsgAuthError", MultiMarketsMsgAuthError), ("MultiMarketsMsgError", MultiMarketsMsgError)],
)
def test_execute_complete_errors_keep_their_type(error_type: str, raised: type[Exception]) -> None:
    event = {"status": "error", "error_type": error_type, "message": "it broke", "summary": {"messages": 7}}
    with pytest.raises(raised, match=r"it broke \(received 7 pushes first\)") as info:
        operator().execute_complete({}, event)
    if raised is MultiMarketsMsgError:
        assert not isinstance(info.value, MultiMarketsMsgAuthError)


@pytest.mark.parametrize("event", [None, "garbage"])
def test_execute_complete_without_an_event_is_a_clear_error(event: Any) -> None:
    with pytest.raises(MultiMarketsMsgError, match="ended without an event.*resumes from it"):
        operator().execute_complete({}, event)
